"""LatentSync's StableSyncNet and the paper's Sync-C on it (synclipmae_torch/stable_syncnet.py):
Sync-C on a constructed distance curve by hand; the window / offset pairing of `distance_matrix`
with embeddings constructed so that the curves are known; the feed-forward and attention layers
against diffusers' FeedForward and torch's MultiheadAttention on the same weights; the encoders'
strides reaching 1 x 1 from the real input sizes; the mel's framing and scale; loading a
LatentSync checkpoint (widths and attention blocks read from it) and its errors. Narrow random
weights (width 32, GroupNorm's group count; 64 last) keep it to CPU seconds."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # pylint: disable=wrong-import-position

from random_weights import randomize  # pylint: disable=wrong-import-position
from synclipmae_torch import dub_score, stable_syncnet  # pylint: disable=wrong-import-position


def narrow(config: dict) -> dict:
  """Width 32 (one channel per group), 64 for the last block: the final GroupNorm sees a 1 x 1
  map and needs more than one value per group."""
  return dict(config, widths=[32] * (len(config["widths"]) - 1) + [64])


@pytest.fixture(scope="module")
def model():
  return randomize(stable_syncnet.StableSyncNet(narrow(stable_syncnet.VISUAL),
                                                narrow(stable_syncnet.AUDIO)), seed=1)


def test_sync_c_of_a_constructed_curve_by_hand():
  """31 offsets; distance |lag - 3| + 1: the minimum 1 at lag 3, and sorted the values are 1,
  2, 2, ..., 13, 13 (lags 4..15 and -9..2), 14..19: the 16th (median) is 9, so the confidence
  is 8. A flat curve has confidence 0; Sync-C is their mean, 4."""
  lags = np.arange(-15, 16)
  dist = np.stack([np.abs(lags - 3) + 1.0, np.full(31, 0.7)])
  np.testing.assert_allclose(stable_syncnet.window_confidences(dist), [8.0, 0.0])
  part = {"windows": 2, "sync_c": float(stable_syncnet.window_confidences(dist).mean()),
          "curve": dist.mean(axis=0)}
  video = dub_score._stable_syncnet_video([part])  # pylint: disable=protected-access
  assert video["sync_c"] == 4.0 and video["windows"] == 2
  assert video["offset"] == -3  # the audio 3 frames later matches: the video leads the audio


class _Constructed(nn.Module):
  """Embeddings at angle 0.1 s of the window start s: visual from the frames (frame i has value
  i), audio from the constructed mel (step j has value j) of the window starting 3 frames
  earlier: the video at s matches the audio at s + 3."""

  @staticmethod
  def _unit(angle):
    return torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)

  def embed_visual(self, stacks):
    first = torch.round((stacks[:, 0, 0, 0].double() + 1) * 127.5)  # frame index of the window
    return self._unit(0.1 * first)

  def embed_audio(self, mels):
    step = mels[:, 0, 0, 0].double()
    frame = torch.as_tensor([next(s for s in range(200) if stable_syncnet.mel_start(s) == int(j))
                             for j in step.tolist()], dtype=torch.float64)
    return self._unit(0.1 * (frame - 3))


def test_distance_matrix_pairs_each_window_with_the_shifted_audio(monkeypatch):
  frames_count = 60
  frames = np.broadcast_to(np.arange(frames_count, dtype=np.uint8)[:, None, None, None],
                           (frames_count, 256, 256, 3))
  audio = np.zeros(frames_count * 640)
  mel_steps = 1 + len(audio) // stable_syncnet.HOP
  monkeypatch.setattr(stable_syncnet, "mel_spectrogram",
                      lambda a: np.broadcast_to(np.arange(mel_steps, dtype=np.float64),
                                                (80, mel_steps)))
  dist = stable_syncnet.distance_matrix(_Constructed(), frames, audio)
  # audio windows start at 0..44 (16 frames and 52 mel steps inside the clip); video windows at
  # 15..29 have all 31 shifted audio windows
  assert dist.shape == (15, 31)
  lags = np.arange(-15, 16)
  expected = np.broadcast_to(2 * np.abs(np.sin(0.05 * (lags - 3))), (15, 31))
  np.testing.assert_allclose(dist, expected, atol=1e-12)
  assert (dist.argmin(axis=1) == 18).all()  # lag +3
  with pytest.raises(ValueError, match="256 x 256"):
    stable_syncnet.distance_matrix(_Constructed(), frames[:, :128], audio)


def test_feed_forward_equals_diffusers_geglu_feed_forward():
  attention = pytest.importorskip("diffusers.models.attention")
  peer = attention.FeedForward(32, activation_fn="geglu").eval()
  ours = stable_syncnet.FeedForward(32).eval()
  ours.load_state_dict(peer.state_dict())  # the same names: net.0.proj, net.2
  x = torch.randn(2, 5, 32)
  with torch.no_grad():
    torch.testing.assert_close(ours(x), peer(x), rtol=1e-5, atol=1e-5)


def test_attention_equals_torch_multihead_attention():
  ours = randomize(stable_syncnet.SelfAttention(32), seed=2)
  peer = nn.MultiheadAttention(32, stable_syncnet.HEADS, batch_first=True).eval()
  with torch.no_grad():
    peer.in_proj_weight.copy_(torch.cat([ours.to_q.weight, ours.to_k.weight, ours.to_v.weight]))
    peer.in_proj_bias.copy_(torch.cat([ours.to_q.bias, ours.to_k.bias, ours.to_v.bias]))
    peer.out_proj.weight.copy_(ours.to_out[0].weight)
    peer.out_proj.bias.copy_(ours.to_out[0].bias)
    x = torch.randn(2, 6, 32)
    torch.testing.assert_close(ours(x), peer(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-5)


def test_encoders_reach_one_cell_from_the_real_inputs(model):
  """The visual encoder takes 16 lower half-faces (48 x 128 x 256), the audio encoder a mel
  window (1 x 80 x 52); both end at 1 x 1: unit embeddings."""
  with torch.no_grad():
    v = model.visual_encoder(torch.randn(1, 48, 128, 256))
    a = model.audio_encoder(torch.randn(1, 1, 80, 52))
    assert v.shape == (1, 64, 1, 1) and a.shape == (1, 64, 1, 1)
    ev, ea = model(torch.randn(2, 48, 128, 256), torch.randn(2, 1, 80, 52))
  torch.testing.assert_close(ev.norm(dim=1), torch.ones(2))
  torch.testing.assert_close(ea.norm(dim=1), torch.ones(2))
  assert isinstance(model.visual_encoder.down_blocks[5], stable_syncnet.AttentionBlock2D)
  assert isinstance(model.audio_encoder.down_blocks[4], stable_syncnet.AttentionBlock2D)


def test_mel_framing_and_scale():
  """1 + len / 200 steps of 80 bins; silence is the floor -100 dB - 20 dB, i.e. -4 after the
  scaling (clipped); a 1 kHz tone peaks in the mel bin whose filter weighs 1 kHz most, and a
  step's 80 values equal the STFT, mel filters, dB and scaling computed by hand."""
  silence = stable_syncnet.mel_spectrogram(np.zeros(16000))
  assert silence.shape == (80, 81)
  np.testing.assert_array_equal(silence, -4.0)
  t = np.arange(16000) / 16000
  tone = stable_syncnet.mel_spectrogram(0.5 * np.sin(2 * np.pi * 1000 * t))
  assert tone.max() <= 4.0
  basis = stable_syncnet.mel_basis()
  assert (tone[:, 5:-5].argmax(axis=0) == int(np.argmax(basis[:, 50]))).all()
  # By hand, a step away from the ends: 1 kHz is FFT bin 50 (800 points at 16 kHz); after the
  # pre-emphasis the tone has amplitude 0.5 |1 - 0.97 e^(-i w)|, and a periodic Hann window puts
  # a quarter of amplitude x 800 in bin 50 and an eighth in bins 49 and 51, nothing elsewhere.
  w = 2 * np.pi * 1000 / 16000
  amplitude = 0.5 * abs(1 - 0.97 * np.exp(-1j * w)) * 800
  magnitude = np.zeros(401)
  magnitude[[49, 50, 51]] = amplitude * np.array([1 / 8, 1 / 4, 1 / 8])
  db = 20 * np.log10(np.maximum(1e-5, basis @ magnitude)) - 20
  expected = np.clip(8 * (db + 100) / 100 - 4, -4, 4)
  np.testing.assert_allclose(tone[:, 40], expected, atol=1e-6)
  assert (expected > -4).sum() >= 2  # the tone reaches more than one mel bin above the floor


