r"""Prepares talking-face videos into ArrayRecord shards of `schema` clips (the CLI).

  python -m data_pipelines.prepare.prepare --input_dir videos/ --output data/prepared \
      --workers 2
  python -m data_pipelines.prepare.prepare --manifest videos.csv --output data/prepared

Train on the result with
  --config.data.source=array_record \
  --config.data.train_pattern='data/prepared/train-*.array_record' \
  --config.data.eval_pattern='data/prepared/validation-*.array_record'

Each shard of the plan (`plan.py`) is prepared by one worker process (spawned, each with
its own detector) and committed atomically together with its part of the reports;
a re-run skips the shards already committed, so an interrupted run resumes where it
stopped and loses at most the shards in progress. Several machines sharing the output
directory split the shards with `--num_tasks N --task_index i` (a Slurm job array, a
Kubernetes indexed job, every host of a TPU pod); the task that commits the last shard,
or `--finalize`, writes the reports (`report.py`).
"""

from __future__ import annotations

import argparse
from concurrent import futures
import contextlib
import csv
import dataclasses
import glob
import json
import multiprocessing
import os
import sys

import filelock
from tqdm import tqdm

from data_pipelines import labels as labels_lib
from data_pipelines import schema
from data_pipelines.prepare import face_detector
from data_pipelines.prepare import plan as plan_lib
from data_pipelines.prepare import process
from data_pipelines.prepare import report
from data_pipelines.prepare import segments
from data_pipelines.prepare import shards

FILES_PER_SHARD = 16  # source files per shard by default: the unit of work and of resuming
_WORKER_DETECTOR = None  # the detector of this worker process (or why it failed to load)


def _prepare_shard(output: str, shard: dict, sources: list[process.Source],
                   options: process.PrepareOptions, detector: face_detector.FaceDetector) -> dict:
  """Prepares the files of one shard; commits the shard, then its part (the done marker)."""
  path = os.path.join(output, shard["name"] + shards.SUFFIX)
  writer = shards.AtomicShard(path)
  part = {"shard": shard["name"], "kept": [], "rejected": [], "not_faces": [], "files": [],
          "cpu": {s: 0.0 for s in report.STAGES}}
  try:
    for source in sources:
      result = process.prepare_file(
          source, detector, options,
          lambda clip: writer.write(clip, options.image_format))
      part["kept"] += result.kept
      part["rejected"] += result.rejected
      part["not_faces"] += result.not_faces
      part["files"].append({"path": source.path, "num_frames": result.num_frames,
                            "detection_rate": result.detection_rate, "media": result.media})
      for stage, seconds in result.cpu.items():
        part["cpu"][stage] += seconds
  except BaseException:
    writer.abort()
    raise
  part["num_clips"] = writer.commit()
  shards.write_json(report.part_path(output, shard["name"]), part)
  return part


def _init_worker(detector_spec: str, detector_kwargs: dict) -> None:
  global _WORKER_DETECTOR
  try:
    _WORKER_DETECTOR = face_detector.load_detector(detector_spec, **detector_kwargs)
  except Exception as e:  # pylint: disable=broad-except
    _WORKER_DETECTOR = e  # raised by the first job, so the run stops with the reason


def _worker(args) -> dict:
  if isinstance(_WORKER_DETECTOR, Exception):
    raise _WORKER_DETECTOR
  output, shard, sources, options = args
  return _prepare_shard(output, shard, sources, options, _WORKER_DETECTOR)


