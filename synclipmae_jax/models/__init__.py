"""Flax linen models: ViT encoder with prompt tokens, MAE decoder, audio encoders."""
