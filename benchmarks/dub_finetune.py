r"""(j) The dubbing fine-tune: parameters trained vs frozen for WanVACE-1.3B (from its config, on
PyTorch's meta device: nothing is downloaded or allocated), and the step time and peak memory of
the tiny model on CPU against the same process's f32 matmul peak.

  python benchmarks/dub_finetune.py [--steps=5]

The tiny step is `dub_step.flow_matching_loss` + backward + AdamW on configs/dub.py:tiny's models
(the smallest WanVACE and Wan VAE) with a 17-frame sample of random 32 x 32 frames and a random
exported-token width of 96 (the demo's); the reference is torch's 2048^3 f32 matmul.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys

from absl import app, flags
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness  # pylint: disable=g-import-not-at-top,wrong-import-position
from synclipmae_torch import audiopack, dub_samples, dub_step, dub_train  # pylint: disable=wrong-import-position

_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (after 1 warm-up).")
_OUT = flags.DEFINE_string("out", "benchmarks/results/dub_finetune.json", "Results.")

# Wan2.1-VACE-1.3B's transformer config (diffusers format).
VACE_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                 out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
                 cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
                 rope_max_seq_len=1024, vace_layers=list(range(0, 30, 2)), vace_in_channels=96)
PRETRAIN_TOKEN_WIDTH = 1024  # configs/pretrain.py's encoder width: the exported tokens' width


def parameter_counts() -> dict:
  from diffusers import WanVACETransformer3DModel  # pylint: disable=import-outside-toplevel
  with torch.device("meta"):
    transformer = WanVACETransformer3DModel(**VACE_1_3B)
    pack = audiopack.AudioPack(PRETRAIN_TOKEN_WIDTH, 12 * 128)
  trained = dub_step.freeze(transformer, pack)
  n_trained = sum(p.numel() for _, p in trained)
  n_pack = sum(p.numel() for p in pack.parameters())
  n_total = sum(p.numel() for p in transformer.parameters()) + n_pack
  return {"vace_1_3b_total": n_total, "vace_1_3b_trained": n_trained,
          "vace_1_3b_frozen": n_total - n_trained, "audiopack": n_pack,
          "bf16_gib_weights": 2 * n_total / 2 ** 30,
          "frozen_bf16_gib": 2 * (n_total - n_trained) / 2 ** 30,
          "adam_state_gib_fp32": 8 * n_trained / 2 ** 30, "trained_fp32_master_gib": 4 * n_trained / 2 ** 30,
          # configs/dub.py: frozen backbone in bf16; trained float32 weights, gradients, AdamW moments
          "train_state_gib_before_activations": (2 * (n_total - n_trained) + 16 * n_trained) / 2 ** 30}



def tiny_step():
  transformer, vae = dub_train.tiny_wan_vace()
  vae.eval().requires_grad_(False)
  pack = audiopack.AudioPack(96, 24, hidden=16)
  audiopack.attach(transformer, pack)
  trained = dub_step.freeze(transformer, pack)
  optimizer = torch.optim.AdamW([p for _, p in trained], lr=1e-3)
  rng = np.random.default_rng(0)
  n = dub_samples.TARGET_FRAMES + 4
  clip = {"frames": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
          "face_boxes": np.tile([[0.2, 0.1, 0.8, 0.9]], (n, 1)).astype(np.float32),
          "mouth_boxes": np.tile([[0.35, 0.6, 0.65, 0.8]], (n, 1)).astype(np.float32),
          "audio": np.zeros(640 * n, np.float32)}
  encoded = dub_step.encode_sample(dub_step.pipeline(transformer, vae),
                                   dub_samples.training_sample(clip, rng, drop_continuity=0.0))
  tokens = torch.randn(1, dub_samples.TARGET_FRAMES, 96)
  prompt = torch.zeros(1, 4, 32)
  noise = torch.randn(encoded["latents"].shape)

  def step():
    loss = dub_step.flow_matching_loss(transformer, pack, encoded, tokens, prompt, torch.tensor([0.5]), noise)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()

  return step, sum(p.numel() for _, p in trained)


def main(argv):
  del argv
  torch.set_num_threads(os.cpu_count())
  print(f"machine: {harness.machine()}, torch {torch.__version__}; load before: {harness.load()}")
  counts = parameter_counts()
  step, tiny_trained = tiny_step()
  step()
  times = harness.timed(step, _STEPS.value)
  peak = harness.torch_matmul_peak()
  result = {**counts, "tiny_trained_params": tiny_trained, "tiny_step_s": times,
            "tiny_step_median_s": statistics.median(times),
            "process_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "torch_matmul_peak_flops": peak}
  print(f"WanVACE-1.3B: {counts['vace_1_3b_total'] / 1e9:.3f} B parameters, trained "
        f"{counts['vace_1_3b_trained'] / 1e9:.3f} B (AudioPack {counts['audiopack'] / 1e6:.1f} M), "
        f"frozen {counts['vace_1_3b_frozen'] / 1e9:.3f} B; train state before activations "
        f"{counts['train_state_gib_before_activations']:.1f} GiB (frozen in bf16)")
  print(f"tiny step: {statistics.median(times) * 1e3:.1f} ms median of {len(times)}, peak RSS "
        f"{result['process_peak_rss_mib']:.0f} MiB; torch f32 matmul peak {peak / 1e9:.0f} GFLOP/s")
  harness.finish(_OUT.value, result)


if __name__ == "__main__":
  app.run(main)