def prepare(rows: list[dict], output: str, options: process.PrepareOptions, *,
            root: str | None = None, workers: int = 0, seed: int = 0,
            validation_fraction: float = 0.0, test_fraction: float = 0.0,
            files_per_shard: int = FILES_PER_SHARD, detector: str = face_detector.DEFAULT,
            detector_kwargs: dict | None = None, num_tasks: int = 1, task_index: int = 0,
            progress: bool = True, labels: labels_lib.Labels = labels_lib.Labels()) -> dict | None:
  """Prepares `rows` (manifest rows) into `output`; resumes a run found there.

  Args:
    rows: from `plan.read_manifest` or `plan.scan_folder`.
    output: output directory (shards, plan, parts, reports).
    options: how clips are made.
    root: the input folder (default speakers), None for a manifest.
    workers: worker processes; 0 prepares in this process.
    seed: seed of the hashed splits.
    validation_fraction: share of speakers (without a split) held out for validation.
    test_fraction: share held out for test.
    files_per_shard: source files per shard (the unit of work and of resuming).
    detector: "mtcnn" or "module:Class" (see `face_detector.load_detector`).
    detector_kwargs: arguments of the detector (e.g. a weight file).
    num_tasks: machines (or jobs) sharing the plan.
    task_index: this task's index; it prepares shards index % num_tasks == task_index.
    progress: show a progress bar.
    labels: the vocabularies of the rows' emotion and actions cells (written to labels.json).

  Returns:
    The summary once every shard of the plan is done, else None (other tasks still run).
  """
  if not 0 <= task_index < num_tasks:
    raise ValueError(f"need 0 <= task_index < num_tasks, got {task_index}, {num_tasks}")
  if workers < 0:
    raise ValueError(f"workers must be >= 0, got {workers}")
  detector_kwargs = dict(detector_kwargs or {})
  if options.segment.multiple_faces == "active_speaker":  # a bad workdir fails here, not per file
    process.speaker_filter(options.segment.speaker_model)
  output = os.path.abspath(output)
  parameters = {"options": dataclasses.asdict(options), "seed": seed,
                "validation_fraction": validation_fraction, "test_fraction": test_fraction,
                "files_per_shard": files_per_shard, "detector": detector,
                "detector_kwargs": detector_kwargs, "labels": labels.to_json()}
  stored = plan_lib.load_or_store(output, plan_lib.make_plan(
      rows, root=root, seed=seed, validation_fraction=validation_fraction,
      test_fraction=test_fraction, files_per_shard=files_per_shard, labels=labels), parameters)
  labels_lib.write(output, labels)
  os.makedirs(os.path.join(output, report.PARTS), exist_ok=True)
  with _task_lock(output, task_index, num_tasks):
    return _prepare_task(output, stored, options, workers, detector, detector_kwargs, num_tasks,
                         task_index, progress)


class NothingKept(ValueError):
  """`prepare_video` kept no clip of its video (the message gives the preparation's reasons)."""


def prepare_video(video: str, folder: str, options: process.PrepareOptions,
                  detector: str = face_detector.DEFAULT) -> tuple[list[str], int]:
  """Prepares one video file into `folder` (the training preparation, one speaker "video") for a
  tool that measures it; returns (its shards, its number of clips), or raises NothingKept with
  the reasons the preparation gave."""
  prepare([{"path": os.path.abspath(video), "speaker": "video"}], folder, options,
          detector=detector, progress=False)
  found = sorted(glob.glob(os.path.join(folder, "*" + shards.SUFFIX)))
  with open(os.path.join(folder, report.MANIFEST)) as f:
    kept = [line for line in f if line.strip()]
  if not kept:
    with open(os.path.join(folder, report.REJECTS), newline="") as f:
      reasons = [f"{r['reason']} ({r['detail']})" for r in csv.DictReader(f, delimiter="\t")]
    raise NothingKept(f"{video}: no clip kept: " + ("; ".join(reasons) or "nothing usable"))
  return found, len(kept)


DETECTOR_HELP = ("face detector: 'mtcnn', 'whole_frame' (the videos are face crops already; with "
                 "a crop margin of 0 the frames are kept whole) or 'package.module:Class'")


def define_video_preparation_flags(flags) -> None:
  """--detector and --crop_margin (absl flags) of the tools that prepare single videos with
  `prepare_video` (fix-sync, sync-eval --videos, dub-score)."""
  flags.DEFINE_string("detector", face_detector.DEFAULT, "The preparation's " + DETECTOR_HELP + ".")
  flags.DEFINE_float("crop_margin", process.PrepareOptions.margin,
                     "Crop side = (1 + 2 margin) x the face box's longer side.")


