r"""From a folder of talking-face videos to a trained, evaluated, exported model and its report, in
one command: `synclipmae-run` (issue 31).

  synclipmae-run /data/my_videos --workdir=/tmp/my_run [--config=configs/from_videos.py] \
      [--config.num_train_steps=1000] [--detector=mtcnn] [--max_seconds=10]

The stages, each the code of the command that does it alone, each writing into its folder of the
workdir W:

  prepare    W/prepared/   `synclipmae-prepare`'s code on every video under VIDEOS_DIR: face crops
                           at the config's image size into ArrayRecord shards, with its reports
                           (manifest.jsonl, rejects.tsv, summary.json). A file directly in the
                           folder is its own speaker, a subfolder's files are its speaker's.
                           HELD_OUT_FRACTION of the speakers (at least one, at most all but one,
                           picked by a seeded permutation) are held out: their clips are the
                           validation split, never trained on.
  train      W/train/      `synclipmae-train`'s code on the prepared training shards with the
                           config of --config, by default configs/from_videos.py (the demo's model
                           for CPU-sized folders; a folder holding more than its MAX_HOURS of kept
                           video needs a --config). The sync evaluator's `num_clips` is capped at
                           the held-out clips.
  sync_eval  W/sync_eval/  `synclipmae-sync-eval`'s code on the held-out speakers' shards.
  export     W/export/     `synclipmae-export` (a subprocess: synclipmae_torch is the PyTorch
                           bridge, outside this package's imports); skipped, with the reason in the
                           report, when torch and safetensors are not installed (`pip install
                           -e .[bridge]`).
  report     W/report.md   with its figures in W/figures/ (`run_report.py`).

Resuming: a stage's marker W/stages/STAGE.json is written (atomically) when the stage starts
and again, as done, after its outputs. A rerun skips a done stage whose outputs are all present
and whose input stages are the ones it was made from; a stage begun but not done resumes
(the preparation keeps its finished shards, the training its checkpoints); a done stage whose
outputs were removed, or whose input stage was redone, is redone from scratch (its folder is
cleared first). A rerun with other parameters than a stage was made with stops and names the
stage. A failure names the stage that failed and keeps what the stages before it wrote.

The downstream tools need labels that a folder of videos does not carry (the linear probes
emotion and action labels, lip reading transcripts); the report says so and how to run them.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

from absl import app, flags
from ml_collections import config_flags
import numpy as np

from data_pipelines import schema
from data_pipelines.prepare import plan as plan_lib
from data_pipelines.prepare import prepare as prepare_lib
from data_pipelines.prepare import process, report as prepare_report, segments, shards
from synclipmae_jax import checkpointing, command_line, config_files, train as train_lib
from synclipmae_jax.evaluators import sync as sync_evaluator
from synclipmae_jax.tools import run_report, sync_eval

STAGES = ("prepare", "train", "sync_eval", "export", "report")
# Each stage's folder (or file) in the workdir: what it writes, cleared before it is redone.
FOLDERS = {"prepare": "prepared", "train": "train", "sync_eval": "sync_eval", "export": "export",
           "report": run_report.FIGURES}
REPORT = "report.md"
MARKERS = "stages"
HELD_OUT_FRACTION = 0.05  # share of the speakers held out for the sync evaluation
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs", "from_videos.py")
EXPORT_NEEDS = ("torch", "safetensors")  # the export's packages (the `bridge` extra)


class StageFailed(RuntimeError):
  """A stage raised; the message names it and what the workdir keeps."""


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a run is made from (the command line)."""
  videos: str
  workdir: str
  config: object  # the training config (ml_collections.ConfigDict) before the data's fields
  config_given: bool  # --config was given (else the default, checked against the data's size)
  config_name: str  # the config file[:variant] and its overrides, for the report
  options: process.PrepareOptions
  detector: str = "mtcnn"
  workers: int = 0
  seed: int = 0


def marker_path(workdir: str, stage: str) -> str:
  return os.path.join(workdir, MARKERS, stage + ".json")


