"""The dubbing fine-tune's loss (synclipmae_torch/dub_step.py) on the smallest WanVACE and Wan VAE
and a sample of the synthetic shards: a few steps on one batch lower the loss; only the VACE
blocks, the VACE patch embedding and the AudioPack change (by name), the frozen backbone stays
bit-identical; the control latents have the pipeline's 96 channels and the references in front."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from configs import demo  # pylint: disable=wrong-import-position
from data_pipelines import grain_pipeline  # pylint: disable=wrong-import-position
from synclipmae_jax import input_pipeline  # pylint: disable=wrong-import-position
from synclipmae_torch import audiopack, dub_samples, dub_step  # pylint: disable=wrong-import-position

TOKEN_DIM = 8


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
  config = demo.get_config("tiny")  # 16 x 16 frames: one 2 x 2 latent, one DiT patch
  config.data.directory = str(tmp_path_factory.mktemp("dub_step_data"))
  clip = grain_pipeline.load_eval_clips(input_pipeline.dataset_paths(config)[1], max_clips=1)[0]
  return dub_samples.training_sample(clip, np.random.default_rng(0), drop_continuity=0.0)


def tiny_models():
  torch.manual_seed(0)
  transformer = diffusers.WanVACETransformer3DModel(
      patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
      out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=4, cross_attn_norm=True,
      qk_norm="rms_norm_across_heads", rope_max_seq_len=32, vace_layers=[0, 2],
      vace_in_channels=96)
  vae = diffusers.AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                   temperal_downsample=[False, True, True]).eval()
  return transformer, vae


@pytest.mark.parametrize("frozen_dtype", ["float32", "bfloat16"])
def test_steps_lower_the_loss_and_change_only_the_trained_parameters(sample, frozen_dtype):
  """Also with the frozen backbone held in bfloat16 under bf16 autocast (configs/dub.py's
  default): the trained parameters stay float32."""
  transformer, vae = tiny_models()
  pipe = dub_step.pipeline(transformer, vae)
  encoded = dub_step.encode_sample(pipe, sample)
  r = encoded["num_reference_frames"]
  assert r == 2 and encoded["control"].shape == (1, 96, r + 5, 2, 2)
  assert encoded["latents"].shape == (1, 16, r + 5, 2, 2)
  pack = audiopack.AudioPack(TOKEN_DIM, 24, hidden=16)
  audiopack.attach(transformer, pack)
  trained = dict(dub_step.freeze(transformer, pack))
  assert trained and all(n.startswith(("vace_blocks.", "vace_patch_embedding.", "audiopack."))
                         for n in trained)
  assert any(n.startswith("vace_blocks.") for n in trained)
  low = frozen_dtype == "bfloat16"
  dub_step.cast_frozen(transformer, getattr(torch, frozen_dtype))
  assert {p.dtype for n, p in transformer.named_parameters() if n not in trained} == {
      getattr(torch, frozen_dtype)}
  assert {p.dtype for p in trained.values()} == {torch.float32}
  before = {n: p.detach().clone() for n, p in transformer.named_parameters()}
  g = torch.Generator().manual_seed(0)
  tokens = torch.randn(1, 17, TOKEN_DIM, generator=g)
  prompt = torch.randn(1, 4, 32, generator=g)
  sigma = torch.tensor([0.5])
  noise = torch.randn(encoded["latents"].shape, generator=g)
  optimizer = torch.optim.AdamW(list(trained.values()), lr=1e-3, weight_decay=0.0)
  losses = []
  for _ in range(8):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
      loss = dub_step.flow_matching_loss(transformer, pack, encoded, tokens, prompt, sigma, noise)
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
  assert losses[-1] < 0.9 * losses[0], losses
  for n, p in transformer.named_parameters():
    if n in trained:
      continue
    assert torch.equal(p, before[n]), n  # the frozen backbone, bit for bit
  moved = [n for n, p in transformer.named_parameters() if n in trained and not torch.equal(p, before[n])]
  assert moved and any(n.startswith("vace_patch_embedding.") for n in moved)
  assert not torch.equal(pack.out.weight, torch.zeros_like(pack.out.weight))  # the pack learns
