#!/usr/bin/env bash
# Idempotent set-up: a virtualenv in .venv with the pinned requirements (and extras named
# as arguments, e.g. `bridge` for the PyTorch parity tests). Safe to run again: pip only
# installs what is missing. Source it (`. scripts/setup_env.sh`) to stay in the venv.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SYNCLIPMAE_VENV:-$repo/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"
stamp="$venv/.synclipmae-installed"
want="$(cat "$repo/pyproject.toml" "$repo/requirements.txt" "$repo"/requirements-*.txt 2>/dev/null | sha1sum | cut -c1-16) $*"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  python -m pip install -q --upgrade pip
  python -m pip install -q -r "$repo/requirements.txt"
  for extra in "$@"; do
    python -m pip install -q -r "$repo/requirements-$extra.txt"
  done
  python -m pip install -q --no-deps -e "$repo"
  echo "$want" > "$stamp"
fi
