"""The tiny random wav2vec2 configs shared by the parity tests (imported by test modules)."""

from __future__ import annotations

from transformers import Wav2Vec2Config

TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2))
VARIANTS = {
    # wav2vec2-base layout: GroupNorm on the first conv, post-LN encoder, even positional kernel.
    "base": dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False,
                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
    # large/"stable" layout: LayerNorm on every conv, pre-LN encoder; odd kernel, conv bias.
    "stable": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
                   num_conv_pos_embeddings=15, num_conv_pos_embedding_groups=4),
}


def tiny_config(variant: str) -> Wav2Vec2Config:
  return Wav2Vec2Config(**TINY, **VARIANTS[variant])
