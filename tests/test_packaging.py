"""The console scripts of pyproject.toml exist; README and docs/ name no command but these."""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def console_scripts() -> dict[str, str]:
  return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_console_script_is_a_function():
  # Read, not imported: the entry modules define absl flags of the same names at import.
  for name, target in console_scripts().items():
    module_name, function = target.split(":")
    spec = importlib.util.find_spec(module_name)
    assert spec is not None and spec.origin, f"{name}: no module {module_name}"
    tree = ast.parse(pathlib.Path(spec.origin).read_text())
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.args.args}
    assert function in functions, f"{name}: {module_name} has no argument-free {function}()"


def test_readme_commands_are_console_scripts():
  text = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted(ROOT.glob("docs/*.md"))])
  text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets: their anchors spell headings
  named = set(re.findall(r"\b(synclipmae-[a-z-]*[a-z])\b", text))
  named -= {"synclipmae-jax"}  # the project's name
  assert named, "README and docs/ name no console script"
  assert named <= set(console_scripts()), sorted(named - set(console_scripts()))
