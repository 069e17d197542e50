"""The sweep index `sweep.json`: run -> overrides -> workdir -> status -> final metrics."""

from __future__ import annotations

import json
import re

from synclipmae_jax import storage
from synclipmae_jax.sweeps import expand

INDEX_FILE = "sweep.json"
DEFAULT_METRICS = "step,loss/total,sync/"


def write_index(index: dict, sweep_root: str) -> str:
  path = storage.path(sweep_root) / INDEX_FILE
  storage.write_text(path, json.dumps(index, indent=1))
  return str(path)


def read_index(sweep_root: str) -> dict:
  path = storage.path(sweep_root) / INDEX_FILE
  if not path.is_file():
    raise ValueError(f"no sweep index {path}; expand the sweep first")
  return json.loads(path.read_text())


def collect_metrics(index: dict) -> dict:
  """Reads each run's final metrics (its workdir's metrics.json) into the index."""
  for run in index["runs"]:
    path = storage.path(run["workdir"]) / "metrics.json"
    if path.is_file():
      run["metrics"] = json.loads(path.read_text())
  return index


def format_table(index: dict, metrics: str = DEFAULT_METRICS, markdown: bool = False) -> str:
  """Run name | each swept field | status | the metrics whose names start with a prefix (in the
  order of the prefixes, numbers within names in numeric order: acc_k1, acc_k5, acc_k15).

  Aligned plain text, or a markdown table (`markdown=True`, for README and results notes).
  """
  prefixes = [p for p in metrics.split(",") if p]
  fields = sorted({k for r in index["runs"] for k in r["overrides"]})
  short = expand.name_keys(fields)
  names = sorted({m for r in index["runs"] for m in r["metrics"]
                  if any(m == p or m.startswith(p) for p in prefixes)},
                 key=lambda m: (next(i for i, p in enumerate(prefixes) if m.startswith(p)),
                                [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", m)]))
  header = ["run"] + [short[f] for f in fields] + ["status"] + names
  rows = []
  for r in index["runs"]:
    row = [r["name"]] + [expand.value_text(r["overrides"][f]) if f in r["overrides"] else "-"
                         for f in fields] + [r["status"]]
    for m in names:
      v = r["metrics"].get(m)
      row.append("-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)))
    rows.append(row)
  if markdown:
    return "\n".join("| " + " | ".join(str(x) for x in row) + " |"
                     for row in [header, ["---"] * len(header)] + rows)
  widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

  def fmt(row):
    return "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip()

  return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])
