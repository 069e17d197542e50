#!/usr/bin/env bash
# The tests: set up the three venvs (idempotent: .venv with the PyTorch bridge extra for the
# parity tests and the data extra for video preparation, and the tpu and beam layers on it), then
# the fast suite with the slow end-to-end tests, then the TPU AOT and the Beam tests side by side.
# Every part runs even if one before it failed; the exit status is non-zero if any failed.
#   bash scripts/test.sh [pytest args of the main suite]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pytest_args=("$@")
# Pod compilation (tools/aot.py against TPU topologies): libtpu lives in its own venv, since
# with libtpu installed every `import jax` probes for a TPU first. It is a layer on .venv: libtpu
# only, the rest from .venv. The TFDS builder generated with Apache Beam: Beam pins an older pillow
# and protobuf than .venv's, so it lives in its own venv, a layer on .venv as the tpu one is.
set -- bridge data  # the extras setup_env.sh installs
. "$repo/scripts/setup_env.sh"
cd "$repo"
export TF_CPP_MIN_LOG_LEVEL=3
# One XLA compilation cache for this run: a program that several tests (or the processes they
# start) compile is compiled once and loaded after that. Fresh per run: nothing stale is reused.
cache_dir="$(mktemp -d)"
trap 'rm -rf "$cache_dir"' EXIT
export JAX_COMPILATION_CACHE_DIR="$cache_dir/xla"
# Every program, not only those that took over a second to compile (JAX's default): the tiny
# configs' many small programs (orbax's per-array slices at every save, eager ops) are compiled
# again by every test process otherwise, and processes of one multi-process job load the same set.
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
# The machine, so that a slow or failing run can be read: its CPU and XLA's f32 matmul peak
# (machines of our kind differ ~3x in it; BENCHMARKS.md's figures are ratios against it).
python -c "from benchmarks import harness; print(f'machine: {harness.machine()}; XLA f32 matmul peak: {harness.matmul_peak() / 1e9:.0f} GFLOP/s')"
# The trained runs many tests share (tests/shared_runs.py), trained while pip sets up the other
# two venvs instead of holding up a test worker; the tests wait for them or train what is missing.
export SYNCLIPMAE_TEST_RUNS="$cache_dir/runs"
python -m tests.shared_runs "$SYNCLIPMAE_TEST_RUNS" > "$cache_dir/shared_runs.log" 2>&1 &
shared_runs=$!
SYNCLIPMAE_VENV="$repo/.venv-tpu" SYNCLIPMAE_BASE_VENV="$repo/.venv" bash "$repo/scripts/setup_env.sh" tpu
SYNCLIPMAE_VENV="$repo/.venv-beam" SYNCLIPMAE_BASE_VENV="$repo/.venv" bash "$repo/scripts/setup_env.sh" beam
status=0
# The fast suite and the slow end-to-end tests in one call (-m overrides pyproject's
# "not slow"), so that both cores stay busy to the end; --dist loadfile: a test file's
# module-scoped fixtures (compiled models, prepared videos) are built once, on one worker.
python -m pytest -q -n 2 --dist loadfile -m "not tpu and not beam" --durations=40 "${pytest_args[@]}" || status=$?
wait "$shared_runs" || { echo "== training the shared runs ahead failed (the tests trained them):"
                        tail -30 "$cache_dir/shared_runs.log"; }
# The TPU AOT tests (one compiling process at a time) and the Beam tests side by side, each on a
# core; their output after both end.
env -u JAX_COMPILATION_CACHE_DIR "$repo/.venv-tpu/bin/python" -m pytest -q -m tpu --durations=5 \
    tests/test_aot.py > "$cache_dir/tpu.log" 2>&1 &
tpu=$!
"$repo/.venv-beam/bin/python" -m pytest -q -m beam --durations=5 tests/test_tfds_builder.py \
    > "$cache_dir/beam.log" 2>&1 &
beam=$!
wait "$tpu" || status=$?
echo "== TPU AOT tests (.venv-tpu)"; cat "$cache_dir/tpu.log"
wait "$beam" || status=$?
echo "== Beam tests (.venv-beam)"; cat "$cache_dir/beam.log"
exit "$status"
