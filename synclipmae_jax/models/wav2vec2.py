"""Flax linen port of transformers' PyTorch `Wav2Vec2Model`, for inference only.

The frozen speech encoder of paper 3.1 ("a pretrained speech encoder with L layers that is kept
frozen during pretraining") and 3.2 ("Audio Features and Adapter"). transformers 5 ships no Flax
wav2vec2, so this module re-implements the PyTorch model on top of `transformers.Wav2Vec2Config`:

- feature extractor: strided 1-D convolutions, `feat_extract_norm="group"` (GroupNorm on the first
  conv only, wav2vec2-base) or `"layer"` (LayerNorm after every conv, large/"stable" variants);
- feature projection: LayerNorm + Dense;
- encoder: weight-normalised grouped positional convolution, then post-LN layers
  (`do_stable_layer_norm=False`) or pre-LN layers with a final LayerNorm (`True`).

There is no dropout, LayerDrop or SpecAugment masking: the encoder is frozen.

Every parameter has logical axis names (`AXES`: `audio_embed` for the hidden width, `audio_heads`
for the attention projections' output, `audio_mlp` for the feed-forward width, `audio_conv` for the
CNN channels), so a training mesh shards the frozen weights like the trainable ones
(`config.sharding.logical_axis_rules`); `init_params` returns the plain (unboxed) tree. Without
axis rules (tests, conversion) the names have no effect.

Parameter names mirror the PyTorch state dict so a converter only renames and transposes:
`feature_extractor/conv_layers_{i}/conv/kernel` (Conv1d weight transposed (2, 1, 0)),
`feature_extractor/conv_layers_{i}/layer_norm/{scale,bias}`,
`feature_projection/{layer_norm,projection}`, `encoder/pos_conv_embed/conv/{weight_g,weight_v,bias}`
(kept in the PyTorch layout: weight_g (1, 1, K), weight_v (hidden, hidden / groups, K)),
`encoder/layer_norm`, `encoder/layers_{n}/attention/{q,k,v,out}_proj`,
`encoder/layers_{n}/{layer_norm,final_layer_norm}`,
`encoder/layers_{n}/feed_forward/{intermediate_dense,output_dense}` (Dense kernels are the
transposed Linear weights; LayerNorm/GroupNorm `scale` is the PyTorch `weight`).

Usage: `params = init_params(config, rng)` (random weights, same tree as a converted checkpoint),
then `Wav2Vec2Model(config).apply({"params": params}, input_values)`.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from transformers import Wav2Vec2Config

# CNN geometry, shared with the PyTorch bridge through the jax-free `audio_signal`.
from synclipmae_jax.models.audio_signal import conv_output_length, num_samples_for_tokens

ALIGNMENTS = ("none", "interpolate")
# The logical axis names of the parameters (rules: config_defaults.DEFAULT_RULES).
AXES = ("audio_embed", "audio_heads", "audio_mlp", "audio_conv")

# transformers.activations.ACT2FN names -> JAX functions with the same numerics.
_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "gelu": functools.partial(jax.nn.gelu, approximate=False),
  "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
  "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
  "relu": jax.nn.relu,
  "silu": jax.nn.silu,
  "swish": jax.nn.silu,
}

# PyTorch's nn.LayerNorm / nn.GroupNorm default eps, used by the feature extractor's norms.
_TORCH_NORM_EPS = 1e-5


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """The JAX function for a transformers activation name ("gelu" is the exact erf GELU)."""
  if name not in _ACTIVATIONS:
    raise ValueError(f"unsupported activation {name!r}; expected one of {sorted(_ACTIVATIONS)}")
  return _ACTIVATIONS[name]


def check_config(config: Wav2Vec2Config) -> None:
  """Raises ValueError for configurations this port does not implement."""
  if config.feat_extract_norm not in ("group", "layer"):
    raise ValueError(
        f"feat_extract_norm must be 'group' or 'layer', got {config.feat_extract_norm!r}")
  if not len(config.conv_dim) == len(config.conv_kernel) == len(config.conv_stride):
    raise ValueError(
        f"conv_dim, conv_kernel and conv_stride must have equal lengths, got {config.conv_dim}, "
        f"{config.conv_kernel}, {config.conv_stride}")
  if config.hidden_size % config.num_attention_heads:
    raise ValueError(
        f"hidden_size {config.hidden_size} is not divisible by num_attention_heads "
        f"{config.num_attention_heads}")
  if config.hidden_size % config.num_conv_pos_embedding_groups:
    raise ValueError(
        f"hidden_size {config.hidden_size} is not divisible by num_conv_pos_embedding_groups "
        f"{config.num_conv_pos_embedding_groups}")
  if config.add_adapter or getattr(config, "adapter_attn_dim", None) is not None:
    raise ValueError("wav2vec2 adapters (add_adapter / adapter_attn_dim) are not supported")
  activation(config.feat_extract_activation)
  activation(config.hidden_act)


def linear_interpolation_weights(
    in_length: int, out_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Indices and weights of PyTorch's `F.interpolate(mode="linear", align_corners=False)`.

  Follows ATen's CPU kernel (`area_pixel_compute_source_index`, `guard_index_and_lambda`) in
  float32: scale = in / out; src = max(scale * (i + 0.5) - 0.5, 0); i0 = min(floor(src), in - 1);
  i1 = i0 + (i0 < in - 1); lambda1 = clip(src - i0, 0, 1); lambda0 = 1 - lambda1. Equal lengths
  copy (lambda0 = 1). `scale * (i + 0.5) - 0.5` is rounded to float32 once, from its exact value
  (computed in float64), as the fused multiply-add of ATen's x86-64 (AVX2/AVX-512) kernels does.

  Returns:
    (i0, i1, lambda0, lambda1), each of shape [out_length].
  """
  if in_length < 1 or out_length < 1:
    raise ValueError(f"lengths must be >= 1, got in_length={in_length}, out_length={out_length}")
  out_index = np.arange(out_length)
  if in_length == out_length:
    return (out_index, out_index, np.ones(out_length, np.float32), np.zeros(out_length, np.float32))
  scale = np.float32(in_length) / np.float32(out_length)
  half_index = out_index.astype(np.float32) + np.float32(0.5)
  src = (np.float64(scale) * half_index.astype(np.float64) - 0.5).astype(np.float32)
  src = np.maximum(src, np.float32(0.0))
  i0 = np.minimum(np.floor(src).astype(np.int64), in_length - 1)
  lambda1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
  i1 = i0 + (i0 < in_length - 1)
  return i0, i1, np.float32(1.0) - lambda1, lambda1


