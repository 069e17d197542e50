"""Every console script explains itself: `--help` lists each flag its module defines (absl commands
through synclipmae_jax/command_line.py, argparse ones natively), read from the module's source
(issue 31)."""

import concurrent.futures
import importlib.util
import os
import re
import subprocess
import sys
import tomllib

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(REPO, "pyproject.toml"), "rb") as _f:
  SCRIPTS = tomllib.load(_f)["project"]["scripts"]
ARGPARSE = re.compile(r"""add_argument\(\s*["']--([a-z][a-z0-9_]*)["']""")
ABSL = re.compile(r"""DEFINE_\w+\(\s*["']([a-z][a-z0-9_]*)["']""")


def _declared_flags(entry_point: str) -> set[str]:
  """The flags the command's module declares: its argparse options, or else its absl flags."""
  module = entry_point.split(":")[0]
  with open(importlib.util.find_spec(module).origin) as f:
    source = f.read()
  return set(ARGPARSE.findall(source)) or set(ABSL.findall(source))


@pytest.fixture(scope="module")
def helps():
  """Each script's `--help` output (status, text), three scripts at a time: each imports jax or
  torch (a few hundred MB each), beside the other test worker's memory."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  env.pop("XLA_FLAGS", None)

  def help_of(item):
    name, entry_point = item
    module, function = entry_point.split(":")
    result = subprocess.run(
        [sys.executable, "-c", f"import sys; from {module} import {function} as run; "
         f"sys.argv[0] = {name!r}; run()", "--help"], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=600)
    return name, (result.returncode, result.stdout + result.stderr)

  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    return dict(pool.map(help_of, SCRIPTS.items()))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_lists_the_commands_own_flags(helps, name):
  status, text = helps[name]  # absl's --help exits with 1, argparse's with 0
  assert status in (0, 1) and "Traceback" not in text, text[-2000:]
  declared = _declared_flags(SCRIPTS[name])
  assert declared, f"no flag declarations found in {SCRIPTS[name]}"
  listed = set(re.findall(r"--(?:\[no\])?([a-z][a-z0-9_]*)", text))
  assert declared <= listed, f"{name} --help lacks {sorted(declared - listed)}:\n{text[:3000]}"
