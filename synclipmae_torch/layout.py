"""The exported folder: file names, `config.json`, the JAX <-> PyTorch tensor naming table, and
checked reading of `model.safetensors`.

Imports neither jax nor torch: the JAX side (`export.py`) writes folders and imports them back
with it, the PyTorch side (`modules.py`, `audio.py`) loads them with it. The naming table is
data (`LEAF_RULES`, `LAYOUTS`) used in both directions; every layout change is a transpose or a
reshape, so a round trip is bit-exact.

Flax parameter paths are the per-layer ones (`.../blocks/layers_{i}/...`); `export.py` unstacks
the `nn.scan` layout (`model.scan_layers`) before naming and stacks it again on import.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Callable

import numpy as np
from safetensors import SafetensorError, safe_open

FORMAT = "synclipmae-pytorch"
FORMAT_VERSION = 2  # 2: audio tokens in training windows with context (window_frames, input_context_frames)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
README_FILE = "README.md"
# The mel front end's constants (paper 3.2 baseline): periodic Hann window and HTK filter bank,
# stored in float32 whatever the export dtype. Not JAX parameters: the JAX side recomputes them.
FRONTEND_PREFIX = "audio_frontend."
MEL_WINDOW_TENSOR = FRONTEND_PREFIX + "window"
MEL_FILTERS_TENSOR = FRONTEND_PREFIX + "filters"
DTYPES = ("float32", "bfloat16", "float16")

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Layout:
  """How a Flax parameter and its PyTorch tensor relate: `to_torch(x)`, `to_jax(y, flax_shape)`."""

  to_torch: Callable[[np.ndarray], np.ndarray]
  to_jax: Callable[[np.ndarray, Shape], np.ndarray]
  description: str


LAYOUTS = {
    "copy": Layout(lambda x: x, lambda y, shape: y, "same layout"),
    "linear": Layout(lambda x: x.T, lambda y, shape: y.T,
                     "Dense kernel (in, out) <-> Linear weight (out, in)"),
    "heads_in": Layout(lambda x: x.reshape(x.shape[0], -1).T, lambda y, shape: y.T.reshape(shape),
                       "q/k/v kernel (D, heads, head_dim) <-> Linear weight (heads * head_dim, D)"),
    "heads_bias": Layout(lambda x: x.reshape(-1), lambda y, shape: y.reshape(shape),
                         "q/k/v bias (heads, head_dim) <-> Linear bias (heads * head_dim,)"),
    "heads_out": Layout(lambda x: x.reshape(-1, x.shape[-1]).T, lambda y, shape: y.T.reshape(shape),
                        "out kernel (heads, head_dim, D) <-> Linear weight (D, heads * head_dim)"),
}

# (Flax parameter name, PyTorch parameter name, layout) for the last component of a path; the
# modules above it keep their names, with `layers_{i}` -> `{i}` (an nn.ModuleList index).
LEAF_RULES = (
    ("kernel", "weight", "linear"),  # nn.Dense -> nn.Linear
    ("scale", "weight", "copy"),  # nn.LayerNorm -> nn.LayerNorm
    ("bias", "bias", "copy"),
    ("query_kernel", "q_proj.weight", "heads_in"),
    ("query_bias", "q_proj.bias", "heads_bias"),
    ("key_kernel", "k_proj.weight", "heads_in"),
    ("key_bias", "k_proj.bias", "heads_bias"),
    ("value_kernel", "v_proj.weight", "heads_in"),
    ("value_bias", "v_proj.bias", "heads_bias"),
    ("out_kernel", "out_proj.weight", "heads_out"),
    ("out_bias", "out_proj.bias", "copy"),
    ("pos_embed", "pos_embed", "copy"),  # [N, D], trainable in both
    ("prompts", "prompts", "copy"),  # [3, D]: identity, vocal motion, ambient motion
    ("mask_token", "mask_token", "copy"),
)
_LEAVES = {jax_leaf: (torch_leaf, layout) for jax_leaf, torch_leaf, layout in LEAF_RULES}
_LAYER = re.compile(r"^layers_(\d+)$")


def torch_name(jax_path: str) -> tuple[str, str]:
  """(PyTorch tensor name, layout name) of the Flax parameter at `jax_path` ('/'-joined)."""
  *modules, leaf = jax_path.split("/")
  if leaf not in _LEAVES:
    raise ValueError(f"no naming rule for the Flax parameter {jax_path} (leaf {leaf!r})")
  torch_leaf, layout = _LEAVES[leaf]
  modules = [_LAYER.sub(r"\1", m) for m in modules]
  return ".".join(modules + [torch_leaf]), layout


def naming(jax_paths) -> dict[str, tuple[str, str]]:
  """{PyTorch name: (Flax path, layout)} for the given per-layer Flax paths, checked one-to-one."""
  table: dict[str, tuple[str, str]] = {}
  for path in jax_paths:
    name, layout = torch_name(path)
    if name in table:
      raise ValueError(f"Flax parameters {table[name][0]} and {path} both map to {name}")
    table[name] = (path, layout)
  return table


def check_tensors(expected: dict[str, Shape], found: dict[str, Shape], source: str) -> None:
  """Raises one ValueError listing missing and unexpected tensors and shape mismatches of
  `source` (found) against what the model needs (expected)."""
  problems = [f"missing tensor {name} {shape}" for name, shape in expected.items() if name not in found]
  problems += [f"unexpected tensor {name} {shape}" for name, shape in found.items()
               if name not in expected]
  problems += [f"shape mismatch: {name} is {found[name]}, the model needs {shape}"
               for name, shape in expected.items() if name in found and found[name] != shape]
  if problems:
    raise ValueError(f"{source} does not fit the model: {len(problems)} problem(s)\n  "
                     + "\n  ".join(problems))


def read_tensors(folder: str, framework: str) -> dict[str, Any]:
  """Every tensor of `folder/model.safetensors` ("numpy" arrays or "pt" tensors); never unpickles.

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file is not a complete safetensors file (truncated or corrupt).
  """
  path = os.path.join(folder, WEIGHTS_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} does not exist: is {folder} a folder written by synclipmae-export?")
  try:
    with safe_open(path, framework=framework) as f:
      return {name: f.get_tensor(name) for name in f.keys()}
  except SafetensorError as e:
    raise ValueError(f"{path} is not a complete safetensors file ({e}); it is truncated or corrupt: "
                     "export it again") from e


def read_config(folder: str) -> dict:
  """`folder/config.json`, checked to be this format's version."""
  path = os.path.join(folder, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} does not exist: is {folder} a folder written by synclipmae-export?")
  with open(path) as f:
    config = json.load(f)
  if config.get("format") != FORMAT or config.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{path}: format {config.get('format')!r} version {config.get('format_version')!r}, "
                     f"expected {FORMAT!r} version {FORMAT_VERSION}")
  return config


def differences(found: Any, expected: Any, prefix: str = "") -> list[str]:
  """'key: found != expected' for every differing leaf of two JSON-like trees."""
  if isinstance(found, dict) and isinstance(expected, dict):
    out = []
    for key in sorted(set(found) | set(expected)):
      name = f"{prefix}.{key}" if prefix else key
      if key not in found:
        out.append(f"{name}: absent from the folder, expected {expected[key]!r}")
      elif key not in expected:
        out.append(f"{name}: {found[key]!r} in the folder, unknown to the config")
      else:
        out.extend(differences(found[key], expected[key], name))
    return out
  return [] if found == expected else [f"{prefix}: {found!r} in the folder != {expected!r}"]