def interpolate_linear(x: jax.Array, out_length: int) -> jax.Array:
  """Resizes x [B, S, C] along S to out_length like `F.interpolate(x.transpose(1, 2), out_length,
  mode="linear", align_corners=False).transpose(1, 2)`: out = x[i0] * lambda0 + x[i1] * lambda1.

  Under `jax.jit` on an x86-64 CPU, XLA fuses this into fma(x[i0], lambda0, x[i1] * lambda1), the
  same float32 operations as ATen's kernel, so the result equals PyTorch's bit for bit there.
  """
  i0, i1, lambda0, lambda1 = linear_interpolation_weights(x.shape[1], out_length)
  return x[:, i0] * lambda0[:, None] + x[:, i1] * lambda1[:, None]


_partitioned = nn.with_logical_partitioning


def _layer_norm(eps: float, name: str, axis: str = "audio_embed") -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name,
                      scale_init=_partitioned(nn.initializers.ones, (axis,)),
                      bias_init=_partitioned(nn.initializers.zeros, (axis,)))


def _dense(features: int, config: Wav2Vec2Config, name: str, axes: tuple[str, str]) -> nn.Dense:
  return nn.Dense(features, name=name,
                  kernel_init=_partitioned(nn.initializers.normal(config.initializer_range), axes),
                  bias_init=_partitioned(nn.initializers.zeros, axes[1:]))


