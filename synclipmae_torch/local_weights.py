"""A user's local weight file for the dub's quality figures (`synclipmae-dub-score`): read
without unpickling objects (`torch.load(weights_only=True)`, or safetensors), never downloaded.

The feature networks (`fid_inception`, `i3d`, `stable_syncnet`) are built from such a file: each
layer's channels and kernel are read from its weights, so the code holds only the architecture's
wiring (names, strides, paddings, pools, concatenations) and a missing tensor is reported by name.
"""

from __future__ import annotations

import os
import pickle

import safetensors
import safetensors.torch
import torch

WRAPPERS = ("state_dict", "model")  # training checkpoints that hold the state dict under a key
OPTIONAL_SUFFIXES = ("num_batches_tracked",)  # BatchNorm's counters: absent from older files


class Weights:
  """The tensors of one local file, for one flag of the command.

  Args:
    path: the file (`.safetensors`, or a PyTorch file of plain tensors, possibly wrapped in a
      {"state_dict": ...} checkpoint; a "module." prefix from DataParallel is dropped).
    what: the network, named in errors (e.g. "the FID Inception-v3").
    flag: the command-line flag that gave the file, named in errors.

  Raises:
    FileNotFoundError: no such file (nothing is downloaded).
    ValueError: the file holds objects, or something other than a dict of tensors.
  """

  def __init__(self, path: str, what: str, flag: str):
    self.path, self.what, self.flag = path, what, flag
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{flag}: {what} weights {path!r} not found (nothing is downloaded: "
                              "pass the path of your local copy)")
    try:
      if path.endswith(".safetensors"):
        state = safetensors.torch.load_file(path)
      else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, safetensors.SafetensorError) as e:
      first_line = str(e).splitlines()[0] if str(e) else ""
      raise ValueError(f"{flag}: {path} is not a file of plain tensors (objects are never "
                       f"unpickled): {type(e).__name__}: {first_line}") from e
    for key in WRAPPERS:
      if isinstance(state, dict) and isinstance(state.get(key), dict):
        state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
      raise ValueError(f"{flag}: {path} holds a {type(state).__name__}, not a state dict of "
                       "tensors")
    self.tensors = {k.removeprefix("module."): v for k, v in state.items()}

  def __getitem__(self, key: str) -> torch.Tensor:
    if key not in self.tensors:
      raise ValueError(f"{self.flag}: {self.path} is not {self.what}'s weights: it has no {key!r} "
                       f"({len(self.tensors)} tensors, e.g. {sorted(self.tensors)[:3]})")
    return self.tensors[key]

  def channels(self, key: str) -> int:
    """The output channels of the layer whose weight is `key` (a network built from the file)."""
    return int(self[key].shape[0])

  def load_into(self, model: torch.nn.Module) -> torch.nn.Module:
    """`model` (built from these weights) with them loaded, in inference mode; tensors the model
    does not use (e.g. a classifier after the features) are left out."""
    expected = model.state_dict()
    for key in expected:
      if not key.endswith(OPTIONAL_SUFFIXES):
        self[key]  # pylint: disable=pointless-statement  (raises naming a missing key)
    try:
      model.load_state_dict({k: v for k, v in self.tensors.items() if k in expected}, strict=False)
    except RuntimeError as e:  # a tensor of another shape than the architecture gives it
      raise ValueError(f"{self.flag}: {self.path} does not fit {self.what}: {e}") from e
    return model.eval().requires_grad_(False)
