"""The frozen audio front ends in PyTorch: 16 kHz waveform of a window of T frames and C frames of
context on each side [B, 640 (T + 2 C)] -> features of the T frames [B, T, L, C].

They compute what `synclipmae_jax.models.audio_encoder.AudioEncoder` computes (paper 3.1, 3.2),
with the same frame alignment, read from the jax-free `synclipmae_jax.models.audio_signal`:
- `MelFrontEnd`: log-mel frames, 4 per video frame, with `context_frames` video frames of context
  on each side; its window and filter bank are the exported float32 constants.
- `Wav2Vec2FrontEnd`: transformers' `Wav2Vec2Model` (the user's local checkpoint) with
  `output_hidden_states=True`, aligned to T frames by "resample" (the waveform resampled to
  J (T + 2 C) samples with the taps of `antialiased_resample_weights` and padded by the receptive
  field's overhang, `resample_geometry`) or "interpolate" (the CNN features linearly interpolated
  to T + 2 C frames before the projection).
Each window is normalised to zero mean and unit variance first when the export says so.
"""

from __future__ import annotations

import os

import torch
import transformers
from torch import nn
from torch.nn import functional as F

from synclipmae_jax.models import audio_signal
from synclipmae_torch import layout


def zero_mean_unit_variance(waveform: torch.Tensor, eps: float = audio_signal.NORMALIZE_EPS) -> torch.Tensor:
  """Per-utterance normalisation of [B, N]: (x - mean) / sqrt(var + eps), population variance."""
  mean = waveform.mean(-1, keepdim=True)
  var = waveform.var(-1, keepdim=True, correction=0)
  return (waveform - mean) / torch.sqrt(var + eps)


def _window_frames(waveform: torch.Tensor, num_frames: int, context: int) -> int:
  """Checks a window's waveform; returns its frames with context, T + 2 C."""
  if num_frames < 1:
    raise ValueError(f"num_frames must be >= 1, got {num_frames}")
  frames = num_frames + 2 * context
  if waveform.ndim != 2 or waveform.shape[1] != audio_signal.SAMPLES_PER_FRAME * frames:
    raise ValueError(f"waveform must be [B, {audio_signal.SAMPLES_PER_FRAME} * ({num_frames} + 2 * {context})] "
                     f"for {num_frames} frames with {context} frames of context on each side, got "
                     f"shape {tuple(waveform.shape)}")
  return frames