def read_marker(workdir: str, stage: str) -> dict | None:
  path = marker_path(workdir, stage)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def stage_outputs(workdir: str, stage: str) -> list[str]:
  """The files (relative to the workdir) whose presence says `stage` is done."""
  marker = read_marker(workdir, stage) or {}
  if stage == "prepare":  # its reports and the shards it wrote
    return [os.path.join(FOLDERS[stage], name) for name in (
        prepare_report.MANIFEST, prepare_report.REJECTS, prepare_report.SUMMARY,
        prepare_report.INFO)] + marker.get("shards", [])
  if stage == "train":
    return [os.path.join(FOLDERS[stage], name) for name in (
        "metrics.json", checkpointing.CONFIG_FILE, checkpointing.CHECKPOINT_DIR)]
  if stage == "sync_eval":
    return [os.path.join(FOLDERS[stage], name) for name in (sync_eval.REPORT_JSON,
                                                            sync_eval.REPORT_MD)]
  if stage == "export":
    # synclipmae_torch/export.py's files (that package is the PyTorch side: not imported here)
    return [os.path.join(FOLDERS[stage], name) for name in ("model.safetensors", "config.json")]
  if stage == "report":
    return [REPORT] + marker.get("figures", [])
  raise ValueError(f"unknown stage {stage!r} (known: {STAGES})")


def _jsonable(value):
  return json.loads(json.dumps(value, sort_keys=True, default=str))


