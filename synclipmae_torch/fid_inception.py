"""The FID Inception-v3: the network whose 2048-d pool features FID compares (paper 5, video
dubbing, Table 4), in `pytorch-fid`'s convention.

`pytorch-fid` (the common PyTorch FID) builds torchvision's Inception-v3 with 1008 classes and
swaps in its FID blocks (the TensorFlow graph's: the average pools of Mixed_5b..7b leave the
padding out of the mean, Mixed_7c pools with a max), loads `pt_inception-2015-12-05-6726825d.pth`
and reads the pool3 features: frames in [0, 1] resized to 299 x 299 (bilinear, corners not
aligned), scaled to [-1, 1], through the stem and the eleven mixed blocks, averaged over space.
This module is that network with the same parameter names, so that file loads as it is (its
classifier `fc.*` is unused); it does not import `pytorch-fid`, which needs torchvision (see
`frechet`). Every channel count is a parameter (`channels`), read from the weights when built
from a file: the tests build a narrow network of the same wiring.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from synclipmae_torch import local_weights

SIZE = 299  # input side (bilinear resize)
BN_EPS = 0.001  # torchvision's BasicConv2d
FEATURES = 2048  # pool3 width of the real network
FLAG = "--fid_inception"

Channels = Callable[[str, int], int]  # (layer name, the real network's width) -> width


def real_channels(name: str, width: int) -> int:
  del name
  return width


class BasicConv2d(nn.Module):
  """Convolution without bias, BatchNorm (eps 0.001), ReLU: torchvision's Inception unit."""

  def __init__(self, channels: Channels, name: str, in_channels: int, width: int, kernel,
               stride=1, padding=0):
    super().__init__()
    self.out_channels = channels(name, width)
    self.conv = nn.Conv2d(in_channels, self.out_channels, kernel, stride=stride, padding=padding,
                          bias=False)
    self.bn = nn.BatchNorm2d(self.out_channels, eps=BN_EPS)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


def _avg_pool(x):
  """The FID blocks' pool branch: 3x3 mean over the cells inside the image only."""
  return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
  """Mixed_5b..5d: 1x1, 5x5 and double 3x3 branches and a pooled 1x1 (FIDInceptionA)."""

  def __init__(self, channels: Channels, name: str, in_channels: int, pool_features: int):
    super().__init__()
    unit = lambda part, c_in, width, kernel, padding=0: BasicConv2d(
        channels, f"{name}.{part}", c_in, width, kernel, padding=padding)
    self.branch1x1 = unit("branch1x1", in_channels, 64, 1)
    self.branch5x5_1 = unit("branch5x5_1", in_channels, 48, 1)
    self.branch5x5_2 = unit("branch5x5_2", self.branch5x5_1.out_channels, 64, 5, 2)
    self.branch3x3dbl_1 = unit("branch3x3dbl_1", in_channels, 64, 1)
    self.branch3x3dbl_2 = unit("branch3x3dbl_2", self.branch3x3dbl_1.out_channels, 96, 3, 1)
    self.branch3x3dbl_3 = unit("branch3x3dbl_3", self.branch3x3dbl_2.out_channels, 96, 3, 1)
    self.branch_pool = unit("branch_pool", in_channels, pool_features, 1)
    self.out_channels = sum(b.out_channels for b in (
        self.branch1x1, self.branch5x5_2, self.branch3x3dbl_3, self.branch_pool))

  def forward(self, x):
    return torch.cat([
        self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        self.branch_pool(_avg_pool(x))], 1)


