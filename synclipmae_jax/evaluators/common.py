"""Building the evaluators of `config.evals` by name, and validating their options."""

from __future__ import annotations

import importlib
import json
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


def parse_options(options: list[str]) -> dict:
  """Command-line `key=value` evaluator options -> {key: value}, values parsed as JSON where
  they parse (`--option num_clips=64`, `--option windows=[1,5]`)."""
  out = {}
  for option in options:
    key, sep, value = option.partition("=")
    if not sep or not key:
      raise ValueError(f"--option {option!r} must be key=value")
    try:
      out[key] = json.loads(value)
    except json.JSONDecodeError:
      out[key] = value
  return out


def override(entry, options: dict, config) -> None:
  """Sets `options` on evaluator options `entry` (lists become the tuples the defaults hold,
  dicts update nested options) and validates the result: unknown keys and invalid values are
  refused before anything loads."""
  for key, value in options.items():
    if key not in entry:
      raise ValueError(f"unknown {entry.type} evaluator option {key!r} (known: {sorted(entry.keys())})")
    try:
      if isinstance(value, dict):
        entry[key].update(value)
      else:
        entry[key] = tuple(value) if isinstance(entry[key], tuple) else value
    except (TypeError, AttributeError, KeyError) as e:
      raise ValueError(f"{entry.type} evaluator option {key}={value!r}: {e}") from e
  problems = module(entry.type).validate(entry, config)
  if problems:
    raise ValueError(f"invalid {entry.type} evaluator options: " + "; ".join(problems))