class MelFrontEnd(nn.Module):
  """Log-mel features per video frame: [B, 640 (T + 2 input_context_frames)] -> [B, T, 1,
  4 (2 context_frames + 1) n_mels]."""

  def __init__(self, n_mels: int, context_frames: int, normalize_waveform: bool,
               input_context_frames: int = 0):
    super().__init__()
    self.context_frames, self.normalize_waveform = context_frames, normalize_waveform
    self.input_context_frames = input_context_frames
    self.register_buffer("window", torch.zeros(audio_signal.MEL_WINDOW))
    self.register_buffer("filters", torch.zeros(audio_signal.MEL_WINDOW // 2 + 1, n_mels))

  def log_mel_spectrogram(self, waveform: torch.Tensor) -> torch.Tensor:
    """[B, N] -> [B, N // 160, n_mels]; frame k is centred on sample 160 k + 80."""
    hop, size = audio_signal.MEL_HOP, audio_signal.MEL_WINDOW
    num_mel_frames = waveform.shape[-1] // hop
    left = (size - hop) // 2
    padded = F.pad(waveform, (left, hop * num_mel_frames + left - waveform.shape[-1]))
    spectrum = torch.fft.rfft(padded.unfold(-1, size, hop) * self.window, dim=-1)
    power = spectrum.real ** 2 + spectrum.imag ** 2
    return torch.log(power @ self.filters + audio_signal.LOG_MEL_FLOOR)

  def forward(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
    m = _window_frames(waveform, num_frames, self.input_context_frames)
    waveform = waveform.float()
    if self.normalize_waveform:
      waveform = zero_mean_unit_variance(waveform)
    mel = self.log_mel_spectrogram(waveform)
    per_frame = mel.reshape(mel.shape[0], m, -1)
    offsets = torch.arange(-self.context_frames, self.context_frames + 1, device=mel.device)
    index = (torch.arange(m, device=mel.device)[:, None] + offsets).clamp(0, m - 1)
    features = per_frame[:, index].flatten(2)[:, :, None]  # edge-padded context, frame-major
    return features[:, self.input_context_frames:self.input_context_frames + num_frames]


class Wav2Vec2FrontEnd(nn.Module):
  """transformers' Wav2Vec2Model hidden states [B, T, num_hidden_layers + 1, hidden_size]."""

  def __init__(self, model: transformers.Wav2Vec2Model, alignment: str, normalize_waveform: bool,
               input_context_frames: int = 0):
    super().__init__()
    if alignment not in ("resample", "interpolate"):
      raise ValueError(f"alignment must be 'resample' or 'interpolate', got {alignment!r}")
    self.model = model.eval()
    self.alignment, self.normalize_waveform = alignment, normalize_waveform
    self.input_context_frames = input_context_frames

  def _normalize(self, waveform: torch.Tensor) -> torch.Tensor:
    return zero_mean_unit_variance(waveform) if self.normalize_waveform else waveform

  def forward(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
    m = _window_frames(waveform, num_frames, self.input_context_frames)
    waveform = waveform.float()
    config = self.model.config
    if self.alignment == "resample":
      jump, left, right = audio_signal.resample_geometry(config)
      index, weights = audio_signal.antialiased_resample_weights(waveform.shape[-1], jump * m)
      resampled = (waveform[:, torch.from_numpy(index).long()] * torch.from_numpy(weights)).sum(-1)
      out = self.model(F.pad(self._normalize(resampled), (left, right)), output_hidden_states=True)
    else:
      hook = self.model.feature_extractor.register_forward_hook(
          lambda module, inputs, output: F.interpolate(
              output, size=m, mode="linear", align_corners=False))
      try:
        out = self.model(self._normalize(waveform), output_hidden_states=True)
      finally:
        hook.remove()
    states = list(out.hidden_states)
    if config.do_stable_layer_norm:
      # Pre-LN: transformers 5 returns the last layer's output before the encoder's final
      # LayerNorm there; the JAX port (and transformers 4) return last_hidden_state.
      states[-1] = out.last_hidden_state
    c = self.input_context_frames
    return torch.stack(states, dim=2)[:, c:c + num_frames]


def _normalise(value):
  return list(value) if isinstance(value, (list, tuple)) else value


def load_wav2vec2(path: str | os.PathLike, expected: dict) -> transformers.Wav2Vec2Model:
  """`Wav2Vec2Model.from_pretrained(path)` (a local directory, nothing is downloaded), checked
  against the architecture fields the run was trained with (config.json `model.audio.wav2vec2`)."""
  model = transformers.Wav2Vec2Model.from_pretrained(os.fspath(path), local_files_only=True)
  problems = [f"{name}: {getattr(model.config, name)!r} in {path} != {value!r} in the export"
              for name, value in expected.items()
              if _normalise(getattr(model.config, name)) != _normalise(value)]
  if problems:
    raise ValueError(f"the wav2vec2 checkpoint {path} is not the run's architecture:\n  "
                     + "\n  ".join(problems))
  return model.eval()


def from_pretrained(folder: str | os.PathLike, wav2vec2: str | os.PathLike | None = None) -> nn.Module:
  """The front end of an exported folder: its mel constants, or the wav2vec2 checkpoint at
  `wav2vec2` (required for that front end)."""
  folder = os.fspath(folder)
  audio = layout.read_config(folder)["model"]["audio"]
  if audio["frontend"] == "wav2vec2":
    if wav2vec2 is None:
      raise ValueError(f"{folder} uses the wav2vec2 front end: pass wav2vec2=<local directory of "
                       "the checkpoint the run was trained with>")
    return Wav2Vec2FrontEnd(load_wav2vec2(wav2vec2, audio["wav2vec2"]), audio["alignment"],
                            audio["normalize_waveform"], audio["input_context_frames"])
  frontend = MelFrontEnd(audio["n_mels"], audio["context_frames"], audio["normalize_waveform"],
                         audio["input_context_frames"])
  tensors = layout.read_tensors(folder, "pt")
  prefix = layout.FRONTEND_PREFIX
  layout.check_tensors({prefix + n: tuple(t.shape) for n, t in frontend.state_dict().items()},
                       {n: tuple(t.shape) for n, t in tensors.items() if n.startswith(prefix)},
                       os.path.join(folder, layout.WEIGHTS_FILE))
  frontend.load_state_dict({n.removeprefix(prefix): t for n, t in tensors.items()
                            if n.startswith(prefix)})
  return frontend.eval()
