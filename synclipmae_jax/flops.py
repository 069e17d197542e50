"""Analytical FLOP count of one training step (matmuls and attention, 2 FLOPs per MAC).

Counts what the model computes: the encoder on the k visible patches (+3 prompts) of each
view, the adapter, both decoder passes over all N patches with cross-attention to 3
prompts, the InfoNCE logits (`contrastive_flops`), x3 for forward + backward; forward
only: the audio self-similarity of the positive sets and the frozen audio encoder. What serves
only a loss term of weight 0 is not computed (`objective.compute_losses`) and not counted: the
audio-driven decoder pass (recon_audio), the logits and positive sets (contrastive), the adapter
(both)
(wav2vec2; the log-mel front end is counted as zero). Elementwise work (norms, GELU,
softmax, jitter) is not counted. Used for the logged model
TFLOP/s and compared with XLA's compiled count by the AOT tool.
"""

from __future__ import annotations

from synclipmae_jax import masking, objective
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


def encoder_forward_flops(model_config, visible: int) -> float:
  """Forward FLOPs of the ViT encoder on one frame: `visible` patches embedded, + 3 prompts."""
  size = vit.vit_size(model_config.encoder_size)
  p = model_config.patch_size ** 2 * 3
  return 2 * visible * p * size.width + size.depth * _transformer_layer(
      visible + 3, size.width, size.mlp_dim)


def contrastive_candidates(config, group_size: int) -> int:
  """Candidates each InfoNCE anchor is scored against: its group's frames, or the global
  batch's (`loss.contrastive.negatives`)."""
  clips = (config.data.global_batch_size
           if objective.contrastive_negatives(config.loss.contrastive) == "global" else group_size)
  return clips * config.data.window_frames


def contrastive_flops(config, *, group_size: int, audio_features: tuple[int, int]
                      ) -> tuple[float, float]:
  """(logits, positives): forward FLOPs of one step's InfoNCE logits (trainable: x3 with the
  backward pass) and of the positive sets' audio self-similarity (forward only; 0 without the
  similarity expansion); both 0 when the term has weight 0.

  `group`: one [M, M] logits matrix per group of M = G * T frames serves both directions, and
  one [M, M] similarity. `global` (`losses.batch_infonce`): each of the N = B * T frames is an
  anchor against all N candidates in each direction, and the two directions are two matmuls
  (a device holds its anchors' rows of the square and of its transpose), 2 N^2 D; the
  similarity is formed once, N^2 F (the relation is symmetric).
  """
  if not config.loss.weights.contrastive:
    return 0.0, 0.0
  frames = config.data.global_batch_size * config.data.window_frames
  candidates = contrastive_candidates(config, group_size)
  width = vit.vit_size(config.model.encoder_size).width
  num_layers, feature_dim = audio_features
  directions = 2 if objective.contrastive_negatives(config.loss.contrastive) == "global" else 1
  logits = directions * 2 * frames * candidates * width
  similar = config.loss.contrastive.similarity_threshold is not None
  positives = 2 * frames * candidates * num_layers * feature_dim if similar else 0.0
  return float(logits), float(positives)


def train_step_flops(config, *, group_size: int, audio_features: tuple[int, int],
                     audio_encoder) -> float:
  """FLOPs of one step on the global batch.

  Args:
    config: the training config.
    group_size: clips per contrastive group, as the step uses it (`train_state.group_size`).
    audio_features: (L, C) of the frozen encoder's per-frame features.
    audio_encoder: the frozen `AudioEncoder` (its wav2vec2 geometry and input length).
  """
  m = config.model
  size = vit.vit_size(m.encoder_size)
  b, t = config.data.global_batch_size, config.data.window_frames
  frames = b * t
  grid = m.image_size // m.patch_size
  n, p = grid * grid, m.patch_size ** 2 * 3
  k = masking.num_visible(n, config.masking.mask_ratio)
  views = 2 if config.masking.mode == "two_bypass" else 1
  enc = encoder_forward_flops(m, k)
  d = m.decoder
  dec_tokens = n if d.cross_attention else n + 3
  dec = 2 * (k + 3) * size.width * d.width + 2 * n * d.width * p
  dec += d.depth * _transformer_layer(dec_tokens, d.width, d.mlp_dim, 3 if d.cross_attention else 0)
  num_layers, feature_dim = audio_features
  feat = feature_dim * (num_layers if m.audio.adapter == "all_layers" else 1)
  adapter = 2 * feat * size.width + 2 * size.width * size.width
  w = config.loss.weights
  logits, positives = contrastive_flops(config, group_size=group_size,
                                        audio_features=audio_features)
  passes = 2 if w.recon_audio else 1
  adapter *= 1 if (w.recon_audio or w.contrastive) else 0
  trainable = frames * (views * enc + passes * dec + adapter) + logits
  frozen = 0.0
  if audio_encoder.frontend == "wav2vec2":
    frozen = b * wav2vec2_forward_flops(audio_encoder.wav2vec2_config,
                                        audio_encoder.wav2vec2_input_samples(t))
  return 3 * trainable + positives + frozen
