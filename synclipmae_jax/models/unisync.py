"""UniSync (Feng et al.; ../shared/papers/unisync_summary.txt, Figure 2): the supervised sync
baseline shipped beside SyncLipMAE.

A window of K consecutive frames and the audio of the same K frames are mapped to one embedding
each by two streams, and their synchronisation score is the cosine of the rectified embeddings,
p_sync = cos(ReLU(a'), ReLU(v')), in [0, 1]:

- visual stream: eps1, a per-frame convolution stack (stride-2 3x3 convolutions with ReLU) on the
  lower half of each face crop (where SyncNet and its successors look: the mouth and jaw), average
  pooling over the image, then eps2, an MLP over the K frames' concatenated features -> v';
- audio stream: eps3, a per-frame projection of the frozen audio encoder's features [K, L, C]
  (the same features SyncLipMAE's adapter reads: one log-mel layer, or wav2vec 2.0's hidden
  states), average pooling over the encoder's L layers, then eps4, an MLP over the K frames -> a'.

The summary fixes the structure (preprocessing, average pooling, unified feature extraction,
p_sync); layer sizes, the lower-half crop and K = 5 (SyncNet's window) are our choices (the
module's fields). The training objective is in `tasks/unisync/losses.py`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from synclipmae_jax.models import layers


def sync_probability(audio_embedding: jax.Array, video_embedding: jax.Array) -> jax.Array:
  """p_sync = cos(ReLU(a), ReLU(v)) over the last axis ([..., D] -> [...]); 0 when either
  rectified embedding is zero."""
  a, v = jax.nn.relu(audio_embedding), jax.nn.relu(video_embedding)
  norms = jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(v, axis=-1)
  return jnp.sum(a * v, axis=-1) / jnp.maximum(norms, 1e-12)


class UniSync(nn.Module):
  """The two streams; `__call__` gives p_sync of paired windows, `embed_video` / `embed_audio`
  the embeddings (the sync evaluator compares them with the same cosine)."""

  window: int = 5  # K frames per window
  channels: tuple[int, ...] = (32, 64, 128)  # eps1's convolutions, each with stride 2
  audio_width: int = 128  # eps3's output per frame
  hidden: int = 256  # the hidden width of eps2 and eps4
  embed_dim: int = 128

  def setup(self):
    self.eps1 = [nn.Conv(c, (3, 3), strides=(2, 2), name=f"eps1_conv{i}")
                 for i, c in enumerate(self.channels)]
    self.eps2 = (layers.dense(self.hidden, ("unisync_in", "unisync_hidden"), jnp.float32,
                              name="eps2_hidden"),
                 layers.dense(self.embed_dim, ("unisync_hidden", "unisync_out"), jnp.float32,
                              name="eps2_out"))
    self.eps3 = layers.dense(self.audio_width, ("audio_features", "unisync_in"), jnp.float32,
                             name="eps3")
    self.eps4 = (layers.dense(self.hidden, ("unisync_in", "unisync_hidden"), jnp.float32,
                              name="eps4_hidden"),
                 layers.dense(self.embed_dim, ("unisync_hidden", "unisync_out"), jnp.float32,
                              name="eps4_out"))

  def embed_video(self, frames: jax.Array) -> jax.Array:
    """uint8 frames [B, K, H, W, 3] -> v' [B, embed_dim]."""
    b, k, h = frames.shape[:3]
    self._check_window(k)
    lower = frames[:, :, h // 2:]
    x = lower.reshape((b * k,) + lower.shape[2:]).astype(jnp.float32) / 127.5 - 1.0
    for conv in self.eps1:
      x = jax.nn.relu(conv(x))
    x = x.mean(axis=(1, 2)).reshape(b, k * self.channels[-1])  # average pooling; K frames side by side
    return self.eps2[1](jax.nn.relu(self.eps2[0](x)))

  def embed_audio(self, features: jax.Array) -> jax.Array:
    """Frozen audio features [B, K, L, C] -> a' [B, embed_dim]."""
    b, k = features.shape[:2]
    self._check_window(k)
    x = jax.nn.relu(self.eps3(features.astype(jnp.float32)))  # [B, K, L, audio_width]
    x = x.mean(axis=2).reshape(b, k * self.audio_width)  # average pooling over the layers
    return self.eps4[1](jax.nn.relu(self.eps4[0](x)))

  def __call__(self, frames: jax.Array, features: jax.Array) -> jax.Array:
    """p_sync [B] of frames [B, K, H, W, 3] (uint8) and audio features [B, K, L, C]."""
    return sync_probability(self.embed_audio(features), self.embed_video(frames))

  def _check_window(self, k: int) -> None:
    if k != self.window:
      raise ValueError(f"UniSync takes windows of {self.window} frames, got {k}")
