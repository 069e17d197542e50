"""`synclipmae-run`'s report: W/report.md and its figures (PNG) in W/figures/, from what the stages
of `from_videos.py` wrote into the workdir W.

Sections: the data (videos kept and rejected and why: the preparation's summary.json and
rejects.tsv), the training (the config, the loss curves and the sync accuracy the run logged, read
from its TensorBoard events), the sync evaluation on the held-out speakers (the table with the
chance row of the same protocol, `sync_table.chance_row`, and the distance-vs-lag curves of a few
held-out trials), the reconstructions the run drew at its last step, the export's folder, what was
not run and why, and the stages with their times.
"""

from __future__ import annotations

import json
import os

import numpy as np
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from data_pipelines.prepare import report as prepare_report
from data_pipelines.prepare import shards
from synclipmae_jax.tools import sync_eval, sync_table

FIGURES = "figures"
LAG_CURVES = 4  # held-out trials whose distance-vs-lag curves the report shows
RECONSTRUCTIONS_TAG = "reconstructions"  # the image the pretraining task writes (tasks/pretrain.py)


def read_events(folder: str) -> tuple[dict[str, list[tuple[int, float]]], dict[str, bytes]]:
  """The TensorBoard events of a training workdir: ({scalar tag: [(step, value)] by step},
  {image tag: the PNG of its last step})."""
  events = event_accumulator.EventAccumulator(folder, size_guidance={event_accumulator.TENSORS: 0})
  events.Reload()
  scalars, images = {}, {}
  for tag in events.Tags()["tensors"]:
    series = sorted(events.Tensors(tag), key=lambda e: e.step)
    proto = series[-1].tensor_proto
    if proto.string_val:  # an image summary: [width, height, PNG...]
      if len(proto.string_val) >= 3:
        images[tag] = proto.string_val[2]
      continue
    values = [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in series]
    if all(np.ndim(v) == 0 and np.issubdtype(np.asarray(v).dtype, np.number) for _, v in values):
      scalars[tag] = [(step, float(v)) for step, v in values]
  return scalars, images


def sync_table_of(report: dict) -> dict:
  """`sync_table.markdown`'s table for one sync-eval report: its row and the protocol's chance."""
  protocol = {name: report["options"][name] for name in sync_table.PROTOCOL}
  chance = sync_table.chance_row(protocol)
  row = {"name": "this run (held-out speakers)", "step": report["step"],
         "metrics": report["metrics"]}
  return {"protocol": protocol, "rows": [row], "chance": chance,
          "paper_table_1": sync_table.PAPER_TABLE_1}


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
  return pyplot


def _save(fig, path: str) -> None:
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  _pyplot().close(fig)


def data_figure(summary: dict, path: str) -> None:
  """Hours kept per split and rejected per reason; rejected ranges counted per reason."""
  plt = _pyplot()
  fig, (hours_ax, count_ax) = plt.subplots(1, 2, figsize=(9, 3))
  rejected = summary["rejected"]
  labels = ["kept"] + [f"rejected: {r}" for r in rejected]
  hours = [summary["hours_kept"]] + [v["hours"] for v in rejected.values()]
  hours_ax.barh(labels, [60 * h for h in hours], color=["tab:green"] + ["tab:red"] * len(rejected))
  hours_ax.invert_yaxis()
  hours_ax.set(xlabel="minutes of video", title=f"{60 * summary['hours_decoded']:.1f} min decoded")
  if rejected:
    count_ax.barh(list(rejected), [v["count"] for v in rejected.values()], color="tab:red")
    count_ax.invert_yaxis()
    count_ax.set(xlabel="rejected files or ranges", title="rejects by reason")
  else:
    count_ax.text(0.5, 0.5, "nothing rejected", ha="center", va="center")
    count_ax.axis("off")
  _save(fig, path)