@contextlib.contextmanager
def _task_lock(output: str, task_index: int, num_tasks: int):
  """Held while this process prepares its task: a second process started on the same task
  stops with a clear error instead of deleting the first one's work in progress (its
  temporary files). The operating system releases the lock when its holder dies."""
  os.makedirs(os.path.join(output, "locks"), exist_ok=True)
  path = os.path.join(output, "locks", f"task-{task_index}-of-{num_tasks}.lock")
  lock = filelock.FileLock(path)
  try:
    lock.acquire(timeout=0)
  except filelock.Timeout:
    raise RuntimeError(
        f"another process is preparing task {task_index} of {num_tasks} in {output} (it holds "
        f"{path}); wait for it to finish, or stop it, before starting this task again") from None
  try:
    yield
  finally:
    lock.release()


def _prepare_task(output: str, stored: dict, options: process.PrepareOptions, workers: int,
                  detector: str, detector_kwargs: dict, num_tasks: int, task_index: int,
                  progress: bool) -> dict | None:
  """The shards of task `task_index` (the caller holds its lock); the summary when all are done."""
  sources = [process.Source(**s) for s in stored["sources"]]
  mine = [(i, s) for i, s in enumerate(stored["shards"]) if i % num_tasks == task_index]
  pending = [s for _, s in mine if not os.path.exists(report.part_path(output, s["name"]))]
  shards.remove_temporaries([os.path.join(output, s["name"] + shards.SUFFIX) for s in pending]
                            + [report.part_path(output, s["name"]) for s in pending])
  jobs = [(output, s, [sources[i] for i in s["files"]], options) for s in pending]
  total_files = sum(len(s["files"]) for s in pending)
  with tqdm(total=total_files, desc="videos", unit="file", disable=not progress) as bar:
    def done(part):
      bar.update(len(part["files"]))
      bar.set_postfix(clips=part["num_clips"], rejects=len(part["rejected"]), refresh=False)

    if workers == 0 and jobs:
      det = face_detector.load_detector(detector, **detector_kwargs)
      for job in jobs:
        done(_prepare_shard(*job, det))
    elif jobs:
      if workers > 1 and detector == "mtcnn":
        detector_kwargs.setdefault("num_threads", 1)  # one core per worker
      context = multiprocessing.get_context("spawn")  # TensorFlow is not fork-safe
      with futures.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context,
                                       initializer=_init_worker,
                                       initargs=(detector, detector_kwargs)) as pool:
        try:
          for future in futures.as_completed([pool.submit(_worker, job) for job in jobs]):
            done(future.result())
        except futures.process.BrokenProcessPool as e:
          raise RuntimeError(
              "a worker process died (killed for lack of memory?); the shards finished so far "
              "are kept: re-run the same command to resume, perhaps with fewer --workers") from e
  if all(os.path.exists(report.part_path(output, s["name"])) for s in stored["shards"]):
    return report.finalize(output, stored)
  return None


def _value(text: str):
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return text


