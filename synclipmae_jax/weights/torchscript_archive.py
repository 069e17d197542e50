"""Tensors of a TorchScript archive (`torch.jit.save`), read without running any of its code.

`torch.jit.load` compiles the archive's TorchScript code; this reader does not. The archive is a
zip whose `<name>/data.pkl` pickles the module tree: `__torch__.*` module objects whose state is a
dict of attributes (parameters, buffers, submodules, flags), tensors rebuilt by
`torch._utils._rebuild_tensor_v2` from raw storages `<name>/data/<key>`. A restricted unpickler
turns module objects into attribute holders and tensors into numpy arrays, and refuses every other
global, so loading an untrusted file cannot execute code. The result is the module's state dict:
dotted attribute paths to arrays (the names `torch.jit.load(path).state_dict()` would give).
"""

from __future__ import annotations

import collections
import pickle
import zipfile

import ml_dtypes
import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _ScriptObject:
  """A pickled TorchScript module or object: only its attribute dict is kept."""

  def __setstate__(self, state):
    self.attributes = state


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *_) -> np.ndarray:
  """numpy counterpart of `torch._utils._rebuild_tensor_v2` (a strided view, copied)."""
  strides = tuple(s * storage.itemsize for s in stride)
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size), strides=strides)
  return view.copy()


class _Unpickler(pickle.Unpickler):
  """Unpickler of `data.pkl` that only knows module objects, tensors and OrderedDict."""

  def __init__(self, archive: zipfile.ZipFile, root: str):
    super().__init__(archive.open(f"{root}/data.pkl"))
    self._archive, self._root, self._storages = archive, root, {}

  def find_class(self, module, name):
    if module == "__torch__" or module.startswith("__torch__."):
      return _ScriptObject
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch" and name in _STORAGE_DTYPES:
      return name
    raise ValueError(f"TorchScript archive holds an unsupported object {module}.{name}")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
      raise ValueError(f"TorchScript archive holds an unsupported persistent id {pid!r}")
    _, storage_type, key, _, numel = pid
    if key not in self._storages:
      data = self._archive.read(f"{self._root}/data/{key}")
      self._storages[key] = np.frombuffer(data, _STORAGE_DTYPES[storage_type], count=numel)
    return self._storages[key]


def is_torchscript(path: str) -> bool:
  """True for a zip archive with TorchScript code (`<name>/code/`), as `torch.jit.save` writes."""
  if not zipfile.is_zipfile(path):
    return False
  with zipfile.ZipFile(path) as archive:
    return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())


def _collect(obj: _ScriptObject, prefix: str, out: dict[str, np.ndarray]) -> None:
  for name, value in getattr(obj, "attributes", {}).items():
    if isinstance(value, np.ndarray):
      out[prefix + name] = value
    elif isinstance(value, _ScriptObject):
      _collect(value, f"{prefix}{name}.", out)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """Dotted attribute path -> array for every tensor attribute of the archive's module tree."""
  with zipfile.ZipFile(path) as archive:
    roots = [name[:-len("/data.pkl")] for name in archive.namelist()
             if name.count("/") == 1 and name.endswith("/data.pkl")]
    if len(roots) != 1:
      raise ValueError(
          f"{path}: expected one <name>/data.pkl in the TorchScript archive, got {roots}")
    byteorder = f"{roots[0]}/byteorder"
    if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
      raise ValueError(f"{path}: big-endian TorchScript archives are not supported")
    module = _Unpickler(archive, roots[0]).load()
  if not isinstance(module, _ScriptObject):
    raise ValueError(f"{path}: the TorchScript archive does not hold a module")
  out = {}
  _collect(module, "", out)
  return out