def curves_figure(scalars: dict, prefix: str, ylabel: str, path: str, log: bool = False) -> bool:
  """One line per scalar tag starting with `prefix`, against the step (`log`: on a log scale when
  every value is positive); False when there is none."""
  tags = sorted(t for t in scalars if t.startswith(prefix))
  if not tags:
    return False
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 3.2))
  for tag in tags:
    steps, values = zip(*scalars[tag])
    ax.plot(steps, values, "o-" if len(steps) < 20 else "-", ms=3, label=tag)
  ax.set(xlabel="step", ylabel=ylabel)
  if log and all(v > 0 for tag in tags for _, v in scalars[tag]):
    ax.set_yscale("log")  # the weighted total and its terms differ by orders of magnitude
  ax.legend(fontsize=7)
  _save(fig, path)
  return True


def sync_figure(table: dict, path: str) -> None:
  """Acc against the window K on the held-out speakers, with the protocol's chance."""
  plt = _pyplot()
  windows = table["protocol"]["windows"]
  metrics = table["rows"][0]["metrics"]
  fig, ax = plt.subplots(figsize=(4, 3))
  ax.plot(windows, [metrics[f"sync/acc_k{k}"] for k in windows], "o-", label="this run")
  ax.plot(windows, [table["chance"][f"sync/acc_k{k}"] for k in windows], "k--", label="chance")
  ax.set(xlabel="window K (frames)", ylabel="Acc (%)", ylim=(0, 100), xticks=windows,
         title=f"held-out speakers, step {table['rows'][0]['step']}")
  ax.legend(fontsize=7)
  _save(fig, path)


def _image(path: str, array: np.ndarray) -> None:
  from PIL import Image  # pylint: disable=import-outside-toplevel
  Image.fromarray(array).save(path)