class InceptionB(nn.Module):
  """Mixed_6a (grid reduction 35 -> 17): strided 3x3, strided double 3x3, max pool."""

  def __init__(self, channels: Channels, name: str, in_channels: int):
    super().__init__()
    unit = lambda part, c_in, width, kernel, stride=1, padding=0: BasicConv2d(
        channels, f"{name}.{part}", c_in, width, kernel, stride, padding)
    self.branch3x3 = unit("branch3x3", in_channels, 384, 3, 2)
    self.branch3x3dbl_1 = unit("branch3x3dbl_1", in_channels, 64, 1)
    self.branch3x3dbl_2 = unit("branch3x3dbl_2", self.branch3x3dbl_1.out_channels, 96, 3, 1, 1)
    self.branch3x3dbl_3 = unit("branch3x3dbl_3", self.branch3x3dbl_2.out_channels, 96, 3, 2)
    self.out_channels = self.branch3x3.out_channels + self.branch3x3dbl_3.out_channels + in_channels

  def forward(self, x):
    return torch.cat([self.branch3x3(x),
                      self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                      F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
  """Mixed_6b..6e: factorised 7x7 branches (1x7 / 7x1) and a pooled 1x1 (FIDInceptionC)."""

  def __init__(self, channels: Channels, name: str, in_channels: int, channels_7x7: int):
    super().__init__()
    unit = lambda part, c_in, width, kernel, padding=0: BasicConv2d(
        channels, f"{name}.{part}", c_in, width, kernel, padding=padding)
    c7 = channels_7x7
    self.branch1x1 = unit("branch1x1", in_channels, 192, 1)
    self.branch7x7_1 = unit("branch7x7_1", in_channels, c7, 1)
    self.branch7x7_2 = unit("branch7x7_2", self.branch7x7_1.out_channels, c7, (1, 7), (0, 3))
    self.branch7x7_3 = unit("branch7x7_3", self.branch7x7_2.out_channels, 192, (7, 1), (3, 0))
    self.branch7x7dbl_1 = unit("branch7x7dbl_1", in_channels, c7, 1)
    dbl = self.branch7x7dbl_1
    self.branch7x7dbl_2 = dbl = unit("branch7x7dbl_2", dbl.out_channels, c7, (7, 1), (3, 0))
    self.branch7x7dbl_3 = dbl = unit("branch7x7dbl_3", dbl.out_channels, c7, (1, 7), (0, 3))
    self.branch7x7dbl_4 = dbl = unit("branch7x7dbl_4", dbl.out_channels, c7, (7, 1), (3, 0))
    self.branch7x7dbl_5 = unit("branch7x7dbl_5", dbl.out_channels, 192, (1, 7), (0, 3))
    self.branch_pool = unit("branch_pool", in_channels, 192, 1)
    self.out_channels = sum(b.out_channels for b in (
        self.branch1x1, self.branch7x7_3, self.branch7x7dbl_5, self.branch_pool))

  def forward(self, x):
    dbl = self.branch7x7dbl_2(self.branch7x7dbl_1(x))
    dbl = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(dbl)))
    return torch.cat([self.branch1x1(x), self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
                      dbl, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(nn.Module):
  """Mixed_7a (grid reduction 17 -> 8): strided 3x3, 7x7 then strided 3x3, max pool."""

  def __init__(self, channels: Channels, name: str, in_channels: int):
    super().__init__()
    unit = lambda part, c_in, width, kernel, stride=1, padding=0: BasicConv2d(
        channels, f"{name}.{part}", c_in, width, kernel, stride, padding)
    self.branch3x3_1 = unit("branch3x3_1", in_channels, 192, 1)
    self.branch3x3_2 = unit("branch3x3_2", self.branch3x3_1.out_channels, 320, 3, 2)
    self.branch7x7x3_1 = unit("branch7x7x3_1", in_channels, 192, 1)
    b7 = self.branch7x7x3_1
    self.branch7x7x3_2 = b7 = unit("branch7x7x3_2", b7.out_channels, 192, (1, 7), 1, (0, 3))
    self.branch7x7x3_3 = b7 = unit("branch7x7x3_3", b7.out_channels, 192, (7, 1), 1, (3, 0))
    self.branch7x7x3_4 = unit("branch7x7x3_4", self.branch7x7x3_3.out_channels, 192, 3, 2)
    self.out_channels = (self.branch3x3_2.out_channels + self.branch7x7x3_4.out_channels
                         + in_channels)

  def forward(self, x):
    b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
    return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7,
                      F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
  """Mixed_7b / 7c: 1x1, split 3x3 branches (1x3 and 3x1 side by side) and a pooled 1x1; the pool
  is the FID blocks' mean without padding (FIDInceptionE_1, Mixed_7b) or a 3x3 max
  (FIDInceptionE_2, Mixed_7c)."""

  def __init__(self, channels: Channels, name: str, in_channels: int, max_pool: bool):
    super().__init__()
    unit = lambda part, c_in, width, kernel, padding=0: BasicConv2d(
        channels, f"{name}.{part}", c_in, width, kernel, padding=padding)
    self.max_pool = max_pool
    self.branch1x1 = unit("branch1x1", in_channels, 320, 1)
    self.branch3x3_1 = unit("branch3x3_1", in_channels, 384, 1)
    c3 = self.branch3x3_1.out_channels
    self.branch3x3_2a = unit("branch3x3_2a", c3, 384, (1, 3), (0, 1))
    self.branch3x3_2b = unit("branch3x3_2b", c3, 384, (3, 1), (1, 0))
    self.branch3x3dbl_1 = unit("branch3x3dbl_1", in_channels, 448, 1)
    self.branch3x3dbl_2 = unit("branch3x3dbl_2", self.branch3x3dbl_1.out_channels, 384, 3, 1)
    cd = self.branch3x3dbl_2.out_channels
    self.branch3x3dbl_3a = unit("branch3x3dbl_3a", cd, 384, (1, 3), (0, 1))
    self.branch3x3dbl_3b = unit("branch3x3dbl_3b", cd, 384, (3, 1), (1, 0))
    self.branch_pool = unit("branch_pool", in_channels, 192, 1)
    self.out_channels = sum(b.out_channels for b in (
        self.branch1x1, self.branch3x3_2a, self.branch3x3_2b, self.branch3x3dbl_3a,
        self.branch3x3dbl_3b, self.branch_pool))

  def forward(self, x):
    b3 = self.branch3x3_1(x)
    dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
    return torch.cat([self.branch1x1(x),
                      torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1),
                      torch.cat([self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl)], 1),
                      self.branch_pool(pooled)], 1)


