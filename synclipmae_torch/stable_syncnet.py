"""LatentSync's StableSyncNet, the sync evaluator of the paper's Table 4 ("Sync-C ... computed with
the stable SyncNet evaluator from LatentSync, replacing the commonly used vanilla SyncNet"), and
the paper's Sync-C on it (paper 5, video dubbing).

The network (LatentSync's `latentsync/models/stable_syncnet.py` with the released checkpoint's
config `configs/syncnet/syncnet_16_pixel_attn.yaml`; written here from that description):
- a visual encoder of 16 frames: the lower half of each 256 x 256 face, RGB in [-1, 1], the frames
  stacked on channels (48 x 128 x 256, frame-major); an audio encoder of an 80-bin mel window of 52
  steps (80 steps a second: 16 frames at 25 fps).
- Each encoder (`DownEncoder2D`): a 3x3 convolution, residual blocks (GroupNorm 32 / SiLU /
  3x3 conv twice, a 1x1 shortcut when the width changes, then a strided 3x3 convolution on a
  zero-padded map when the block downsamples), attention blocks after some of them (GroupNorm,
  1x1 conv, LayerNorm + 8-head self-attention, LayerNorm + GEGLU feed-forward, 1x1 conv, each
  residual), GroupNorm and ReLU; the 1 x 1 map's channels L2-normalised: 2048-d embeddings.
- Widths and attention blocks are read from the weights; the strides are the config's
  (`VISUAL_FACTORS`, `AUDIO_FACTORS`): a file with another number of blocks is refused.
- The mel: LatentSync's (Wav2Lip's) `melspectrogram` of 16 kHz audio: pre-emphasis 0.97, STFT
  (n_fft 800, hop 200, Hann, centred with zero padding: librosa 0.10), Slaney mel filters
  (55..7600 Hz, from `transformers.audio_utils`), 20 log10 with floor -100 dB, minus 20 dB,
  scaled to [-4, 4].

Sync-C (the paper's wording: "for each short sliding window we form an audio-video distance curve
over temporal offsets ... the per-window confidence as the median-minimum gap", "identical to
LSE-C"): for each window of 16 frames that has all its neighbours, the Euclidean distance (as
SyncNet's) between its visual embedding and the audio embeddings of the windows shifted by
-15..+15 frames; the window's confidence is the curve's median minus its minimum; Sync-C is the
mean over windows (every start: a stride of one frame, as SyncNet's).

Conventions of ours, not LatentSync's: the faces are our preparation's crops (the face box with a
margin, resized to 256) where LatentSync aligns faces to a landmark template, so figures are
comparable between videos scored here, and with published ones only as orientation.
"""

from __future__ import annotations

import numpy as np
from scipy import signal
import torch
from torch import nn
from torch.nn import functional as F

from synclipmae_torch import local_weights

FRAMES = 16  # frames per window
FACE = 256  # face side; the network sees its lower half
MEL_BINS, MEL_STEPS, MEL_RATE = 80, 52, 80  # mel window: 80 bins x ceil(16 / 25 * 80) steps
VIDEO_FPS, SAMPLE_RATE = 25, 16000
N_FFT, HOP, PREEMPHASIS = 800, 200, 0.97
FMIN, FMAX, MIN_DB, REF_DB, MAX_ABS = 55.0, 7600.0, -100.0, 20.0, 4.0
GROUPS, NORM_EPS, HEADS = 32, 1e-6, 8
MAX_LAG = 15  # offsets -15..+15, as SyncNet's
# downsampling factors (rows, columns) of the released checkpoint's blocks (syncnet_16_pixel_attn)
VISUAL_FACTORS = ((1, 2), 2, 2, 2, 2, 2, 2, 2)
AUDIO_FACTORS = ((2, 1), 2, 2, 1, 2, 2, (2, 3))
# the released checkpoint's widths and attention blocks, for building one without a file
VISUAL = {"in_channels": 3 * FRAMES, "widths": (64, 128, 256, 256, 512, 1024, 2048, 2048),
          "attention": (0, 0, 0, 0, 1, 1, 0, 0), "factors": VISUAL_FACTORS}
AUDIO = {"in_channels": 1, "widths": (32, 64, 128, 256, 512, 1024, 2048),
         "attention": (0, 0, 0, 1, 1, 0, 0), "factors": AUDIO_FACTORS}
FLAG = "--stable_syncnet"


