r"""(h) Throughput of the probes' frame-feature extraction (frame_features.py: the frozen encoder on
all patches of every frame) on a trained run's held-out clips, against the f32 matmul peak measured
in the same process.

  python benchmarks/feature_extraction_speed.py --workdir=/tmp/quick \
      --json_out=benchmarks/results/feature_extraction_speed.json

After one untimed pass (compilation), `frame_features.extract` over the clips is timed `--repeats`
times at the probe evaluator's frames_per_call. Reported: frames per second (median), the
encoder's analytical FLOPs per frame (`flops.encoder_forward_flops`, all patches visible) and the
achieved FLOP/s as a fraction of the matmul peak.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness  # pylint: disable=wrong-import-position
from data_pipelines import grain_pipeline  # pylint: disable=wrong-import-position
from synclipmae_jax import checkpointing, flops, frame_features, input_pipeline  # pylint: disable=wrong-import-position
from synclipmae_jax.evaluators import probe as probe_evaluator  # pylint: disable=wrong-import-position
from synclipmae_jax.models import synclipmae  # pylint: disable=wrong-import-position


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--json_out", default="benchmarks/results/feature_extraction_speed.json")
  a = p.parse_args(argv)
  print(f"load before: {harness.load()}")
  peak = harness.matmul_peak()

  config = checkpointing.read_config(a.workdir)
  params = checkpointing.load(a.workdir).params
  model = synclipmae.build(config.model)
  clips = grain_pipeline.load_eval_clips(input_pipeline.dataset_paths(config)[1])
  per_call = probe_evaluator.entry_of(config).frames_per_call
  fn = frame_features.frame_features_fn(model)
  frame_features.extract(fn, params, clips, per_call)  # compile
  seconds = statistics.median(harness.timed(
      lambda: frame_features.extract(fn, params, clips, per_call), a.repeats))
  frames = sum(len(c["frames"]) for c in clips)
  n = model.grid * model.grid
  per_frame = flops.encoder_forward_flops(config.model, n)
  achieved = frames * per_frame / seconds
  result = {"workdir": os.path.abspath(a.workdir), "frames": frames, "frames_per_call": per_call,
            "seconds": seconds, "frames_per_second": frames / seconds,
            "flops_per_frame": per_frame, "achieved_flops_per_second": achieved,
            "matmul_peak_flops_per_second": peak, "fraction_of_peak": achieved / peak}
  print(f"{frames} frames ({len(clips)} clips, {per_call} per call): {seconds:.2f} s = "
        f"{frames / seconds:.0f} frames/s; {per_frame / 1e6:.1f} MFLOP per frame -> "
        f"{achieved / 1e9:.1f} GFLOP/s = {100 * achieved / peak:.0f} % of the f32 matmul peak "
        f"({peak / 1e9:.1f} GFLOP/s, same process)")
  harness.finish(a.json_out, result)


if __name__ == "__main__":
  main()
