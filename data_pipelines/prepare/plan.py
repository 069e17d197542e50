"""The plan of a preparation run: which files, which speakers and splits, which shard each goes to.

Inputs are a folder of videos or a manifest (CSV with a header, or JSON lines) with the
fields `path` (required; relative paths are relative to the manifest), `speaker`,
`split`, `transcript`, `emotion` and `actions` (names of the run's label vocabularies:
`data_pipelines/labels.py`).
Without a manifest, or without a `speaker` field, a file directly in the folder is its
own speaker (its stem) and a file in a subfolder belongs to the top subfolder's name
(VoxCeleb's `id/video/clip.mp4` layout).

Speakers become identity ids (sorted speaker names, numbered from 0), the ids that the
identity shuffle of the training (paper 3.2) relies on. A row without a split is given
one from a seeded hash of its speaker, so splits are speaker-disjoint, reproducible and
independent of the order of the listing. Files are grouped per split, sorted by path, into
shards of `files_per_shard` files; the plan is stored in the output directory and a
re-run must find the same plan (that is what makes resuming safe).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os

from data_pipelines import labels as labels_lib
from data_pipelines import schema
from data_pipelines.prepare import process
from data_pipelines.prepare import shards

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".mpg", ".mpeg",
                    ".ts", ".3gp")
PLAN_FILE = "plan.json"
# Share of the speakers without a split that go to validation by default (the prepare command's
# and the TFDS builder's).
VALIDATION_FRACTION = 0.05


def scan_folder(root: str) -> list[dict]:
  """Manifest rows for every video file under `root` (by extension), sorted by path."""
  if not os.path.isdir(root):
    raise ValueError(f"input folder {root!r} does not exist")
  rows = []
  for directory, _, names in os.walk(root):
    for name in names:
      if name.lower().endswith(VIDEO_EXTENSIONS):
        rows.append({"path": os.path.join(directory, name)})
  return sorted(rows, key=lambda r: r["path"])


def read_manifest(path: str) -> list[dict]:
  """Rows of a CSV (with a header) or JSON-lines manifest, paths made absolute."""
  base = os.path.dirname(os.path.abspath(path))
  with open(path, newline="", encoding="utf-8") as f:
    if path.endswith((".jsonl", ".json")):
      rows = [json.loads(line) for line in f if line.strip()]
    else:
      rows = list(csv.DictReader(f))
  for i, row in enumerate(rows):
    if not row.get("path"):
      raise ValueError(f"{path}: row {i + 1} has no 'path': {row}")
    row["path"] = os.path.normpath(os.path.join(base, row["path"]))
  return rows


def default_speaker(path: str, root: str | None) -> str:
  """The speaker of a file without one: top subfolder under `root`, else the file stem."""
  if root is not None:
    parts = os.path.relpath(path, root).split(os.sep)
    if len(parts) > 1:
      return parts[0]
  return os.path.splitext(os.path.basename(path))[0]


def hashed_split(speaker: str, seed: int, validation_fraction: float, test_fraction: float) -> str:
  """A speaker's split from a seeded hash: the same answer in every run and on every machine."""
  digest = hashlib.sha256(f"{seed}:{speaker}".encode()).digest()
  u = int.from_bytes(digest[:8], "big") / 2.0**64
  if u < test_fraction:
    return "test"
  if u < test_fraction + validation_fraction:
    return "validation"
  return "train"


def make_plan(rows: list[dict], *, root: str | None, seed: int, validation_fraction: float,
              test_fraction: float, files_per_shard: int,
              labels: labels_lib.Labels = labels_lib.Labels()) -> dict:
  """The plan (a JSON-able dict) of preparing `rows`.

  Args:
    rows: manifest rows (`read_manifest` or `scan_folder`).
    root: the input folder (for default speakers), or None for a manifest.
    seed: seed of the hashed splits.
    validation_fraction: share of speakers without a split that go to "validation".
    test_fraction: share that go to "test".
    files_per_shard: source files per output shard.
    labels: the vocabularies the manifest's emotion and actions cells name.

  Returns:
    {"sources": [Source fields...], "speakers": {name: identity_id},
     "shards": [{"name", "split", "files": [source indices]}]}.
  """
  if files_per_shard < 1:
    raise ValueError(f"files_per_shard must be >= 1, got {files_per_shard}")
  if validation_fraction < 0 or test_fraction < 0 or validation_fraction + test_fraction > 1:
    raise ValueError(f"need fractions >= 0 summing to <= 1, got validation={validation_fraction}, "
                     f"test={test_fraction}")
  if not rows:
    raise ValueError("no input files")
  seen = set()
  for row in rows:
    if row["path"] in seen:
      raise ValueError(f"{row['path']} is listed twice")
    seen.add(row["path"])
  if len(rows) * process.MAX_CLIPS_PER_FILE >= 2**31:
    raise ValueError(f"{len(rows)} files exceed the int32 clip-id space; split the manifest")
  rows = sorted(rows, key=lambda r: r["path"])
  speakers = [str(r.get("speaker") or default_speaker(r["path"], root)) for r in rows]
  identity = {name: i for i, name in enumerate(sorted(set(speakers)))}
  sources = []
  for i, (row, speaker) in enumerate(zip(rows, speakers)):
    split = row.get("split") or hashed_split(speaker, seed, validation_fraction, test_fraction)
    if split not in schema.SPLITS:
      raise ValueError(f"{row['path']}: split {split!r} is not one of {schema.SPLITS}")
    sources.append(dict(path=row["path"], speaker=speaker, identity_id=identity[speaker],
                        split=split, file_index=i, transcript=str(row.get("transcript") or ""),
                        emotion=labels.emotion_index(row.get("emotion"), row["path"]),
                        actions=list(labels.action_flags(row.get("actions"), row["path"]))))
  shards = []
  for split in schema.SPLITS:
    members = [s["file_index"] for s in sources if s["split"] == split]
    groups = [members[i:i + files_per_shard] for i in range(0, len(members), files_per_shard)]
    shards += [{"name": f"{split}-{k:05d}-of-{len(groups):05d}", "split": split, "files": g}
               for k, g in enumerate(groups)]
  return {"sources": sources, "speakers": identity, "shards": shards}


def load_or_store(output: str, plan: dict, parameters: dict) -> dict:
  """Stores plan + parameters in `output`, or checks a stored one is the same (resume)."""
  path = os.path.join(output, PLAN_FILE)
  record = {"parameters": parameters, **plan}
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      stored = json.load(f)
    if stored != json.loads(json.dumps(record)):
      changed = [k for k in record if stored.get(k) != json.loads(json.dumps(record[k]))]
      raise ValueError(f"{output} holds a run with other {changed}; resume with the same "
                       f"inputs and options, or use a new output directory")
    return stored
  os.makedirs(output, exist_ok=True)
  shards.write_json(path, record)
  return record
