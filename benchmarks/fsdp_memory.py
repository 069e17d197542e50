r"""(b) Per-device memory of the compiled train step vs fsdp size, on 8 fake CPU devices.

  python benchmarks/fsdp_memory.py

The mid-size config (benchmarks/harness.py) with mesh (data=1, fsdp=n, tensor=1) over
n = 1, 2, 4, 8 devices and the same global batch: parameter, optimizer-state and batch bytes
per device from the state's shardings, and the compiled step's argument / temporary / total
bytes from XLA's memory analysis (`tools/aot.compile_report`, the AOT tool's own code).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

from absl import app, flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # pylint: disable=g-import-not-at-top,wrong-import-position
from synclipmae_jax.tools import aot  # pylint: disable=g-import-not-at-top,wrong-import-position

_OUT = flags.DEFINE_string("out", "benchmarks/results/fsdp_memory.json", "Results.")
MIB = 2 ** 20


def main(argv):
  del argv
  print(f"machine: {harness.machine()}; load before: {harness.load()}")
  rows = []
  for n in (1, 2, 4, 8):
    config = harness.mid_config()
    config.mesh.update(data=1, fsdp=n, tensor=1)
    r = aot.compile_report(config, jax.devices()[:n], hbm_bytes=64 * 2 ** 30, compile_eval=False)
    m, s = r["functions"]["train_step"]["memory"], r["state_bytes_per_device"]
    rows.append({"fsdp": n, **{f"{k}_mib": v / MIB for k, v in s.items()},
                 **{f"{k}_mib": v / MIB for k, v in m.items()}})
    print(f"fsdp={n}: params {s['params'] / MIB:.1f} MiB, opt_state {s['opt_state'] / MIB:.1f}, "
          f"batch {s['batch'] / MIB:.1f}, args {m['argument'] / MIB:.1f}, temp {m['temp'] / MIB:.1f}, "
          f"total {m['total'] / MIB:.1f} MiB per device")
  harness.finish(_OUT.value, {"rows": rows})


if __name__ == "__main__":
  app.run(main)