def test_loading_a_latentsync_checkpoint_and_its_errors(model, tmp_path):
  torch.save({"state_dict": model.state_dict(), "global_step": torch.tensor(3)},
             tmp_path / "stable_syncnet.pt")
  loaded = stable_syncnet.load(str(tmp_path / "stable_syncnet.pt"))
  assert [type(b).__name__ for b in loaded.visual_encoder.down_blocks] == [
      type(b).__name__ for b in model.visual_encoder.down_blocks]
  x, m = torch.randn(1, 48, 128, 256), torch.randn(1, 1, 80, 52)
  with torch.no_grad():
    for a, b in zip(loaded(x, m), model(x, m)):
      torch.testing.assert_close(a, b, rtol=0, atol=0)
  state = dict(model.state_dict())
  del state["audio_encoder.down_blocks.4.attn.to_v.bias"]
  torch.save(state, tmp_path / "broken.pt")
  with pytest.raises(ValueError,
                     match=r"--stable_syncnet: .*audio_encoder\.down_blocks\.4\.attn\.to_v\.bias"):
    stable_syncnet.load(str(tmp_path / "broken.pt"))
  fewer = {k: v for k, v in model.state_dict().items()
           if not k.startswith("visual_encoder.down_blocks.9")}
  torch.save(fewer, tmp_path / "fewer.pt")
  with pytest.raises(ValueError, match="has 7 residual blocks where .* has 8"):
    stable_syncnet.load(str(tmp_path / "fewer.pt"))
