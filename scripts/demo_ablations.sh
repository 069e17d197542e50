#!/usr/bin/env bash
# The demo's ablation sweep (configs/demo.py get_hyper): 9 runs of the demo one after another on
# this machine's CPU, then the table of their held-out metrics.
#   bash scripts/demo_ablations.sh [SWEEP_ROOT]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="${1:-$repo/workdirs/demo_ablations}"
set --  # setup_env.sh reads extras from the positional arguments: none here
. "$repo/scripts/setup_env.sh"
export TF_CPP_MIN_LOG_LEVEL=3
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
cd "$repo"
python -m synclipmae_jax.sweeps.launch --config="$repo/configs/demo.py" --sweep_root="$root" --run \
  --print --metrics=sync/acc,sync/offset,sync/rprec@1,factors/,perf/loop_seconds
