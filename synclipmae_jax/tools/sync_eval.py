r"""The sync suite on a trained workdir (paper 4.1 and 5): `synclipmae-sync-eval`.

  synclipmae-sync-eval --workdir=workdirs/demo [--step=3000] [--out=DIR] \
      [--eval_pattern='/data/shards/eval-*.array_record'] [--option=num_clips=64 ...]
  synclipmae-sync-eval --workdir=workdirs/demo --videos=/data/talks [--out=DIR]

Reads the checkpoint (`checkpointing.load`: the config it trained with and its parameters),
runs the sync evaluator of `evaluators/sync.py` on held-out clips (the config's held-out data,
or the shards of --eval_pattern, e.g. real videos prepared by `synclipmae-prepare`), with the
config's `evals.sync` options changed by --option key=value, and writes to --out (default
WORKDIR/sync_eval/STEP):

- `sync_eval.json`: every figure (Acc and Offset per K, R-precision@k, factor correlations) and,
  per trial, its clip, true lag, per-K accuracy and offset, and the whole-clip distance-vs-lag
  curve with its estimate (frames and ms) and confidence;
- `sync_eval.md`: the same as markdown tables;
- `accuracy_vs_k.png` and `curves.png` (distance vs lag per trial, truth and estimate marked);
  with --videos, `curves.png` (each video's curve, and each face's), and `speakers.png` (who
  speaks: per video a row per face track, labelled with its box);
- TensorBoard summaries (scalars and the two plots) at the checkpoint's step.

With --videos (a file, a folder or a manifest of raw videos) each video goes through the training
preparation and is measured with no shift applied (`fix_sync.Estimator`): per video its lag in
frames and ms, a confidence and the curve (JSON, markdown, curves.png); a video that cannot be
measured (unreadable, no audio, no usable face, no active speaker) is listed with its reason and
the rest are measured. Every face track is measured: per video each track's box, share of the
video, own curve, lag and confidence, and the time line of who speaks (`active_speaker`); the
video's lag comes from the active speaker's frames only (--speaker_window, --speaker_margin,
--speaker_min_confidence).

Sign convention (docs/evaluation.md, "Sync evaluation protocol"): a lag L > 0 means the video lags the audio.
The evaluation is the training run's own evaluator: on the same checkpoint and held-out data
it gives the figures the run logged at that step.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from data_pipelines import schema
from data_pipelines.prepare import face_detector, plan, prepare
from synclipmae_jax import active_speaker, checkpointing, command_line, input_pipeline, storage
from synclipmae_jax import tasks
from synclipmae_jax.evaluators import common as evaluators
from synclipmae_jax.evaluators import sync as sync_evaluator
from synclipmae_jax.tools import fix_sync

REPORT_JSON = "sync_eval.json"
REPORT_MD = "sync_eval.md"
CURVES_PNG = "curves.png"
SPEAKERS_PNG = "speakers.png"
ACCURACY_PNG = "accuracy_vs_k.png"
MAX_CURVES = 16  # trials drawn in curves.png


def evaluate(workdir: str, *, step: int | None = None, eval_pattern: str = "",
             options: dict | None = None) -> dict:
  """The report of the sync suite on `workdir`'s checkpoint (see the module docstring)."""
  config = checkpointing.read_config(workdir)  # options are checked before anything loads
  entry = sync_evaluator.entry_of(config)
  if eval_pattern:
    config.data.source = "array_record"
    config.data.eval_pattern = eval_pattern
  evaluators.override(entry, options or {}, config)
  if eval_pattern:
    eval_paths = sorted(glob.glob(eval_pattern))
    if not eval_paths:
      raise ValueError(f"no shards match --eval_pattern={eval_pattern!r}")
  else:
    eval_paths = input_pipeline.dataset_paths(config)[1]
  restored = checkpointing.load(workdir, step)
  evaluator = sync_evaluator.evaluator_of_run(config, entry, eval_paths)
  metrics, trials = evaluator.evaluate(restored.params, restored.frozen)
  ms_per_frame = 1000.0 / schema.FPS
  for trial in trials:
    trial["estimate_ms"] = trial["estimate"] * ms_per_frame
    trial["true_lag_ms"] = trial["true_lag"] * ms_per_frame
  return {"workdir": str(storage.path(workdir)), "step": restored.step, "task": tasks.name_of(config),
          "eval_shards": eval_paths,
          "options": entry.to_dict(), "metrics": metrics, "trials": trials,
          "sign": "lag > 0: the video lags the audio (audio frame t matches video frame t + lag)"}


