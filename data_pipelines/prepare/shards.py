"""Atomic outputs: an ArrayRecord shard or a JSON file appears whole or not at all.

Everything is written to a temporary name next to its destination and renamed into place
when complete (a rename within one filesystem is atomic), so an interrupted run leaves
only temporary files, which the next run deletes; the training globs
(`train-*.array_record`) never match them.
"""

from __future__ import annotations

import glob
import json
import os

from array_record.python import array_record_module

SUFFIX = ".array_record"


def _temporary(path: str) -> str:
  return f"{path}.tmp-{os.getpid()}"


class AtomicShard:
  """An ArrayRecord file (one `schema` record per clip) committed by renaming.

  Records are grouped one per chunk ("group_size:1"), what grain's random access needs.
  A shard that received no record is not created.
  """

  def __init__(self, path: str):
    if not path.endswith(SUFFIX):
      raise ValueError(f"shard path {path!r} must end with {SUFFIX}")
    self.path = path
    self.count = 0
    self._writer = None

  def write(self, record: bytes) -> None:
    if self._writer is None:
      self._writer = array_record_module.ArrayRecordWriter(_temporary(self.path), "group_size:1")
    self._writer.write(record)
    self.count += 1

  def commit(self) -> int:
    """Closes and renames the shard into place; returns its number of records."""
    if self._writer is not None:
      self._writer.close()
      os.replace(_temporary(self.path), self.path)
      self._writer = None
    return self.count

  def abort(self) -> None:
    if self._writer is not None:
      self._writer.close()
      os.remove(_temporary(self.path))
      self._writer = None


def write_json(path: str, obj) -> None:
  """Writes `obj` as JSON to `path` atomically."""
  tmp = _temporary(path)
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def remove_temporaries(paths: list[str]) -> int:
  """Deletes the leftovers of interrupted writes of `paths`; returns how many."""
  stale = [t for p in paths for t in glob.glob(glob.escape(p) + ".tmp-*")]
  for t in stale:
    os.remove(t)
  return len(stale)
