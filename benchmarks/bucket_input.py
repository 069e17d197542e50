r"""Training windows read from a bucket vs the same shards on local disk, in one run
(BENCHMARKS.md (f)).

  python -m benchmarks.bucket_input --json_out benchmarks/results/bucket_input.json

The synthetic dataset of configs/demo.py at 224 px (the preparation's crop size), uploaded to a
GCS server on localhost (tests/gcs_server.py). A run whose data patterns name the bucket copies
the shards once into its host cache (`storage.local_copies`: ArrayRecord reads local files) and
then reads the copies, so the bucket costs a one-off copy and nothing per window; this measures
both: the copy (MB/s, here from a server on the same host: a lower bound of what a real bucket
costs) and the training pipeline's windows/s over the bucket's copies and over the original
files (the reference), alternated, after one warm-up batch each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from benchmarks import harness
from configs import demo
from synclipmae_jax import input_pipeline, storage
from tests import gcs_server

BUCKET = "bench"


def _windows_per_second(config, paths, batches: int) -> float:
  it = iter(input_pipeline.train_dataset(config, paths))
  next(it)  # warm-up: threads started, first reads
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * config.data.global_batch_size / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--json_out", default="benchmarks/results/bucket_input.json")
  args = parser.parse_args()
  print(f"machine: {harness.machine()}; load before: {harness.load()}")
  root = tempfile.mkdtemp(prefix="bucket-input-")
  config = demo.get_config()
  config.model.image_size = 224
  config.data.update(directory=os.path.join(root, "local"), global_batch_size=16, window_frames=8)
  local_train, _ = input_pipeline.dataset_paths(config)  # generated on first use
  megabytes = sum(os.path.getsize(p) for p in local_train) / 1e6
  with gcs_server.running(BUCKET) as env:
    os.environ.update(env)
    for p in local_train:
      with open(p, "rb") as f:
        storage.path(f"gs://{BUCKET}/data/{os.path.basename(p)}").write_bytes(f.read())
    start = time.perf_counter()
    copies = storage.local_copies(storage.glob(f"gs://{BUCKET}/data/train-*.array_record"),
                                  os.path.join(root, "bucket_cache"))
    copy_seconds = time.perf_counter() - start
  bucket, local = [], []
  for _ in range(args.repeats):
    bucket.append(_windows_per_second(config, copies, args.batches))
    local.append(_windows_per_second(config, local_train, args.batches))
  result = {
      "shards": len(local_train), "megabytes": megabytes, "copy_seconds": copy_seconds,
      "copy_megabytes_per_second": megabytes / copy_seconds,
      "bucket_windows_per_second": statistics.median(bucket),
      "local_windows_per_second": statistics.median(local),
      "bucket_over_local": statistics.median(bucket) / statistics.median(local),
      "batches": args.batches, "global_batch_size": config.data.global_batch_size,
      "window_frames": config.data.window_frames, "image_size": config.model.image_size,
  }
  for k, v in result.items():
    print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")
  harness.finish(args.json_out, result)


if __name__ == "__main__":
  main()
