"""SyncLipMAE in PyTorch (paper 3.2, figure 1a): the modules an exported folder loads into.

Plain `torch.nn.Module`s with standard layers and `F.scaled_dot_product_attention`, computing
what `synclipmae_jax.models` computes (parity tests: tests/test_export.py), usable under
`torch.no_grad()` and `torch.compile`, and trainable:
- `VisualEncoder`: normalised patches [F, N, P] + kept indices [F, k] -> visible tokens
  [F, k, D] and the three prompt tokens [F, 3, D] (identity, vocal motion, ambient motion);
- `AudioAdapter`: frozen per-frame audio features [B, T, L, C] -> audio tokens [B, T, D];
- `MaeDecoder`: visible tokens at their indices + prompts [F, 3, D] (identity, ambient,
  condition) -> patch pixels [F, N, P], with prompt cross-attention or (ablation C1) the prompts
  concatenated to the sequence;
- `SyncLipMAE`: the three, `from_pretrained(folder)`; `forward` is the JAX model's training
  forward pass (both decoding passes).
Parameter names are the exported tensor names (`layout.LEAF_RULES`).
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import functional as F

from synclipmae_torch import layout

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Attention(nn.Module):
  """Multi-head attention of x [B, Lq, D] over context [B, Lk, D], logits scaled by head_dim^-0.5."""

  def __init__(self, width: int, num_heads: int):
    super().__init__()
    if width % num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
    self.num_heads = num_heads
    self.q_proj, self.k_proj = nn.Linear(width, width), nn.Linear(width, width)
    self.v_proj, self.out_proj = nn.Linear(width, width), nn.Linear(width, width)

  def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    def heads(y):  # [B, L, H * hd] -> [B, H, L, hd]
      return y.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    out = F.scaled_dot_product_attention(
        heads(self.q_proj(x)), heads(self.k_proj(context)), heads(self.v_proj(context)))
    return self.out_proj(out.transpose(1, 2).flatten(2))


class Mlp(nn.Module):
  """fc1, exact (erf) GELU, fc2."""

  def __init__(self, width: int, mlp_dim: int):
    super().__init__()
    self.fc1, self.fc2 = nn.Linear(width, mlp_dim), nn.Linear(mlp_dim, width)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
  """Pre-LN transformer block: self-attention, optional prompt cross-attention, MLP."""

  def __init__(self, width: int, num_heads: int, mlp_dim: int, eps: float,
               cross_attention: bool = False):
    super().__init__()
    self.cross_attention = cross_attention
    self.ln_self, self.self_attn = nn.LayerNorm(width, eps=eps), Attention(width, num_heads)
    if cross_attention:
      self.ln_cross, self.ln_context = nn.LayerNorm(width, eps=eps), nn.LayerNorm(width, eps=eps)
      self.cross_attn = Attention(width, num_heads)
    self.ln_mlp, self.mlp = nn.LayerNorm(width, eps=eps), Mlp(width, mlp_dim)

  def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    h = self.ln_self(x)
    x = x + self.self_attn(h, h)
    if self.cross_attention:
      x = x + self.cross_attn(self.ln_cross(x), self.ln_context(context))
    return x + self.mlp(self.ln_mlp(x))


class VisualEncoder(nn.Module):
  """ViT over the kept patches with three prompt tokens prepended (paper 3.2)."""

  def __init__(self, arch: dict):
    super().__init__()
    e, eps = arch["encoder"], arch["layer_norm_eps"]
    self.num_prompts = len(arch["prompt_names"])
    self.patch_embed = nn.Linear(arch["patch_dim"], e["width"])
    self.pos_embed = nn.Parameter(torch.zeros(arch["num_patches"], e["width"]))
    self.prompts = nn.Parameter(torch.zeros(self.num_prompts, e["width"]))
    self.blocks = nn.ModuleList(Block(e["width"], e["num_heads"], e["mlp_dim"], eps)
                                for _ in range(e["depth"]))
    self.ln_out = nn.LayerNorm(e["width"], eps=eps)

  def forward(self, patches: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """patches [F, N, P] (all patches, normalised pixels), keep [F, k] -> ([F, k, D], [F, 3, D])."""
    visible = torch.gather(patches, 1, keep[..., None].expand(-1, -1, patches.shape[-1]))
    x = self.patch_embed(visible.to(self.patch_embed.weight.dtype)) + self.pos_embed[keep]
    x = torch.cat([self.prompts.expand(x.shape[0], -1, -1), x], dim=1)
    for block in self.blocks:
      x = block(x)
    x = self.ln_out(x)
    return x[:, self.num_prompts:], x[:, :self.num_prompts]


class AudioAdapter(nn.Module):
  """Per-layer features concatenated ("all_layers") or the last layer ("last_layer", B1), projected."""

  def __init__(self, arch: dict):
    super().__init__()
    a, width = arch["audio"], arch["encoder"]["width"]
    self.mode = a["adapter"]
    in_features = a["feature_dim"] * (a["feature_layers"] if self.mode == "all_layers" else 1)
    self.ln_in = nn.LayerNorm(in_features, eps=arch["layer_norm_eps"])
    self.proj_in, self.proj_out = nn.Linear(in_features, width), nn.Linear(width, width)

  def forward(self, features: torch.Tensor) -> torch.Tensor:
    """features [B, T, L, C] -> audio tokens [B, T, D]."""
    if self.mode == "last_layer":
      features = features[:, :, -1:]
    x = self.ln_in(features.flatten(2).to(self.proj_in.weight.dtype))
    return self.proj_out(F.gelu(self.proj_in(x)))


class MaeDecoder(nn.Module):
  """Visible tokens put back at their indices, mask tokens elsewhere, prompts attended to."""

  def __init__(self, arch: dict):
    super().__init__()
    d, eps, enc_width = arch["decoder"], arch["layer_norm_eps"], arch["encoder"]["width"]
    self.cross_attention = d["cross_attention"]
    self.num_patches = arch["num_patches"]
    self.embed = nn.Linear(enc_width, d["width"])
    self.mask_token = nn.Parameter(torch.zeros(d["width"]))
    self.pos_embed = nn.Parameter(torch.zeros(arch["num_patches"], d["width"]))
    self.prompt_embed = nn.Linear(enc_width, d["width"])
    self.blocks = nn.ModuleList(
        Block(d["width"], d["num_heads"], d["mlp_dim"], eps, cross_attention=self.cross_attention)
        for _ in range(d["depth"]))
    self.ln_out = nn.LayerNorm(d["width"], eps=eps)
    self.head = nn.Linear(d["width"], arch["patch_dim"])

  def forward(self, tokens: torch.Tensor, keep: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """tokens [F, k, D] at keep [F, k], prompts [F, S, D] -> float32 pixels [F, N, P]."""
    x = self.embed(tokens)
    full = self.mask_token.expand(x.shape[0], self.num_patches, -1)
    full = torch.scatter(full, 1, keep[..., None].expand(-1, -1, x.shape[-1]), x) + self.pos_embed
    context = self.prompt_embed(prompts)
    if self.cross_attention:
      for block in self.blocks:
        full = block(full, context)
    else:
      full = torch.cat([full, context], dim=1)
      for block in self.blocks:
        full = block(full)
      full = full[:, :self.num_patches]
    return self.head(self.ln_out(full)).float()


class SyncLipMAE(nn.Module):
  """Encoder, audio adapter and decoder of an exported folder (`from_pretrained`)."""

  def __init__(self, arch: dict):
    super().__init__()
    self.arch = arch
    self.encoder = VisualEncoder(arch)
    self.audio_adapter = AudioAdapter(arch)
    self.decoder = MaeDecoder(arch)

  @classmethod
  def from_pretrained(cls, folder: str | os.PathLike, dtype: str | None = None) -> "SyncLipMAE":
    """The model of `folder` in eval mode, parameters in `dtype` (default: the exported dtype).

    Raises:
      ValueError: listing every missing, unexpected or misshapen tensor; or a truncated file.
    """
    folder = os.fspath(folder)
    config = layout.read_config(folder)
    model = cls(config["model"]).to(TORCH_DTYPES[dtype or config["dtype"]])
    tensors = layout.read_tensors(folder, "pt")
    ours = {name: t for name, t in tensors.items() if not name.startswith(layout.FRONTEND_PREFIX)}
    layout.check_tensors({n: tuple(t.shape) for n, t in model.state_dict().items()},
                         {n: tuple(t.shape) for n, t in ours.items()},
                         os.path.join(folder, layout.WEIGHTS_FILE))
    model.load_state_dict(ours)
    return model.eval()

  def encode(self, patches: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """patches [F, N, P], keep [F, k] -> (visible tokens [F, k, D], prompts [F, 3, D])."""
    return self.encoder(patches, keep)

  def encode_audio(self, audio_features: torch.Tensor) -> torch.Tensor:
    """Frozen per-frame audio features [B, T, L, C] -> audio tokens [B, T, D]."""
    return self.audio_adapter(audio_features)

  def reconstruct(self, tokens, keep, identity, ambient, condition) -> torch.Tensor:
    """Decodes frames from visible tokens [F, k, D] at keep [F, k] and the prompts [F, D] each
    (condition: a vocal-motion or an audio token) -> float32 patch pixels [F, N, P]."""
    return self.decoder(tokens, keep, torch.stack([identity, ambient, condition], dim=1))

  def forward(self, context_patches, context_keep, motion_patches, motion_keep, audio_features,
              identity_permutation) -> dict[str, torch.Tensor]:
    """The JAX model's training forward pass (`synclipmae_jax.models.synclipmae.SyncLipMAE`):
    identity from bypass 1, vocal/ambient from bypass 2 (or bypass 1 when motion_patches is
    None), identity prompts permuted by `identity_permutation`, then the video- and the
    audio-driven reconstructions of bypass 1's visible tokens."""
    f = context_patches.shape[0]
    tokens, prompts = self.encode(context_patches, context_keep)
    motion_prompts = prompts if motion_patches is None else self.encode(motion_patches, motion_keep)[1]
    identity, vocal, ambient = prompts[:, 0], motion_prompts[:, 1], motion_prompts[:, 2]
    audio = self.encode_audio(audio_features).reshape(f, -1)
    shuffled = identity[identity_permutation]
    pred = self.reconstruct(torch.cat([tokens, tokens]), torch.cat([context_keep, context_keep]),
                            torch.cat([shuffled, shuffled]), torch.cat([ambient, ambient]),
                            torch.cat([vocal, audio]))
    return {"pred_video": pred[:f], "pred_audio": pred[f:], "identity": identity, "vocal": vocal,
            "ambient": ambient, "audio": audio}
