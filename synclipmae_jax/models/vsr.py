"""The lip-reading head (paper 4.3): frozen vocal-motion tokens -> Conformer encoder -> a CTC
head and an autoregressive Transformer decoder over SentencePiece units (`tasks/vsr/text_units.py`).

A pure function of its parameters: `encode` gives the hidden states and CTC logits of a batch of
token sequences, `decode` the attention decoder's next-unit logits for a batch of unit prefixes
(teacher forcing in training, `tasks/vsr/decoding.py` at inference), `__call__` both.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from synclipmae_jax.models import conformer, layers


class DecoderBlock(nn.Module):
  """Pre-LN Transformer decoder block: masked self-attention, cross-attention to the encoder."""

  num_heads: int
  mlp_dim: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, self_mask, memory, memory_mask):
    x = layers.constrain(x, "batch", "length", "act_embed")
    h = layers.layer_norm("ln_self", self.dtype)(x)
    x = x + layers.Attention(self.num_heads, self.dtype, name="self_attn")(h, h, self_mask)
    h = layers.layer_norm("ln_cross", self.dtype)(x)
    x = x + layers.Attention(self.num_heads, self.dtype, name="cross_attn")(h, memory, memory_mask)
    h = layers.layer_norm("ln_mlp", self.dtype)(x)
    return x + layers.Mlp(self.mlp_dim, self.dtype, name="mlp")(h)


class VsrModel(nn.Module):
  vocab_size: int
  width: int
  encoder_depth: int
  decoder_depth: int
  num_heads: int
  mlp_dim: int
  conv_kernel: int
  causal_conv: bool = False
  dtype: layers.Dtype = jnp.float32

  def setup(self):
    self.encoder = conformer.ConformerEncoder(
        self.width, self.encoder_depth, self.num_heads, self.mlp_dim, self.conv_kernel,
        self.causal_conv, self.dtype)
    self.ctc_head = layers.dense(self.vocab_size, ("embed", "vocab"), self.dtype)
    self.embed = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, embedding_init=nn.with_logical_partitioning(
        nn.initializers.normal(self.width ** -0.5), ("vocab", "embed")))
    self.blocks = [DecoderBlock(self.num_heads, self.mlp_dim, self.dtype)
                   for _ in range(self.decoder_depth)]
    self.ln_out = layers.layer_norm(dtype=self.dtype)
    self.out_head = layers.dense(self.vocab_size, ("embed", "vocab"), self.dtype)

  def encode(self, features, mask):
    """features [B, T, F], mask [B, T] -> (hidden [B, T, W], CTC logits [B, T, V], float32)."""
    hidden = self.encoder(features, mask)
    return hidden, self.ctc_head(hidden).astype(jnp.float32)

  def decode(self, hidden, mask, tokens):
    """Next-unit logits [B, L, V] (float32) after each prefix tokens[:, :i+1] (tokens [B, L],
    starting with the start unit), attending to hidden [B, T, W] where mask [B, T]."""
    length = tokens.shape[1]
    x = self.embed(tokens) + jnp.asarray(conformer.sincos_1d(length, self.width), self.dtype)
    causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
    for block in self.blocks:
      x = block(x, causal, hidden, mask[:, None, None, :])
    return self.out_head(self.ln_out(x)).astype(jnp.float32)

  def __call__(self, features, mask, tokens):
    """(CTC logits [B, T, V], attention logits [B, L, V]) with teacher forcing on tokens."""
    hidden, ctc_logits = self.encode(features, mask)
    return ctc_logits, self.decode(hidden, mask, tokens)
