"""pytorch-fid's own functions as test peers. The package is installed without its dependencies
(requirements-bridge-nodeps.txt) and cannot be imported: it imports torchvision, which the bridge
does not install. So a function is compiled from the installed module's source, with the names it
uses given in `namespace`."""

import ast
import importlib.util
import os

import pytest


def functions(module_file: str, wanted, namespace: dict) -> dict:
  """{key: function} from `pytorch_fid/<module_file>`: `wanted(node)` returns the key of a
  top-level statement's function to take (or None), its FunctionDef being `wanted`'s second
  result. Skips the test when pytorch-fid is not installed."""
  spec = importlib.util.find_spec("pytorch_fid")
  if spec is None:
    pytest.skip("pytorch-fid is not installed (requirements-bridge-nodeps.txt)")
  path = os.path.join(spec.submodule_search_locations[0], module_file)
  with open(path) as f:
    tree = ast.parse(f.read())
  out = {}
  for node in tree.body:
    key, func = wanted(node)
    if func is not None:
      scope = dict(namespace)
      exec(compile(ast.Module([func], []), path, "exec"), scope)  # pylint: disable=exec-used
      out[key] = scope[func.name]
  return out
