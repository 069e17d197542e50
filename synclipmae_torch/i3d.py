"""The Kinetics-400 I3D whose logits FVD compares (paper 5, video dubbing, Table 4), in the
convention of the common PyTorch FVD code (VideoGPT's `fvd.py` and `pytorch_i3d.py`, used as they
are by TATS and common_metrics_on_video_quality, with `i3d_pretrained_400.pt`):

- clips of 16 RGB frames; each frame's shorter side resized to 224 (bilinear, corners not aligned;
  the longer side to ceil(side x 224 / shorter), as VideoGPT's `preprocess_single` computes it),
  the centre 224 x 224 cropped, values scaled from [0, 255] to [-1, 1];
- I3D (Carreira & Zisserman 2017): Inception-v1 inflated to 3-D. Every unit is a 3-D convolution
  with TensorFlow's "SAME" padding computed from the input size (the extra cell after, not
  before), BatchNorm (eps 1e-5, the FVD code's) and ReLU; max pools pad the same way with zeros
  (their inputs are ReLU outputs, so zeros never win over the "SAME" pool's -inf);
- the features are the 400 logits: a 2x7x7 average pool (stride 1), the 1x1x1 logits convolution
  (with bias, no BatchNorm, no ReLU), averaged over the remaining time steps (pre-softmax).

Parameter names are `pytorch_i3d`'s (`Conv3d_1a_7x7.conv3d.weight`, `Mixed_3b.b1b.bn.*`,
`logits.conv3d.*`), so that file loads as it is. Every channel count is a parameter
(`channels`), read from the weights when built from a file: the tests build a narrow network of
the same wiring.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from synclipmae_torch import local_weights

SIZE = 224  # frame side
FRAMES = 16  # frames per clip
BN_EPS = 1e-5  # the FVD code's BatchNorm3d (the original pytorch-i3d uses 1e-3)
CLASSES = 400  # Kinetics-400
FLAG = "--i3d"

Channels = Callable[[str, int], int]  # (unit name, the real network's width) -> width

# (name, the real widths of b0, b1a, b1b, b2a, b2b, b3b) of the Inception modules
MIXED = (("Mixed_3b", (64, 96, 128, 16, 32, 32)), ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
         ("Mixed_4b", (192, 96, 208, 16, 48, 64)), ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
         ("Mixed_4d", (128, 128, 256, 24, 64, 64)), ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
         ("Mixed_4f", (256, 160, 320, 32, 128, 128)), ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
         ("Mixed_5c", (384, 192, 384, 48, 128, 128)))
# max pools (kernel, stride) placed before the named module, as in the network's end points
POOLS_BEFORE = {"Mixed_3b": ((1, 3, 3), (1, 2, 2)), "Mixed_4b": ((3, 3, 3), (2, 2, 2)),
                "Mixed_5b": ((2, 2, 2), (2, 2, 2))}


def real_channels(name: str, width: int) -> int:
  del name
  return width


def same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple:
  """F.pad's argument for TensorFlow's "SAME" padding of a (T, H, W) input: per dimension
  max(k - s, 0) when s divides the size, else max(k - size % s, 0); half before (rounded down),
  the rest after; listed last dimension first."""
  pads = []
  for n, k, s in zip(reversed(size), reversed(kernel), reversed(stride)):
    total = max(k - s, 0) if n % s == 0 else max(k - n % s, 0)
    pads += [total // 2, total - total // 2]
  return tuple(pads)


class Unit3D(nn.Module):
  """"SAME"-padded 3-D convolution, then BatchNorm and ReLU (or, for the logits, a bias only)."""

  def __init__(self, channels: Channels, name: str, in_channels: int, width: int, kernel=(1, 1, 1),
               stride=(1, 1, 1), logits: bool = False):
    super().__init__()
    self.kernel, self.stride, self.logits = tuple(kernel), tuple(stride), logits
    self.out_channels = channels(name, width)
    self.conv3d = nn.Conv3d(in_channels, self.out_channels, self.kernel, stride=self.stride,
                            bias=logits)
    if not logits:
      self.bn = nn.BatchNorm3d(self.out_channels, eps=BN_EPS)

  def forward(self, x):
    x = self.conv3d(F.pad(x, same_padding(x.shape[2:], self.kernel, self.stride)))
    return x if self.logits else F.relu(self.bn(x))


class MaxPool3dSame(nn.Module):
  """Max pool with "SAME" padding by zeros (see the module docstring)."""

  def __init__(self, kernel, stride):
    super().__init__()
    self.kernel, self.stride = tuple(kernel), tuple(stride)

  def forward(self, x):
    return F.max_pool3d(F.pad(x, same_padding(x.shape[2:], self.kernel, self.stride)),
                        self.kernel, self.stride)


class InceptionModule(nn.Module):
  """Four branches concatenated: 1x1x1; 1x1x1 then 3x3x3; 1x1x1 then 3x3x3; 3x3x3 max pool
  (stride 1) then 1x1x1."""

  def __init__(self, channels: Channels, name: str, in_channels: int, widths: tuple[int, ...]):
    super().__init__()
    unit = lambda part, c_in, width, kernel=(1, 1, 1): Unit3D(
        channels, f"{name}.{part}", c_in, width, kernel)
    self.b0 = unit("b0", in_channels, widths[0])
    self.b1a = unit("b1a", in_channels, widths[1])
    self.b1b = unit("b1b", self.b1a.out_channels, widths[2], (3, 3, 3))
    self.b2a = unit("b2a", in_channels, widths[3])
    self.b2b = unit("b2b", self.b2a.out_channels, widths[4], (3, 3, 3))
    self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
    self.b3b = unit("b3b", in_channels, widths[5])
    self.out_channels = sum(b.out_channels for b in (self.b0, self.b1b, self.b2b, self.b3b))

  def forward(self, x):
    return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                      self.b3b(self.b3a(x))], 1)


class I3D(nn.Module):
  """Clips (N, 3, T, 224, 224) in [-1, 1] -> logits (N, classes) (see the module docstring)."""

  def __init__(self, channels: Channels = real_channels):
    super().__init__()
    self.Conv3d_1a_7x7 = Unit3D(channels, "Conv3d_1a_7x7", 3, 64, (7, 7, 7), (2, 2, 2))
    self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
    self.Conv3d_2b_1x1 = Unit3D(channels, "Conv3d_2b_1x1", self.Conv3d_1a_7x7.out_channels, 64)
    self.Conv3d_2c_3x3 = Unit3D(channels, "Conv3d_2c_3x3", self.Conv3d_2b_1x1.out_channels, 192,
                                (3, 3, 3))
    c = self.Conv3d_2c_3x3.out_channels
    self.pools = nn.ModuleDict({name: MaxPool3dSame(*kernel_stride)
                                for name, kernel_stride in POOLS_BEFORE.items()})
    for name, widths in MIXED:
      setattr(self, name, InceptionModule(channels, name, c, widths))
      c = getattr(self, name).out_channels
    self.logits = Unit3D(channels, "logits", c, CLASSES, logits=True)

  def forward(self, x):
    x = self.Conv3d_2b_1x1(self.MaxPool3d_2a_3x3(self.Conv3d_1a_7x7(x)))
    x = self.Conv3d_2c_3x3(x)
    for name, _ in MIXED:
      if name in self.pools:
        x = self.pools[name](x)
      x = getattr(self, name)(x)
    x = self.logits(F.avg_pool3d(x, kernel_size=(2, 7, 7), stride=1))
    return x.mean(dim=(2, 3, 4))  # one cell in space at 224 px; the mean over time


def load(path: str) -> I3D:
  """The network with the weights of a local file (`i3d_pretrained_400.pt` of the common FVD
  code, or any file in `pytorch_i3d`'s layout)."""
  weights = local_weights.Weights(path, "the Kinetics-400 I3D (pytorch_i3d)", FLAG)
  model = I3D(lambda name, width: weights.channels(f"{name}.conv3d.weight"))
  return weights.load_into(model)


def preprocess(clips: np.ndarray) -> torch.Tensor:
  """RGB uint8 clips (N, T, H, W, 3) -> the network's input (N, 3, T, 224, 224) in [-1, 1] (the
  module docstring's resize and centre crop)."""
  n, t, h, w, _ = clips.shape
  x = torch.from_numpy(np.ascontiguousarray(clips)).reshape(n * t, h, w, 3).permute(0, 3, 1, 2)
  scale = SIZE / min(h, w)
  size = (SIZE, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), SIZE)
  x = F.interpolate(x.float() / 255, size=size, mode="bilinear", align_corners=False)
  top, left = (size[0] - SIZE) // 2, (size[1] - SIZE) // 2
  x = x[:, :, top:top + SIZE, left:left + SIZE]
  return (2 * x - 1).reshape(n, t, 3, SIZE, SIZE).transpose(1, 2)


def clip_features(model: I3D, clips: np.ndarray, batch: int = 4) -> np.ndarray:
  """Logits (N, classes) float64 of RGB uint8 clips (N, T, H, W, 3) (see the module docstring)."""
  with torch.no_grad():
    out = [model(preprocess(clips[i:i + batch])).double().numpy()
           for i in range(0, len(clips), batch)]
  return np.concatenate(out) if out else np.zeros((0, model.logits.out_channels))
