"""Paths of a run on any file system, a local folder or a bucket (`gs://`), through etils.epath.

The workdir (config.json, checkpoints, metrics.json, TensorBoard events, the log), the data
patterns, the TFDS data dir and pretrained weights may be `gs://` paths: checkpoints go straight
to the bucket (orbax writes through tensorstore), as in big_vision and MaxText. epath opens
`gs://` with gcsfs: this module sets `EPATH_USE_TF=false` unless the user set it (epath would
otherwise pick TensorFlow's gfile whenever TensorFlow is installed, and TensorFlow's GCS client
only talks to the real service, so the path the tests run against a GCS emulator would not be
the path runs take). A local path works as it always did.

Two kinds of files cannot be used in place on an object store, and are staged on local disk:
- files appended to while the run goes (the log, TensorBoard's event files, profiles): a run with
  a `gs://` workdir writes them in a local folder that `Mirror.sync` copies to the workdir at
  log lines while no checkpoint is being written (gcsfs calls from two threads at once, ours
  and orbax's commit thread, hung now and then against a GCS server) and at the end;
- ArrayRecord shards: ArrayRecord's reader opens its files itself (its own GCS access does not
  reach an emulator, ../shared/reference/cloud.md), so the shards of a `gs://` pattern are copied
  once to a local cache (`local_copies`) and read there. A corpus larger than a host's disk is
  read through a gcsfuse mount instead (a local path: launch/README.md).
"""

from __future__ import annotations

import glob as glob_lib
import hashlib
import os
import shutil
import tempfile

# Before any epath call: epath caches its choice of backend at the first one.
os.environ.setdefault("EPATH_USE_TF", "false")

from etils import epath  # pylint: disable=wrong-import-position
import fsspec  # pylint: disable=wrong-import-position

# gcsfs caches folder listings for the life of a process: a process reading a workdir that a run
# is writing (a tool listing checkpoints, the tests) would not see the new ones.
for _protocol in ("gs", "gcs"):
  fsspec.config.conf.setdefault(_protocol, {}).setdefault("use_listings_cache", False)

_WILDCARDS = "*?["


def is_remote(path) -> bool:
  """Whether `path` names an object store (`gs://...`, any `scheme://`)."""
  return "://" in str(path)


def path(p) -> epath.Path:
  """`p` as an epath.Path: a bucket path as it is, a local path made absolute (`~` expanded)."""
  p = str(p)
  return epath.Path(p) if is_remote(p) else epath.Path(os.path.abspath(os.path.expanduser(p)))


def glob(pattern: str) -> list[str]:
  """The paths matching `pattern` (wildcards in any component after the bucket), sorted."""
  if not is_remote(pattern):
    return sorted(glob_lib.glob(os.path.expanduser(pattern)))
  scheme, rest = pattern.split("://", 1)
  parts = rest.split("/")
  fixed = next((i for i, part in enumerate(parts) if any(c in part for c in _WILDCARDS)),
               len(parts))
  if fixed == 0:
    raise ValueError(f"{pattern!r}: the bucket name cannot hold wildcards")
  root = epath.Path(f"{scheme}://" + "/".join(parts[:fixed]))
  if fixed == len(parts):
    return [pattern] if root.exists() else []
  if not root.exists():
    return []
  return sorted(str(p) for p in root.glob("/".join(parts[fixed:])))


def write_text(p, text: str) -> None:
  """Writes a whole file so that a reader sees the old or the new content, never a part: a
  local file through a temporary file and a rename; an object is written whole by the store."""
  target = path(p)
  target.parent.mkdir(parents=True, exist_ok=True)
  if is_remote(target):
    target.write_text(text)
    return
  tmp = target.with_name(target.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, target)


class Mirror:
  """A local folder for the files a run appends to, kept copied into `workdir`.

  For a local workdir, the folder is the workdir and `sync` does nothing; for a `gs://` workdir,
  a fresh local folder whose files `sync` copies to the same relative paths in the workdir (those
  changed since the last sync: an object store cannot append, so a changed file is copied whole).
  """

  def __init__(self, workdir: str):
    self.remote = path(workdir) if is_remote(workdir) else None
    self.local = (tempfile.mkdtemp(prefix="synclipmae-run-") if self.remote
                  else str(path(workdir)))
    os.makedirs(self.local, exist_ok=True)
    self._copied = {}  # relative path -> (size, mtime_ns) when last copied

  def fetch(self, relative: str) -> None:
    """Copies the workdir's file `relative` (if any) into the local folder, to append to it (a
    relaunched run's log continues the earlier launches')."""
    if self.remote is not None and (self.remote / relative).is_file():
      local = os.path.join(self.local, relative)
      os.makedirs(os.path.dirname(local), exist_ok=True)
      _copy(self.remote / relative, epath.Path(local))

  def sync(self) -> None:
    if self.remote is None:
      return
    for folder, _, names in os.walk(self.local):
      for name in names:
        local = os.path.join(folder, name)
        relative = os.path.relpath(local, self.local)
        st = os.stat(local)
        if self._copied.get(relative) == (st.st_size, st.st_mtime_ns):
          continue
        target = self.remote / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy(epath.Path(local), target)
        self._copied[relative] = (st.st_size, st.st_mtime_ns)

  def shown(self, local_path: str) -> str:
    """Where the user finds a file of the local folder: in the workdir (and, while the run goes,
    locally)."""
    if self.remote is None:
      return local_path
    return f"{self.remote / os.path.relpath(local_path, self.local)} (live: {local_path})"


def local_copies(paths: list[str], cache_dir: str) -> list[str]:
  """Local files with the content of `paths`: a local path as it is; a remote file copied once
  into `cache_dir`/<digest of its folder>/<name> (kept while its size matches the remote
  object's; written under a temporary name and renamed, so processes sharing the cache never
  read a partial copy)."""
  out = []
  for p in paths:
    if not is_remote(p):
      out.append(p)
      continue
    remote = epath.Path(p)
    folder = hashlib.sha1(str(remote.parent).encode()).hexdigest()[:12]
    local = os.path.join(os.path.expanduser(cache_dir), folder, remote.name)
    size = remote.stat().length
    if not (os.path.isfile(local) and os.path.getsize(local) == size):
      os.makedirs(os.path.dirname(local), exist_ok=True)
      tmp = f"{local}.{os.getpid()}.tmp"
      _copy(remote, epath.Path(tmp))
      os.replace(tmp, local)
    out.append(local)
  return out


def _copy(source: epath.Path, target: epath.Path) -> None:
  """Copies a file between two file systems (epath's own `copy` stays within one), in chunks."""
  with source.open("rb") as src, target.open("wb") as dst:
    shutil.copyfileobj(src, dst, 16 << 20)
