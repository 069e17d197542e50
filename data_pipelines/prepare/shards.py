"""Atomic outputs: an ArrayRecord shard or a JSON file appears whole or not at all.

Everything is written to a temporary name next to its destination (unique per host,
process and file, so tasks sharing the directory never write the same one), flushed to
disk, and renamed into place when complete (a rename within one filesystem is atomic);
the directory is flushed after the rename, so a done-marker written next can never reach
the disk before the data it marks. An interrupted run leaves only temporary files, which
the next run of its task deletes (under the task's lock: `prepare._task_lock`); the training globs (`train-*.array_record`) never match them.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import uuid

from data_pipelines import clip_records, schema

SUFFIX = ".array_record"


def _temporary(path: str) -> str:
  return f"{path}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _fsync(path: str) -> None:
  """Flushes a file's data, or a directory's entries, to disk."""
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _commit(tmp: str, path: str) -> None:
  _fsync(tmp)
  os.replace(tmp, path)
  _fsync(os.path.dirname(os.path.abspath(path)))


class AtomicShard:
  """An ArrayRecord file of clips (`clip_records` layout) committed by renaming.

  A shard that received no clip is not created.
  """

  def __init__(self, path: str):
    if not path.endswith(SUFFIX):
      raise ValueError(f"shard path {path!r} must end with {SUFFIX}")
    self.path = path
    self._writer = None
    self._tmp = _temporary(path)

  @property
  def count(self) -> int:
    return 0 if self._writer is None else self._writer.num_clips

  def write(self, clip: schema.Clip, image_format: str) -> None:
    if self._writer is None:
      self._writer = clip_records.ShardWriter(self._tmp)
    self._writer.write(clip, image_format)

  def commit(self) -> int:
    """Closes (writing the index) and renames the shard into place; returns its number of clips."""
    count = self.count
    if self._writer is not None:
      self._writer.close()
      _commit(self._tmp, self.path)
      self._writer = None
    return count

  def abort(self) -> None:
    if self._writer is not None:
      self._writer.close()
      os.remove(self._tmp)
      self._writer = None


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically."""
  tmp = _temporary(path)
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  _commit(tmp, path)


def write_json(path: str, obj) -> None:
  """Writes `obj` as JSON to `path` atomically."""
  write_text(path, json.dumps(obj, indent=1))


def remove_temporaries(paths: list[str]) -> int:
  """Deletes the leftovers of interrupted writes of `paths`; returns how many."""
  stale = [t for p in paths for t in glob.glob(glob.escape(p) + ".tmp-*")]
  for t in stale:
    os.remove(t)
  return len(stale)
