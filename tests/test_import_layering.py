"""Imports run one way: data_pipelines <- synclipmae_jax <- tools (checked on the source with `ast`).

Each layer lists the top-level packages its modules must not import; `imported_packages`
resolves absolute imports and relative ones (`from .. import x`) to the top-level package
they reach, so a rule is one line of `FORBIDDEN`.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Folder (relative to the repository root) -> top-level packages its modules may not import.
FORBIDDEN = {
    "data_pipelines": {"synclipmae_jax", "configs"},
}


BEYOND_TOP = ".."  # what a relative import climbing out of the top-level package names


def python_files(folder: str) -> list[pathlib.Path]:
  return sorted((ROOT / folder).rglob("*.py"))


def imported_packages(path: pathlib.Path, root: pathlib.Path = ROOT) -> set[str]:
  """Top-level packages named by every import statement of the module at `path`.

  Relative imports are resolved against the module's own package (its folder under `root`),
  so `from ..x import y` in data_pipelines/prepare/z.py names `data_pipelines`; one that
  climbs out of the top-level package names BEYOND_TOP. `importlib.import_module("x.y")` and
  `__import__("x")` with a literal name count as imports too.
  """
  package = path.relative_to(root).parent.parts  # an __init__.py's package is its folder too
  found = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
    if isinstance(node, ast.Import):
      found.update(alias.name.split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level == 0:
        found.add(node.module.split(".")[0])
        continue
      climb = node.level - 1
      found.add(package[0] if climb < len(package) else BEYOND_TOP)
    elif (isinstance(node, ast.Call) and ast.unparse(node.func) in ("importlib.import_module",
                                                                    "__import__")
          and node.args and isinstance(node.args[0], ast.Constant)
          and isinstance(node.args[0].value, str)):
      found.add(node.args[0].value.split(".")[0])
  return found


def _write_module(tmp_root: pathlib.Path, relative: str, source: str) -> pathlib.Path:
  path = tmp_root / relative
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(source)
  return path


def test_imported_packages_resolves_every_import_form(tmp_path):
  source = ("import numpy as np, os.path\n"
            "from synclipmae_jax.models import vit\n"
            "from . import sibling\n"
            "from ..schema import Clip\n"
            "def f():\n  import configs.demo\n"
            "importlib.import_module('flax.linen')\n")
  path = _write_module(tmp_path, "data_pipelines/prepare/m.py", source)
  assert imported_packages(path, tmp_path) == {"numpy", "os", "synclipmae_jax", "data_pipelines",
                                               "configs", "flax"}
  beyond = _write_module(tmp_path, "data_pipelines/prepare/n.py", "from ...configs import demo\n")
  assert imported_packages(beyond, tmp_path) == {BEYOND_TOP}


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layer_imports_nothing_from_the_layers_above(folder):
  files = python_files(folder)
  assert files, f"no module found under {folder}/"
  forbidden = FORBIDDEN[folder] | {BEYOND_TOP}
  offenders = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & forbidden) for p in files}
  assert not {k: v for k, v in offenders.items() if v}, offenders