def video_paths(spec: str) -> list[str]:
  """A video file, a folder (every video file under it) or a manifest (.csv / .jsonl, `path` column)."""
  if os.path.isdir(spec):
    return [row["path"] for row in plan.scan_folder(spec)]
  if spec.endswith((".csv", ".jsonl", ".json")):
    return [row["path"] for row in plan.read_manifest(spec)]
  return [spec]


def evaluate_videos(workdir: str, spec: str, *, step: int | None = None,
                    detector: str = face_detector.DEFAULT, margin: float | None = None,
                    speaker: active_speaker.Options = active_speaker.Options()) -> dict:
  """Per raw video of `spec`: its lag, confidence and curve, from its active speaker's frames, and
  every face track with its own curve and the time line of who speaks (`fix_sync.Estimator`, the
  training preparation and no shift applied); a video that cannot be measured is listed with its
  reason and the others are measured. `detector`, `margin`, `speaker`: `fix_sync.Estimator`'s."""
  estimator = fix_sync.Estimator(workdir, step, detector=detector, margin=margin, speaker=speaker)
  videos, failed = [], []
  for path in video_paths(spec):
    try:
      videos.append(estimator(path))
    except fix_sync.NotEstimated as e:
      failed.append({"video": os.path.abspath(path), "reason": str(e)})
  return {"workdir": estimator.workdir, "step": estimator.run.restored.step, "videos": videos,
          "failed": failed, "sign": "lag > 0: the video lags the audio (the sound comes early)"}


def markdown_videos(report: dict) -> str:
  lines = [f"# Sync of raw videos under {report['workdir']} at step {report['step']}", "",
           f"{report['sign']}.", "", "| video | lag (frames) | lag (ms) | confidence | clips |",
           "| --- | ---: | ---: | ---: | ---: |"]
  lines += [f"| {v['video']} | {v['lag_frames']:+d} | {v['lag_ms']:+.0f} | {v['confidence']:.4f} | "
            f"{len(v['clips'])} |" for v in report["videos"]]
  lines += ["", "Face tracks (the video's lag is taken on the active speaker's frames only):", "",
            "| video | track | box (px) | share | own lag (frames) | confidence | speaks in |",
            "| --- | ---: | --- | ---: | ---: | ---: | ---: |"]
  lines += [f"| {os.path.basename(v['video'])} | {t['track']} | "
            f"{' '.join(f'{x:.0f}' for x in t['face_box'])} | {t['share']:.0%} | "
            f"{t['lag_frames']:+d} | {t['confidence']:.4f} | {t['speaking_share']:.0%} |"
            for v in report["videos"] for t in v["tracks"]]
  lines += ["", "| video | who speaks |", "| --- | --- |"]
  lines += [f"| {os.path.basename(v['video'])} | " + ", ".join(
      f"{s['start']:.2f}-{s['end']:.2f} s: " + (f"track {s['track']}" if s["track"] is not None
                                               else s["reason"]) for s in v["speakers"]) + " |"
            for v in report["videos"]]
  if report["failed"]:
    lines += ["", "| not measured | reason |", "| --- | --- |"]
    lines += [f"| {f['video']} | {f['reason']} |" for f in report["failed"]]
  return "\n".join(lines) + "\n"


