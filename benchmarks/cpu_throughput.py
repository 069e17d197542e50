r"""(a) Train-step throughput on CPU, against the f32 matmul peak measured in the same process.

  python benchmarks/cpu_throughput.py [--steps=5]

Configs: the demo (configs/demo.py) and a mid-size model (ViT-S/16 encoder at 112 px, decoder
256 x 4, 8 clips x 8 frames). Model FLOPs per step come from `flops.train_step_flops`;
achieved FLOP/s = model FLOPs / median step time; the reference is a jitted 2048^3 f32 matmul
timed before and after the steps.
"""

from __future__ import annotations

import os
import statistics
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import demo  # pylint: disable=g-import-not-at-top,wrong-import-position

_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per config (after compile + 1 warm-up).")
_OUT = flags.DEFINE_string("out", "benchmarks/results/cpu_throughput.json", "Results.")


def main(argv):
  del argv
  rows = []
  print(f"machine: {harness.machine()}; load before: {harness.load()}")
  for name, config in (("demo", demo.get_config()), ("mid (ViT-S/16, 112 px)", harness.mid_config())):
    config.mesh.update(data=1, fsdp=1, tensor=1)
    peak_before = harness.matmul_peak()
    step = harness.TrainStep(config)
    step.compile()
    step()
    times = harness.timed(step, _STEPS.value)
    peak = (peak_before + harness.matmul_peak()) / 2
    seconds = statistics.median(times)
    b, t = config.data.global_batch_size, config.data.window_frames
    row = {"config": name, "params": step.num_params, "clips": b, "frames_per_clip": t,
           "compile_s": step.compile_seconds, "step_s": seconds, "step_s_all": times,
           "clips_per_s": b / seconds, "frames_per_s": b * t / seconds,
           "model_flops_per_step": step.flops, "achieved_flops": step.flops / seconds,
           "matmul_peak_flops": peak, "fraction_of_peak": step.flops / seconds / peak}
    rows.append(row)
    print(f"{name}: {row['step_s']:.3f} s/step, {row['clips_per_s']:.2f} clips/s, "
          f"{row['achieved_flops'] / 1e9:.1f} GFLOP/s = {100 * row['fraction_of_peak']:.0f} % of "
          f"the {peak / 1e9:.1f} GFLOP/s f32 matmul peak")
  harness.finish(_OUT.value, {"rows": rows})


if __name__ == "__main__":
  app.run(main)
