"""Building the evaluators of `config.evals` by name, and validating their options."""

from __future__ import annotations

import importlib
import pkgutil

from synclipmae_jax import evaluators as _package

TYPES = tuple(sorted(m.name for m in pkgutil.iter_modules(_package.__path__) if m.name != "common"))


def module(type_name: str):
  """The evaluator module named `type_name` (one of TYPES)."""
  if type_name not in TYPES:
    raise ValueError(f"unknown evaluator type {type_name!r} (known: {TYPES})")
  return importlib.import_module(f"synclipmae_jax.evaluators.{type_name}")


def validate(config) -> list[str]:
  """Problems of every `config.evals` entry: its type, its period, and its own options."""
  errors = []
  for name, entry in config.evals.items():
    if entry.get("type") not in TYPES:
      errors.append(f"evals.{name}.type={entry.get('type')!r} must be one of {TYPES}")
      continue
    if entry.get("every_steps", 0) <= 0:
      errors.append(f"evals.{name}.every_steps={entry.get('every_steps')} must be > 0")
    errors.extend(f"evals.{name}.{problem}" for problem in module(entry.type).validate(entry, config))
  return errors


def from_config(config, **kwargs) -> dict:
  """{name: Evaluator} for every entry of `config.evals`; kwargs go to each constructor."""
  return {name: module(entry.type).Evaluator(entry, config, **kwargs)
          for name, entry in config.evals.items()}
