r"""(g) The host allocator under XLA:CPU: the demo train step with glibc malloc, jemalloc, tcmalloc.

  python benchmarks/allocator.py [--steps=30]

XLA:CPU allocates a step's temporaries at every execution; glibc serves blocks that large with
mmap and returns them at free, so every step page-faults them in again. Each allocator runs the
same jitted demo step (configs/demo.py, `harness.TrainStep`) in its own child process (LD_PRELOAD
must be set before the process starts): seconds per step (median), system CPU seconds and minor
page faults per step, and the ratio of glibc's step time to each allocator's, all in this run.
The compiled step's temporary buffer size (`memory_analysis()`) is printed beside them.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # pylint: disable=g-import-not-at-top,wrong-import-position

_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps per allocator (after compile + 2 warm-up).")
_OUT = flags.DEFINE_string("out", "benchmarks/results/allocator.json", "Results.")
_CHILD = flags.DEFINE_string("child", "", "Internal: run the timed steps and print JSON.")

LIBRARIES = {"jemalloc": "libjemalloc.so.2", "tcmalloc": "libtcmalloc_minimal.so.4"}
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"  # as scripts/setup_env.sh sets it


def find_library(name: str) -> str | None:
  out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
  for line in out.splitlines():
    if line.strip().startswith(name + " "):
      return line.rsplit(" ", 1)[-1]
  return None


def child(steps: int) -> dict:
  from configs import demo  # pylint: disable=import-outside-toplevel
  config = demo.get_config()
  config.mesh.update(data=1, fsdp=1, tensor=1)
  step = harness.TrainStep(config)
  with step.exp.scope():
    compiled = step.step.lower(step.state, step.batch).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  step()
  step()
  before = resource.getrusage(resource.RUSAGE_SELF)
  times = harness.timed(step, steps)
  after = resource.getrusage(resource.RUSAGE_SELF)
  return {"seconds_per_step": statistics.median(times), "temp_mib": temp / 2**20,
          "sys_seconds_per_step": (after.ru_stime - before.ru_stime) / steps,
          "minor_faults_per_step": (after.ru_minflt - before.ru_minflt) / steps}


def main(argv):
  del argv
  if _CHILD.value:
    print(json.dumps(child(_STEPS.value)))
    return
  print(f"machine: {harness.machine()}; load before: {harness.load()}")
  env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
  rows = {}
  for name in ("glibc", *LIBRARIES):
    child_env = dict(env)
    if name != "glibc":
      path = find_library(LIBRARIES[name])
      if path is None:
        print(f"{name}: {LIBRARIES[name]} not installed, skipped")
        continue
      child_env["LD_PRELOAD"] = path
      if name == "jemalloc":
        child_env["MALLOC_CONF"] = JEMALLOC_CONF
    out = subprocess.run([sys.executable, os.path.abspath(__file__), f"--child={name}",
                          f"--steps={_STEPS.value}"], env=child_env, capture_output=True, text=True,
                         check=True).stdout
    rows[name] = json.loads(out.strip().splitlines()[-1])
  base = rows["glibc"]["seconds_per_step"]
  print(f"demo train step, {_STEPS.value} steps each; temporaries {rows['glibc']['temp_mib']:.0f} MiB")
  print(f"{'allocator':10s} {'s/step':>8s} {'sys s/step':>10s} {'faults/step':>11s} {'speed-up':>8s}")
  for name, r in rows.items():
    r["speedup_vs_glibc"] = base / r["seconds_per_step"]
    print(f"{name:10s} {r['seconds_per_step']:8.3f} {r['sys_seconds_per_step']:10.3f} "
          f"{r['minor_faults_per_step']:11.0f} {r['speedup_vs_glibc']:8.2f}x")
  harness.finish(_OUT.value, {"steps": _STEPS.value, "allocators": rows})


if __name__ == "__main__":
  app.run(main)