class ResnetBlock2D(nn.Module):
  """GroupNorm, SiLU, 3x3 conv, GroupNorm, SiLU, 3x3 conv, plus the (1x1-projected) input; then,
  when the block downsamples, zero padding and a strided 3x3 convolution."""

  def __init__(self, in_channels: int, out_channels: int, factor):
    super().__init__()
    self.norm1 = nn.GroupNorm(GROUPS, in_channels, eps=NORM_EPS)
    self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    self.norm2 = nn.GroupNorm(GROUPS, out_channels, eps=NORM_EPS)
    self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
    self.conv_shortcut = (nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels
                          else None)
    factor = tuple(factor) if isinstance(factor, (tuple, list)) else factor
    self.downsample_conv = (None if factor == 1 else
                            nn.Conv2d(out_channels, out_channels, 3, stride=factor))
    # F.pad's (left, right, top, bottom): one cell after, and one before too along an axis that
    # keeps its size (a stride of 1 there)
    self.pad = (0, 1, 0, 1)
    if isinstance(factor, tuple) and factor[0] == 1:
      self.pad = (0, 1, 1, 1)
    elif isinstance(factor, tuple) and factor[1] == 1:
      self.pad = (1, 1, 0, 1)

  def forward(self, x):
    h = self.conv1(F.silu(self.norm1(x)))
    h = self.conv2(F.silu(self.norm2(h)))
    h = h + (x if self.conv_shortcut is None else self.conv_shortcut(x))
    if self.downsample_conv is not None:
      h = self.downsample_conv(F.pad(h, self.pad))
    return h


class SelfAttention(nn.Module):
  """Multi-head self-attention with biased q, k, v and output projections (`to_out.0`)."""

  def __init__(self, dim: int, heads: int = HEADS):
    super().__init__()
    self.heads = heads
    self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim) for _ in range(3))
    self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

  def forward(self, x):
    b, n, d = x.shape
    split = lambda t: t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(split(self.to_q(x)), split(self.to_k(x)),
                                         split(self.to_v(x)))
    return self.to_out[0](out.transpose(1, 2).reshape(b, n, d))


class GEGLU(nn.Module):
  """Linear to twice the width, the first half times GELU (exact) of the second."""

  def __init__(self, dim: int, inner: int):
    super().__init__()
    self.proj = nn.Linear(dim, 2 * inner)

  def forward(self, x):
    hidden, gate = self.proj(x).chunk(2, dim=-1)
    return hidden * F.gelu(gate)


class FeedForward(nn.Module):
  """diffusers' FeedForward with GEGLU (width x4; parameters `net.0.proj`, `net.2`)."""

  def __init__(self, dim: int, mult: int = 4):
    super().__init__()
    self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

  def forward(self, x):
    return self.net[2](self.net[0](x))


class AttentionBlock2D(nn.Module):
  """GroupNorm, 1x1 conv, tokens: + attention(LayerNorm), + feed-forward(LayerNorm); 1x1 conv,
  plus the block's input."""

  def __init__(self, dim: int):
    super().__init__()
    self.norm1 = nn.GroupNorm(GROUPS, dim, eps=NORM_EPS)
    self.conv_in = nn.Conv2d(dim, dim, 1)
    self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim)
    self.attn = SelfAttention(dim)
    self.ff = FeedForward(dim)
    self.conv_out = nn.Conv2d(dim, dim, 1)

  def forward(self, x):
    b, c, h, w = x.shape
    t = self.conv_in(self.norm1(x)).flatten(2).transpose(1, 2)
    t = self.attn(self.norm2(t)) + t
    t = self.ff(self.norm3(t)) + t
    return self.conv_out(t.transpose(1, 2).reshape(b, c, h, w)) + x


class DownEncoder2D(nn.Module):
  """conv_in, residual blocks (each maybe followed by an attention block), GroupNorm, ReLU."""

  def __init__(self, in_channels: int, widths, attention, factors):
    super().__init__()
    if not len(widths) == len(attention) == len(factors):
      raise ValueError(f"{len(widths)} widths, {len(attention)} attention flags and "
                       f"{len(factors)} downsampling factors: one of each per block")
    self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
    self.down_blocks = nn.ModuleList()
    c = widths[0]
    for width, attn, factor in zip(widths, attention, factors):
      self.down_blocks.append(ResnetBlock2D(c, width, factor))
      if attn:
        self.down_blocks.append(AttentionBlock2D(width))
      c = width
    self.norm_out = nn.GroupNorm(GROUPS, c, eps=NORM_EPS)

  def forward(self, x):
    x = self.conv_in(x)
    for block in self.down_blocks:
      x = block(x)
    return F.relu(self.norm_out(x))


class StableSyncNet(nn.Module):
  """(frames (B, 48, 128, 256), mel (B, 1, 80, 52)) -> unit embeddings (visual, audio)."""

  def __init__(self, visual: dict = VISUAL, audio: dict = AUDIO):
    super().__init__()
    self.visual_encoder = DownEncoder2D(**visual)
    self.audio_encoder = DownEncoder2D(**audio)

  def embed_visual(self, frames):
    return F.normalize(self.visual_encoder(frames).flatten(1), dim=1)

  def embed_audio(self, mel):
    return F.normalize(self.audio_encoder(mel).flatten(1), dim=1)

  def forward(self, frames, mel):
    return self.embed_visual(frames), self.embed_audio(mel)


