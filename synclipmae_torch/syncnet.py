"""SyncNet (Chung and Zisserman, "Out of time: automated lip sync in the wild", 2016) and the
LSE-D / LSE-C figures of its public evaluation code, with that code's conventions.

The field reports lip sync as SyncNet's LSE-D and LSE-C computed by `syncnet_python`
(`SyncNetInstance.evaluate`); figures differ across papers when the conventions differ, so this
module follows them exactly (docs/evaluation.md "SyncNet's LSE-C / LSE-D"; ../shared/reference/av-sync.md):

- video: 25 fps face-track crops, 224 x 224, **BGR**, float 0..255 (no normalisation);
- audio: mono 16 kHz samples as int16 values (not rescaled to [-1, 1]); MFCC by
  `python_speech_features.mfcc` with its defaults (13 coefficients, 25 ms window, 10 ms step:
  4 MFCC frames per video frame);
- windows: 5 video frames against 20 MFCC frames; usable length min(frames, floor(samples / 640))
  frames, of which the first (length - 5) start a window;
- distances: Euclidean between the unnormalised 1024-d embeddings (torch's `pairwise_distance`,
  eps 1e-6), audio embeddings zero-padded by 15 windows at both ends, offsets -15..+15;
- mean distance per offset over the windows; **LSE-D = min**, **LSE-C = median - min**,
  offset = 15 - argmin.

Sign: SyncNet's offset > 0 means the audio leads the video (video window i matches audio window
i - offset). That is the same sign as `synclipmae_jax.sync_metrics`' lag L (audio frame t matches
video frame t + L): tests/test_syncnet.py checks both on one constructed shift.

Weights: the public `syncnet_v2.model` is a state dict; `load_syncnet` reads it with
`torch.load(weights_only=True)` (never unpickling arbitrary objects) and checks every key and
shape. The network's parameter names are those of that file.
"""

from __future__ import annotations

import dataclasses
import os
import pickle

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
CROP = 224
WINDOW_FRAMES = 5
MFCC_PER_FRAME = 4  # python_speech_features' 10 ms step at 25 fps
NUM_MFCC = 13
MAX_OFFSET = 15
EMBED_DIM = 1024
_DISTANCE_EPS = 1e-6  # torch.nn.functional.pairwise_distance's default, as syncnet_python uses it

# Each stream as (kind, arguments): "conv" adds convolution + batch norm + ReLU (three modules),
# "pool" one max-pooling module, so module indices (and state-dict keys) follow the public weights.
_AUDIO_CNN = (
    ("conv", 64, 3, 1, 1), ("pool", 1, 1, 0), ("conv", 192, 3, 1, 1), ("pool", 3, (1, 2), 0),
    ("conv", 384, 3, 1, 1), ("conv", 256, 3, 1, 1), ("conv", 256, 3, 1, 1), ("pool", 3, 2, 0),
    ("conv", 512, (5, 4), 1, 0),
)
_LIP_CNN = (
    ("conv", 96, (5, 7, 7), (1, 2, 2), 0), ("pool", (1, 3, 3), (1, 2, 2), 0),
    ("conv", 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), ("pool", (1, 3, 3), (1, 2, 2), (0, 1, 1)),
    ("conv", 256, (1, 3, 3), 1, (0, 1, 1)), ("conv", 256, (1, 3, 3), 1, (0, 1, 1)),
    ("conv", 256, (1, 3, 3), 1, (0, 1, 1)), ("pool", (1, 3, 3), (1, 2, 2), 0),
    ("conv", 512, (1, 6, 6), 1, 0),
)


def _cnn(spec, in_channels: int, dims: int) -> nn.Sequential:
  conv, norm, pool = {2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d),
                      3: (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d)}[dims]
  layers, channels = [], in_channels
  for kind, *args in spec:
    if kind == "conv":
      out, kernel, stride, padding = args
      layers += [conv(channels, out, kernel, stride, padding), norm(out), nn.ReLU()]
      channels = out
    else:
      kernel, stride, padding = args
      layers.append(pool(kernel, stride, padding))
  return nn.Sequential(*layers)


def _head(embed_dim: int) -> nn.Sequential:
  return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))


class SyncNet(nn.Module):
  """The two-stream network: MFCC [B, 1, 13, 20] -> [B, 1024]; BGR clips [B, 3, 5, 224, 224] -> [B, 1024]."""

  def __init__(self, embed_dim: int = EMBED_DIM):
    super().__init__()
    self.netcnnaud = _cnn(_AUDIO_CNN, 1, dims=2)
    self.netfcaud = _head(embed_dim)
    self.netcnnlip = _cnn(_LIP_CNN, 3, dims=3)
    self.netfclip = _head(embed_dim)

  def forward_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
    return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

  def forward_video(self, clips: torch.Tensor) -> torch.Tensor:
    return self.netfclip(self.netcnnlip(clips).flatten(1))


def load_syncnet(path: str) -> SyncNet:
  """The network with the weights of `path` (the public syncnet_v2.model, or a state dict of ours).

  Raises:
    FileNotFoundError: no such file (it is not downloaded for you).
    ValueError: the file holds something other than plain tensors, or not SyncNet's tensors.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"SyncNet weights {path!r} not found: get syncnet_v2.model from the public SyncNet "
        "release (joonson/syncnet_python, download_model.sh) and pass its local path")
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
    raise ValueError(f"{path} is not a PyTorch state dict of plain tensors (objects are never "
                     f"unpickled): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
  if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
    raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
  state = {k.removeprefix("__S__."): v for k, v in state.items()}  # SyncNetInstance's own saves
  model = SyncNet()
  expected = {k: v.shape for k, v in model.state_dict().items()}
  optional = {k for k in expected if k.endswith("num_batches_tracked")}
  missing = sorted(set(expected) - set(state) - optional)
  unexpected = sorted(set(state) - set(expected))
  wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k])
  if missing or unexpected or wrong:
    raise ValueError(
        f"{path} is not SyncNet's syncnet_v2.model: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
        f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}, "
        f"shape mismatch {[(k, tuple(state[k].shape), tuple(expected[k])) for k in wrong[:3]]}")
  model.load_state_dict(state, strict=False)  # only the optional batch counters may be absent
  return model.eval()


def mfcc(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """[13, N] MFCC at 100 Hz of int16-valued mono samples, python_speech_features' defaults."""
  import python_speech_features  # pylint: disable=import-outside-toplevel
  return np.asarray(python_speech_features.mfcc(audio, sample_rate), np.float64).T


