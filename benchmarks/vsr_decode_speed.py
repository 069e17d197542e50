r"""(h) Decoding speed of a trained lip-reading head (evaluators/vsr.py) at beam 1 and beam 10,
against the head's encoder pass alone, timed in the same process.

  python benchmarks/vsr_decode_speed.py --workdir=workdirs/downstream/vsr_pretrained \
      --json_out=benchmarks/results/vsr_decode_speed.json

The workdir is a trained head (`configs/vsr.py`; `synclipmae-downstream` trains one per encoder).
Its test utterances are encoded by the frozen SyncLipMAE once (not timed: that is the feature
extraction of (h)'s other table); then for each beam size the whole split is decoded by the joint
CTC/attention beam search at the run's CTC weight (`Evaluator.evaluate`, one untimed pass for
compilation, then `--repeats` timed). The reference, timed in the same process: the head's
Conformer encoder and CTC head over the same utterances (`vsr_decoding.encode_fn`), the part of
decoding that does not depend on the beam. Reported: utterances and seconds of video decoded per
second (median), and each beam's time over the encoder pass's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness  # pylint: disable=wrong-import-position
from data_pipelines import schema  # pylint: disable=wrong-import-position
from synclipmae_jax import checkpointing, config_defaults  # pylint: disable=wrong-import-position
from synclipmae_jax.tasks.vsr import data as vsr_data  # pylint: disable=wrong-import-position
from synclipmae_jax.tasks.vsr import decoding as vsr_decoding  # pylint: disable=wrong-import-position,line-too-long
from synclipmae_jax.evaluators import vsr as vsr_evaluator  # pylint: disable=wrong-import-position
from synclipmae_jax.tasks import vsr as vsr_task  # pylint: disable=wrong-import-position


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--beams", default="1,10")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--json_out", default="benchmarks/results/vsr_decode_speed.json")
  a = p.parse_args(argv)
  print(f"load before: {harness.load()}")

  config = checkpointing.read_config(a.workdir)
  params = checkpointing.load(a.workdir).params
  model = vsr_task.build_model(config)
  units, by_split = vsr_task.load_utterances(config, a.workdir)
  utterances = by_split["test"]
  seconds_of_video = sum(len(u["features"]) for u in utterances) / schema.FPS

  encode = vsr_decoding.encode_fn(model)
  padded = [vsr_data.pad(u, config.data.max_frames, config.data.max_units) for u in utterances]

  def encode_all():
    for u in padded:
      np.asarray(encode(params, u["features"][None], u["frame_mask"][None])[1])

  encode_all()  # compile
  encode_seconds = statistics.median(harness.timed(encode_all, a.repeats))

  rows = []
  for beam in (int(b) for b in a.beams.split(",")):
    entry = config.evals.get("vsr") or config_defaults.vsr_eval_config()
    entry.update(split="test", num_clips=0, beam=beam)
    evaluator = vsr_evaluator.Evaluator(entry, config, model=model, units=units, utterances=by_split)
    metrics = evaluator.evaluate(params)[0]  # compile
    seconds = statistics.median(harness.timed(lambda: evaluator.evaluate(params), a.repeats))
    rows.append({"beam": beam, "ctc_weight": entry.ctc_weight, "seconds": seconds,
                 "utterances_per_second": len(utterances) / seconds,
                 "video_seconds_per_second": seconds_of_video / seconds,
                 "over_encoder_pass": seconds / encode_seconds, "wer": metrics["vsr/wer"],
                 "cer": metrics["vsr/cer"]})
    print(f"beam {beam} (CTC weight {entry.ctc_weight}): {len(utterances)} utterances in "
          f"{seconds:.2f} s = {len(utterances) / seconds:.1f} utterances/s, "
          f"{seconds_of_video / seconds:.0f} s of video per s, {seconds / encode_seconds:.1f}x the "
          f"encoder pass; WER {metrics['vsr/wer']:.1f} %")
  print(f"encoder pass alone: {encode_seconds:.3f} s")
  harness.finish(a.json_out, {"workdir": os.path.abspath(a.workdir), "utterances": len(utterances),
                              "seconds_of_video": seconds_of_video,
                              "encoder_pass_seconds": encode_seconds, "beams": rows})


if __name__ == "__main__":
  main()
