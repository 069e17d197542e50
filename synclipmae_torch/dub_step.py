"""The loss of the dubbing fine-tune (paper 4.4): WanVACE with the AudioPack, trained by flow
matching as Wan is, with the Wan backbone frozen.

- What trains (`freeze`): the VACE blocks and the VACE patch embedding (parameter names starting
  with TRAINED_PREFIXES) and the AudioPack; everything else of the transformer is frozen.
- Conditioning (`encode_sample`, with `WanVACEPipeline`'s own helpers, so it is what the pipeline
  feeds at inference): the 96-channel control latents = VAE(video x (1 - mask)), VAE(video x
  mask) and the pixel mask folded to 64 channels, with the reference frames (the identity image,
  then the continuity frame when present) encoded as single frames and each put in front in turn
  (the pipeline's order: the continuity frame ends up first); the target latents are the
  normalised VAE latents of the clean video with the references' latents in front in that order.
- Flow matching (`flow_matching_loss`): x_t = (1 - sigma) x_0 + sigma noise, the transformer at
  timestep 1000 sigma predicts the velocity noise - x_0; mean squared error over the target's
  latent frames (the reference frames are inputs, not generated).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from synclipmae_torch import audiopack

TRAINED_PREFIXES = ("vace_blocks.", "vace_patch_embedding.")


def pipeline(transformer, vae):
  """A WanVACEPipeline of `transformer` and `vae` without a text encoder (prompt embeddings are
  given): what `encode_sample` uses, and what inference runs."""
  from diffusers import FlowMatchEulerDiscreteScheduler, WanVACEPipeline  # pylint: disable=import-outside-toplevel
  return WanVACEPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                         scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))


def freeze(transformer, pack: audiopack.AudioPack) -> list[tuple[str, torch.nn.Parameter]]:
  """Freezes the transformer except TRAINED_PREFIXES; returns every trained (name, parameter),
  the AudioPack's under "audiopack."."""
  trained = []
  for name, p in transformer.named_parameters():
    p.requires_grad_(name.startswith(TRAINED_PREFIXES))
    if p.requires_grad:
      trained.append((name, p))
  trained += [(f"audiopack.{name}", p) for name, p in pack.named_parameters()]
  return trained


def cast_frozen(transformer, dtype: torch.dtype) -> None:
  """Holds the transformer's frozen parameters in `dtype` (bfloat16 halves the backbone's
  memory; bf16 autocast runs it); the trained ones keep float32 for the optimizer."""
  for p in transformer.parameters():
    if not p.requires_grad:
      p.data = p.data.to(dtype)


def _video(frames: np.ndarray) -> torch.Tensor:
  """uint8 [F, H, W, 3] -> [1, 3, F, H, W] in [-1, 1]."""
  return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None].float() / 127.5 - 1


def _latents(vae, video: torch.Tensor) -> torch.Tensor:
  """The normalised latents of `video` [1, 3, F, H, W], as WanVACEPipeline normalises them."""
  mean = torch.tensor(vae.config.latents_mean, device=video.device).view(1, -1, 1, 1, 1)
  inv_std = 1.0 / torch.tensor(vae.config.latents_std, device=video.device).view(1, -1, 1, 1, 1)
  return (vae.encode(video).latent_dist.mode().float() - mean) * inv_std


@torch.no_grad()
def encode_sample(pipe, sample: dict) -> dict:
  """A `dub_samples.training_sample` -> {"control": [1, 96, R + L, h, w], "latents":
  [1, 16, R + L, h, w], "num_reference_frames": R}, on the VAE's device."""
  device = next(pipe.vae.parameters()).device
  video = _video(sample["target"]).to(device)
  mask = torch.from_numpy(np.ascontiguousarray(sample["mask"]))[None, None].float().to(device)  # [1, 1, F, H, W]
  references = [_video(sample["reference"][None])[0, :, 0].to(device)]
  if sample["continuity"] is not None:
    references.append(_video(sample["continuity"][None])[0, :, 0].to(device))
  control = torch.cat([pipe.prepare_video_latents(video, mask, [references], device=device),
                       pipe.prepare_masks(mask, [references])], dim=1)
  latents = _latents(pipe.vae, video)
  for image in references:  # each in front of the previous: the pipeline's order
    latents = torch.cat([_latents(pipe.vae, image[None, :, None]), latents], dim=2)
  return {"control": control, "latents": latents, "num_reference_frames": len(references)}


def flow_matching_loss(transformer, pack: audiopack.AudioPack, encoded: dict, tokens: torch.Tensor,
                       prompt_embeds: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor
                       ) -> torch.Tensor:
  """The velocity error of one noised sample; tokens [1, F, D] are the control tokens of its F
  target frames (audio tokens, or a driving video's vocal-motion tokens), sigma [1] in (0, 1)."""
  x0, r = encoded["latents"], encoded["num_reference_frames"]
  s = sigma.view(-1, 1, 1, 1, 1)
  noisy = (1 - s) * x0 + s * noise
  with pack.conditioning(tokens, r):
    velocity = transformer(noisy, sigma * 1000, prompt_embeds, control_hidden_states=encoded["control"],
                           return_dict=False)[0]
  return F.mse_loss(velocity[:, :, r:].float(), (noise - x0)[:, :, r:].float())
