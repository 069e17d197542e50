#!/usr/bin/env bash
# The tests: set up (idempotent, with the PyTorch bridge extra for the parity tests), then
# the fast suite and the slow end-to-end tests.  bash scripts/test.sh [pytest args]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$repo/scripts/setup_env.sh" bridge
cd "$repo"
export TF_CPP_MIN_LOG_LEVEL=3
python -m pytest -q -n 2 "$@"
python -m pytest -q -m slow "$@"
