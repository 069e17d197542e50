r"""Benchmarks of the data path: preparation speed per stage, training-pipeline throughput.

  python -m data_pipelines.prepare.benchmark --input_dir ../shared/fixtures/hdtf \
      --output /tmp/bench --repeat 4 --json_out benchmarks/results/data_preparation.json

1. Preparation in one process (`--workers 0`, so CPU time is this process's): seconds of
   video per CPU second for each stage (decode: both decoding passes and the audio;
   detect: the detector; track: scene cuts, tracking, segments; crop; encode: JPEG
   encoding and serialisation), from the run's summary. `--repeat` lists every input
   that many times (as distinct speakers) to average over a longer run.
2. The grain training pipeline over the prepared shards at the clip size given by the
   flags (`--image_size` crops, the preparation's default 224, and windows of
   `--window_frames`, by default 8 as in `configs/pretrain.py`), in the main process
   (worker_count 0), with each of `--read_threads`: clips per second of wall time and per
   CPU second (all the process's threads), and, as the
   reference measured in the same run (after each batch, so both share the machine's
   conditions), how many clips per CPU second bare decoding of the same number of stored
   frames reaches (`schema.decode_frames`: the floor cost of any pipeline over these shards).
   Their ratio is the pipeline's efficiency.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import time

from data_pipelines import clip_records
from data_pipelines import grain_pipeline
from data_pipelines import schema
from data_pipelines.prepare import plan
from data_pipelines.prepare import prepare
from data_pipelines.prepare import process


def preparation(rows: list[dict], output: str, image_size: int) -> dict:
  """Prepares `rows` in this process; returns per-stage speeds and the wall time."""
  start = time.perf_counter()
  summary = prepare.prepare(rows, output, process.PrepareOptions(image_size=image_size),
                            workers=0, progress=False)
  wall = time.perf_counter() - start
  video = summary["hours_decoded"] * 3600
  cpu = summary["cpu_seconds"]
  return {"video_seconds": video, "wall_seconds": wall,
          "video_seconds_per_cpu_second": {
              **{k: round(v, 2) for k, v in summary["video_seconds_per_cpu_second"].items()},
              "all_stages": round(video / sum(cpu.values()), 2)},
          "face_detection_rate": summary["face_detection_rate"]}


def pipeline(paths: list[str], batch_size: int, window_frames: int, batches: int,
             read_threads: int) -> dict:
  """Times `batches` batches of the training pipeline (after one warm-up batch), each followed by
  bare decoding of as many windows (the reference, interleaved so that both run under the same
  conditions)."""
  ds = grain_pipeline.make_train_dataset(paths, global_batch_size=batch_size,
                                         window_frames=window_frames, seed=0,
                                         read_threads=read_threads)
  it = grain_pipeline.make_train_iterator(ds)
  next(it)
  source = clip_records.ClipSource(list(paths))
  encoded = [{"frames": source.frames(i, 0, window_frames)} for i in range(len(source))]
  # The pipeline's prefetch threads also work while the main thread decodes the reference, so
  # the pipeline's CPU time is the process's minus the main thread's during the reference.
  bare_cpu = 0.0
  process_cpu = time.process_time()
  for b in range(batches):
    batch = next(it)
    c = time.thread_time()
    for i in range(b * batch_size, (b + 1) * batch_size):
      schema.decode_frames(encoded[i % len(encoded)])
    bare_cpu += time.thread_time() - c
  cpu = time.process_time() - process_cpu - bare_cpu
  wall = time.perf_counter()  # then the wall time of as many batches back to back
  for _ in range(batches):
    next(it)
  wall = time.perf_counter() - wall
  clips = batches * batch_size
  return {"read_threads": read_threads,
          "clips_per_second": round(clips / wall, 1), "clips_per_cpu_second": round(clips / cpu, 1),
          "reference_bare_decoding_clips_per_cpu_second": round(clips / bare_cpu, 1),
          "pipeline_over_bare_decoding": round(bare_cpu / cpu, 3),
          "batch_shapes": {k: "x".join(map(str, v.shape)) for k, v in batch.items()}}


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--input_dir", required=True)
  p.add_argument("--output", required=True, help="scratch directory (replaced)")
  p.add_argument("--repeat", type=int, default=1)
  p.add_argument("--batches", type=int, default=20)
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--image_size", type=int, default=process.PrepareOptions.image_size,
                 help="side of the prepared crops")
  p.add_argument("--window_frames", type=int, default=8, help="frames per training window")
  p.add_argument("--read_threads", type=int, nargs="+", default=[0, 2],
                 help="the pipeline's read threads to measure (configs/pretrain.py: 0, with 16 "
                 "worker processes; the default config: 2)")
  p.add_argument("--json_out", help="also write the result here")
  a = p.parse_args(argv)
  shutil.rmtree(a.output, ignore_errors=True)
  rows = []
  for k in range(a.repeat):  # the same files under other names: a longer run
    for row in plan.scan_folder(a.input_dir):
      link = os.path.join(a.output, "inputs", f"{k}_{os.path.basename(row['path'])}")
      os.makedirs(os.path.dirname(link), exist_ok=True)
      os.symlink(os.path.abspath(row["path"]), link)
      rows.append({"path": link, "split": "train"})
  size, window = a.image_size, a.window_frames
  result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                       f"Python {platform.python_version()}",
            "preparation": preparation(rows, os.path.join(a.output, "data"), size)}
  paths = sorted(glob.glob(os.path.join(a.output, "data", "train-*.array_record")))
  result["training_pipeline"] = [
      {"image_size": size, "window_frames": window,
       **pipeline(paths, a.batch_size, window, a.batches, threads)} for threads in a.read_threads]
  print(json.dumps(result, indent=1))
  if a.json_out:
    with open(a.json_out, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
