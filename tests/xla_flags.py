"""The XLA flags of the test processes (conftest.py) and of the JAX processes they start.

XLA:CPU's backend optimisation at level 0: compilation, not execution, is most of a test's time
here (the tiny configs' train step compiles in ~10 s and runs in ~40 ms), and level 0 compiles
about 1.6x faster and runs about 2x slower. It changes the code LLVM generates and with it the
rounding of some float32 operations (after 3 steps of the tiny run ~6 % of the parameters differ
in their last bits, by <= 5e-7), not the operations: comparisons between programs state tolerances
that cover rounding, and bit-exact ones compare runs of one program. A process a test starts to
compare with its own results gets the same flags; what trains long (conftest.quick_run) trains
with XLA's defaults, as a user's run does.
"""

OPTIMIZATION = "--xla_backend_optimization_level=0"


def with_devices(count: int) -> str:
  """XLA_FLAGS for a process with `count` fake CPU devices."""
  return f"--xla_force_host_platform_device_count={count} {OPTIMIZATION}"
