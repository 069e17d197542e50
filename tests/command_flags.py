"""The flags a command's module declares, read from its source without importing it (importing an
absl command defines its flags, several would clash in one process, and synclipmae_torch imports
torch): argparse `add_argument("--x")` options, or else absl `DEFINE_*("x", ...)` flags. Shared by
tests/test_command_help.py (each flag is listed by `--help`) and tests/test_docs.py (each flag the
docs give a command is one it declares), so that every documented flag is in `--help` (issue 31)."""

from __future__ import annotations

import os
import re
import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(REPO, "pyproject.toml"), "rb") as _f:
  SCRIPTS: dict[str, str] = tomllib.load(_f)["project"]["scripts"]  # name -> "module:function"
PACKAGES = ("data_pipelines", "synclipmae_jax", "synclipmae_torch")  # the project's own
ARGPARSE = re.compile(r"""add_argument\(\s*["']--([a-z][a-z0-9_]*)["']""")
ABSL = re.compile(r"""DEFINE_\w+\(\s*["']([a-z][a-z0-9_]*)["']""")
HELPER_CALL = re.compile(r"\b(\w+)\.(define_\w*flags)\(flags")  # a helper defining absl flags


def module_path(module: str) -> str | None:
  """The file `python -m module` runs, for a module of the project's packages (found by path,
  not imported), or None when there is none."""
  base = os.path.join(REPO, *module.split("."))
  for path in (base + ".py", os.path.join(base, "__main__.py")):
    if os.path.isfile(path):
      return path
  return None


def _source(module: str) -> str:
  path = module_path(module)
  if path is None:
    raise ModuleNotFoundError(f"no module {module} in {REPO}")
  with open(path) as f:
    return f.read()


def _imported(source: str, alias: str) -> str:
  """The module that `alias` names in `source` (`from a.b import alias`, `import a.b as alias`)."""
  for package, names in re.findall(r"^from ([\w.]+) import ([\w, ]+)$", source, re.MULTILINE):
    for name in names.split(","):
      imported, _, local = name.strip().partition(" as ")
      if (local or imported) == alias:
        return f"{package}.{imported}"
  match = re.search(rf"^import ([\w.]+) as {alias}$", source, re.MULTILINE)
  if match:
    return match.group(1)
  raise LookupError(f"cannot tell which module {alias} is")


def _helper_flags(source: str) -> set[str]:
  """The absl flags defined by the flag-defining helpers `source` calls, e.g.
  `prepare.define_video_preparation_flags(flags)`: the body of that function in its module."""
  found = set()
  for alias, function in set(HELPER_CALL.findall(source)):
    helper = _source(_imported(source, alias))
    match = re.search(rf"^def {function}\(.*?(?=^\S)", helper + "\nEND", re.MULTILINE | re.DOTALL)
    if not match:
      raise LookupError(f"no function {function} in {_imported(source, alias)}")
    found |= set(ABSL.findall(match.group(0)))
  return found


def _imported_flags(source: str) -> set[str]:
  """The absl flags that the project modules `source` imports define at import (at module level:
  synclipmae-aot-remat takes synclipmae-aot's flags by importing `tools/aot.py`)."""
  found = set()
  for package, names in re.findall(r"^from ([\w.]+) import ([\w, ]+)$", source, re.MULTILINE):
    for name in names.split(","):
      module = f"{package}.{name.strip().partition(' as ')[0]}"
      if package.split(".")[0] in PACKAGES and module_path(module):
        imported = _source(module)
        found |= {m.group(1) for m in ABSL.finditer(imported)
                  if imported[imported.rfind("\n", 0, m.start()) + 1] not in " \t"}
  return found


def declared_flags(module: str) -> set[str]:
  """The flags `module` declares: its argparse options, or else its absl flags, with those of
  the flag-defining helpers it calls and of the command modules it imports."""
  source = _source(module)
  return (set(ARGPARSE.findall(source))
          or set(ABSL.findall(source)) | _helper_flags(source) | _imported_flags(source))


def is_absl(module: str) -> bool:
  """Whether `module`'s flags are absl's (it then also takes absl's own, e.g. --alsologtostderr)."""
  source = _source(module)
  return not ARGPARSE.search(source) and bool(ABSL.search(source))
