"""SyncNet's LSE-C / LSE-D (synclipmae_torch/syncnet.py) against the public code's PyPI package
`syncnet-python` (installed without its dependencies by scripts/setup_env.sh): the same network
with the same random weights, and its own `SyncNetInstance.evaluate` on the same files."""

import argparse
import importlib.util
import os

import numpy as np
import pytest
import torch

from synclipmae_jax import sync_metrics
from synclipmae_torch import syncnet

cv2 = pytest.importorskip("cv2")  # SyncNetInstance.py reads frames with OpenCV
wavfile = pytest.importorskip("scipy.io.wavfile")


def peer_module(name: str):
  """A module file of syncnet_python, loaded by path (its package __init__ needs the pipeline's deps)."""
  spec = importlib.util.find_spec("syncnet_python")
  if spec is None:
    pytest.fail("syncnet-python is not installed: run scripts/setup_env.sh bridge")
  path = os.path.join(spec.submodule_search_locations[0], f"{name}.py")
  module_spec = importlib.util.spec_from_file_location(f"peer_{name}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def peer_and_ours(tmp_path_factory):
  """The peer's network with random weights and batch-norm statistics, and ours loaded from its file."""
  torch.manual_seed(0)
  peer = peer_module("SyncNetModel").S(num_layers_in_fc_layers=1024)
  for m in peer.modules():
    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):  # pylint: disable=protected-access
      m.running_mean.uniform_(-0.5, 0.5)
      m.running_var.uniform_(0.5, 2.0)
      m.weight.data.uniform_(0.5, 1.5)
      m.bias.data.uniform_(-0.2, 0.2)
  peer.eval()
  path = str(tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model")
  torch.save(peer.state_dict(), path)
  return peer, syncnet.load_syncnet(path), path


def test_embeddings_equal_the_public_network_with_the_same_weights(peer_and_ours):
  peer, ours, _ = peer_and_ours
  g = torch.Generator().manual_seed(1)
  clips = torch.rand(2, 3, 5, 224, 224, generator=g) * 255
  cepstra = torch.randn(2, 1, 13, 20, generator=g) * 10
  with torch.no_grad():
    torch.testing.assert_close(ours.forward_video(clips), peer.forward_lip(clips), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.forward_audio(cepstra), peer.forward_aud(cepstra), rtol=1e-4, atol=1e-4)


def test_evaluate_equals_syncnet_instance_evaluate_on_the_same_files(peer_and_ours, tmp_path):
  """Frames and audio written as the public pipeline leaves them (frames losslessly: PNG data in
  the .jpg names it globs), then its evaluate(): same offset, confidence (LSE-C) and min distance (LSE-D)."""
  peer, ours, _ = peer_and_ours
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (13, 224, 224, 3), dtype=np.uint8)
  audio = (rng.standard_normal(13 * 640 + 100) * 3000).astype(np.int16)  # longer than the video
  for i, frame in enumerate(frames):
    cv2.imencode(".png", frame)[1].tofile(str(tmp_path / f"{i + 1:06d}.jpg"))
  wavfile.write(str(tmp_path / "audio.wav"), 16000, audio)
  instance = peer_module("SyncNetInstance").SyncNetInstance(peer, device="cpu")
  offset, conf, min_dist = instance.evaluate(argparse.Namespace(tmp_dir=str(tmp_path), batch_size=4, vshift=15))
  result = syncnet.evaluate(ours, frames, audio, batch_size=3)
  assert result.num_windows == 13 - 5
  assert result.offset == offset
  assert result.lse_d == pytest.approx(min_dist, rel=1e-5)
  assert result.lse_c == pytest.approx(conf, rel=1e-4, abs=1e-5)
  assert result.offset_ms == 40.0 * offset


