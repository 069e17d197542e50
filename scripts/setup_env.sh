#!/usr/bin/env bash
# Idempotent set-up: a virtualenv in .venv with the pinned requirements (and extras named
# as arguments, e.g. `bridge` for the PyTorch parity tests). Safe to run again: pip only
# installs what is missing. Source it (`. scripts/setup_env.sh`) to stay in the venv.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SYNCLIPMAE_VENV:-$repo/.venv}"
# SYNCLIPMAE_BASE_VENV=DIR: the venv is a layer on DIR's packages (a .pth file adds DIR's
# site-packages, its own .pth files included), so that pip installs only what DIR lacks: the tpu
# extra's venv is libtpu on top of .venv (seconds, not a second copy of TensorFlow and torch).
base="${SYNCLIPMAE_BASE_VENV:-}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ -n "$base" ]; then
  base_site="$("$base/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  own_site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "import site; site.addsitedir('$base_site')" > "$own_site/synclipmae_base_venv.pth"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"
stamp="$venv/.synclipmae-installed"
want="$(cat "$repo/pyproject.toml" "$repo/requirements.txt" "$repo"/requirements-*.txt 2>/dev/null | sha1sum | cut -c1-16) $* ${base:+on $base}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  python -m pip install -q --upgrade pip
  python -m pip install -q -r "$repo/requirements.txt"
  for extra in "$@"; do
    python -m pip install -q -r "$repo/requirements-$extra.txt"
    # Packages whose declared dependencies we do not want (test peers): requirements-X-nodeps.txt.
    if [ -f "$repo/requirements-$extra-nodeps.txt" ]; then
      python -m pip install -q --no-deps -r "$repo/requirements-$extra-nodeps.txt"
    fi
  done
  python -m pip install -q --no-deps -e "$repo"
  echo "$want" > "$stamp"
fi
# The allocator (issue 16): XLA:CPU allocates a step's temporaries afresh at every execution and
# glibc serves blocks that large with mmap, so each step page-faults all of them in again
# (~97 000 minor faults per demo step). jemalloc keeps freed pages: the demo step runs 1.4x
# faster and the system time of a step drops from 0.34 s to 0.02 s (BENCHMARKS.md (g)). Debian's
# libjemalloc2 is installed when we may (root with apt-get); elsewhere install it yourself (any
# distribution's jemalloc, or tcmalloc via SYNCLIPMAE_MALLOC=/path/libtcmalloc_minimal.so.4).
# SYNCLIPMAE_MALLOC=glibc keeps glibc's allocator.
find_jemalloc() {  # never fails (this file is sourced under set -e): prints the path or nothing
  { ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null | awk '/libjemalloc\.so\.2 /{lib=$NF} END{print lib}' || true
}
if [ "${SYNCLIPMAE_MALLOC:-}" != "glibc" ]; then
  malloc_lib="${SYNCLIPMAE_MALLOC:-$(find_jemalloc)}"
  # Install once per venv: a host without the package (offline, no apt) is not asked again.
  if [ -z "$malloc_lib" ] && [ ! -f "$venv/.synclipmae-no-jemalloc" ] && [ "$(id -u)" = 0 ] \
      && command -v apt-get >/dev/null; then
    { apt-get install -y -qq libjemalloc2 || { apt-get update -qq && apt-get install -y -qq libjemalloc2; }; } >/dev/null 2>&1 || true
    malloc_lib="$(find_jemalloc)"
    [ -n "$malloc_lib" ] || touch "$venv/.synclipmae-no-jemalloc"
  fi
  if [ -n "$malloc_lib" ] && [ -f "$malloc_lib" ]; then
    case ":${LD_PRELOAD:-}:" in *":$malloc_lib:"*) ;; *) export LD_PRELOAD="$malloc_lib${LD_PRELOAD:+:$LD_PRELOAD}" ;; esac
    # jemalloc: never return freed pages to the kernel (the next step reuses them).
    export MALLOC_CONF="${MALLOC_CONF:-dirty_decay_ms:-1,muzzy_decay_ms:-1}"
  else
    echo "setup_env.sh: jemalloc not found, using glibc malloc (CPU steps ~1.4x slower; see docs/training.md)" >&2
  fi
fi
