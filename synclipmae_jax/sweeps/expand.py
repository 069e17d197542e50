"""Expanding a config file's sweep into named runs, each with its own workdir.

`expand("configs/demo.py[:variant]", sweep_root)` calls the file's `get_hyper(hyper)` with
`sweeps.hyper`, checks every overridden field against the file's `get_config(variant)`
and returns the sweep index: per run its name, overrides, workdir and training flags.
"""

from __future__ import annotations

import os
import re

from synclipmae_jax import config_files, storage
from synclipmae_jax.sweeps import hyper


def load_sweep(config_arg: str) -> tuple[list[dict], object]:
  """`path/to/config.py[:variant]` -> (the file's get_hyper(hyper), its get_config(variant))."""
  path, _, variant = config_arg.partition(":")
  module = config_files.module_of(path)
  if not hasattr(module, "get_hyper"):
    raise ValueError(f"{path} declares no sweep (a get_hyper(hyper) function)")
  return module.get_hyper(hyper), module.get_config(variant or None)


def check_overrides(config, overrides: dict) -> None:
  """Every overridden field must exist in the config (a typo is a ValueError, not a new run)."""
  for key in overrides:
    node = config
    for part in key.split("."):
      if not hasattr(node, "keys") or part not in node:
        raise ValueError(f"sweep field {key!r} is not in the config")
      node = node[part]


def name_keys(keys: list[str]) -> dict[str, str]:
  """Shortest dotted suffix of each key that no other key of the sweep shares."""
  names = {}
  for key in keys:
    parts = key.split(".")
    for n in range(1, len(parts) + 1):
      suffix = ".".join(parts[-n:])
      if not any(other != key and (other == suffix or other.endswith("." + suffix))
                 for other in keys):
        break
    names[key] = suffix
  return names


def value_text(value) -> str:
  return value if isinstance(value, str) else repr(value)


def run_names(runs: list[dict]) -> list[str]:
  """Unique names safe in paths and shells: index, then short field=value pairs joined by '+'."""
  keys = sorted({k for r in runs for k in r})
  short = name_keys(keys)
  names = []
  for i, run in enumerate(runs):
    parts = [f"{short[k]}={value_text(run[k])}" for k in keys if k in run]
    names.append(re.sub(r"[^A-Za-z0-9._=+-]", "_", f"{i:02d}-" + "+".join(parts)))
  return names


def override_flags(overrides: dict) -> list[str]:
  """{"a.b": v} -> ["--config.a.b=v"] as `ml_collections.config_flags` parses them."""
  return [f"--config.{k}={value_text(v)}" for k, v in overrides.items()]


def expand(config_arg: str, sweep_root: str, common_flags=()) -> dict:
  """The sweep index: every run's name, overrides, workdir and training command."""
  runs, config = load_sweep(config_arg)
  if not runs:
    raise ValueError(f"the sweep of {config_arg} has no runs")
  for run in runs:
    check_overrides(config, run)
  sweep_root = str(storage.path(sweep_root))
  index = {"config": config_arg, "common_flags": list(common_flags), "runs": []}
  for name, overrides in zip(run_names(runs), runs):
    workdir = os.path.join(sweep_root, name)
    index["runs"].append({
        "name": name, "overrides": overrides, "workdir": workdir,
        "flags": [f"--config={config_arg}", f"--workdir={workdir}", *override_flags(overrides),
                  *common_flags],
        "status": "pending", "metrics": {}})
  return index