@dataclasses.dataclass(frozen=True)
class LseResult:
  """One video's SyncNet figures.

  offset: SyncNet's offset in frames (> 0: the audio leads the video).
  lse_d: min over offsets of the mean distance (lower = better synced).
  lse_c: median minus min of the mean distances (higher = more confident).
  mean_distances: [2 * max_offset + 1] mean distance for offsets +max_offset..-max_offset
    (entry k pairs video window i with audio window i + k - max_offset: offset max_offset - k).
  num_windows: windows averaged.
  """
  offset: int
  lse_d: float
  lse_c: float
  mean_distances: np.ndarray
  num_windows: int

  @property
  def offset_ms(self) -> float:
    return 1000.0 * self.offset / FPS


def lse_from_embeddings(video: torch.Tensor, audio: torch.Tensor, max_offset: int = MAX_OFFSET) -> LseResult:
  """LSE-D / LSE-C / offset from per-window embeddings [N, E] (one computation over all offsets)."""
  if video.ndim != 2 or video.shape != audio.shape:
    raise ValueError(f"video {tuple(video.shape)} and audio {tuple(audio.shape)} embeddings must both be [N, E]")
  padded = F.pad(audio, (0, 0, max_offset, max_offset))  # zero embeddings beyond the ends
  candidates = padded.unfold(0, 2 * max_offset + 1, 1).transpose(1, 2)  # [N, 2m+1, E]
  distances = F.pairwise_distance(video[:, None, :], candidates, eps=_DISTANCE_EPS)  # [N, 2m+1]
  mean = distances.mean(0)
  best = int(torch.argmin(mean))
  minimum = float(mean[best])
  return LseResult(offset=max_offset - best, lse_d=minimum, lse_c=float(torch.median(mean)) - minimum,
                   mean_distances=mean.numpy(), num_windows=video.shape[0])


@torch.no_grad()
def embed(model: SyncNet, frames_bgr: np.ndarray, audio: np.ndarray, *, sample_rate: int = SAMPLE_RATE,
          batch_size: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
  """Per-window video and audio embeddings [N, E] of one face track, syncnet_python's windows.

  Args:
    frames_bgr: [T, 224, 224, 3] face crops at 25 fps, BGR, 0..255.
    audio: [S] mono samples at 16 kHz, int16 values.
    sample_rate: must be 16000 (SyncNet's code assumes it and never resamples: resample first).
  """
  frames_bgr, audio = np.asarray(frames_bgr), np.asarray(audio)
  if frames_bgr.ndim != 4 or frames_bgr.shape[1:] != (CROP, CROP, 3):
    raise ValueError(f"frames must be [T, {CROP}, {CROP}, 3] BGR face crops, got {frames_bgr.shape}")
  if sample_rate != SAMPLE_RATE:
    raise ValueError(f"SyncNet reads {SAMPLE_RATE} Hz audio; got {sample_rate} Hz (resample first)")
  if audio.ndim != 1:
    raise ValueError(f"audio must be mono [S], got {audio.shape}")
  if not np.issubdtype(audio.dtype, np.integer):
    raise ValueError(f"audio must hold int16 sample values as SyncNet reads them, got {audio.dtype} "
                     "(e.g. np.round(audio * 32767).astype(np.int16) for float samples in [-1, 1])")
  length = min(len(frames_bgr), len(audio) // SAMPLES_PER_FRAME)
  num_windows = length - WINDOW_FRAMES
  if num_windows < 1:
    raise ValueError(f"need more than {WINDOW_FRAMES} frames of video and audio, got {len(frames_bgr)} "
                     f"frames and {len(audio) / SAMPLE_RATE:.3f} s")
  video = torch.from_numpy(frames_bgr.astype(np.float32)).permute(3, 0, 1, 2)  # [3, T, H, W]
  cepstra = torch.from_numpy(mfcc(audio, sample_rate).astype(np.float32))  # [13, N]
  video_out, audio_out = [], []
  for start in range(0, num_windows, batch_size):
    index = range(start, min(num_windows, start + batch_size))
    clips = torch.stack([video[:, i:i + WINDOW_FRAMES] for i in index])
    patches = torch.stack([cepstra[None, :, MFCC_PER_FRAME * i:MFCC_PER_FRAME * (i + WINDOW_FRAMES)]
                           for i in index])
    video_out.append(model.forward_video(clips))
    audio_out.append(model.forward_audio(patches))
  return torch.cat(video_out), torch.cat(audio_out)


def evaluate(model: SyncNet, frames_bgr: np.ndarray, audio: np.ndarray, *, sample_rate: int = SAMPLE_RATE,
             max_offset: int = MAX_OFFSET, batch_size: int = 20) -> LseResult:
  """SyncNet's offset, LSE-D and LSE-C of one face track (the module docstring's conventions)."""
  video, sound = embed(model, frames_bgr, audio, sample_rate=sample_rate, batch_size=batch_size)
  return lse_from_embeddings(video, sound, max_offset)
