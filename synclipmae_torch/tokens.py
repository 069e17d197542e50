"""Per-frame tokens at 25 fps from a video's prepared frames and audio, in PyTorch (for dubbing).

`SyncTokenizer` computes what the JAX evaluator computes (`synclipmae_jax.evaluators.sync`, paper 4.1
and 5): prompt tokens from the deterministic evaluation view (all patches, or the k patches of
highest face-preserving weight, `config.evals.sync.view`), and audio tokens from the frozen front end +
adapter in the training window's frames, each read with its audio context
(`data_pipelines.audio_windows`, as the evaluator and the training pipeline do). Inputs are what `data_pipelines` prepares: frames uint8
[T, H, W, 3] at the model's image size, face and mouth boxes float32 [T, 4] ((x0, y0, x1, y1) in
[0, 1]), audio float32 [640 T] in [-1, 1] at 16 kHz (frame t <-> samples [640 t, 640 (t + 1))), at
least the training window's frames (`window_frames` in the export's config.json).
"""

from __future__ import annotations

import os

import einops
import numpy as np
import torch
from torch import nn

from data_pipelines import audio_windows, face_weights
from synclipmae_jax.models import audio_signal
from synclipmae_torch import audio, layout, modules


def _tensor(x) -> torch.Tensor:
  return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


class SyncTokenizer(nn.Module):
  """frames, boxes, audio -> {"audio": [T, D], "vocal": [T, D]} (`forward`); see the module doc."""

  def __init__(self, model: modules.SyncLipMAE, audio_frontend: nn.Module):
    super().__init__()
    self.model, self.audio_frontend = model.eval(), audio_frontend.eval()
    arch = model.arch
    self.view_config = arch["view"]
    self.image_size, self.patch_size = arch["image_size"], arch["patch_size"]
    self.register_buffer("pixel_mean", torch.tensor(self.view_config["pixel_mean"], dtype=torch.float32))
    self.register_buffer("pixel_std", torch.tensor(self.view_config["pixel_std"], dtype=torch.float32))

  @classmethod
  def from_pretrained(cls, folder: str | os.PathLike, wav2vec2: str | os.PathLike | None = None,
                      dtype: str | None = None) -> "SyncTokenizer":
    """The exported folder's model and front end (`wav2vec2`: the local checkpoint directory the
    run was trained with, for that front end); parameters in `dtype` (default: as exported)."""
    return cls(modules.SyncLipMAE.from_pretrained(folder, dtype),
               audio.from_pretrained(folder, wav2vec2))

  def view(self, frames, face_boxes, mouth_boxes) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluation view: (normalised patches float32 [T, N, P], kept indices int64 [T, k])."""
    frames = _tensor(frames)
    if frames.dtype != torch.uint8 or frames.shape[1:] != (self.image_size, self.image_size, 3):
      raise ValueError(f"frames must be uint8 [T, {self.image_size}, {self.image_size}, 3], got "
                       f"{frames.dtype} {tuple(frames.shape)}")
    images = (frames.float() / 255.0 - self.pixel_mean) / self.pixel_std
    patches = einops.rearrange(images, "t (h p) (w q) c -> t (h w) (p q c)",
                               p=self.patch_size, q=self.patch_size)
    t, n = patches.shape[:2]
    if self.view_config["kind"] == "full":
      return patches, torch.arange(n).expand(t, n)
    grid = self.image_size // self.patch_size
    weights = face_weights.patch_weights(
        np.asarray(face_boxes, np.float32).reshape(t, 4), np.asarray(mouth_boxes, np.float32).reshape(t, 4),
        grid, **self.view_config["face_weights"])
    # The k highest weights, ties to the lower index, in ascending index order: the JAX
    # evaluator's rule (masking.top_weight_keep), on the same float32 weights.
    top = face_weights.top_k(weights, self.view_config["num_visible"])
    return patches, torch.from_numpy(top.astype(np.int64))

  def prompt_tokens(self, frames, face_boxes, mouth_boxes,
                    frames_per_call: int = 256) -> dict[str, torch.Tensor]:
    """{"identity", "vocal", "ambient"}: prompt tokens [T, D] of every frame's evaluation view."""
    out = []
    for start in range(0, len(frames), frames_per_call):
      stop = start + frames_per_call
      patches, keep = self.view(frames[start:stop], face_boxes[start:stop], mouth_boxes[start:stop])
      out.append(self.model.encode(patches.to(self.pixel_mean.device), keep.to(self.pixel_mean.device))[1])
    prompts = torch.cat(out)
    return {name: prompts[:, i] for i, name in enumerate(self.model.arch["prompt_names"])}

  def audio_tokens(self, waveform, start: int = 0, stop: int | None = None,
                   windows_per_call: int = 16) -> torch.Tensor:
    """float [640 N] at 16 kHz -> audio tokens [stop - start, D] of frames [start, stop) (default:
    all N), at least the training window's frames; audio beyond the span is read as context."""
    waveform = _tensor(waveform)
    if not waveform.is_floating_point() or waveform.ndim != 1:
      raise ValueError(f"audio must be a float waveform [640 T] in [-1, 1], got {waveform.dtype} "
                       f"{tuple(waveform.shape)}")
    audio_arch = self.model.arch["audio"]
    t, context = audio_arch["window_frames"], audio_arch["input_context_frames"]
    stop = waveform.shape[0] // audio_signal.SAMPLES_PER_FRAME if stop is None else stop
    starts, window, offset = audio_windows.sliding_windows(start, stop, t)
    wave = waveform.float().cpu().numpy()
    windows = torch.from_numpy(np.stack([audio_windows.audio_window(wave, s, s + t, context)
                                         for s in starts])).to(self.pixel_mean.device)
    tokens = torch.cat([self.model.encode_audio(self.audio_frontend(windows[i:i + windows_per_call], t))
                        for i in range(0, len(windows), windows_per_call)])
    return tokens[torch.from_numpy(window), torch.from_numpy(offset)]

  def forward(self, frames, face_boxes, mouth_boxes, waveform) -> dict[str, torch.Tensor]:
    """Per-frame (25 fps) {"audio": [T, D], "vocal": [T, D]} for T frames and 640 T samples."""
    if len(waveform) != audio_signal.SAMPLES_PER_FRAME * len(frames):
      raise ValueError(f"{len(frames)} frames need {audio_signal.SAMPLES_PER_FRAME * len(frames)} "
                       f"audio samples, got {len(waveform)}")
    return {"audio": self.audio_tokens(waveform),
            "vocal": self.prompt_tokens(frames, face_boxes, mouth_boxes)["vocal"]}
