r"""(d) Compile time of the train step with and without `nn.scan` over the layers (CPU).

  python benchmarks/scan_compile.py

The mid-size config (benchmarks/harness.py, 12-layer encoder, 4-layer decoder) and the
same with a 24-layer encoder (ViT-L/16 sizes at 112 px), remat off, one device: lower +
compile seconds of the real train step, and the first step's time after compiling.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # pylint: disable=g-import-not-at-top,wrong-import-position

_OUT = flags.DEFINE_string("out", "benchmarks/results/scan_compile.json", "Results.")


def main(argv):
  del argv
  print(f"machine: {harness.machine()}; load before: {harness.load()}")
  rows = []
  for encoder in ("S", "L"):
    for scan in (False, True):
      config = harness.mid_config()
      config.model.update(encoder_size=encoder, scan_layers=scan)
      config.model.remat_policy.update(encoder="none", decoder="none")
      config.mesh.update(data=1, fsdp=1, tensor=1)
      step = harness.TrainStep(config)
      seconds = step.compile()
      rows.append({"encoder": encoder, "scan_layers": scan, "compile_s": seconds})
      print(f"encoder {encoder}, scan_layers={scan}: compile {seconds:.1f} s")
  harness.finish(_OUT.value, {"rows": rows})


if __name__ == "__main__":
  app.run(main)