class Pipeline:
  """Runs the stages of `STAGES` in order, each once (see the module docstring)."""

  def __init__(self, settings: Settings, log=print):
    self.s = settings
    self.workdir = os.path.abspath(settings.workdir)
    self.log = log
    self.outcomes: dict[str, dict] = {}  # stage -> {"status": done | ran | skipped, ...}

  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  # ------------------------------------------------------------------------------ stage control

  def run(self) -> dict[str, dict]:
    os.makedirs(self.path(MARKERS), exist_ok=True)
    stages = [("prepare", (), self.prepare_params, self.prepare),
              ("train", ("prepare",), self.train_params, self.train),
              ("sync_eval", ("train",), lambda: {}, self.sync_eval),
              ("export", ("train",), lambda: {}, self.export),
              ("report", ("prepare", "train", "sync_eval", "export"), lambda: {}, self.report)]
    for name, inputs, params, body in stages:
      self._stage(name, inputs, params, body)
    return self.outcomes

  def _stage(self, name: str, inputs: tuple[str, ...], params_fn, body) -> None:
    try:
      params = _jsonable(params_fn())
      skipped = self._skip_reason(name)
      if skipped:
        self.outcomes[name] = {"status": "skipped", "reason": skipped}
        self.log(f"stage {name}: skipped ({skipped})")
        return
      made_from = {i: self.outcomes[i].get("id") for i in inputs}
      marker = read_marker(self.workdir, name)
      had_marker = marker is not None  # marker is set to None below when the stage is redone
      if marker is not None and marker["inputs"] != made_from:
        redone = [i for i in inputs if marker["inputs"].get(i) != made_from[i]]
        self.log(f"stage {name}: redoing it from scratch (its input stage {', '.join(redone)} "
                 "was redone)")
        self._clear(name)
        marker = None
      if marker is not None and marker["params"] != params:
        changed = sorted(_differences(marker["params"], params))
        raise ValueError(
            f"{self.path(FOLDERS[name])} was made with other parameters ({', '.join(changed)}); "
            f"rerun with the parameters it was made with, or use a new --workdir")
      if marker is not None and marker["state"] == "done":
        missing = [p for p in stage_outputs(self.workdir, name) if not os.path.exists(self.path(p))]
        if not missing:
          self.outcomes[name] = {"status": "done", **marker}
          self.log(f"stage {name}: done at {marker['finished']}, nothing to do")
          return
        self.log(f"stage {name}: redoing it from scratch ({', '.join(missing)} missing)")
        self._clear(name)
        marker = None
      if marker is not None:
        self.log(f"stage {name}: resuming (begun at {marker['started']})")
      elif not had_marker:
        self.log(f"stage {name}: running")
      started = marker["started"] if marker is not None else _now()
      shards.write_json(marker_path(self.workdir, name),
                        {"stage": name, "state": "started", "started": started, "params": params,
                         "inputs": made_from})
      start = time.perf_counter()
      extra = body() or {}
      done = {"stage": name, "state": "done", "started": started, "finished": _now(),
              "seconds": time.perf_counter() - start, "params": params, "inputs": made_from,
              "id": uuid.uuid4().hex, **extra}
      shards.write_json(marker_path(self.workdir, name), done)  # after the outputs: atomic
      self.outcomes[name] = {"status": "ran", **done}
      self.log(f"stage {name}: done in {done['seconds']:.1f} s")
    except Exception as e:  # pylint: disable=broad-except
      kept = [s for s, o in self.outcomes.items() if o["status"] in ("done", "ran")]
      raise StageFailed(
          f"stage {name} failed: {type(e).__name__}: {e}\nthe workdir {self.workdir} keeps the "
          f"stages done ({', '.join(kept) or 'none'}) and what {name} finished; rerun the same "
          "command to resume") from e

  def _clear(self, name: str) -> None:
    folder = self.path(FOLDERS[name])
    if os.path.isdir(folder):
      shutil.rmtree(folder)
    if name == "report" and os.path.exists(self.path(REPORT)):
      os.remove(self.path(REPORT))
    os.remove(marker_path(self.workdir, name))

  def _skip_reason(self, name: str) -> str | None:
    if name == "export":
      missing = [m for m in EXPORT_NEEDS if importlib.util.find_spec(m) is None]
      if missing:
        return (f"{' and '.join(missing)} not installed: the export writes a PyTorch folder; "
                "pip install -e .[bridge], then rerun")
    return None

  # ------------------------------------------------------------------------------ stages

  def prepare_params(self) -> dict:
    return {"videos": os.path.abspath(self.s.videos), "options": dataclasses.asdict(self.s.options),
            "detector": self.s.detector, "seed": self.s.seed,
            "held_out_fraction": HELD_OUT_FRACTION}

  def prepare(self) -> dict:
    videos = os.path.abspath(self.s.videos)  # the plan stores the paths: any cwd resumes it
    rows = held_out_rows(plan_lib.scan_folder(videos), videos, self.s.seed)
    summary = prepare_lib.prepare(rows, self.path(FOLDERS["prepare"]), self.s.options,
                                  root=videos, workers=self.s.workers,
                                  detector=self.s.detector, progress=True)
    empty = [split for split in ("train", "validation") if not summary["clips"][split]]
    if empty:
      raise ValueError(
          f"no clip kept for the {' and '.join(empty)} split(s) ({summary['clips']}); see why in "
          f"{self.path(FOLDERS['prepare'], prepare_report.REJECTS)}")
    return {"shards": sorted(os.path.relpath(p, self.workdir) for p in glob.glob(
        self.path(FOLDERS["prepare"], "*" + shards.SUFFIX)))}

  def prepared_summary(self) -> dict:
    with open(self.path(FOLDERS["prepare"], prepare_report.SUMMARY), encoding="utf-8") as f:
      return json.load(f)

  def training_config(self):
    """The config to train: --config's (or the default), reading the prepared shards, its sync
    evaluation at most as many clips as are held out."""
    config = self.s.config.copy_and_resolve_references()
    data = self.path(FOLDERS["prepare"])
    config.data.source = "array_record"
    config.data.train_pattern = os.path.join(data, "train-*" + shards.SUFFIX)
    config.data.eval_pattern = os.path.join(data, "validation-*" + shards.SUFFIX)
    if "sync" in config.evals:
      config.evals.sync.num_clips = min(config.evals.sync.num_clips, self.held_out_clips())
    return config

  def held_out_clips(self) -> int:
    return self.prepared_summary()["clips"]["validation"]

  def train_params(self) -> dict:
    return {"config": self.training_config().to_dict()}

  def train(self) -> dict:
    hours = self.prepared_summary()["hours_kept"]
    limit = config_files.module_of(DEFAULT_CONFIG).MAX_HOURS
    if not self.s.config_given and hours > limit:
      raise ValueError(
          f"{hours:.1f} hours of video were kept, more than the {limit} h that the default config "
          f"({DEFAULT_CONFIG}: a small model for CPU) is made for; give a --config for your "
          "accelerators (e.g. configs/pretrain.py with --config.data.global_batch_size for your "
          "chips) and rerun: the preparation is kept")
    train_lib.train_and_evaluate(self.training_config(), self.path(FOLDERS["train"]))
    return {}

  def eval_pattern(self) -> str:
    return self.path(FOLDERS["prepare"], "validation-*" + shards.SUFFIX)

  def sync_eval(self) -> dict:
    trained = self.path(FOLDERS["train"])
    # The run's own sync options (the defaults when its config has no sync evaluator), on at most
    # the held-out clips there are.
    entry = sync_evaluator.entry_of(checkpointing.read_config(trained))
    report = sync_eval.evaluate(trained, eval_pattern=self.eval_pattern(),
                                options={"num_clips": min(entry.num_clips, self.held_out_clips())})
    sync_eval.write_report(report, self.path(FOLDERS["sync_eval"]))
    return {}

  def export(self) -> dict:
    command = [sys.executable, "-m", "synclipmae_torch.export_cli",
               f"--workdir={self.path(FOLDERS['train'])}", f"--out={self.path(FOLDERS['export'])}"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
      raise RuntimeError(f"{' '.join(command)} exited with status {result.returncode}:\n"
                         + (result.stderr or result.stdout)[-3000:])
    return {}

  def report(self) -> dict:
    figures = run_report.write(self.workdir, self.outcomes, folders=FOLDERS, report_name=REPORT,
                               config_name=self.s.config_name)
    return {"figures": figures}


def held_out_rows(rows: list[dict], root: str, seed: int) -> list[dict]:
  """`rows` (of `plan.scan_folder(root)`) with their split: the speakers of a seeded permutation's
  first max(1, round(HELD_OUT_FRACTION x speakers)) (at most all but one) are "validation"."""
  speakers = sorted({plan_lib.default_speaker(r["path"], root) for r in rows})
  if len(speakers) < 2:
    raise ValueError(
        f"{root} holds videos of {len(speakers)} speaker(s) ({', '.join(speakers) or 'no video'}); "
        "at least 2 are needed, one held out for the sync evaluation (a file directly in the "
        "folder is its own speaker, the files of a subfolder are its name's speaker)")
  count = min(len(speakers) - 1, max(1, round(HELD_OUT_FRACTION * len(speakers))))
  held = set(np.random.default_rng(seed).permutation(speakers)[:count].tolist())
  return [{**r, "split": "validation" if plan_lib.default_speaker(r["path"], root) in held
           else "train"} for r in rows]


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
  """The dotted keys whose values differ between two nested dicts."""
  out = []
  for key in sorted(set(a) | set(b)):
    x, y = a.get(key), b.get(key)
    if isinstance(x, dict) and isinstance(y, dict):
      out += _differences(x, y, f"{prefix}{key}.")
    elif x != y:
      out.append(prefix + key)
  return out


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def make_settings(videos: str, workdir: str, config, *, config_given: bool, config_name: str,
                  crop_margin: float, min_seconds: float, max_seconds: float, detector: str,
                  workers: int, seed: int) -> Settings:
  """The run's Settings from the command line's values (the crops at the config's image size)."""
  options = process.PrepareOptions(
      image_size=config.model.image_size, margin=crop_margin,
      segment=segments.SegmentOptions(min_frames=round(min_seconds * schema.FPS),
                                      max_frames=round(max_seconds * schema.FPS)))
  return Settings(videos=videos, workdir=workdir, config=config, config_given=config_given,
                  config_name=config_name, options=options, detector=detector, workers=workers,
                  seed=seed)


def main(argv, flags_) -> None:
  if len(argv) != 2:
    raise app.UsageError(f"give one VIDEOS_DIR (a folder of videos), got {argv[1:]}")
  overrides = config_flags.get_override_values(flags_["config"])
  name = " ".join([config_flags.get_config_filename(flags_["config"])]
                  + [f"--config.{k}={v}" for k, v in _flatten(overrides).items()])
  settings = make_settings(argv[1], flags_.workdir, flags_.config,
                           config_given=bool(flags_["config"].present), config_name=name,
                           crop_margin=flags_.crop_margin, min_seconds=flags_.min_seconds,
                           max_seconds=flags_.max_seconds, detector=flags_.detector,
                           workers=flags_.workers, seed=flags_.seed)
  try:
    Pipeline(settings).run()
  except StageFailed as e:
    print(e, file=sys.stderr)
    sys.exit(1)
  print(f"wrote {os.path.join(os.path.abspath(flags_.workdir), REPORT)}")


def run() -> None:
  """Console-script entry point (`synclipmae-run VIDEOS_DIR --workdir=W`)."""
  config_flags.DEFINE_config_file(
      "config", DEFAULT_CONFIG, "Training config file (configs/*.py[:variant]); default: "
      "configs/from_videos.py, a small model for CPU-sized folders. Fields are changed with "
      "--config.x=y.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Where every stage writes (prepared/, train/, sync_eval/, "
                      "export/, figures/, report.md); a rerun resumes it.")
  prepare_lib.define_video_preparation_flags(flags)  # --detector, --crop_margin
  d = segments.SegmentOptions
  flags.DEFINE_float("min_seconds", d.min_frames / schema.FPS, "Shortest clip kept (seconds).")
  flags.DEFINE_float("max_seconds", d.max_frames / schema.FPS,
                     "Longer face segments are cut into clips of at most this (seconds).")
  flags.DEFINE_integer("workers", min(2, os.cpu_count() or 1),
                       "Processes preparing the videos (0: in this process).")
  flags.DEFINE_integer("seed", 0, "Seed of the held-out speakers' choice.")
  flags.mark_flags_as_required(["workdir"])
  command_line.run(lambda argv: main(argv, flags.FLAGS), __name__)


if __name__ == "__main__":
  run()
