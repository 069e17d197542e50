"""Declaring a sweep in a config file (big_vision's `get_hyper(hyper)`).

A config file declares its sweep next to `get_config`; the expander passes this module as
`hyper`, so a config file imports nothing to declare one:

  def get_hyper(hyper):
    return hyper.product([
        hyper.sweep("masking.mode", ["two_bypass", "uniform_only"]),
        hyper.zipit([hyper.sweep("optim.learning_rate", [1e-3, 3e-4]),
                     hyper.sweep("optim.warmup_steps", [100, 200])]),
    ])

Each function returns a list of runs, a run being a dict of overrides {"dotted.field": value}.
"""

from __future__ import annotations

import itertools


def sweep(key: str, values) -> list[dict]:
  """One field over several values: [{key: v} for v in values]."""
  values = list(values)
  if not values:
    raise ValueError(f"sweep over {key!r} has no values")
  return [{key: v} for v in values]


def fixed(key: str, value) -> list[dict]:
  """One field set to one value in every run."""
  return [{key: value}]


def _merge(dicts) -> dict:
  merged = {}
  for d in dicts:
    clash = set(merged) & set(d)
    if clash:
      raise ValueError(f"fields {sorted(clash)} are set twice in one run")
    merged.update(d)
  return merged


def product(sweeps) -> list[dict]:
  """Every combination (cartesian product) of the given sweeps, first one outermost."""
  return [_merge(combo) for combo in itertools.product(*sweeps)]


def zipit(sweeps) -> list[dict]:
  """The i-th runs of the given sweeps together; they must have the same length."""
  lengths = [len(s) for s in sweeps]
  if len(set(lengths)) > 1:
    raise ValueError(f"zipit needs sweeps of equal length, got lengths {lengths}")
  return [_merge(runs) for runs in zip(*sweeps)]


def chainit(sweeps) -> list[dict]:
  """The runs of the given sweeps one after another (e.g. ablations that set different fields)."""
  return [run for s in sweeps for run in s]
