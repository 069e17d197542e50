r"""(h) Downstream speed on CPU: the frozen encoder's feature extraction (frames/s, against the
f32 matmul peak measured in the same process) and lip-reading decoding (utterances/s at beam 1
and beam 10, against the head's own encoder pass on the same utterances).

  python benchmarks/downstream_speed.py --encoder_workdir=workdirs/demo --vsr_workdir=workdirs/vsr

Extraction: `frame_features.frame_features_fn` (all patches visible) on `--frames` frames in
calls of 256, after one warm-up call; achieved FLOP/s = XLA's count of the compiled call /
median call time. Decoding: `tools/vsr_eval.evaluate` on the head's validation utterances with
the joint CTC/attention beam search (CTC weight 0.1) at beam 1 and beam 10; the reference is the
time of the head's jitted encoder pass alone (Conformer + CTC head) on the same utterances.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from absl import app, flags
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # pylint: disable=g-import-not-at-top,wrong-import-position
from synclipmae_jax import checkpointing, frame_features, vsr_data, vsr_decoding  # pylint: disable=g-import-not-at-top,wrong-import-position
from synclipmae_jax.models import synclipmae  # pylint: disable=g-import-not-at-top,wrong-import-position
from synclipmae_jax.tasks import vsr as vsr_task  # pylint: disable=g-import-not-at-top,wrong-import-position
from synclipmae_jax.tools import vsr_eval  # pylint: disable=g-import-not-at-top,wrong-import-position

_ENCODER = flags.DEFINE_string("encoder_workdir", None, "A pretraining workdir (its encoder).")
_VSR = flags.DEFINE_string("vsr_workdir", "", "A trained lip-reading head ('' = skip decoding).")
_FRAMES = flags.DEFINE_integer("frames", 4096, "Frames to extract.")
_OUT = flags.DEFINE_string("out", "benchmarks/results/downstream_speed.json", "Results.")
CALL = 256


def extraction(workdir: str) -> dict:
  restored = checkpointing.load(workdir)
  model = synclipmae.build(restored.config.model)
  fn = frame_features.frame_features_fn(model)
  s = restored.config.model.image_size
  frames = np.random.default_rng(0).integers(0, 256, (CALL, s, s, 3), dtype=np.uint8)
  flops = fn.lower(restored.params, frames).compile().cost_analysis()["flops"]
  jax.block_until_ready(fn(restored.params, frames))
  calls = max(1, _FRAMES.value // CALL)
  times = harness.timed(lambda: jax.block_until_ready(fn(restored.params, frames)), calls)
  seconds = statistics.median(times)
  return {"frames_per_second": CALL / seconds, "call_seconds": seconds, "frames_per_call": CALL,
          "flops_per_call": flops, "achieved_flops_per_second": flops / seconds,
          "image_size": s, "encoder_size": restored.config.model.encoder_size}


def decoding(workdir: str) -> dict:
  config = checkpointing.read_config(workdir)
  restored = checkpointing.load(workdir)
  _, by_split = vsr_task.load_utterances(config, workdir)
  utterances = by_split["validation"]
  model = vsr_task.build_model(config)
  encode = vsr_decoding.encode_fn(model)
  padded = [vsr_data.pad(u, config.data.max_frames, config.data.max_units) for u in utterances]
  jax.block_until_ready(encode(restored.params, padded[0]["features"][None], padded[0]["frame_mask"][None]))
  start = time.perf_counter()
  for p in padded:
    jax.block_until_ready(encode(restored.params, p["features"][None], p["frame_mask"][None]))
  encode_seconds = time.perf_counter() - start
  out = {"utterances": len(utterances), "encoder_pass_utterances_per_second": len(utterances) / encode_seconds}
  for beam in (1, 10):
    vsr_eval.evaluate(workdir, options={"split": "validation", "beam": beam, "num_clips": 2})  # warm-up
    report = vsr_eval.evaluate(workdir, options={"split": "validation", "beam": beam})
    out[f"beam{beam}"] = {"utterances_per_second": report["utterances_per_second"],
                          "wer": report["metrics"]["vsr/wer"]}
  return out


def main(argv):
  del argv
  print(f"machine: {harness.machine()}; load before: {harness.load()}")
  peak_before = harness.matmul_peak()
  result = {"extraction": extraction(_ENCODER.value)}
  peak = (peak_before + harness.matmul_peak()) / 2
  result["matmul_peak_flops_per_second"] = peak
  result["extraction"]["fraction_of_matmul_peak"] = result["extraction"]["achieved_flops_per_second"] / peak
  e = result["extraction"]
  print(f"extraction: {e['frames_per_second']:.0f} frames/s ({e['encoder_size']}, {e['image_size']} px), "
        f"{e['achieved_flops_per_second'] / 1e9:.1f} GFLOP/s = {e['fraction_of_matmul_peak']:.2f} of the "
        f"matmul peak {peak / 1e9:.1f} GFLOP/s")
  if _VSR.value:
    d = result["decoding"] = decoding(_VSR.value)
    for beam in (1, 10):
      print(f"decoding, beam {beam}: {d[f'beam{beam}']['utterances_per_second']:.1f} utterances/s "
            f"(the head's encoder pass alone: {d['encoder_pass_utterances_per_second']:.1f}/s), "
            f"WER {d[f'beam{beam}']['wer']:.1f} %")
  harness.finish(_OUT.value, result)


if __name__ == "__main__":
  flags.mark_flags_as_required(["encoder_workdir"])
  app.run(main)