def _encoder_config(weights: local_weights.Weights, prefix: str, factors) -> dict:
  """An encoder's widths and attention blocks as the file has them."""
  widths, attention, j = [], [], 0
  while f"{prefix}.down_blocks.{j}.conv1.weight" in weights.tensors:
    widths.append(weights.channels(f"{prefix}.down_blocks.{j}.conv1.weight"))
    j += 1
    has_attention = f"{prefix}.down_blocks.{j}.attn.to_q.weight" in weights.tensors
    attention.append(int(has_attention))
    j += has_attention
  if len(widths) != len(factors):
    raise ValueError(f"{weights.flag}: {weights.path}: {prefix} has {len(widths)} residual blocks "
                     f"where LatentSync's StableSyncNet (syncnet_16_pixel_attn) has {len(factors)}")
  return {"in_channels": int(weights[f"{prefix}.conv_in.weight"].shape[1]), "widths": widths,
          "attention": attention, "factors": factors}


def load(path: str) -> StableSyncNet:
  """The network with the weights of a local file (LatentSync's `stable_syncnet.pt`: a
  {"state_dict": ...} checkpoint, or the state dict itself)."""
  weights = local_weights.Weights(path, "LatentSync's StableSyncNet", FLAG)
  model = StableSyncNet(_encoder_config(weights, "visual_encoder", VISUAL_FACTORS),
                        _encoder_config(weights, "audio_encoder", AUDIO_FACTORS))
  return weights.load_into(model)


def mel_basis() -> np.ndarray:
  """(80, N_FFT // 2 + 1) Slaney mel filters (librosa's `filters.mel` defaults)."""
  from transformers import audio_utils  # pylint: disable=import-outside-toplevel
  return audio_utils.mel_filter_bank(
      num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=MEL_BINS, min_frequency=FMIN,
      max_frequency=FMAX, sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney").T


def mel_spectrogram(audio: np.ndarray) -> np.ndarray:
  """(80, 1 + len // 200) normalised log-mel of 16 kHz audio in [-1, 1] (module docstring)."""
  y = signal.lfilter([1, -PREEMPHASIS], [1], np.asarray(audio, np.float64))
  y = np.pad(y, N_FFT // 2)  # centred frames, zero padding (librosa >= 0.10)
  frames = np.lib.stride_tricks.sliding_window_view(y, N_FFT)[::HOP]
  window = signal.get_window("hann", N_FFT, fftbins=True)
  magnitude = np.abs(np.fft.rfft(frames * window, axis=1)).T
  db = 20 * np.log10(np.maximum(10 ** (MIN_DB / 20), mel_basis() @ magnitude)) - REF_DB
  return np.clip(2 * MAX_ABS * (db - MIN_DB) / -MIN_DB - MAX_ABS, -MAX_ABS, MAX_ABS)


def mel_start(frame: int) -> int:
  """The mel step where the window of video frame `frame` starts (LatentSync's crop)."""
  return int(MEL_RATE * (frame / float(VIDEO_FPS)))


def window_confidences(dist: np.ndarray) -> np.ndarray:
  """Per window (rows) of a distance-vs-offset matrix (windows, offsets): median - minimum."""
  return np.median(dist, axis=1) - dist.min(axis=1)


def distance_matrix(model: StableSyncNet, frames: np.ndarray, audio: np.ndarray,
                    max_lag: int = MAX_LAG, batch: int = 8) -> np.ndarray:
  """(windows, 2 max_lag + 1) distances between the visual embedding of each 16-frame window
  starting at frame s and the audio embeddings of the windows starting at s + lag, lag =
  -max_lag..max_lag (> 0: the audio taken later), for every s whose shifted windows all lie in the
  clip; (0, 2 max_lag + 1) when none does.

  Args:
    frames: the face crops (T, 256, 256, 3) RGB uint8.
    audio: the clip's 16 kHz audio in [-1, 1].
  """
  if frames.shape[1:] != (FACE, FACE, 3):
    raise ValueError(f"StableSyncNet takes {FACE} x {FACE} RGB faces, got frames {frames.shape}")
  mel = mel_spectrogram(audio)
  audio_windows = [s for s in range(len(frames))
                   if s + FRAMES <= len(frames) and mel_start(s) + MEL_STEPS <= mel.shape[1]]
  last = len(audio_windows) - 1  # audio windows are the starts 0..last
  starts = list(range(max_lag, last - max_lag + 1))
  if not starts:
    return np.zeros((0, 2 * max_lag + 1))
  with torch.no_grad():
    mels = torch.from_numpy(np.stack([mel[:, mel_start(s):mel_start(s) + MEL_STEPS]
                                      for s in audio_windows])[:, None]).float()
    a = torch.cat([model.embed_audio(mels[i:i + batch]) for i in range(0, len(mels), batch)])
    lower = torch.from_numpy(np.ascontiguousarray(frames[:, FACE // 2:])).float() / 127.5 - 1
    lower = lower.permute(0, 3, 1, 2)  # (T, 3, 128, 256)
    v = []
    for i in range(0, len(starts), batch):
      stacks = torch.stack([lower[s:s + FRAMES].reshape(3 * FRAMES, FACE // 2, FACE)
                            for s in starts[i:i + batch]])
      v.append(model.embed_visual(stacks))
    v = torch.cat(v)
  lags = np.arange(-max_lag, max_lag + 1)
  shifted = a[torch.as_tensor(np.asarray(starts)[:, None] + lags)]  # (windows, lags, D)
  return torch.linalg.vector_norm(v[:, None] - shifted, dim=-1).double().numpy()
