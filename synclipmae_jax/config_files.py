"""Config files in the big_vision way, read outside absl's flags: `path/to/config.py[:variant]`
-> the file's module or its `get_config(variant)` (what `--config=...` gives the trainer)."""

from __future__ import annotations

import importlib.util
import os


def module_of(path: str):
  """The config file at `path`, imported (its get_config, get_hyper, ...)."""
  if not os.path.isfile(path):
    raise ValueError(f"config file {path!r} does not exist")
  spec = importlib.util.spec_from_file_location("_config_file", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load(config_arg: str):
  """`path/to/config.py[:variant]` -> its get_config(variant)."""
  path, _, variant = config_arg.partition(":")
  return module_of(path).get_config(variant or None)
