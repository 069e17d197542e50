"""The SyncLipMAE model (paper 3, figure 1a): encoder on the masked views, audio adapter,
and two decoding passes with shared weights.

The module is a pure function of its parameters and inputs: masking indices, the identity
shuffle permutation and the frozen audio features are computed by the caller from explicit
random keys (see `objective.py`), so the same call serves training, evaluation and export.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from synclipmae_jax.models import audio_adapter, decoder, layers, vit

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # model.dtype: compute dtype


class SyncLipMAE(nn.Module):
  encoder_size: vit.VitSize
  image_size: int
  patch_size: int
  decoder_width: int
  decoder_depth: int
  decoder_heads: int
  decoder_mlp_dim: int
  cross_attention: bool = True
  adapter: str = "all_layers"
  dtype: layers.Dtype = jnp.float32
  scan: bool = False
  encoder_remat: str = "none"  # remat.REMAT_POLICIES
  decoder_remat: str = "none"

  @property
  def grid(self) -> int:
    return self.image_size // self.patch_size

  def setup(self):
    self.encoder = vit.VitEncoder(self.encoder_size, self.grid, self.dtype, self.scan,
                                  self.encoder_remat)
    self.audio_adapter = audio_adapter.AudioAdapter(self.encoder_size.width, self.adapter, self.dtype)
    self.decoder = decoder.MaeDecoder(
        self.decoder_width, self.decoder_depth, self.decoder_heads, self.decoder_mlp_dim,
        self.grid, self.patch_size ** 2 * 3, self.cross_attention, self.dtype, self.scan,
        self.decoder_remat)

  def encode(self, patches, keep):
    """patches [F, N, P], keep [F, k] -> (visible tokens [F, k, D], prompts [F, 3, D])."""
    return self.encoder(patches, keep)

  def encode_audio(self, audio_features):
    """Frozen per-frame audio features [B, T, L, C] -> audio tokens [B, T, D]."""
    return self.audio_adapter(audio_features)

  def __call__(self, context_patches, context_keep, motion_patches, motion_keep,
               audio_features, identity_permutation, audio_pass: bool = True):
    """One training forward pass.

    Args:
      context_patches, context_keep: bypass 1 (uniform mask), [F, N, P] and [F, k]; it
        gives the visible tokens the decoder restores and the identity prompt.
      motion_patches, motion_keep: bypass 2 (face-preserving, jittered), or None for the
        single-view ablations (A1/A2), where every prompt comes from the context view.
      audio_features: [B, T, L, C] with B * T = F, from the frozen audio encoder.
      identity_permutation: [F] frame indices; identity prompts are permuted with it before
        decoding (identity-consistent prompt shuffling, paper 3.2).
      audio_pass: whether to decode the audio-driven pass too (False when its loss has weight
        0: the decoder then runs once, and `pred_audio` is None).

    Returns:
      dict with `pred_video` / `pred_audio` [F, N, P] (video- and audio-driven
      reconstructions), `identity`, `vocal`, `ambient`, `audio` tokens [F, D].
    """
    f = context_patches.shape[0]
    if motion_patches is None:
      tokens, prompts = self.encode(context_patches, context_keep)
      motion_prompts = prompts
    else:  # both bypasses through the encoder in one batched call
      both_tokens, both_prompts = self.encode(
          jnp.concatenate([context_patches, motion_patches]),
          jnp.concatenate([context_keep, motion_keep]))
      tokens, prompts, motion_prompts = both_tokens[:f], both_prompts[:f], both_prompts[f:]
    identity = prompts[:, 0]
    vocal, ambient = motion_prompts[:, 1], motion_prompts[:, 2]
    audio = self.encode_audio(audio_features).reshape(f, -1)
    shuffled_identity = identity[identity_permutation]
    # Two decoding passes with shared weights as one batched call: condition = vocal, audio.
    passes = 2 if audio_pass else 1
    condition = jnp.concatenate([vocal, audio][:passes])
    context = jnp.stack([jnp.concatenate([shuffled_identity] * passes),
                         jnp.concatenate([ambient] * passes), condition], axis=1)
    pred = self.decoder(jnp.concatenate([tokens] * passes),
                        jnp.concatenate([context_keep] * passes), context)
    return {"pred_video": pred[:f], "pred_audio": pred[f:] if audio_pass else None,
            "identity": identity, "vocal": vocal, "ambient": ambient, "audio": audio}


def build(model_config) -> SyncLipMAE:
  """The model named by `config.model` (see configs/)."""
  if model_config.dtype not in DTYPES:
    raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {model_config.dtype!r}")
  d = model_config.decoder
  return SyncLipMAE(
      encoder_size=vit.vit_size(model_config.encoder_size),
      image_size=model_config.image_size, patch_size=model_config.patch_size,
      decoder_width=d.width, decoder_depth=d.depth, decoder_heads=d.num_heads,
      decoder_mlp_dim=d.mlp_dim, cross_attention=d.cross_attention,
      adapter=model_config.audio.adapter, dtype=DTYPES[model_config.dtype],
      scan=model_config.scan_layers, encoder_remat=model_config.remat_policy.encoder,
      decoder_remat=model_config.remat_policy.decoder)
