r"""The sync comparison table: `synclipmae-sync-table`.

  synclipmae-sync-table --workdir=workdirs/demo --workdir=workdirs/unisync --out=/tmp/sync_table

Every workdir (a SyncLipMAE run, a UniSync run: `configs/unisync.py`, or a SyncNet trained by us:
`configs/syncnet.py`, whose row adds LSE-D / LSE-C) is evaluated by
`synclipmae-sync-eval`'s code on its latest checkpoint (`sync_eval.evaluate`: the run's own sync
protocol and held-out data, or the shards of --eval_pattern for all), then the table gets the
chance row of that protocol (`sync_metrics.chance`) and the paper's Table 1 rows for orientation
(another test set: Hallo3). Writes sync_table.md and sync_table.json (every row's figures, its
workdir, step, task and held-out shards). The runs must share the protocol's options (lags, windows,
tolerance, pool): the tool stops, naming the option, when they differ.
"""

from __future__ import annotations

import json
import os

from synclipmae_jax import command_line, sync_metrics
from synclipmae_jax.tools import sync_eval

# Paper Table 1 (../shared/papers/synclipmae.txt, its first results table): K = 1 / 5 / 15 Acc (%)
# and Offset, R-precision@1/2/3 (%), pool 32.
PAPER_TABLE_1 = {
    "SyncNet": ((20.37, 5.04), (24.18, 4.03), (30.03, 3.02), (7.47, 12.77, 17.72)),
    "StableSyncNet": ((27.95, 2.78), (28.60, 2.72), (31.66, 2.72), (14.40, 25.65, 34.52)),
    "SyncLipMAE": ((52.53, 2.66), (68.41, 1.73), (82.27, 0.93), (40.18, 61.48, 73.49)),
}
PROTOCOL = ("windows", "max_lag", "max_true_lag", "tolerance", "pool_size", "ks", "num_clips",
            "trials_per_clip", "seed")


def build(workdirs: list[str], *, eval_pattern: str = "") -> dict:
  """The rows of every workdir, the chance row and the paper's rows."""
  rows, protocol = [], None
  for workdir in workdirs:
    report = sync_eval.evaluate(workdir, eval_pattern=eval_pattern)
    options = {name: report["options"][name] for name in PROTOCOL}
    if protocol is None:
      protocol = options
    for name, value in options.items():
      if value != protocol[name]:
        raise ValueError(f"{workdir}: evals.sync.{name}={value} differs from {workdirs[0]}'s "
                         f"{protocol[name]}: the rows would not be comparable")
    rows.append({"name": f"{os.path.basename(os.path.normpath(workdir))} ({report['task']})",
                 "workdir": report["workdir"], "step": report["step"], "task": report["task"],
                 "eval_shards": report["eval_shards"], "metrics": report["metrics"]})
  return {"protocol": protocol, "rows": rows, "chance": chance_row(protocol),
          "paper_table_1": PAPER_TABLE_1}


def chance_row(protocol: dict) -> dict:
  """The table's chance row for a protocol (the evals.sync options in PROTOCOL): the metrics a
  guess scores (`sync_metrics.chance`), in percent where the metrics are."""
  guess = sync_metrics.chance(max_lag=protocol["max_lag"], max_true_lag=protocol["max_true_lag"],
                              tolerance=protocol["tolerance"], pool_size=protocol["pool_size"],
                              ks=protocol["ks"])
  chance = {f"sync/acc_k{k}": 100 * guess["acc"] for k in protocol["windows"]}
  chance.update({f"sync/offset_k{k}": guess["offset"] for k in protocol["windows"]})
  chance.update({f"sync/rprec@{k}": 100 * guess[f"rprec@{k}"] for k in protocol["ks"]})
  return chance


def markdown(table: dict) -> str:
  p = table["protocol"]
  lse = any("sync/lse_d" in r["metrics"] for r in table["rows"])
  head = ["model"] + [f"K={k} Acc / Offset" for k in p["windows"]] + \
      ["R-precision@" + " / ".join(str(k) for k in p["ks"])] + (["LSE-D / LSE-C"] if lse else [])
  lines = [f"Lags -{p['max_lag']}..{p['max_lag']}, true lags up to ±{p['max_true_lag']}, "
           f"tolerance ±{p['tolerance']}, {p['num_clips']} clips x {p['trials_per_clip']} trials, "
           f"pool {p['pool_size']}.", "", "| " + " | ".join(head) + " |",
           "| " + " | ".join(["---"] * len(head)) + " |"]

  def row(name, m):
    cells = [f"{m[f'sync/acc_k{k}']:.1f} % / {m[f'sync/offset_k{k}']:.2f}" for k in p["windows"]]
    rprec = " / ".join(f"{m[f'sync/rprec@{k}']:.1f}" for k in p["ks"])
    cells.append(f"{rprec} %")
    if lse:
      cells.append(f"{m['sync/lse_d']:.2f} / {m['sync/lse_c']:.2f}" if "sync/lse_d" in m else "")
    return f"| {name} | " + " | ".join(cells) + " |"

  lines += [row(r["name"] + f", step {r['step']}", r["metrics"]) for r in table["rows"]]
  lines.append(row("chance", table["chance"]))
  if tuple(p["windows"]) == (1, 5, 15) and tuple(p["ks"]) == (1, 2, 3):
    for name, (k1, k5, k15, rprec) in table["paper_table_1"].items():
      cells = [f"{a:.1f} % / {o:.2f}" for a, o in (k1, k5, k15)]
      cells.append(" / ".join(f"{r:.1f}" for r in rprec) + " %")
      lines.append(f"| *paper Table 1 (Hallo3 test set): {name}* | " + " | ".join(cells)
                   + (" | |" if lse else " |"))
  return "\n".join(lines) + "\n"


def main(flags_) -> None:
  table = build(flags_.workdir, eval_pattern=flags_.eval_pattern)
  os.makedirs(flags_.out, exist_ok=True)
  text = markdown(table)
  with open(os.path.join(flags_.out, "sync_table.md"), "w") as f:
    f.write(text)
  with open(os.path.join(flags_.out, "sync_table.json"), "w") as f:
    json.dump(table, f, indent=1)
  print(text)
  print(f"wrote {flags_.out}/sync_table.{{md,json}}")


def run() -> None:
  """Command line (`python -m synclipmae_jax.tools.sync_table`, console script `synclipmae-sync-table`)."""
  from absl import flags  # pylint: disable=import-outside-toplevel

  flags.DEFINE_multi_string("workdir", None, "A training run's workdir (repeat for every row).")
  flags.DEFINE_string("eval_pattern", "", "Held-out ArrayRecord shards for every row instead of "
                      "each run's own.")
  flags.DEFINE_string("out", "sync_table", "Output folder.")
  flags.mark_flags_as_required(["workdir"])
  command_line.run(lambda argv: main(flags.FLAGS), __name__)


if __name__ == "__main__":
  run()
