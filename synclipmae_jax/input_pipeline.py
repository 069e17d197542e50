"""Which shards a run reads: prepared ArrayRecord shards, or the synthetic dataset.

`data.source` = "array_record" reads the shards matching `data.train_pattern` /
`data.eval_pattern` (prepared by `data_pipelines/prepare`); "synthetic" generates the
built-in synthetic talking faces on first use into a cache directory keyed by their
parameters (`data_pipelines/synthetic_dataset.py`). The batches themselves come from
`data_pipelines.grain_pipeline`.

Patterns may name a bucket (`gs://BUCKET/data/train-*.array_record`): the matching shards are
copied once to `shard_cache` on each host and read there (ArrayRecord's reader opens local files:
`storage.py`).
"""

from __future__ import annotations

import hashlib
import json
import os

from data_pipelines import grain_pipeline, schema, synthetic_dataset, tfds_clips
from synclipmae_jax import storage

DATA_SOURCES = ("synthetic", "array_record", "tfds")


def train_dataset(config, paths: list[str], *, process_index: int = 0, process_count: int = 1):
  """The Grain training dataset of `config` over shards `paths` for one process (train.py and the
  tests that replay its batches build it here, so both read the same windows)."""
  return grain_pipeline.make_train_dataset(
      paths, global_batch_size=config.data.global_batch_size,
      window_frames=config.data.window_frames, seed=config.seed, process_index=process_index,
      process_count=process_count, horizontal_flip=config.data.horizontal_flip,
      audio_context_frames=config.model.audio.input_context_frames,
      clips_per_identity=config.data.clips_per_identity, read_threads=config.data.read_threads)


def dataset_paths(config) -> tuple[list[str], list[str]]:
  """Training and held-out shard paths (for data.source="tfds": the two splits' TFDS clip
  sources, which the pipelines read alike); the synthetic dataset is generated on first use."""
  d = config.data
  if d.source == "tfds":
    return (tfds_clips.TfdsClipSource(d.tfds_name, "train", d.tfds_data_dir),
            tfds_clips.TfdsClipSource(d.tfds_name, d.tfds_eval_split, d.tfds_data_dir))
  if d.source == "array_record":
    train, held_out = storage.glob(d.train_pattern), storage.glob(d.eval_pattern)
    if not train or not held_out:
      raise ValueError(f"no shards match data.train_pattern={d.train_pattern!r} ({len(train)}) "
                       f"or data.eval_pattern={d.eval_pattern!r} ({len(held_out)})")
    return (storage.local_copies(train, shard_cache(config)),
            storage.local_copies(held_out, shard_cache(config)))
  if d.source != "synthetic":
    raise ValueError(f"data.source={d.source!r} must be one of {DATA_SOURCES}")
  params = dict(d.synthetic.to_dict(), image_size=config.model.image_size)
  paths = synthetic_dataset.ensure_synthetic_dataset(_synthetic_directory(config, "synthetic", params),
                                                     **params)
  return paths["train"], paths["validation"]


def labelled_paths(config, synthetic: dict) -> dict[str, list[str]]:
  """{split: shard paths} of the labelled synthetic set of the probes with parameters
  `synthetic` (`synthetic_dataset.ensure_labelled_dataset`) at the run's image size, generated
  on first use next to the run's synthetic data."""
  params = dict(synthetic, image_size=config.model.image_size)
  return synthetic_dataset.ensure_labelled_dataset(_synthetic_directory(config, "labelled", params),
                                                   **params)


def labelled_clips(config, *, pattern: str, synthetic: dict) -> dict[str, list[dict]]:
  """{split: decoded clips (`grain_pipeline.load_eval_clips`)} of labelled data for the
  downstream heads: the prepared shards of `pattern` grouped by their records' split, or the
  labelled synthetic set with parameters `synthetic` (`labelled_paths`). Every split must hold
  clips."""
  if pattern:
    paths = storage.local_copies(storage.glob(pattern), shard_cache(config))
    if not paths:
      raise ValueError(f"no shards match pattern={pattern!r}")
    clips = grain_pipeline.load_eval_clips(paths)
    by_split = {split: [c for c in clips if c["split"] == split] for split in schema.SPLITS}
  else:
    by_split = {split: grain_pipeline.load_eval_clips(p)
                for split, p in labelled_paths(config, synthetic).items()}
  empty = [split for split in schema.SPLITS if not by_split.get(split)]
  if empty:
    raise ValueError(f"the labelled data has no clips in split(s) {empty}")
  return by_split


def _cache_root(config) -> str:
  """`data.directory`, default ~/.cache/synclipmae_jax: this host's data caches."""
  return config.data.directory or os.path.join(os.path.expanduser("~"), ".cache", "synclipmae_jax")


def shard_cache(config) -> str:
  """Where the shards of a bucket's patterns are copied on this host (`storage.local_copies`)."""
  return os.path.join(_cache_root(config), "shards")


def _synthetic_directory(config, kind: str, params: dict) -> str:
  """The cache folder of a synthetic dataset: `_cache_root` / kind-<hash of its parameters>."""
  tag = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
  return os.path.join(_cache_root(config), f"{kind}-{tag}")
