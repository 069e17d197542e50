r"""(e) Side by side in one process: transformers' PyTorch ViTMAEForPreTraining and our step.

  python benchmarks/vitmae_vs_torch.py [--steps=3]

The peer: `ViTMAEForPreTraining` (ViT-B/16, 224 px, mask ratio 0.75, decoder 512 x 8 with 16
heads), batch 8 images, AdamW, one step = zero_grad + forward + backward + optimizer step, f32.
Ours, configured the same way: ViT-B/16 encoder at 224 px, decoder 512 x 8, a single uniform
bypass (masking.mode=uniform_only), no cross-attention (prompts concatenated, as ablation C1),
no audio loss (loss.weights recon_audio = contrastive = 0), 4 clips x 2 frames = 8 images,
AdamW, f32. Terms of weight 0 are not computed (`objective.compute_losses`): no audio-driven
decoder pass, no adapter, no contrastive logits. What ours still computes beyond the peer: the
three prompt tokens, their decorrelation penalty, the log-mel front end. Each side's f32 matmul
peak (2048^3) is measured in the same run.
"""

from __future__ import annotations

import os
import statistics
import sys

from absl import app, flags
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import demo  # pylint: disable=g-import-not-at-top,wrong-import-position

_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per side (after 1 warm-up).")
_OUT = flags.DEFINE_string("out", "benchmarks/results/vitmae_vs_torch.json", "Results.")
IMAGES = 8



def torch_vitmae_step():
  config = transformers.ViTMAEConfig(
      hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
      image_size=224, patch_size=16, mask_ratio=0.75, decoder_hidden_size=512,
      decoder_num_hidden_layers=8, decoder_num_attention_heads=16, decoder_intermediate_size=2048)
  model = transformers.ViTMAEForPreTraining(config).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)
  pixels = torch.randn(IMAGES, 3, 224, 224)

  def step():
    opt.zero_grad(set_to_none=True)
    model(pixel_values=pixels).loss.backward()
    opt.step()

  return step, sum(p.numel() for p in model.parameters())


def our_config():
  c = demo.get_config()
  c.model.update(encoder_size="B", image_size=224, patch_size=16)
  c.model.decoder.update(width=512, depth=8, num_heads=16, mlp_dim=2048, cross_attention=False)
  c.masking.mode = "uniform_only"
  c.loss.weights.update(recon_audio=0.0, contrastive=0.0)
  c.data.update(global_batch_size=4, window_frames=2)
  c.model.audio.input_context_frames = 0  # as measured in BENCHMARKS (e): no audio beyond the window
  c.mesh.update(data=1, fsdp=1, tensor=1)
  return c


def main(argv):
  del argv
  torch.set_num_threads(os.cpu_count())
  print(f"machine: {harness.machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"load before: {harness.load()}")
  torch_step, torch_params = torch_vitmae_step()
  torch_step()
  torch_times = harness.timed(torch_step, _STEPS.value)
  ours = harness.TrainStep(our_config())
  ours.compile()
  ours()
  our_times = harness.timed(ours, _STEPS.value)
  torch_peak, jax_peak = harness.torch_matmul_peak(), harness.matmul_peak()
  t_torch, t_ours = statistics.median(torch_times), statistics.median(our_times)
  result = {
      "torch": torch.__version__, "images_per_step": IMAGES,
      "torch_params": torch_params, "our_params": ours.num_params,
      "torch_step_s": torch_times, "our_step_s": our_times,
      "torch_img_per_s": IMAGES / t_torch, "our_img_per_s": IMAGES / t_ours,
      "ours_over_torch": t_torch / t_ours, "our_model_flops_per_step": ours.flops,
      "torch_matmul_peak_flops": torch_peak, "jax_matmul_peak_flops": jax_peak,
      "our_fraction_of_jax_peak": ours.flops / t_ours / jax_peak,
  }
  print(f"torch ViTMAEForPreTraining: {IMAGES / t_torch:.3f} img/s ({t_torch:.2f} s/step, "
        f"{torch_params / 1e6:.1f} M params); f32 matmul peak {torch_peak / 1e9:.0f} GFLOP/s")
  print(f"ours: {IMAGES / t_ours:.3f} img/s ({t_ours:.2f} s/step, {ours.num_params / 1e6:.1f} M params, "
        f"{ours.flops / t_ours / 1e9:.1f} GFLOP/s = {100 * result['our_fraction_of_jax_peak']:.0f} % of "
        f"XLA's {jax_peak / 1e9:.0f} GFLOP/s f32 matmul peak)")
  print(f"ours / torch (img/s): {result['ours_over_torch']:.2f}")
  harness.finish(_OUT.value, result)


if __name__ == "__main__":
  app.run(main)