class FidInceptionV3(nn.Module):
  """Frames (N, 3, H, W) in [0, 1] -> pool3 features (N, FEATURES) (see the module docstring)."""

  def __init__(self, channels: Channels = real_channels):
    super().__init__()
    unit = lambda name, c_in, width, kernel, stride=1, padding=0: BasicConv2d(
        channels, name, c_in, width, kernel, stride, padding)
    self.Conv2d_1a_3x3 = unit("Conv2d_1a_3x3", 3, 32, 3, 2)
    self.Conv2d_2a_3x3 = unit("Conv2d_2a_3x3", self.Conv2d_1a_3x3.out_channels, 32, 3)
    self.Conv2d_2b_3x3 = unit("Conv2d_2b_3x3", self.Conv2d_2a_3x3.out_channels, 64, 3, 1, 1)
    self.Conv2d_3b_1x1 = unit("Conv2d_3b_1x1", self.Conv2d_2b_3x3.out_channels, 80, 1)
    self.Conv2d_4a_3x3 = unit("Conv2d_4a_3x3", self.Conv2d_3b_1x1.out_channels, 192, 3)
    c = self.Conv2d_4a_3x3.out_channels
    for name, make in (("Mixed_5b", lambda n, c: InceptionA(channels, n, c, 32)),
                       ("Mixed_5c", lambda n, c: InceptionA(channels, n, c, 64)),
                       ("Mixed_5d", lambda n, c: InceptionA(channels, n, c, 64)),
                       ("Mixed_6a", lambda n, c: InceptionB(channels, n, c)),
                       ("Mixed_6b", lambda n, c: InceptionC(channels, n, c, 128)),
                       ("Mixed_6c", lambda n, c: InceptionC(channels, n, c, 160)),
                       ("Mixed_6d", lambda n, c: InceptionC(channels, n, c, 160)),
                       ("Mixed_6e", lambda n, c: InceptionC(channels, n, c, 192)),
                       ("Mixed_7a", lambda n, c: InceptionD(channels, n, c)),
                       ("Mixed_7b", lambda n, c: InceptionE(channels, n, c, max_pool=False)),
                       ("Mixed_7c", lambda n, c: InceptionE(channels, n, c, max_pool=True))):
      setattr(self, name, make(name, c))
      c = getattr(self, name).out_channels
    self.features = c

  MIXED = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
           "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")

  def forward(self, x):
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    x = 2 * x - 1
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = F.max_pool2d(x, kernel_size=3, stride=2)
    x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), kernel_size=3, stride=2)
    for name in self.MIXED:
      x = getattr(self, name)(x)
    return x.mean(dim=(2, 3))


def load(path: str) -> FidInceptionV3:
  """The network with the weights of a local file (`pt_inception-2015-12-05-6726825d.pth`, the
  file `pytorch-fid` uses, or any file in its layout)."""
  weights = local_weights.Weights(path, "the FID Inception-v3 (pytorch-fid)", FLAG)
  model = FidInceptionV3(lambda name, width: weights.channels(f"{name}.conv.weight"))
  return weights.load_into(model)


def frame_features(model: FidInceptionV3, frames: np.ndarray, batch: int = 32) -> np.ndarray:
  """Pool features (N, D) float64 of RGB uint8 frames (N, H, W, 3)."""
  out = []
  with torch.no_grad():
    for i in range(0, len(frames), batch):
      x = torch.from_numpy(np.ascontiguousarray(frames[i:i + batch])).permute(0, 3, 1, 2)
      out.append(model(x.float() / 255).double().numpy())
  return np.concatenate(out) if out else np.zeros((0, model.features))