def test_offset_sign_matches_calc_pdist_and_our_lag_convention():
  """Video window i shows what audio window i - 3 sounds (the audio leads by 3 frames): SyncNet's
  offset is +3, and sync_metrics' lag L (audio frame t matches video frame t + L) is +3 too."""
  calc_pdist = peer_module("SyncNetInstance").calc_pdist
  rng = np.random.default_rng(0)
  n, m, shift = 40, 15, 3
  x = torch.from_numpy(rng.standard_normal((n + 2 * m, 16)).astype(np.float32))
  audio = x[m:m + n]
  video = x[m - shift:m - shift + n]  # video[i] = audio[i - shift]
  mdist = torch.mean(torch.stack(calc_pdist(video, audio, vshift=m), 1), 1)
  peer_offset = m - int(torch.argmin(mdist))
  result = syncnet.lse_from_embeddings(video, audio, m)
  assert peer_offset == result.offset == shift
  np.testing.assert_allclose(result.mean_distances, mdist.numpy(), rtol=1e-6)
  # sync_metrics: audio [T, D], video with m context frames each side, row m + t = frame t.
  video_rows = x[:n + 2 * m].roll(shift, dims=0).numpy()  # row m + t + shift holds x[m + t]
  dist = sync_metrics.lag_distance_matrix(audio.numpy(), video_rows, max_lag=m)
  assert set(sync_metrics.window_lag_estimates(dist, window=1, max_lag=m)) == {shift}


def test_lse_arithmetic_on_a_hand_computed_curve():
  # 1-d embeddings, offsets -1..1: video [1, 2, 3], audio [2, 3, 9] padded to [0, 2, 3, 9, 0];
  # window i against padded[i:i + 3]: |1-0| |1-2| |1-3|, |2-2| |2-3| |2-9|, |3-3| |3-9| |3-0|.
  result = syncnet.lse_from_embeddings(torch.tensor([[1.0], [2.0], [3.0]]),
                                       torch.tensor([[2.0], [3.0], [9.0]]), max_offset=1)
  np.testing.assert_allclose(result.mean_distances, [1 / 3, 8 / 3, 4.0], atol=1e-5)
  assert result.offset == 1  # entry 0: video i against audio i - 1, the audio leads
  assert result.lse_d == pytest.approx(1 / 3, abs=1e-5)
  assert result.lse_c == pytest.approx(8 / 3 - 1 / 3, abs=1e-5)


class _NotAStateDict:
  pass


def test_loader_refuses_missing_foreign_and_pickled_object_files(peer_and_ours, tmp_path):
  with pytest.raises(FileNotFoundError, match="syncnet_v2.model"):
    syncnet.load_syncnet(str(tmp_path / "absent.model"))
  pickled = tmp_path / "object.model"
  torch.save(_NotAStateDict(), pickled)
  with pytest.raises(ValueError, match="never unpickled"):
    syncnet.load_syncnet(str(pickled))
  foreign = tmp_path / "foreign.model"
  torch.save({"encoder.weight": torch.zeros(3, 3)}, foreign)
  with pytest.raises(ValueError, match="not SyncNet's syncnet_v2.model: missing"):
    syncnet.load_syncnet(str(foreign))
  # SyncNetInstance's own state dict (keys under __S__.) loads.
  _, ours, path = peer_and_ours
  prefixed = tmp_path / "instance.model"
  torch.save({f"__S__.{k}": v for k, v in torch.load(path, weights_only=True).items()}, prefixed)
  reloaded = syncnet.load_syncnet(str(prefixed))
  for (k, a), b in zip(ours.state_dict().items(), reloaded.state_dict().values()):
    assert torch.equal(a, b), k


def test_bad_inputs_are_named():
  model = syncnet.SyncNet().eval()
  frames = np.zeros((10, 224, 224, 3), np.uint8)
  with pytest.raises(ValueError, match="resample first"):
    syncnet.embed(model, frames, np.zeros(6400, np.int16), sample_rate=8000)
  with pytest.raises(ValueError, match=r"\[T, 224, 224, 3\]"):
    syncnet.embed(model, np.zeros((10, 112, 112, 3), np.uint8), np.zeros(6400, np.int16))
  with pytest.raises(ValueError, match="int16 sample values"):
    syncnet.embed(model, frames, np.zeros(6400, np.float32))
  with pytest.raises(ValueError, match="more than 5 frames"):
    syncnet.embed(model, frames, np.zeros(640 * 5, np.int16))
