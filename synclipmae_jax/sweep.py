r"""Config sweeps: declared in the config file, expanded into named runs, run, indexed.

A config file declares its sweep next to `get_config` (big_vision's `get_hyper(hyper)`):

  from synclipmae_jax import sweep as hyper

  def get_sweep(arg=None):
    return hyper.product([
        hyper.sweep("masking.mode", ["two_bypass", "uniform_only"]),
        hyper.zipit([hyper.sweep("optim.learning_rate", [1e-3, 3e-4]),
                     hyper.sweep("optim.warmup_steps", [100, 200])]),
    ])

`get_sweep` receives the same variant string as `get_config` and returns a list of override
dicts ({"dotted.field": value}). One command expands it into named runs, each with its own
workdir under --sweep_root, and writes the sweep index `sweep.json` there:

  python -m synclipmae_jax.sweep --config=configs/demo.py:tiny --sweep_root=/tmp/sweep \
      [--run] [--launcher=local|tpu] [--print] [-- --config.num_train_steps=10 ...]

--run trains the runs one after another, each as its own `python -m synclipmae_jax.main`
process (`local`), or hands each to the Cloud TPU pod launcher (`tpu`: launch/tpu_pod.sh
train --wait, then fetch of worker 0's metrics.json; pod options in --launcher_args).
Flags after `--` apply to every run. The index maps run name -> overrides -> workdir ->
status -> the final metrics (each run's `metrics.json`); --print shows it as a table.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import shlex
import subprocess
import sys

INDEX_FILE = "sweep.json"
LAUNCHER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch",
                        "tpu_pod.sh")
DEFAULT_METRICS = "step,loss/total,sync/"


# ---------------------------------------------------------------- declaration (config files)
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


# ---------------------------------------------------------------- expansion
def load_sweep(config_arg: str) -> tuple[list[dict], object]:
  """`path/to/config.py[:variant]` -> (the file's get_sweep(variant), its get_config(variant))."""
  path, _, variant = config_arg.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"config file {path!r} does not exist")
  spec = importlib.util.spec_from_file_location("_swept_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"{path} declares no sweep (a get_sweep(arg) function)")
  arg = variant or None
  return module.get_sweep(arg), module.get_config(arg)


def check_overrides(config, overrides: dict) -> None:
  """Every overridden field must exist in the config (a typo is a ValueError, not a new run)."""
  for key in overrides:
    node = config
    for part in key.split("."):
      if not hasattr(node, "keys") or part not in node:
        raise ValueError(f"sweep field {key!r} is not in the config")
      node = node[part]


def _name_keys(keys: list[str]) -> dict[str, str]:
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


def _value_text(value) -> str:
  return value if isinstance(value, str) else repr(value)


def run_names(runs: list[dict]) -> list[str]:
  """Unique names safe in paths and shells: index, then short field=value pairs joined by '+'."""
  keys = sorted({k for r in runs for k in r})
  short = _name_keys(keys)
  names = []
  for i, run in enumerate(runs):
    parts = [f"{short[k]}={_value_text(run[k])}" for k in keys if k in run]
    names.append(re.sub(r"[^A-Za-z0-9._=+-]", "_", f"{i:02d}-" + "+".join(parts)))
  return names


def override_flags(overrides: dict) -> list[str]:
  """{"a.b": v} -> ["--config.a.b=v"] as `ml_collections.config_flags` parses them."""
  return [f"--config.{k}={_value_text(v)}" for k, v in overrides.items()]


def expand(config_arg: str, sweep_root: str, common_flags=()) -> dict:
  """The sweep index: every run's name, overrides, workdir and training command."""
  runs, config = load_sweep(config_arg)
  if not runs:
    raise ValueError(f"the sweep of {config_arg} has no runs")
  for run in runs:
    check_overrides(config, run)
  sweep_root = os.path.abspath(sweep_root)
  index = {"config": config_arg, "common_flags": list(common_flags), "runs": []}
  for name, overrides in zip(run_names(runs), runs):
    workdir = os.path.join(sweep_root, name)
    index["runs"].append({
        "name": name, "overrides": overrides, "workdir": workdir,
        "flags": [f"--config={config_arg}", f"--workdir={workdir}", *override_flags(overrides),
                  *common_flags],
        "status": "pending", "metrics": {}})
  return index


# ---------------------------------------------------------------- index
def write_index(index: dict, sweep_root: str) -> str:
  os.makedirs(sweep_root, exist_ok=True)
  path = os.path.join(sweep_root, INDEX_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump(index, f, indent=1)
  os.replace(path + ".tmp", path)
  return path


def read_index(sweep_root: str) -> dict:
  path = os.path.join(sweep_root, INDEX_FILE)
  if not os.path.isfile(path):
    raise ValueError(f"no sweep index {path}; expand the sweep first")
  with open(path) as f:
    return json.load(f)


def collect_metrics(index: dict) -> dict:
  """Reads each run's final metrics (its workdir's metrics.json) into the index."""
  for run in index["runs"]:
    path = os.path.join(run["workdir"], "metrics.json")
    if os.path.isfile(path):
      with open(path) as f:
        run["metrics"] = json.load(f)
  return index


def format_table(index: dict, metrics: str = DEFAULT_METRICS) -> str:
  """Run name | each swept field | status | the metrics whose names start with a prefix."""
  prefixes = [p for p in metrics.split(",") if p]
  fields = sorted({k for r in index["runs"] for k in r["overrides"]})
  short = _name_keys(fields)
  names = sorted({m for r in index["runs"] for m in r["metrics"]
                  if any(m == p or m.startswith(p) for p in prefixes)},
                 key=lambda m: (next(i for i, p in enumerate(prefixes) if m.startswith(p)), m))
  header = ["run"] + [short[f] for f in fields] + ["status"] + names
  rows = []
  for r in index["runs"]:
    row = [r["name"]] + [_value_text(r["overrides"][f]) if f in r["overrides"] else "-"
                         for f in fields] + [r["status"]]
    for m in names:
      v = r["metrics"].get(m)
      row.append("-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)))
    rows.append(row)
  widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

  def fmt(row):
    return "  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip()

  return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


# ---------------------------------------------------------------- running
def launch_commands(run: dict, launcher: str, launcher_args=(), dry_run: bool = False) -> list[list[str]]:
  """The commands that train one run: one local process, or the pod launcher's train + fetch."""
  if launcher == "local":
    return [[sys.executable, "-m", "synclipmae_jax.main", *run["flags"]]]
  if launcher == "tpu":
    extra = ["--dry_run"] if dry_run else []
    config = [f for f in run["flags"] if f.startswith("--config=")]  # launcher options
    train_flags = [f for f in run["flags"] if not f.startswith(("--workdir=", "--config="))]
    return [
        ["bash", LAUNCHER, "train", "--wait", *config, f"--workdir={run['workdir']}",
         *launcher_args, *extra, "--", *train_flags],
        ["bash", LAUNCHER, "fetch", f"--workdir={run['workdir']}",
         f"--to={os.path.join(run['workdir'], 'metrics.json')}", *launcher_args, *extra],
    ]
  raise ValueError(f"launcher={launcher!r} must be 'local' or 'tpu'")


def run_sweep(index: dict, sweep_root: str, *, launcher: str = "local", launcher_args=(),
              dry_run: bool = False, rerun: bool = False) -> dict:
  """Trains the runs one after another, updating the index after each."""
  for run in index["runs"]:
    if run["status"] == "done" and not rerun:
      continue
    os.makedirs(run["workdir"], exist_ok=True)
    commands = launch_commands(run, launcher, launcher_args, dry_run)
    if dry_run and launcher == "local":
      print(shlex.join(commands[0]))
      continue
    status = "done"
    with open(os.path.join(run["workdir"], "sweep_run.log"), "a") as log:
      for command in commands:
        log.write("$ " + shlex.join(command) + "\n")
        log.flush()
        rc = subprocess.run(command, stdout=None if dry_run else log,
                            stderr=None if dry_run else subprocess.STDOUT, check=False).returncode
        if rc:
          status = f"failed (exit {rc})"
          break
    run["status"] = "dry_run" if dry_run and status == "done" else status
    write_index(collect_metrics(index), sweep_root)
  return index


def main(argv, flags_) -> None:
  sweep_root = os.path.abspath(flags_.sweep_root)
  common = [a for a in argv[1:] if a != "--"]
  if flags_.config:
    index = expand(flags_.config, sweep_root, common)
    if os.path.isfile(os.path.join(sweep_root, INDEX_FILE)):  # keep the status of finished runs
      previous = {r["name"]: r for r in read_index(sweep_root)["runs"]}
      for run in index["runs"]:
        if run["name"] in previous and previous[run["name"]]["flags"] == run["flags"]:
          run["status"] = previous[run["name"]]["status"]
    write_index(collect_metrics(index), sweep_root)
    print(f"{len(index['runs'])} runs -> {os.path.join(sweep_root, INDEX_FILE)}")
  else:
    index = read_index(sweep_root)
  if flags_.run:
    run_sweep(index, sweep_root, launcher=flags_.launcher,
              launcher_args=shlex.split(flags_.launcher_args), dry_run=flags_.dry_run,
              rerun=flags_.rerun)
  if flags_.print:
    print(format_table(collect_metrics(index), flags_.metrics))


def run() -> None:
  """Command line (`python -m synclipmae_jax.sweep`, console script `synclipmae-sweep`)."""
  from absl import app, flags  # pylint: disable=g-import-not-at-top

  flags.DEFINE_string("config", None, "Config file declaring get_sweep, with its :variant; "
                      "without it the existing index in --sweep_root is used.")
  flags.DEFINE_string("sweep_root", None, "Each run's workdir and the index go here.")
  flags.DEFINE_bool("run", False, "Train the runs (one after another).")
  flags.DEFINE_enum("launcher", "local", ["local", "tpu"], "Where the runs train.")
  flags.DEFINE_string("launcher_args", "", "Options for launch/tpu_pod.sh, e.g. '--name=pod --zone=z'.")
  flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")
  flags.DEFINE_bool("rerun", False, "Also train runs that the index marks done.")
  flags.DEFINE_bool("print", False, "Print the index as a table.")
  flags.DEFINE_string("metrics", DEFAULT_METRICS, "Comma-separated metric names or prefixes to show.")
  flags.mark_flags_as_required(["sweep_root"])
  app.run(lambda argv: main(argv, flags.FLAGS))


if __name__ == "__main__":
  run()