def write(workdir: str, outcomes: dict[str, dict], *, folders: dict[str, str], report_name: str,
          config_name: str) -> list[str]:
  """Writes W/`report_name` and its figures from the stages' `outcomes` (`from_videos.Pipeline`)
  and their `folders` (stage -> folder in W); returns the figures' paths relative to W."""
  os.makedirs(os.path.join(workdir, FIGURES), exist_ok=True)
  figures = []

  def figure(name: str) -> str:
    return os.path.join(workdir, FIGURES, name)

  def link(name: str, caption: str) -> str:
    figures.append(os.path.join(FIGURES, name))
    return f"![{caption}]({FIGURES}/{name})"

  prepared = os.path.join(workdir, folders["prepare"])
  with open(os.path.join(prepared, prepare_report.SUMMARY), encoding="utf-8") as f:
    summary = json.load(f)
  files = summary["files"]
  lines = ["# From videos to a trained SyncLipMAE", "",
           f"Workdir `{workdir}`; every stage's output is in its folder, listed at the end.", "",
           "## Data: what was kept and rejected, and why", "",
           f"{files['total']} video files, {60 * summary['hours_decoded']:.1f} minutes decoded; "
           f"{files['with_clips']} gave clips, {files['rejected_whole']} were rejected whole. "
           f"{60 * summary['hours_kept']:.1f} minutes kept as clips; face detection rate "
           f"{100 * summary['face_detection_rate']:.0f} %.", "",
           "| split | clips | speakers |", "| --- | ---: | ---: |"]
  lines += [f"| {split}{' (held out)' * (split == 'validation')} | {summary['clips'][split]} | "
            f"{summary['identities'][split]} |" for split in summary["clips"]]
  lines += ["", "| rejected because | files or ranges | minutes |", "| --- | ---: | ---: |"]
  lines += [f"| {reason} | {v['count']} | {60 * v['hours']:.2f} |"
            for reason, v in summary["rejected"].items()] or ["| (nothing) | 0 | 0 |"]
  data_figure(summary, figure("data.png"))
  lines += ["", link("data.png", "kept and rejected video"), "",
            f"Every rejected file or range with its reason and detail: "
            f"`{folders['prepare']}/{prepare_report.REJECTS}`; every clip kept: "
            f"`{folders['prepare']}/{prepare_report.MANIFEST}`.", ""]

  train_dir = os.path.join(workdir, folders["train"])
  with open(os.path.join(train_dir, "metrics.json"), encoding="utf-8") as f:
    final = json.load(f)
  scalars, images = read_events(train_dir)
  lines += ["## Training", "", f"Config: `{config_name}`; {final['step']} steps "
            f"(the config as trained: `{folders['train']}/config.json`). Final losses: "
            + ", ".join(f"{k} {v:.4g}" for k, v in sorted(final.items()) if k.startswith("loss/"))
            + ".", ""]
  if curves_figure(scalars, "loss/", "loss", figure("loss.png"), log=True):
    lines += [link("loss.png", "training losses"), ""]
  if curves_figure(scalars, "sync/acc_k", "Acc (%) on held-out speakers", figure("sync_curve.png")):
    lines += ["The sync accuracy the run measured on the held-out speakers while it trained:", "",
              link("sync_curve.png", "sync accuracy during training"), ""]

  with open(os.path.join(workdir, folders["sync_eval"], sync_eval.REPORT_JSON),
            encoding="utf-8") as f:
    report = json.load(f)
  table = sync_table_of(report)
  lines += ["## Sync on the held-out speakers", "",
            f"{len(report['trials'])} trials on {len(report['eval_shards'])} held-out shard(s) "
            f"(`{folders['sync_eval']}/{sync_eval.REPORT_MD}` lists every trial).", "",
            sync_table.markdown(table), link("sync_accuracy.png", "sync accuracy against K"), ""]
  sync_figure(table, figure("sync_accuracy.png"))
  trials = report["trials"][:LAG_CURVES]
  if trials:
    _image(figure("lag_curves.png"),
           sync_eval.plots({**report, "trials": trials})[sync_eval.CURVES_PNG])
    lines += [f"Distance between the audio and the video tokens against the lag, for {len(trials)} "
              "held-out trials (truth dashed, the estimate marked; "
              f"{report['sign']}):", "", link("lag_curves.png", "lag curves"), ""]

  lines += ["## Reconstructions", ""]
  if RECONSTRUCTIONS_TAG in images:
    with open(figure("reconstructions.png"), "wb") as f:
      f.write(images[RECONSTRUCTIONS_TAG])
    lines += ["At the last step, one training clip per row: original, masked view, video-driven "
              "and audio-driven reconstructions.", "",
              link("reconstructions.png", "reconstructions"), ""]
  else:
    lines += ["The run wrote no reconstructions (its task draws none).", ""]

  lines += ["## Export (PyTorch)", ""]
  export = outcomes.get("export", {})
  if export.get("status") == "skipped":
    lines += [f"Not exported: {export['reason']}.", ""]
  else:
    out = os.path.join(workdir, folders["export"])
    names = sorted(os.listdir(out))
    lines += [f"`{out}` (how to load it: its README.md):", ""]
    lines += [f"- `{n}` ({os.path.getsize(os.path.join(out, n)) / 1e6:.2f} MB)" for n in names]
    lines.append("")

  lines += ["## Not run", "",
            "- Linear probes (`synclipmae-probe`): they need emotion or action labels, which a "
            "folder of videos does not carry; prepare a manifest with `emotion` / `actions` "
            "columns (`synclipmae-prepare --manifest`) and probe this run with "
            f"`synclipmae-probe --workdir={train_dir} --option pattern='...'`.",
            "- Lip reading (`configs/vsr.py`, `synclipmae-vsr-eval`): it needs transcripts "
            "(a manifest's `transcript` column).", ""]

  lines += ["## Stages", "", "| stage | folder | status | finished | seconds |",
            "| --- | --- | --- | --- | ---: |"]
  for stage, o in outcomes.items():
    status = {"done": "done earlier", "ran": "ran now", "skipped": "skipped"}[o["status"]]
    lines.append(f"| {stage} | `{folders[stage]}/` | {status} | {o.get('finished', '')} | "
                 + (f"{o['seconds']:.1f}" if "seconds" in o else "") + " |")
  lines.append(f"| report | `{FIGURES}/`, `{report_name}` | ran now | | |")
  shards.write_text(os.path.join(workdir, report_name), "\n".join(lines) + "\n")
  return figures
