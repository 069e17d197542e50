"""The SyncNet we train (models/syncnet.py, tasks/syncnet/,
evaluators/syncnet_sync.py): the contrastive loss pair by pair, the streams' shapes and what they
look at, Euclidean distances in the sync metrics by hand, LSE arithmetic on the evaluator's curves,
8 devices == 1, and a trained run read back by the sync tools."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import syncnet as syncnet_configs
from synclipmae_jax import sync_metrics, train
from synclipmae_jax.tasks.syncnet import losses as syncnet_losses
from synclipmae_jax.models import syncnet
from synclipmae_jax.tasks import syncnet as syncnet_task
from synclipmae_jax.tools import sync_eval, sync_table
from tests import sync_decisions, tiny_training


def test_contrastive_loss_pair_by_pair():
  d_pos = jnp.array([0.5, 2.0])
  d_neg = jnp.array([[0.2, 1.5, 0.9], [3.0, 0.0, 1.0]])
  loss, metrics = syncnet_losses.contrastive_loss(d_pos, d_neg, margin=1.0)
  pos = (0.25 + 4.0) / 2
  neg = (0.8 ** 2 + 0 + 0.1 ** 2 + 0 + 1.0 + 0) / 6
  assert float(metrics["syncnet/pos"]) == pytest.approx(pos, rel=1e-6)
  assert float(metrics["syncnet/neg"]) == pytest.approx(neg, rel=1e-6)
  assert float(loss) == pytest.approx(0.5 * (pos + neg), rel=1e-6)
  # Farther than the own positive: 1.5, 0.9 | 3.0 -> 3 of 6.
  assert float(metrics["syncnet/separated"]) == pytest.approx(0.5)
  g_pos, g_neg = jax.grad(lambda p, n: syncnet_losses.contrastive_loss(p, n, 1.0)[0], (0, 1))(d_pos, d_neg)
  assert (np.asarray(g_pos) > 0).all()  # positives are pulled together
  assert (np.asarray(g_neg)[d_neg < 1.0] < 0).all() and (np.asarray(g_neg)[d_neg >= 1.0] == 0).all()
  with pytest.raises(ValueError, match="margin must be > 0"):
    syncnet_losses.contrastive_loss(d_pos, d_neg, 0.0)
  with pytest.raises(ValueError, match=r"must be \[B, N\]"):
    syncnet_losses.contrastive_loss(d_pos, d_neg[0], 1.0)


def test_streams_embed_windows_look_at_the_lower_half_and_give_euclidean_distances():
  model = syncnet.SyncNet(window=5, channels=(8, 16), audio_channels=(8,), hidden=32, embed_dim=24)
  rng = np.random.default_rng(1)
  frames = rng.integers(0, 256, (3, 5, 32, 32, 3), dtype=np.uint8)
  features = rng.normal(size=(3, 5, 2, 10)).astype(np.float32)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), frames, features)["params"])
  v = model.apply({"params": params}, frames, method=model.embed_video)
  a = model.apply({"params": params}, features, method=model.embed_audio)
  assert v.shape == (3, 24) and a.shape == (3, 24)
  np.testing.assert_allclose(model.apply({"params": params}, frames, features),
                             np.linalg.norm(np.asarray(a) - np.asarray(v), axis=-1), rtol=1e-5)
  upper_changed = frames.copy()
  upper_changed[:, :, :16] = 255 - upper_changed[:, :, :16]
  np.testing.assert_array_equal(model.apply({"params": params}, upper_changed, method=model.embed_video), v)
  lower_changed = frames.copy()
  lower_changed[:, 2, 16:] = 255 - lower_changed[:, 2, 16:]  # one frame of the five
  assert not np.allclose(model.apply({"params": params}, lower_changed, method=model.embed_video), v)
  # Frame order matters (the frames are stacked, as the public Conv3d reads them).
  assert not np.allclose(model.apply({"params": params}, frames[:, ::-1], method=model.embed_video), v)
  np.testing.assert_allclose(model.apply({"params": params}, features[::-1], method=model.embed_audio),
                             a[::-1], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="windows of 5 frames, got 4"):
    model.apply({"params": params}, features[:, :4], method=model.embed_audio)


def test_euclidean_lag_distances_and_r_precision_by_hand():
  audio = np.array([[0.0, 0.0], [1.0, 0.0]])
  video = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])  # max_lag 1: 2 + 2 rows
  dist = sync_metrics.lag_distance_matrix(audio, video, max_lag=1, distance="euclidean")
  # Entry (l, t) = |audio[t] - video[1 + t + l - 1]|.
  np.testing.assert_allclose(dist, [[5.0, 1.0], [0.0, 1.0], [np.sqrt(2), 1.0]])
  curve = sync_metrics.lag_curve(audio, video, 1, "euclidean")
  assert curve["estimate"] == 0 and curve["distance"] == pytest.approx([3.0, 0.5, (np.sqrt(2) + 1) / 2])
  # Scale matters for Euclidean ranking, not for cosine: video 2x audio ranks first only by cosine.
  x = np.array([[1.0, 0.0], [0.0, 1.0], [1.2, 0.2]])
  v = np.array([[2.0, 0.0], [0.0, 1.0], [1.2, 0.2]])
  assert sync_metrics.r_precision(x, v, pool_size=3, ks=(1,))[1] == 1.0
  assert sync_metrics.r_precision(x, v, pool_size=3, ks=(1,), distance="euclidean")[1] == pytest.approx(2 / 3)
  with pytest.raises(ValueError, match="distance='l1' must be one of"):
    sync_metrics.lag_distance_matrix(audio, video, 1, "l1")


def syncnet_config(**mesh):
  c = syncnet_configs.get_config("tiny")
  c.mesh.update(mesh)
  return c


def test_train_steps_on_eight_devices_equal_one_device():
  states = tiny_training.steps_on_one_and_eight_devices(syncnet_task, syncnet_config)
  one, eight = states["one"], states["eight"]
  assert one[1]["loss/total"] == pytest.approx(eight[1]["loss/total"], rel=1e-5)
  assert np.isfinite(one[1]["syncnet/d_cross_speaker"]) and one[1]["pairs/cross_speaker"] == 1.0
  tiny_training.assert_same_training(one[0], eight[0], one[3], eight[3],
                                     tiny_training.learning_rates(syncnet_config(), 3))
  for a, start in zip(jax.tree.leaves(one[0]), jax.tree.leaves(one[2])):
    assert not np.array_equal(a, start)  # every parameter trained
  assert {"lip_conv0", "audio_conv0", "lip_fc1", "audio_fc1"} <= set(one[0])


def test_config_errors_are_named_before_anything_compiles():
  config = syncnet_config()
  config.data.window_frames = 8
  config.model.syncnet.margin = 0.0
  config.evals.sync.type = "unisync_sync"
  with pytest.raises(ValueError) as e:
    syncnet_task.validate(config, num_devices=1, process_count=1)
  assert "data.window_frames=8 must be >= 2 K = 10" in str(e.value)
  assert "model.syncnet.margin=0.0 must be > 0" in str(e.value)
  assert "evals.sync.type='unisync_sync': a SyncNet run is evaluated by 'syncnet_sync' only" in str(e.value)


@pytest.fixture(scope="module")
def syncnet_run(tmp_path_factory):
  """configs/syncnet.py:tiny trained end to end on 8 devices (its sync evaluation in the loop)."""
  root = tmp_path_factory.mktemp("syncnet_run")
  config = syncnet_config(data=2, fsdp=2, tensor=2)
  config.data.directory = str(root / "data")
  train.train_and_evaluate(config, str(root / "run"))
  return config, str(root / "run")


def test_a_trained_run_is_evaluated_with_euclidean_distances_and_lse(syncnet_run):
  """sync-eval on the workdir gives the logged figures; LSE-D / LSE-C are the minimum and the
  median minus minimum of each trial's curve; the curves are Euclidean (not bounded by 2)."""
  config, workdir = syncnet_run
  with open(os.path.join(workdir, "metrics.json")) as f:
    logged = json.load(f)
  report = sync_eval.evaluate(workdir)
  assert report["task"] == "syncnet" and report["step"] == config.num_train_steps
  # One device here, the training mesh's 8 in the run: the counted decisions are equal but for
  # near ties within the two programs' rounding (tests/sync_decisions.py).
  allowed = sync_decisions.logged_against_one_device(workdir)
  for name, value in report["metrics"].items():
    assert value == pytest.approx(logged[name], rel=1e-4, abs=allowed.get(name, 0.0) + 1e-6), name
  curves = [np.array(t["distance"]) for t in report["trials"]]
  assert report["metrics"]["sync/lse_d"] == pytest.approx(np.mean([c.min() for c in curves]), rel=1e-6)
  assert report["metrics"]["sync/lse_c"] == pytest.approx(
      np.mean([np.median(c) - c.min() for c in curves]), rel=1e-6)
  table = sync_table.build([workdir])
  assert table["rows"][0]["task"] == "syncnet"
  text = sync_table.markdown(table)
  assert "LSE-D / LSE-C" in text and f"{report['metrics']['sync/lse_d']:.2f} / " in text