class Wav2Vec2ConvLayer(nn.Module):
  """One feature-extractor block: Conv1d (VALID, strided), optional norm, activation.

  Layer 0 of a "group" extractor has a per-channel GroupNorm (normalised over time); every layer
  of a "layer" extractor has a LayerNorm over channels; the others have no norm.
  """

  config: Wav2Vec2Config
  layer_id: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x [B, N, C_in] -> [B, N', conv_dim[layer_id]]."""
    config = self.config
    features = config.conv_dim[self.layer_id]
    x = nn.Conv(
        features, kernel_size=(config.conv_kernel[self.layer_id],),
        strides=(config.conv_stride[self.layer_id],), padding="VALID", use_bias=config.conv_bias,
        kernel_init=_partitioned(nn.initializers.he_normal(), (None, None, "audio_conv")),
        bias_init=_partitioned(nn.initializers.zeros, ("audio_conv",)), name="conv")(x)
    if config.feat_extract_norm == "layer":
      x = _layer_norm(_TORCH_NORM_EPS, "layer_norm", "audio_conv")(x)
    elif self.layer_id == 0:
      x = nn.GroupNorm(
          num_groups=features, epsilon=_TORCH_NORM_EPS, use_fast_variance=False,
          scale_init=_partitioned(nn.initializers.ones, ("audio_conv",)),
          bias_init=_partitioned(nn.initializers.zeros, ("audio_conv",)), name="layer_norm")(x)
    return activation(config.feat_extract_activation)(x)


class Wav2Vec2FeatureEncoder(nn.Module):
  """The convolutional feature extractor: waveform [B, N] -> CNN features [B, S, conv_dim[-1]]."""

  config: Wav2Vec2Config

  def setup(self):
    self.conv_layers = [
        Wav2Vec2ConvLayer(self.config, layer_id=i) for i in range(len(self.config.conv_dim))]

  def __call__(self, input_values: jax.Array) -> jax.Array:
    x = input_values[:, :, None]
    for layer in self.conv_layers:
      x = layer(x)
    return x


class Wav2Vec2FeatureProjection(nn.Module):
  """LayerNorm + Dense from the CNN width to the transformer width."""

  config: Wav2Vec2Config

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = _layer_norm(self.config.layer_norm_eps, "layer_norm", "audio_conv")(x)
    return _dense(self.config.hidden_size, self.config, "projection", ("audio_conv", "audio_embed"))(x)


class Wav2Vec2WeightNormConv(nn.Module):
  """Grouped 'same' Conv1d with weight norm, parameters in PyTorch's layout.

  weight = weight_v * (weight_g / ||weight_v||), the norm over dims (0, 1) of weight_v
  [out, in / groups, K] (torch `weight_norm(conv, dim=2)`); weight_g has shape (1, 1, K).
  Zero padding K // 2 on both sides, so an even K yields one extra frame (removed by the caller).
  """

  features: int
  kernel_size: int
  groups: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_features = x.shape[-1]
    std = 2.0 * np.sqrt(1.0 / (self.kernel_size * in_features))
    weight_v = self.param(
        "weight_v", _partitioned(nn.initializers.normal(std), ("audio_embed", None, None)),
        (self.features, in_features // self.groups, self.kernel_size))
    weight_g = self.param("weight_g", _partitioned(
        lambda _: jnp.sqrt(jnp.sum(weight_v**2, axis=(0, 1), keepdims=True)), (None, None, None)))
    bias = self.param("bias", _partitioned(nn.initializers.zeros, ("audio_embed",)), (self.features,))
    norm = jnp.sqrt(jnp.sum(weight_v**2, axis=(0, 1), keepdims=True))
    weight = weight_v * (weight_g / norm)
    pad = self.kernel_size // 2
    y = jax.lax.conv_general_dilated(
        x, weight, window_strides=(1,), padding=[(pad, pad)],
        dimension_numbers=("NWC", "OIW", "NWC"), feature_group_count=self.groups)
    return y + bias


class Wav2Vec2PositionalConvEmbedding(nn.Module):
  """Relative positional embedding: weight-norm grouped conv, same-pad trim, activation."""

  config: Wav2Vec2Config

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    config = self.config
    kernel = config.num_conv_pos_embeddings
    y = Wav2Vec2WeightNormConv(
        config.hidden_size, kernel, config.num_conv_pos_embedding_groups, name="conv")(x)
    if kernel % 2 == 0:
      y = y[:, :-1]
    return activation(config.feat_extract_activation)(y)


class Wav2Vec2Attention(nn.Module):
  """Bidirectional multi-head self-attention, logits scaled by head_dim ** -0.5."""

  config: Wav2Vec2Config

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    config = self.config
    heads = config.num_attention_heads
    head_dim = config.hidden_size // heads
    split = lambda y: y.reshape(y.shape[:2] + (heads, head_dim))
    projection = lambda name: _dense(config.hidden_size, config, name, ("audio_embed", "audio_heads"))
    query = split(projection("q_proj")(x))
    key = split(projection("k_proj")(x))
    value = split(projection("v_proj")(x))
    out = jax.nn.dot_product_attention(query, key, value, scale=head_dim**-0.5)
    out = out.reshape(x.shape[:2] + (config.hidden_size,))
    return _dense(config.hidden_size, config, "out_proj", ("audio_heads", "audio_embed"))(out)


class Wav2Vec2FeedForward(nn.Module):
  """Position-wise MLP: intermediate_dense, hidden_act, output_dense."""

  config: Wav2Vec2Config

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    config = self.config
    x = _dense(config.intermediate_size, config, "intermediate_dense", ("audio_embed", "audio_mlp"))(x)
    x = activation(config.hidden_act)(x)
    return _dense(config.hidden_size, config, "output_dense", ("audio_mlp", "audio_embed"))(x)


class Wav2Vec2EncoderLayer(nn.Module):
  """Transformer layer, post-LN (`do_stable_layer_norm=False`) or pre-LN (`True`).

  post-LN: h = layer_norm(h + attention(h)); h = final_layer_norm(h + feed_forward(h)).
  pre-LN:  h = h + attention(layer_norm(h)); h = h + feed_forward(final_layer_norm(h)).
  """

  config: Wav2Vec2Config

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    config = self.config
    attention = Wav2Vec2Attention(config, name="attention")
    layer_norm = _layer_norm(config.layer_norm_eps, "layer_norm")
    feed_forward = Wav2Vec2FeedForward(config, name="feed_forward")
    final_layer_norm = _layer_norm(config.layer_norm_eps, "final_layer_norm")
    if config.do_stable_layer_norm:
      x = x + attention(layer_norm(x))
      return x + feed_forward(final_layer_norm(x))
    x = layer_norm(x + attention(x))
    return final_layer_norm(x + feed_forward(x))


class Wav2Vec2Encoder(nn.Module):
  """Positional conv embedding + transformer layers; returns all hidden states.

  Post-LN: h0 = layer_norm(x + pos_conv(x)), outputs (h0, h1, ..., hL).
  Pre-LN:  h0 = x + pos_conv(x), outputs (h0, h1, ..., h_{L-1}, layer_norm(hL)): the last entry is
  the model's last_hidden_state (transformers 4.x convention; transformers 5's
  `output_hidden_states` returns the un-normalised hL there instead).
  """

  config: Wav2Vec2Config

  def setup(self):
    self.pos_conv_embed = Wav2Vec2PositionalConvEmbedding(self.config)
    self.layer_norm = _layer_norm(self.config.layer_norm_eps, "layer_norm")
    self.layers = [Wav2Vec2EncoderLayer(self.config) for _ in range(self.config.num_hidden_layers)]

  def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
    x = x + self.pos_conv_embed(x)
    stable = self.config.do_stable_layer_norm
    if not stable:
      x = self.layer_norm(x)
    hidden_states = [x]
    for layer in self.layers:
      # The batch stays split over the mesh's batch axes, the width whole: the sharded weights
      # are gathered for each layer (FSDP), not the activations re-split.
      x = nn.with_logical_constraint(layer(x), ("batch", "length", "act_embed"))
      hidden_states.append(x)
    if stable:
      hidden_states[-1] = self.layer_norm(x)
    return tuple(hidden_states)


class Wav2Vec2Model(nn.Module):
  """transformers' `Wav2Vec2Model` forward with `output_hidden_states=True`, in inference mode.

  Attributes:
    config: a `transformers.Wav2Vec2Config` (base: group norm, post-LN; large: layer norm, pre-LN).
  """

  config: Wav2Vec2Config

  def setup(self):
    check_config(self.config)
    self.feature_extractor = Wav2Vec2FeatureEncoder(self.config)
    self.feature_projection = Wav2Vec2FeatureProjection(self.config)
    self.encoder = Wav2Vec2Encoder(self.config)

  def __call__(
      self, input_values: jax.Array, *, num_frames: int | None = None,
      alignment: str = "none") -> tuple[jax.Array, ...]:
    """Runs the encoder.

    Args:
      input_values: float32 waveform [B, N] (normalised as the feature extractor would).
      num_frames: output length T for `alignment="interpolate"`; must be None for "none".
      alignment: "none" keeps the natural length `conv_output_length(config, N)`
        (floor((N - 400) / 320) + 1 for base); "interpolate" resizes the CNN features to
        `num_frames` with `interpolate_linear` (PyTorch `F.interpolate(mode="linear",
        align_corners=False)`) before the feature projection.

    Returns:
      num_hidden_layers + 1 arrays [B, S, hidden_size]: index 0 is the input of layer 0 (after the
      positional conv, and the LayerNorm for post-LN models), the last is last_hidden_state.
    """
    if input_values.ndim != 2:
      raise ValueError(f"input_values must be [B, N], got shape {input_values.shape}")
    if conv_output_length(self.config, input_values.shape[1]) < 1:
      raise ValueError(
          f"input of {input_values.shape[1]} samples is shorter than the receptive field "
          f"({num_samples_for_tokens(self.config, 1)} samples)")
    if alignment not in ALIGNMENTS:
      raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    if alignment == "none" and num_frames is not None:
      raise ValueError(f"num_frames must be None for alignment='none', got {num_frames}")
    if alignment == "interpolate" and (num_frames is None or num_frames < 1):
      raise ValueError(f"alignment='interpolate' needs num_frames >= 1, got {num_frames}")
    features = self.feature_extractor(input_values)
    if alignment == "interpolate":
      features = interpolate_linear(features, num_frames)
    return self.encoder(self.feature_projection(features))


def init_params(config: Wav2Vec2Config, rng: jax.Array, num_samples: int | None = None) -> dict:
  """Random parameters of `Wav2Vec2Model(config)`, the tree a converted checkpoint has.

  Args:
    config: the model configuration.
    rng: a JAX PRNG key.
    num_samples: length of the dummy waveform used to trace the model; defaults to the receptive
      field (the parameter shapes do not depend on it).
  """
  if num_samples is None:
    num_samples = num_samples_for_tokens(config, 1)
  dummy = jnp.zeros((1, num_samples), jnp.float32)
  return nn.unbox(jax.jit(Wav2Vec2Model(config).init)(rng, dummy)["params"])
