"""AudioPack on diffusers' WanVACE (synclipmae_torch/audiopack.py), on the smallest WanVACE that
runs on CPU: zero-initialised it leaves WanVACE's output bit-identical; tokens fold 4 frames to a
latent frame (the first holds one) with reference frames in front; the hook adds a latent
frame's token to all its spatial tokens, and trained it changes the output."""

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from synclipmae_torch import audiopack  # pylint: disable=wrong-import-position

WIDTH, TOKEN_DIM = 24, 8  # 2 heads x 12; the exported tokens' width in this test


def tiny_wan_vace():
  torch.manual_seed(0)
  return diffusers.WanVACETransformer3DModel(
      patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
      out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=4, cross_attn_norm=True,
      qk_norm="rms_norm_across_heads", rope_max_seq_len=32, vace_layers=[0, 2],
      vace_in_channels=48).eval()


def inputs(latents: int, seed: int = 1):
  g = torch.Generator().manual_seed(seed)
  return (torch.randn(1, 16, latents, 8, 8, generator=g), torch.tensor([500]),
          torch.randn(1, 4, 32, generator=g), torch.randn(1, 48, latents, 8, 8, generator=g))


def run(model, x, t, text, control):
  with torch.no_grad():
    return model(x, t, text, control_hidden_states=control, return_dict=False)[0]


def test_zero_initialised_pack_leaves_wan_vace_unchanged_and_a_trained_one_does_not():
  model = tiny_wan_vace()
  x, t, text, control = inputs(latents=2 + 5)  # 2 reference frames + 17 video frames
  plain = run(model, x, t, text, control)
  pack = audiopack.AudioPack(TOKEN_DIM, WIDTH, hidden=16)
  handle = audiopack.attach(model, pack)
  tokens = torch.randn(1, 17, TOKEN_DIM)
  with pack.conditioning(tokens, num_reference_frames=2):
    assert torch.equal(run(model, x, t, text, control), plain)
  torch.nn.init.normal_(pack.out.weight)
  with pack.conditioning(tokens, num_reference_frames=2):
    conditioned = run(model, x, t, text, control)
  assert not torch.allclose(conditioned, plain)
  with pytest.raises(RuntimeError, match="inside `pack.conditioning"):
    run(model, x, t, text, control)
  with pack.conditioning(tokens, num_reference_frames=0), pytest.raises(ValueError, match="5 latent"):
    run(model, x, t, text, control)  # 7 latent frames in the control latents
  handle.remove()
  assert torch.equal(run(model, x, t, text, control), plain)


def test_frames_fold_four_to_a_latent_frame_and_the_first_holds_one():
  pack = audiopack.AudioPack(TOKEN_DIM, WIDTH, hidden=16, kernel=1)  # no temporal mixing
  torch.nn.init.normal_(pack.out.weight)
  torch.nn.init.normal_(pack.reference)
  tokens = torch.randn(2, 17, TOKEN_DIM)
  with torch.no_grad():
    base = pack(tokens, num_reference_frames=2)
    assert base.shape == (2, 2 + 5, WIDTH)
    assert torch.equal(base[:, 0], base[:, 1])  # one placeholder for every reference frame
    for frame, latent in ((0, 0), (1, 1), (4, 1), (5, 2), (16, 4)):
      changed = tokens.clone()
      changed[:, frame] += 1.0
      moved = (pack(changed, num_reference_frames=2) - base).abs().amax(dim=(0, 2)) > 0
      assert moved.tolist() == [i == 2 + latent for i in range(7)], (frame, latent)
  with pytest.raises(ValueError, match="1 \\+ 4k frames, got 16"):
    pack(tokens[:, :16])


def test_the_hook_adds_each_latent_frames_token_to_all_its_spatial_tokens():
  model = tiny_wan_vace()
  pack = audiopack.AudioPack(TOKEN_DIM, WIDTH, hidden=16)
  torch.nn.init.normal_(pack.out.weight)
  torch.nn.init.normal_(pack.out.bias)
  control = inputs(latents=5)[3]
  tokens = torch.randn(1, 17, TOKEN_DIM)
  with torch.no_grad():
    plain = model.vace_patch_embedding(control)  # [1, WIDTH, 5, 4, 4]
    audiopack.attach(model, pack)
    with pack.conditioning(tokens):
      hooked = model.vace_patch_embedding(control)
    added = pack(tokens)  # [1, 5, WIDTH]
  assert hooked.shape == plain.shape == (1, WIDTH, 5, 4, 4)
  for j in range(5):  # latent frame j: its token, on every one of its 4 x 4 positions
    torch.testing.assert_close(hooked[0, :, j] - plain[0, :, j],
                               added[0, j][:, None, None].expand(WIDTH, 4, 4))
