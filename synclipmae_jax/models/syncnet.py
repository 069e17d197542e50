"""SyncNet (Chung and Zisserman, "Out of time: automated lip sync in the wild", 2016) as a model we
train: the two-stream architecture of the public network (`synclipmae_torch/syncnet.py`, whose
weights give LSE-C / LSE-D) scaled to the synthetic faces, trained by `tasks/syncnet/` with its
contrastive loss (`tasks/syncnet/losses.py`) and scored with its Euclidean distance.

- lip stream: the lower half of K = 5 consecutive face crops (the public network reads the mouth
  region of 5 frames); its first layer sees all K frames at once (the public Conv3d's temporal
  kernel of 5 = a 2-D convolution over the frames stacked along channels), then 3x3
  convolutions, each with ReLU and 2x2 max pooling, and a two-layer head (fc - norm - ReLU - fc);
- audio stream: the frozen audio front end's features of the same K frames ([K, L, C], averaged
  over the front end's L layers) as a one-channel image of C features x K frames (the public
  network reads 13 MFCC x 20 steps of the same 0.2 s), 3x3 convolutions with ReLU and max pooling
  over the feature axis, and a two-layer head.

Differences from the public network, for the 48-pixel synthetic faces and the demo's budget: fewer
and narrower layers (`channels`, `hidden`, `embed_dim`); no normalisation in the convolutions and
layer normalisation in the heads instead of batch normalisation (the trainer's state holds no
running statistics); the demo's frozen log-mel features instead of MFCC. The normalisation matters
on the demo's data: with none, every embedding collapsed to the loss's constant stationary point
within 100 steps (`tasks/syncnet/losses.py`); with layer normalisation over the convolutions'
channels as well, the pairs stayed unseparated for 1000 steps; as here, they separate from step
~450.
Embeddings are not normalised: their Euclidean distance is what the loss and the LSE figures use.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from synclipmae_jax.models import layers


def distance(audio_embedding: jax.Array, video_embedding: jax.Array) -> jax.Array:
  """Euclidean distance over the last axis ([..., D] -> [...]), with a gradient at 0."""
  return jnp.sqrt(jnp.sum(jnp.square(audio_embedding - video_embedding), axis=-1) + 1e-12)


class SyncNet(nn.Module):
  """The two streams; `embed_video` / `embed_audio` give one embedding per K-frame window
  (the interface UniSync's has, so the sync evaluator reads either), `__call__` their distance."""

  window: int = 5  # K frames per window
  channels: tuple[int, ...] = (32, 64, 128)  # the lip stream's convolutions
  audio_channels: tuple[int, ...] = (32, 64)  # the audio stream's convolutions
  hidden: int = 256  # the heads' hidden width
  embed_dim: int = 128

  def setup(self):
    self.lip_convs = [nn.Conv(c, (3, 3), name=f"lip_conv{i}") for i, c in enumerate(self.channels)]
    self.audio_convs = [nn.Conv(c, (3, 3), name=f"audio_conv{i}")
                        for i, c in enumerate(self.audio_channels)]
    self.lip_head = (layers.dense(self.hidden, ("sync_in", "sync_hidden"), jnp.float32, name="lip_fc0"),
                     nn.LayerNorm(name="lip_fc_norm"),
                     layers.dense(self.embed_dim, ("sync_hidden", "sync_out"), jnp.float32,
                                  name="lip_fc1"))
    self.audio_head = (layers.dense(self.hidden, ("sync_in", "sync_hidden"), jnp.float32,
                                    name="audio_fc0"),
                       nn.LayerNorm(name="audio_fc_norm"),
                       layers.dense(self.embed_dim, ("sync_hidden", "sync_out"), jnp.float32,
                                    name="audio_fc1"))

  def embed_video(self, frames: jax.Array) -> jax.Array:
    """uint8 frames [B, K, H, W, 3] -> [B, embed_dim]."""
    b, k, h, w = frames.shape[:4]
    self._check_window(k)
    lower = frames[:, :, h // 2:].astype(jnp.float32) / 127.5 - 1.0  # [B, K, h, W, 3]
    x = jnp.transpose(lower, (0, 2, 3, 1, 4)).reshape(b, h - h // 2, w, k * 3)  # frames on channels
    for conv in self.lip_convs:
      x = nn.max_pool(jax.nn.relu(conv(x)), (2, 2), strides=(2, 2), padding="SAME")
    return self._head(self.lip_head, x.reshape(b, -1))

  def embed_audio(self, features: jax.Array) -> jax.Array:
    """Frozen audio features [B, K, L, C] -> [B, embed_dim]."""
    b, k = features.shape[:2]
    self._check_window(k)
    x = jnp.transpose(features.astype(jnp.float32).mean(axis=2), (0, 2, 1))[..., None]  # [B, C, K, 1]
    for conv in self.audio_convs:
      x = nn.max_pool(jax.nn.relu(conv(x)), (2, 1), strides=(2, 1), padding="SAME")
    return self._head(self.audio_head, x.reshape(b, -1))

  @staticmethod
  def _head(head, x: jax.Array) -> jax.Array:
    fc0, norm, fc1 = head
    return fc1(jax.nn.relu(norm(fc0(x))))

  def __call__(self, frames: jax.Array, features: jax.Array) -> jax.Array:
    """Distances [B] of frames [B, K, H, W, 3] (uint8) and audio features [B, K, L, C]."""
    return distance(self.embed_audio(features), self.embed_video(frames))

  def _check_window(self, k: int) -> None:
    if k != self.window:
      raise ValueError(f"SyncNet takes windows of {self.window} frames, got {k}")
