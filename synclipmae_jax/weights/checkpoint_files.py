"""Reading checkpoint files into numpy state dicts (checkpoint key -> array).

Formats:
- `*.safetensors` (`safetensors.numpy`, no torch needed);
- PyTorch pickles (`.bin`, `.pth`, `.pt`, `.ckpt`) through `torch.load(weights_only=True)`, which
  refuses arbitrary objects; a `state_dict` or `model` wrapper (mmengine / mmpretrain
  checkpoints carry `meta`, `optimizer`, ... next to it) is unwrapped;
- TorchScript archives (`torch.jit.save`, e.g. Sapiens' `*_torchscript.pt2`) through
  `torchscript_archive`, without running their code;
- Hugging Face model directories: `config.json` next to `model.safetensors`,
  `pytorch_model.bin`, or a sharded `*.index.json`.

Floating-point arrays are returned as float32 (the parameters' dtype; float16/bfloat16 widen
exactly); other arrays keep their dtype.

Paths may be in a bucket (`gs://...`, `storage.py`): a weights file there is copied once to
`WEIGHTS_CACHE` and read from that copy (the readers above open local files).
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np

from synclipmae_jax import storage
from synclipmae_jax.weights import torchscript_archive

HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")
WRAPPER_KEYS = ("state_dict", "model")
WEIGHTS_CACHE = os.path.join("~", ".cache", "synclipmae_jax", "weights")


def _float32(array: np.ndarray) -> np.ndarray:
  return array.astype(np.float32) if jnp.issubdtype(array.dtype, jnp.floating) else array


def _torch_load(path: str):
  try:
    import torch  # the optional bridge dependency (requirements-bridge.txt)
  except ImportError as e:
    raise ValueError(f"reading {path} needs PyTorch: pip install -r requirements-bridge.txt") from e
  return torch.load(path, map_location="cpu", weights_only=True)


def _unwrap(obj, path: str) -> dict:
  """The flat {key: tensor} dict inside a checkpoint object (possibly under a wrapper key)."""
  if not isinstance(obj, dict):
    raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")
  for key in WRAPPER_KEYS:
    if key in obj and isinstance(obj[key], dict):
      return _unwrap(obj[key], path)
  not_tensors = [k for k, v in obj.items() if not hasattr(v, "shape")]
  if not_tensors:
    raise ValueError(f"{path}: entries {not_tensors} are not tensors, and there is no "
                     f"{' / '.join(WRAPPER_KEYS)} entry holding the weights")
  return obj


def _torch_to_numpy(tensor) -> np.ndarray:
  if tensor.is_floating_point():
    return tensor.detach().float().numpy()
  return tensor.detach().numpy()


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """The state dict in one checkpoint file (see the module docstring for the formats)."""
  if not storage.path(path).is_file():
    raise ValueError(f"checkpoint file {path} does not exist")
  [path] = storage.local_copies([path], WEIGHTS_CACHE)
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    return {k: _float32(v) for k, v in load_file(path).items()}
  if torchscript_archive.is_torchscript(path):
    return {k: _float32(v) for k, v in torchscript_archive.read_state_dict(path).items()}
  state = _unwrap(_torch_load(path), path)
  return {k: _torch_to_numpy(v) for k, v in state.items()}


def hf_weight_file(directory: str) -> str:
  """The weights file of a Hugging Face model directory (the first of `HF_WEIGHT_FILES`)."""
  for name in HF_WEIGHT_FILES:
    if (storage.path(directory) / name).is_file():
      return os.path.join(directory, name)
  raise ValueError(f"{directory} has none of {', '.join(HF_WEIGHT_FILES)}")


def read_hf_directory(directory: str) -> dict[str, np.ndarray]:
  """The state dict of a Hugging Face model directory (`save_pretrained` output)."""
  path = hf_weight_file(directory)
  if not path.endswith(".index.json"):
    return read_state_dict(path)
  shards = sorted(set(json.loads(storage.path(path).read_text())["weight_map"].values()))
  state = {}
  for shard in shards:
    state.update(read_state_dict(os.path.join(directory, shard)))
  return state


def read_json(directory: str, name: str) -> dict | None:
  """`directory/name` parsed, or None if there is no such file."""
  path = storage.path(directory) / name
  if not path.is_file():
    return None
  return json.loads(path.read_text())


def missing_files(kind: str, path: str) -> list[str]:
  """What is missing for `model.init.<kind>=path` (empty when the files are there).

  wav2vec2 and vitmae are Hugging Face model directories (config.json + weights); sapiens is a
  checkpoint file.
  """
  if kind == "sapiens":
    return [] if storage.path(path).is_file() else [f"file {path} does not exist"]
  if not storage.path(path).is_dir():
    return [f"directory {path} does not exist"]
  problems = []
  if not (storage.path(path) / "config.json").is_file():
    problems.append(f"{os.path.join(path, 'config.json')} does not exist")
  if not any((storage.path(path) / name).is_file() for name in HF_WEIGHT_FILES):
    problems.append(f"{path} has none of {', '.join(HF_WEIGHT_FILES)}")
  return problems
