#!/usr/bin/env bash
# The demo: set up (idempotent), then train SyncLipMAE on the built-in synthetic talking
# faces on this machine's CPU and print the held-out sync metrics.
#   bash scripts/demo.sh [WORKDIR] [--config.x=y ...]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
workdir="${1:-$repo/workdirs/demo}"
shift || true
overrides=("$@")
set --  # setup_env.sh reads extras from the positional arguments: none here
. "$repo/scripts/setup_env.sh"
export TF_CPP_MIN_LOG_LEVEL=3
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"  # the CPU demo: no probing for accelerators
python -m synclipmae_jax.main --config="$repo/configs/demo.py" --workdir="$workdir" "${overrides[@]}"
python - "$workdir/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"\nheld-out sync after {m['step']} steps, {m['perf/loop_seconds'] / 60:.1f} min of training "
      "(tokens of the frozen model; protocol in docs/evaluation.md):")
for k in (1, 5, 15):
  print(f"  K={k:2d}: Acc {m[f'sync/acc_k{k}']:5.1f} %   Offset {m[f'sync/offset_k{k}']:.2f} frames")
print("  R-precision (pool 32): " + "  ".join(f"@{k} {m[f'sync/rprec@{k}']:.1f} %" for k in (1, 2, 3)))
PY
