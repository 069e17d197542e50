"""AudioPack: per-frame control tokens injected into diffusers' WanVACE (paper 4.4, Table 4).

The dubbing model keeps WanVACE and adds, after the VACE patch embedding, one control token per
latent frame built from the 25 fps tokens of the exported SyncLipMAE: the time-aligned audio
tokens (audio-driven dubbing) or the vocal-motion tokens of a driving video (video-driven
dubbing). Both are [B, F, D] per-frame tokens of the same width and enter the same way, so one
model takes either; which one is a property of the inputs (`synclipmae_torch.tokens`), not of the
module.

  tokens [B, F, D], F = 1 + 4k frames at 25 fps
    -> temporal encoding (a 1-D convolution over frames, kernel `kernel`, GELU)
    -> folded to the Wan VAE's latent frame rate: latent frame 0 holds frame 0 (its group is
       frame 0 repeated 4 times, as the VAE's first latent frame encodes one frame), latent
       frame j >= 1 holds frames 4j - 3 .. 4j; the 4 encoded frames of a group are concatenated
       and projected (Linear, LayerNorm)
    -> reference latent frames (the identity image and the continuity frame, prepended in time by
       the pipeline) get a learnt placeholder token
    -> projected to the DiT width by a zero-initialised Linear: an untrained AudioPack adds
       exactly zero, so WanVACE's output is unchanged
    -> added to every spatial token of its latent frame in the VACE token stream.

`attach(transformer, pack)` registers a forward hook on `transformer.vace_patch_embedding`
(diffusers is not forked); `pack.conditioning(tokens, num_reference_frames)` sets the tokens of
the next forward calls. Facts on WanVACE: ../shared/reference/bridge.md.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn import functional as F

FRAMES_PER_LATENT = 4  # the Wan VAE's temporal compression (1 + 4k frames -> 1 + k latents)


def latent_frames(num_frames: int) -> int:
  """Latent frames of F = 1 + 4k video frames; a clear error for other lengths."""
  if num_frames < 1 or (num_frames - 1) % FRAMES_PER_LATENT:
    raise ValueError(f"the Wan VAE takes 1 + 4k frames, got {num_frames}")
  return 1 + (num_frames - 1) // FRAMES_PER_LATENT


class AudioPack(nn.Module):
  """Per-frame tokens [B, F, token_dim] -> per-latent-frame tokens [B, R + L, width]."""

  def __init__(self, token_dim: int, width: int, hidden: int = 512, kernel: int = 3):
    super().__init__()
    if kernel % 2 != 1:
      raise ValueError(f"kernel must be odd (centred in time), got {kernel}")
    self.temporal = nn.Conv1d(token_dim, hidden, kernel, padding=kernel // 2)
    self.fold = nn.Linear(FRAMES_PER_LATENT * hidden, hidden)
    self.norm = nn.LayerNorm(hidden)
    self.reference = nn.Parameter(torch.zeros(hidden))
    self.out = nn.Linear(hidden, width)
    nn.init.zeros_(self.out.weight)
    nn.init.zeros_(self.out.bias)
    self._pending: tuple[torch.Tensor, int] | None = None

  def forward(self, tokens: torch.Tensor, num_reference_frames: int = 0) -> torch.Tensor:
    b, f, _ = tokens.shape
    latents = latent_frames(f)
    x = F.gelu(self.temporal(tokens.transpose(1, 2))).transpose(1, 2)  # [B, F, hidden]
    x = torch.cat([x[:, :1].expand(b, FRAMES_PER_LATENT - 1, -1), x], dim=1)  # group 0 = frame 0
    x = self.norm(self.fold(x.reshape(b, latents, -1)))  # [B, L, hidden]
    if num_reference_frames:
      x = torch.cat([self.reference.expand(b, num_reference_frames, -1), x], dim=1)
    return self.out(x)

  @contextlib.contextmanager
  def conditioning(self, tokens: torch.Tensor, num_reference_frames: int = 0):
    """The tokens the attached hook adds during the forward calls inside the block."""
    self._pending = (tokens, num_reference_frames)
    try:
      yield
    finally:
      self._pending = None

  def _hook(self, module, inputs, output: torch.Tensor) -> torch.Tensor:
    del module, inputs
    if self._pending is None:
      raise RuntimeError("AudioPack is attached: call the transformer inside "
                         "`pack.conditioning(tokens)`")
    added = self(*self._pending)  # [B, T, width]
    if added.shape[1] != output.shape[2] or added.shape[2] != output.shape[1]:
      raise ValueError(f"AudioPack gives {added.shape[1]} latent frames of width {added.shape[2]}; "
                       f"the VACE patch embedding has {output.shape[2]} of width {output.shape[1]} "
                       "(frames 1 + 4k, plus the reference frames)")
    return output + added.transpose(1, 2)[..., None, None].to(output.dtype)


def attach(transformer, pack: AudioPack):
  """Adds `pack`'s tokens to `transformer.vace_patch_embedding`'s output (a forward hook);
  returns the hook's handle (`.remove()` detaches it)."""
  return transformer.vace_patch_embedding.register_forward_hook(pack._hook)  # pylint: disable=protected-access