def markdown(report: dict) -> str:
  """The report's figures and trials as markdown tables."""
  m = report["metrics"]
  windows = sorted(int(k.removeprefix("sync/acc_k")) for k in m if k.startswith("sync/acc_k"))
  ks = sorted(int(k.removeprefix("sync/rprec@")) for k in m if k.startswith("sync/rprec@"))
  lines = [f"# Sync evaluation of {report['workdir']} at step {report['step']}", "",
           f"{len(report['trials'])} trials on {len(report['eval_shards'])} held-out shard(s); "
           f"{report['sign']}.", "",
           "| K | Acc (%) | Offset (frames) |", "| ---: | ---: | ---: |"]
  lines += [f"| {k} | {m[f'sync/acc_k{k}']:.1f} | {m[f'sync/offset_k{k}']:.2f} |" for k in windows]
  lines += ["", "| R-precision@k | % |", "| ---: | ---: |"]
  lines += [f"| {k} | {m[f'sync/rprec@{k}']:.1f} |" for k in ks]
  if "sync/lse_d" in m:
    lines += ["", "| LSE-D | LSE-C |", "| ---: | ---: |",
              f"| {m['sync/lse_d']:.3f} | {m['sync/lse_c']:.3f} |"]
  factors = [k for k in sorted(m) if k.startswith("factors/")]
  if factors:
    lines += ["", "| held-out factor correlation | mean \\|corr\\| |", "| --- | ---: |"]
    lines += [f"| {k.removeprefix('factors/corr_').replace('_', ' - ')} | {m[k]:.3f} |" for k in factors]
  lines += ["", "| trial | clip | true lag (frames / ms) | estimate (frames / ms) | confidence | "
            + " | ".join(f"Acc K={k} (%)" for k in windows) + " |",
            "| ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in windows) + " |"]
  for i, t in enumerate(report["trials"]):
    lines.append(f"| {i} | {t['clip']} | {t['true_lag']} / {t['true_lag_ms']:.0f} | {t['estimate']} / "
                 f"{t['estimate_ms']:.0f} | {t['confidence']:.4f} | "
                 + " | ".join(f"{t[f'acc_k{k}']:.1f}" for k in windows) + " |")
  return "\n".join(lines) + "\n"


def plots(report: dict) -> dict[str, "np.ndarray"]:
  """{file name: RGB image [H, W, 3] uint8}: accuracy vs K (held-out trials) and the
  distance-vs-lag curves (of the trials, or of the raw videos)."""
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  images = {}
  if "videos" in report:
    curves = []
    for v in report["videos"]:
      curves.append((os.path.basename(v["video"]), v["lags"], v["distance"], None, v["lag_frames"]))
      if len(v["tracks"]) > 1:  # each face's own curve beside the speaker's
        curves += [(f"{os.path.basename(v['video'])} track {t['track']}", t["lags"], t["distance"],
                    None, t["lag_frames"]) for t in v["tracks"]]
    if report["videos"]:
      images[SPEAKERS_PNG] = _speakers_figure(plt, report["videos"][:MAX_CURVES])
  else:
    m = report["metrics"]
    windows = sorted(int(k.removeprefix("sync/acc_k")) for k in m if k.startswith("sync/acc_k"))
    fig, ax = _figure(plt, (4, 3), dpi=100)
    ax.plot(windows, [m[f"sync/acc_k{k}"] for k in windows], "o-")
    ax.set(xlabel="window K (frames)", ylabel="Acc (%)", ylim=(0, 100), xticks=windows,
           title=f"lag detection, step {report['step']}")
    images[ACCURACY_PNG] = _rgb(fig)
    curves = [(f"trial {i}", t["lags"], t["distance"], t["true_lag"], t["estimate"])
              for i, t in enumerate(report["trials"])]
  if curves:
    images[CURVES_PNG] = _curves_figure(plt, curves[:MAX_CURVES])
  return images


def _figure(plt, size, dpi, rows=None, cols=None):
  """One axes, or (with rows and cols) a 2-d array of them."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  return plt.subplots(rows or 1, cols or 1, figsize=size, dpi=dpi, squeeze=rows is None)


def _curves_figure(plt, curves) -> "np.ndarray":
  """One panel per (title, lags, distances, true lag or None, estimate)."""
  cols = min(4, len(curves))
  rows = -(-len(curves) // cols)
  fig, axes = _figure(plt, (3 * cols, 2.2 * rows), 80, rows, cols)
  for ax, (title, lags, distance, truth, estimate) in zip(axes.flat, curves):
    ax.plot(lags, distance, lw=1)
    if truth is not None:
      ax.axvline(truth, color="g", ls="--", lw=1, label="truth")
      title += f": true {truth:+d}"
    ax.plot([estimate], [min(distance)], "rv", label="estimate")
    ax.set_title(f"{title}, est. {estimate:+d}", fontsize=8)
    ax.tick_params(labelsize=6)
  for ax in list(axes.flat)[len(curves):]:
    ax.axis("off")
  axes.flat[0].legend(fontsize=6)
  fig.supxlabel("lag (frames; > 0: the video lags the audio)", fontsize=8)
  fig.supylabel("mean cosine distance", fontsize=8)
  return _rgb(fig)


def _speakers_figure(plt, videos) -> "np.ndarray":
  """Who speaks: per video a panel, one row per face track (labelled with its box), a bar where
  the track is the active speaker, grey where nobody clearly is."""
  fig, axes = _figure(plt, (8, 0.4 + 0.5 * sum(len(v["tracks"]) + 1 for v in videos)), 80,
                      len(videos), 1)
  for ax, v in zip(axes.flat, videos):
    rows = {t["track"]: i for i, t in enumerate(v["tracks"])}
    for s in v["speakers"]:
      span = [(s["start"], s["end"] - s["start"])]
      if s["track"] is not None:
        ax.broken_barh(span, (rows[s["track"]] - 0.4, 0.8), color=f"C{rows[s['track']] % 10}")
      elif s["reason"] == active_speaker.REASONS[active_speaker.NOBODY]:
        ax.broken_barh(span, (-0.4, len(rows) - 0.2), color="0.85")
    ax.set_yticks(range(len(rows)), [
        f"track {t['track']} ({' '.join(f'{x:.0f}' for x in t['face_box'])})" for t in v["tracks"]],
        fontsize=6)
    ax.set_xlim(0, v["num_frames"] / schema.FPS)
    ax.set_title(f"{os.path.basename(v['video'])}: who speaks (grey: no clear speaker)", fontsize=8)
    ax.tick_params(labelsize=6)
  axes.flat[-1].set_xlabel("time (s)", fontsize=8)
  return _rgb(fig)


def _rgb(fig) -> "np.ndarray":
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  fig.tight_layout()
  fig.canvas.draw()
  image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
  plt.close(fig)
  return image


def write_report(report: dict, out_dir: str) -> dict[str, str]:
  """Writes the JSON, the markdown, the PNGs and the TensorBoard summaries; returns the paths."""
  from clu import metric_writers  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  os.makedirs(out_dir, exist_ok=True)
  paths = {"json": os.path.join(out_dir, REPORT_JSON), "markdown": os.path.join(out_dir, REPORT_MD)}
  with open(paths["json"], "w") as f:
    json.dump(report, f, indent=1)
  with open(paths["markdown"], "w") as f:
    f.write(markdown_videos(report) if "videos" in report else markdown(report))
  images = plots(report)
  for name, image in images.items():
    paths[name] = os.path.join(out_dir, name)
    Image.fromarray(image).save(paths[name])
  writer = metric_writers.create_default_writer(out_dir, asynchronous=False)
  if "metrics" in report:
    writer.write_scalars(report["step"], report["metrics"])
  writer.write_images(report["step"], {name.removesuffix(".png"): image[None]
                                       for name, image in images.items()})
  writer.close()
  return paths


def main(flags_) -> None:
  if flags_.videos:
    report = evaluate_videos(flags_.workdir, flags_.videos, step=flags_.step,
                             detector=flags_.detector, margin=flags_.crop_margin,
                             speaker=active_speaker.options_from_flags(flags_))
    summary = markdown_videos(report)
  else:
    report = evaluate(flags_.workdir, step=flags_.step, eval_pattern=flags_.eval_pattern,
                      options=evaluators.parse_options(flags_.option))
    summary = markdown(report).split("\n| trial |")[0]
  out_dir = flags_.out or os.path.join(flags_.workdir, "sync_eval", str(report["step"]))
  out = storage.Mirror(out_dir)  # written locally, copied to a bucket's folder
  paths = write_report(report, out.local)
  out.sync()
  print(summary)
  print("wrote " + ", ".join(out.shown(p) for p in paths.values()))


def run() -> None:
  """Command line (`python -m synclipmae_jax.tools.sync_eval`, console script `synclipmae-sync-eval`)."""
  from absl import flags  # pylint: disable=import-outside-toplevel

  flags.DEFINE_string("workdir", None, "A training run's workdir (config.json and checkpoints/).")
  flags.DEFINE_integer("step", None, "The checkpoint to evaluate (default: the latest).")
  flags.DEFINE_string("out", "", "Output folder (default: WORKDIR/sync_eval/STEP).")
  flags.DEFINE_string("eval_pattern", "", "Held-out ArrayRecord shards to read instead of the "
                      "config's (e.g. real videos prepared by synclipmae-prepare).")
  flags.DEFINE_string("videos", "", "Raw videos instead of prepared shards: a file, a folder or a "
                      "manifest (.csv / .jsonl with a path column); per video its lag and curve.")
  flags.DEFINE_multi_string("option", [], "A sync evaluator option key=value (evals.sync), e.g. "
                            "num_clips=64 or windows=[1,5,15].")
  prepare.define_video_preparation_flags(flags)  # for --videos
  active_speaker.define_flags(flags)  # for --videos
  flags.mark_flags_as_required(["workdir"])
  command_line.run(lambda argv: main(flags.FLAGS), __name__)


if __name__ == "__main__":
  run()
