"""Writes the procedural talking-face dataset (`data_pipelines.synthetic`) to ArrayRecord shards.

Layout of the dataset directory:

  dataset_info.json                        parameters, counts and shard names
  train-0000N-of-0000M.array_record        training clips (identities 0 .. num_identities-1)
  validation-0000N-of-0000M.array_record   held-out clips of unseen identities

The labelled set of the probes (`ensure_labelled_dataset`, evaluators/probe/) has the same
layout with train / validation / test splits of speakers that no pretraining split holds.

Clips are `schema` clips laid out as `clip_records` describes. Clip ids are unique across both
splits; training clip i belongs to identity i % num_identities, so every training
identity speaks several clips (what identity-consistent prompt shuffling, paper 3.2,
needs). Every clip draws its speech and its ambient motion from separate seeds.

The dataset is generated once: `ensure_synthetic_dataset` returns the existing
shards when `dataset_info.json` matches the requested parameters, and otherwise
writes a fresh dataset into a temporary directory next to the target and renames
it into place, so an interrupted run never leaves a half-written dataset.

Usage (or the `synclipmae-make-synthetic` console script):
  python -m data_pipelines.synthetic_dataset --directory /tmp/synthetic_faces
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np
from tqdm import tqdm

from data_pipelines import clip_records
from data_pipelines.synthetic import talking_face
from data_pipelines.synthetic import identity

GENERATOR_VERSION = 2  # bump when data_pipelines.synthetic changes what it draws (invalidates old datasets)
INFO_FILE = "dataset_info.json"
SPLITS = ("train", "validation")
# The labelled set's speakers and clips are numbered from here, far above any pretraining set's,
# so that they are speakers the pretrained encoder never saw (identity.make_identity draws a
# speaker from its id and the seed).
LABELLED_FIRST_IDENTITY = 1_000_000
LABELLED_FIRST_CLIP = 10_000_000
# Speaker i of the labelled set goes to LABELLED_SPLITS[i % 5]: 60 / 20 / 20 % of the speakers.
LABELLED_SPLITS = ("train", "train", "train", "validation", "test")


def clip_seeds(seed: int, clip_id: int) -> tuple[int, int]:
  """The (speech_seed, ambient_seed) of clip `clip_id` in the dataset generated with `seed`."""
  speech, ambient = np.random.SeedSequence([seed, clip_id]).generate_state(2)
  return int(speech), int(ambient)


def _plan(num_train_clips: int, num_eval_clips: int, num_identities: int,
          num_eval_identities: int) -> dict[str, list[tuple[int, int]]]:
  """(clip_id, identity_id) of every clip, per split."""
  train = [(i, i % num_identities) for i in range(num_train_clips)]
  validation = [(num_train_clips + j, num_identities + j % num_eval_identities)
                for j in range(num_eval_clips)]
  return {"train": train, "validation": validation}


def _shard_names(split: str, num_clips: int, num_shards: int) -> list[str]:
  n = min(num_shards, num_clips)
  return [f"{split}-{i:05d}-of-{n:05d}.array_record" for i in range(n)]


def _read_info(directory: str) -> dict | None:
  try:
    with open(os.path.join(directory, INFO_FILE)) as f:
      return json.load(f)
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def _paths(directory: str, info: dict) -> dict[str, list[str]]:
  return {split: [os.path.join(directory, name) for name in names]
          for split, names in info["files"].items()}


def _is_complete(directory: str, parameters: dict) -> bool:
  info = _read_info(directory)
  return (info is not None and info.get("parameters") == parameters
          and all(os.path.exists(p) for ps in _paths(directory, info).values() for p in ps))


def _write(directory: str, parameters: dict, plan: dict[str, list[tuple[int, int]]],
           frames: dict[str, int]) -> dict:
  """Generates every clip of `plan` ({split: [(clip_id, identity_id)]}, `frames[split]` frames
  each) into `directory` (which exists and is empty); returns the info."""
  seed = parameters["seed"]
  identities = {}
  files = {}
  with tqdm(total=sum(len(c) for c in plan.values()), desc="synthetic clips", unit="clip") as bar:
    for split in plan:
      names = _shard_names(split, len(plan[split]), parameters["num_shards"])
      files[split] = names
      for name, clips in zip(names, np.array_split(np.array(plan[split]), len(names))):
        writer = clip_records.ShardWriter(os.path.join(directory, name))
        for clip_id, identity_id in clips.tolist():
          if identity_id not in identities:
            identities[identity_id] = identity.make_identity(identity_id, seed)
          speech_seed, ambient_seed = clip_seeds(seed, clip_id)
          clip = talking_face.generate_clip(
              identities[identity_id], clip_id=clip_id, num_frames=frames[split],
              image_size=parameters["image_size"], speech_seed=speech_seed,
              ambient_seed=ambient_seed, split=split)
          writer.write(clip)
          bar.update()
        writer.close()
  info = {
      "parameters": parameters,
      "counts": {split: len(plan[split]) for split in plan},
      "identities": {split: sorted({i for _, i in plan[split]}) for split in plan},
      "files": files,
  }
  with open(os.path.join(directory, INFO_FILE), "w") as f:
    json.dump(info, f, indent=2)
  return info


def ensure_synthetic_dataset(directory: str, *, num_train_clips: int, num_eval_clips: int,
                             num_identities: int, num_eval_identities: int, clip_frames: int,
                             eval_clip_frames: int, image_size: int, seed: int,
                             num_shards: int = 4) -> dict[str, list[str]]:
  """Makes sure `directory` holds the synthetic dataset with these parameters.

  Args:
    directory: dataset directory; replaced if it holds a dataset with other parameters.
    num_train_clips: number of training clips.
    num_eval_clips: number of validation clips.
    num_identities: number of training speakers.
    num_eval_identities: number of validation speakers (disjoint from the training ones).
    clip_frames: frames per training clip.
    eval_clip_frames: frames per validation clip.
    image_size: frame height and width in pixels.
    seed: seed of every identity and clip.
    num_shards: ArrayRecord files per split (fewer if a split has fewer clips).

  Returns:
    {"train": [shard paths], "validation": [shard paths]}.
  """
  for name, value in (("num_train_clips", num_train_clips), ("num_eval_clips", num_eval_clips),
                      ("num_identities", num_identities),
                      ("num_eval_identities", num_eval_identities), ("clip_frames", clip_frames),
                      ("eval_clip_frames", eval_clip_frames), ("num_shards", num_shards)):
    if value < 1:
      raise ValueError(f"{name} must be >= 1, got {value}")
  if image_size < 16:
    raise ValueError(f"image_size must be >= 16, got {image_size}")
  parameters = {
      "generator_version": GENERATOR_VERSION, "layout": clip_records.LAYOUT,
      "num_train_clips": num_train_clips,
      "num_eval_clips": num_eval_clips, "num_identities": num_identities,
      "num_eval_identities": num_eval_identities, "clip_frames": clip_frames,
      "eval_clip_frames": eval_clip_frames, "image_size": image_size, "seed": seed,
      "num_shards": num_shards,
  }
  plan = _plan(num_train_clips, num_eval_clips, num_identities, num_eval_identities)
  return _ensure(directory, parameters, plan,
                 {"train": clip_frames, "validation": eval_clip_frames})


def ensure_labelled_dataset(directory: str, *, num_identities: int, clips_per_identity: int,
                            clip_frames: int, image_size: int, seed: int,
                            num_shards: int = 2) -> dict[str, list[str]]:
  """Makes sure `directory` holds the labelled synthetic set of the probes: `num_identities`
  unseen speakers (LABELLED_FIRST_IDENTITY on) with `clips_per_identity` clips of `clip_frames`
  frames each, split by speaker into train / validation / test (LABELLED_SPLITS). Every clip
  carries its emotion, per-frame action flags and transcript (schema.py).

  Returns:
    {"train": [...], "validation": [...], "test": [...]} shard paths.
  """
  for name, value in (("num_identities", num_identities), ("clips_per_identity", clips_per_identity),
                      ("clip_frames", clip_frames), ("num_shards", num_shards)):
    if value < 1:
      raise ValueError(f"{name} must be >= 1, got {value}")
  if num_identities < len(LABELLED_SPLITS):
    raise ValueError(f"num_identities={num_identities} leaves a split without speakers "
                     f"(need >= {len(LABELLED_SPLITS)})")
  if image_size < 16:
    raise ValueError(f"image_size must be >= 16, got {image_size}")
  parameters = {
      "generator_version": GENERATOR_VERSION, "layout": clip_records.LAYOUT, "kind": "labelled",
      "num_identities": num_identities,
      "clips_per_identity": clips_per_identity, "clip_frames": clip_frames,
      "image_size": image_size, "seed": seed, "num_shards": num_shards,
  }
  plan = {split: [] for split in dict.fromkeys(LABELLED_SPLITS)}
  for i in range(num_identities):
    for j in range(clips_per_identity):
      plan[LABELLED_SPLITS[i % len(LABELLED_SPLITS)]].append(
          (LABELLED_FIRST_CLIP + i * clips_per_identity + j, LABELLED_FIRST_IDENTITY + i))
  return _ensure(directory, parameters, plan, dict.fromkeys(plan, clip_frames))


def _ensure(directory: str, parameters: dict, plan: dict[str, list[tuple[int, int]]],
            frames: dict[str, int]) -> dict[str, list[str]]:
  """The shards of the dataset `parameters` describe in `directory`, written (atomically) only
  when `directory` does not already hold it."""
  directory = os.path.abspath(directory)
  if _is_complete(directory, parameters):
    return _paths(directory, _read_info(directory))
  if os.path.isdir(directory) and os.listdir(directory) and _read_info(directory) is None:
    raise ValueError(f"{directory} is not empty and holds no {INFO_FILE}; refusing to replace it")

  parent, base = os.path.split(directory)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
  try:
    os.chmod(staging, 0o755)  # mkdtemp makes it private to the user
    info = _write(staging, parameters, plan, frames)
    if _is_complete(directory, parameters):  # another process finished it meanwhile
      shutil.rmtree(staging)
      return _paths(directory, info)
    if os.path.exists(directory):
      trash = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
      os.rename(directory, os.path.join(trash, base))
      os.rename(staging, directory)
      shutil.rmtree(trash)
    else:
      os.rename(staging, directory)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return _paths(directory, info)


def main(argv: list[str] | None = None) -> None:
  """Generates (or finds) the dataset described by the command line and prints a summary."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--directory", required=True)
  parser.add_argument("--num_train_clips", type=int, default=512)
  parser.add_argument("--num_eval_clips", type=int, default=64)
  parser.add_argument("--num_identities", type=int, default=64)
  parser.add_argument("--num_eval_identities", type=int, default=16)
  parser.add_argument("--clip_frames", type=int, default=75)
  parser.add_argument("--eval_clip_frames", type=int, default=100)
  parser.add_argument("--image_size", type=int, default=48)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--num_shards", type=int, default=4)
  args = parser.parse_args(argv)
  start = time.perf_counter()
  paths = ensure_synthetic_dataset(**vars(args))
  info = _read_info(os.path.abspath(args.directory))
  print(json.dumps({"seconds": round(time.perf_counter() - start, 2), "counts": info["counts"],
                    "paths": paths}, indent=2))


def run() -> None:
  """Console-script entry point (`synclipmae-make-synthetic`)."""
  main()


if __name__ == "__main__":
  run()
