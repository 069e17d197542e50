"""Analytical FLOP count of one training step (matmuls and attention, 2 FLOPs per MAC).

Counts what the model computes: the encoder on the k visible patches (+3 prompts) of each
view, the adapter, both decoder passes over all N patches with cross-attention to 3
prompts, the InfoNCE logits, x3 for forward + backward; the frozen audio encoder forward
only (wav2vec2; the log-mel front end is counted as zero). Used for the logged model
TFLOP/s and compared with XLA's compiled count by the AOT tool.
"""

from __future__ import annotations

from synclipmae_jax import masking
from synclipmae_jax.models import vit


def _transformer_layer(tokens: int, width: int, mlp: int, context: int = 0) -> float:
  f = 2 * tokens * width * width * 4 + 2 * 2 * tokens * tokens * width  # qkv+out, scores+mix
  f += 2 * 2 * tokens * width * mlp
  if context:
    f += 2 * tokens * width * width * 2 + 2 * context * width * width * 2  # q, out; k, v
    f += 2 * 2 * tokens * context * width
  return f


def wav2vec2_forward_flops(w2v, num_samples: int) -> float:
  """Forward FLOPs of a transformers.Wav2Vec2Config-shaped encoder on one waveform."""
  f, length, channels = 0.0, num_samples, 1
  for dim, k, s in zip(w2v.conv_dim, w2v.conv_kernel, w2v.conv_stride):
    length = (length - k) // s + 1
    f += 2 * length * k * channels * dim
    channels = dim
  h = w2v.hidden_size
  f += 2 * length * channels * h
  f += 2 * length * w2v.num_conv_pos_embeddings * h * h / w2v.num_conv_pos_embedding_groups
  return f + w2v.num_hidden_layers * _transformer_layer(length, h, w2v.intermediate_size)


def train_step_flops(config, audio_feature_dim: int, num_audio_layers: int, w2v=None) -> float:
  """FLOPs of one step on the global batch."""
  m = config.model
  size = vit.vit_size(m.encoder_size)
  b, t = config.data.global_batch_size, config.data.window_frames
  frames = b * t
  grid = m.image_size // m.patch_size
  n, p = grid * grid, m.patch_size ** 2 * 3
  k = masking.num_visible(n, config.masking.mask_ratio)
  views = 2 if config.masking.mode == "two_bypass" else 1
  enc = 2 * k * p * size.width + size.depth * _transformer_layer(k + 3, size.width, size.mlp_dim)
  d = m.decoder
  dec_tokens = n if d.cross_attention else n + 3
  dec = 2 * (k + 3) * size.width * d.width + 2 * n * d.width * p
  dec += d.depth * _transformer_layer(dec_tokens, d.width, d.mlp_dim, 3 if d.cross_attention else 0)
  feat = audio_feature_dim * (num_audio_layers if m.audio.adapter == "all_layers" else 1)
  adapter = 2 * feat * size.width + 2 * size.width * size.width
  group = config.loss.contrastive.group_size or b
  logits = 2 * b * group * t * t * size.width
  trainable = frames * (views * enc + 2 * dec + adapter) + logits
  samples = 320 * t + 80 if m.audio.alignment == "resample" else 640 * t
  frozen = b * wav2vec2_forward_flops(w2v, samples) if w2v is not None else 0.0
  return 3 * trainable + frozen
