"""Every console script explains itself: `--help` lists each flag its module defines (absl commands
through synclipmae_jax/command_line.py, argparse ones natively), read from the module's source
(issue 31)."""

import concurrent.futures
import os
import re
import subprocess
import sys

import pytest

from command_flags import REPO, SCRIPTS, declared_flags


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
  declared = declared_flags(SCRIPTS[name].split(":")[0])
  assert declared, f"no flag declarations found in {SCRIPTS[name]}"
  listed = set(re.findall(r"--(?:\[no\])?([a-z][a-z0-9_]*)", text))
  assert declared <= listed, f"{name} --help lacks {sorted(declared - listed)}:\n{text[:3000]}"