def main(argv: list[str] | None = None) -> dict | None:
  """Parses the command line, runs `prepare` (or only `report.finalize`), prints the summary."""
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--input_dir", help="folder of videos (searched recursively)")
  source.add_argument("--manifest", help="CSV or JSONL: path, speaker, split, transcript, emotion, "
                      "actions")
  p.add_argument("--emotions", help="the emotion names, comma-separated in index order (default: "
                 "the synthetic set's)")
  p.add_argument("--actions", help="the action names, comma-separated (default: the synthetic set's)")
  p.add_argument("--output", required=True, help="output directory")
  p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
  p.add_argument("--files_per_shard", type=int, default=FILES_PER_SHARD)
  p.add_argument("--image_size", type=int, default=process.PrepareOptions.image_size,
                 help="crop side in pixels")
  p.add_argument("--margin", type=float, default=process.PrepareOptions.margin,
                 help="crop margin around the face")
  p.add_argument("--image_format", choices=("jpeg", "png"),
                 default=process.PrepareOptions.image_format)
  p.add_argument("--detect_size", type=int, default=process.PrepareOptions.detect_size,
                 help="shorter side of the frames given to the detector")
  d = segments.SegmentOptions
  p.add_argument("--min_seconds", type=float, default=d.min_frames / schema.FPS, help="shortest clip")
  p.add_argument("--max_seconds", type=float, default=d.max_frames / schema.FPS,
                 help="longer segments are cut")
  p.add_argument("--min_face_size", type=float, default=d.min_face_size, help="pixels of the source")
  p.add_argument("--multiple_faces", choices=segments.MULTIPLE_FACES, default=d.multiple_faces,
                 help="where several faces are tracked at once: reject those frames, keep the "
                 "largest face, a clip of each face, or of each face the --speaker_model finds "
                 "speaking (active_speaker)")
  p.add_argument("--speaker_model", default=d.speaker_model, metavar="WORKDIR",
                 help="a SyncLipMAE run deciding who speaks (--multiple_faces=active_speaker)")
  p.add_argument("--second_face_min_frames", type=int, default=d.second_face_min_frames,
                 help="a second face counts when detected in at least this many frames ...")
  p.add_argument("--second_face_size_ratio", type=float, default=d.second_face_size_ratio,
                 help="... at least this fraction of the other face's size ...")
  p.add_argument("--second_face_score_ratio", type=float, default=d.second_face_score_ratio,
                 help="... and of its detector confidence")
  p.add_argument("--silence_db", type=float, default=d.silence_db)
  p.add_argument("--min_active", type=float, default=d.min_active,
                 help="least fraction of 40 ms frames above --silence_db")
  p.add_argument("--seed", type=int, default=0, help="seed of the hashed splits")
  p.add_argument("--validation_fraction", type=float, default=plan_lib.VALIDATION_FRACTION)
  p.add_argument("--test_fraction", type=float, default=0.0)
  p.add_argument("--detector", default=face_detector.DEFAULT, help=DETECTOR_HELP)
  p.add_argument("--detector_arg", action="append", default=[], metavar="KEY=VALUE",
                 help="argument of the detector (repeatable), e.g. weights=/path/model.onnx")
  p.add_argument("--num_tasks", type=int, default=1, help="machines sharing the work")
  p.add_argument("--task_index", type=int, default=0)
  p.add_argument("--finalize", action="store_true",
                 help="only write the reports (every shard must be done)")
  p.add_argument("--no_progress", action="store_true")
  a = p.parse_args(argv)
  kwargs = {}
  for item in a.detector_arg:
    key, sep, value = item.partition("=")
    if not sep:
      p.error(f"--detector_arg {item!r} is not KEY=VALUE")
    kwargs[key] = _value(value)
  try:
    options = process.PrepareOptions(
        image_size=a.image_size, margin=a.margin, image_format=a.image_format,
        detect_size=a.detect_size, segment=segments.SegmentOptions(
            min_frames=round(a.min_seconds * schema.FPS),
            max_frames=round(a.max_seconds * schema.FPS), min_face_size=a.min_face_size,
            multiple_faces=a.multiple_faces,
            speaker_model=os.path.abspath(a.speaker_model) if a.speaker_model else "",
            silence_db=a.silence_db, min_active=a.min_active,
            second_face_min_frames=a.second_face_min_frames,
            second_face_size_ratio=a.second_face_size_ratio,
            second_face_score_ratio=a.second_face_score_ratio))
  except ValueError as e:
    p.error(str(e))
  default = labels_lib.Labels()
  try:
    labels = labels_lib.Labels(labels_lib.parse_names(a.emotions) or default.emotions,
                               labels_lib.parse_names(a.actions) or default.actions)
  except ValueError as e:
    p.error(str(e))
  rows = plan_lib.read_manifest(a.manifest) if a.manifest else plan_lib.scan_folder(a.input_dir)
  if a.finalize:
    with open(os.path.join(a.output, plan_lib.PLAN_FILE), encoding="utf-8") as f:
      summary = report.finalize(os.path.abspath(a.output), json.load(f))
  else:
    summary = prepare(
        rows, a.output, options, root=a.input_dir, workers=a.workers, seed=a.seed,
        validation_fraction=a.validation_fraction, test_fraction=a.test_fraction,
        files_per_shard=a.files_per_shard, detector=a.detector, detector_kwargs=kwargs,
        num_tasks=a.num_tasks, task_index=a.task_index, progress=not a.no_progress, labels=labels)
  if summary is None:
    print(f"task {a.task_index} of {a.num_tasks} done; other tasks still hold shards",
          file=sys.stderr)
  else:
    print(json.dumps(summary, indent=1))
  return summary


def run() -> None:
  """Console-script entry point (`synclipmae-prepare`)."""
  main()


if __name__ == "__main__":
  run()
