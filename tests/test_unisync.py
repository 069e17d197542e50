"""UniSync's building blocks (models/unisync.py, tasks/unisync/losses.py, tasks/pair_sync/pairs.py):
p_sync against a naive computation, the streams' shapes and what they look at, the loss against
per-pair arithmetic, the samples (anchor, shifted same-speaker audio, another speaker's) read back
from labelled frames."""

import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import unisync as unisync_configs
from synclipmae_jax import input_pipeline, sharding, sync_metrics, train
from synclipmae_jax.tasks.pair_sync import pairs as unisync_pairs
from synclipmae_jax.tasks.unisync import losses as unisync_losses
from synclipmae_jax.evaluators import unisync_sync
from synclipmae_jax.models import unisync
from synclipmae_jax.tasks import unisync as unisync_task
from synclipmae_jax.tools import sync_eval, sync_table
from tests import sync_decisions, tiny_training


def naive_p_sync(a, v):
  a, v = np.maximum(a, 0), np.maximum(v, 0)
  norm = np.linalg.norm(a) * np.linalg.norm(v)
  return 0.0 if norm == 0 else float(a @ v / norm)


def test_sync_probability_is_the_cosine_of_the_rectified_embeddings():
  rng = np.random.default_rng(0)
  a, v = rng.normal(size=(6, 16)), rng.normal(size=(6, 16))
  a[5] = -np.abs(a[5])  # rectified to zero: p_sync 0, not NaN
  p = np.asarray(unisync.sync_probability(jnp.asarray(a), jnp.asarray(v)))
  np.testing.assert_allclose(p, [naive_p_sync(x, y) for x, y in zip(a, v)], rtol=1e-5, atol=1e-7)
  assert p[5] == 0 and (p >= 0).all() and (p <= 1 + 1e-6).all()


@pytest.fixture(scope="module")
def model_and_params():
  model = unisync.UniSync(window=5, channels=(8, 16), audio_width=12, hidden=32, embed_dim=24)
  frames = jnp.zeros((2, 5, 32, 32, 3), jnp.uint8)
  features = jnp.zeros((2, 5, 3, 10), jnp.float32)
  return model, nn.unbox(model.init(jax.random.PRNGKey(0), frames, features)["params"])


def test_streams_give_one_embedding_per_window_and_look_at_the_lower_half(model_and_params):
  model, params = model_and_params
  rng = np.random.default_rng(1)
  frames = rng.integers(0, 256, (3, 5, 32, 32, 3), dtype=np.uint8)
  features = rng.normal(size=(3, 5, 3, 10)).astype(np.float32)
  v = model.apply({"params": params}, frames, method=model.embed_video)
  a = model.apply({"params": params}, features, method=model.embed_audio)
  assert v.shape == (3, 24) and a.shape == (3, 24)
  p = model.apply({"params": params}, frames, features)
  np.testing.assert_allclose(p, unisync.sync_probability(a, v), rtol=1e-6)
  upper_changed = frames.copy()
  upper_changed[:, :, :16] = 255 - upper_changed[:, :, :16]
  np.testing.assert_array_equal(model.apply({"params": params}, upper_changed, method=model.embed_video), v)
  lower_changed = frames.copy()
  lower_changed[:, :, 16:] = 255 - lower_changed[:, :, 16:]
  assert not np.allclose(model.apply({"params": params}, lower_changed, method=model.embed_video), v)
  # Each window is embedded on its own: permuting the batch permutes the embeddings.
  np.testing.assert_allclose(model.apply({"params": params}, frames[::-1], method=model.embed_video),
                             v[::-1], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="windows of 5 frames, got 4"):
    model.apply({"params": params}, frames[:, :4], method=model.embed_video)


def test_loss_is_bce_plus_the_margin_hinge_pair_by_pair():
  p_pos = jnp.array([0.9, 0.6])
  p_neg = jnp.array([[0.1, 0.8, 0.85], [0.2, 0.5, 0.0]])
  margin = 0.2
  loss, metrics = unisync_losses.unisync_loss(p_pos, p_neg, margin)
  bce_pos = -(np.log(0.9) + np.log(0.6)) / 2
  bce_neg = -np.mean(np.log(1 - np.array([0.1, 0.8, 0.85, 0.2, 0.5, 0.0])))
  # Gaps: 0.8, 0.1, 0.05 | 0.4, 0.1, 0.6 -> hinges 0, 0.1, 0.15 | 0, 0.1, 0 ; 3 of 6 separated.
  hinge = (0.1 + 0.15 + 0.1) / 6
  assert float(metrics["unisync/bce_pos"]) == pytest.approx(bce_pos, rel=1e-5)
  assert float(metrics["unisync/bce_neg"]) == pytest.approx(bce_neg, rel=1e-5)
  assert float(metrics["unisync/margin"]) == pytest.approx(hinge, rel=1e-5)
  assert float(metrics["unisync/separated"]) == pytest.approx(0.5)
  assert float(loss) == pytest.approx(bce_pos + bce_neg + hinge, rel=1e-5)
  # Saturated scores stay finite, and the gradient raises positives and lowers negatives.
  loss, _ = unisync_losses.unisync_loss(jnp.array([0.0]), jnp.array([[1.0]]), margin)
  assert np.isfinite(float(loss))
  g_pos, g_neg = jax.grad(lambda p, n: unisync_losses.unisync_loss(p, n, margin)[0], (0, 1))(
      p_pos, p_neg)
  assert (np.asarray(g_pos) < 0).all() and (np.asarray(g_neg) > 0).all()
  with pytest.raises(ValueError, match=r"must be \[B, N\]"):
    unisync_losses.unisync_loss(p_pos, p_neg[0], margin)


def test_samples_cut_the_anchor_its_shifted_audio_and_another_speakers():
  b, t, k = 6, 12, 5
  # Frame f of clip c carries the value 100 c + f everywhere: every cut is readable.
  value = 100 * np.arange(b)[:, None] + np.arange(t)[None, :]
  frames = np.broadcast_to(value[:, :, None, None, None], (b, t, 4, 4, 3)).astype(np.uint8)
  features = np.broadcast_to(value[:, :, None, None], (b, t, 2, 3)).astype(np.float32)
  identity = np.array([7, 7, 3, 3, 9, 9])  # identity-aware runs of 2 clips
  out = jax.jit(unisync_pairs.training_samples, static_argnums=4)(
      jax.random.PRNGKey(0), frames, features, identity, k)
  starts, (overlap, apart) = np.asarray(out["starts"]), np.asarray(out["shifts"]).T
  partner = np.asarray(out["partner"])
  assert out["negatives"].shape == (b, 3, k, 2, 3)
  np.testing.assert_array_equal(partner, [2, 2, 4, 4, 0, 0])
  assert np.asarray(out["cross_speaker"]).all()
  for i in range(b):
    span = np.arange(starts[i], starts[i] + k)
    assert 0 <= starts[i] <= t - k
    np.testing.assert_array_equal(out["frames"][i, :, 0, 0, 0], (100 * i + span) % 256)
    np.testing.assert_array_equal(out["positive"][i, :, 0, 0], 100 * i + span)
    assert unisync_pairs.MIN_OVERLAP_SHIFT <= abs(overlap[i]) <= k - 1
    assert abs(apart[i]) >= k
    for kind, d in (("overlap", overlap[i]), ("apart", apart[i])):
      np.testing.assert_array_equal(out["negatives"][i, unisync_pairs.KINDS.index(kind), :, 0, 0],
                                    100 * i + span + d)
    np.testing.assert_array_equal(out["negatives"][i, 2, :, 0, 0], 100 * partner[i] + span)
  # Over many draws every start and both signs of shift occur.
  draws = [jax.jit(unisync_pairs.training_samples, static_argnums=4)(
      jax.random.PRNGKey(s), frames, features, identity, k) for s in range(20)]
  assert set(np.concatenate([np.asarray(d["starts"]) for d in draws])) == set(range(t - k + 1))
  shifts = np.concatenate([np.asarray(d["shifts"]) for d in draws])
  assert (shifts < 0).any(axis=0).all() and (shifts > 0).any(axis=0).all()


def test_one_identity_batches_are_flagged_and_short_windows_refused():
  partner, cross = unisync_pairs.cross_speaker_partner(jnp.array([4, 4, 4]))
  np.testing.assert_array_equal(partner, [1, 2, 0])
  assert not np.asarray(cross).any()
  partner, cross = unisync_pairs.cross_speaker_partner(jnp.array([4]))  # as when a tool reads a run
  assert partner.tolist() == [0] and cross.tolist() == [False]
  assert unisync_pairs.validate(10, 5) == []
  assert "must be >= 2 K = 10" in unisync_pairs.validate(9, 5)[0]
  with pytest.raises(ValueError, match="window_frames=8"):
    unisync_pairs.training_samples(jax.random.PRNGKey(0), jnp.zeros((2, 8, 4, 4, 3), jnp.uint8),
                                   jnp.zeros((2, 8, 1, 2)), jnp.array([0, 1]), 5)


def unisync_config(**mesh):
  c = unisync_configs.get_config("tiny")
  c.mesh.update(mesh)
  return c


def test_train_steps_on_eight_devices_equal_one_device_and_keep_the_audio_frozen():
  config = unisync_config()
  states = tiny_training.steps_on_one_and_eight_devices(unisync_task, unisync_config)
  one, eight = states["one"], states["eight"]
  assert one[1]["loss/total"] == pytest.approx(eight[1]["loss/total"], rel=1e-5)
  assert one[1]["pairs/cross_speaker"] == 1.0  # runs of 2 clips per identity: always another
  tiny_training.assert_same_training(one[0], eight[0], one[3], eight[3],
                                     tiny_training.learning_rates(unisync_config(), 3))
  for a, start in zip(jax.tree.leaves(one[0]), jax.tree.leaves(one[2])):
    assert not np.array_equal(a, start)  # every parameter trained
  assert "eps3" in one[0] and "eps1_conv0" in one[0]


def test_config_errors_are_named_before_anything_compiles():
  config = unisync_config()
  config.data.window_frames = 8
  config.model.unisync.margin = -1.0
  config.evals.sync.type = "sync"  # SyncLipMAE's evaluator cannot read UniSync's parameters
  with pytest.raises(ValueError) as e:
    unisync_task.validate(config, num_devices=1, process_count=1)
  assert "data.window_frames=8 must be >= 2 K = 10" in str(e.value)
  assert "model.unisync.margin=-1.0 must be >= 0" in str(e.value)
  assert "evals.sync.type='sync': a UniSync run is evaluated by 'unisync_sync' only" in str(e.value)


def test_sync_evaluator_scores_unisync_embeddings_with_the_sync_protocol(tmp_path):
  config = unisync_config()
  config.data.directory = str(tmp_path)
  exp = unisync_task.build(config, sharding.make_mesh(config.mesh, jax.devices()[:1]))
  with exp.scope():
    state = jax.device_get(exp.init(jax.random.PRNGKey(0)))
  evaluator = unisync_sync.Evaluator(config.evals.sync, config, model=exp.model,
                                     audio_encoder=exp.audio_encoder,
                                     eval_paths=input_pipeline.dataset_paths(config)[1])
  metrics, trials = evaluator.evaluate(state.params, state.frozen)
  assert {f"sync/acc_k{k}" for k in config.evals.sync.windows} <= set(metrics)
  assert not any(name.startswith("factors/") for name in metrics)  # UniSync has no prompts
  assert all(0 <= metrics[f"sync/rprec@{k}"] <= 100 for k in config.evals.sync.ks)
  assert len(trials) == config.evals.sync.num_clips * config.evals.sync.trials_per_clip
  clip = evaluator.clips[0]
  n, k = len(clip["frames"]), exp.model.window
  video, prompts = evaluator.clip_tokens(state.params, clip)
  assert prompts is None and video.shape[0] == n and (video >= 0).all()
  for t, window in ((0, [0, 0, 0, 1, 2]), (n // 2, list(range(n // 2 - 2, n // 2 + 3))),
                    (n - 1, [n - 3, n - 2, n - 1, n - 1, n - 1])):
    naive = exp.model.apply({"params": state.params}, clip["frames"][window][None],
                            method=exp.model.embed_video)
    np.testing.assert_allclose(video[t], np.maximum(naive[0], 0), rtol=1e-5, atol=1e-6)
  # Audio: frame t's token embeds the features of frames t - 2 .. t + 2, computed in training's
  # windows slid over the span (`sliding_audio`, as the sync evaluator's tokens are).
  features = evaluator.sliding_audio(lambda w: evaluator.features_fn(state.frozen, w), clip, 1, 17)
  tokens = evaluator.audio_tokens(state.params, state.frozen, clip, 3, 15)
  for i in range(12):
    naive = exp.model.apply({"params": state.params}, features[i:i + k][None],
                            method=exp.model.embed_audio)
    np.testing.assert_allclose(tokens[i], np.maximum(naive[0], 0), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def unisync_run(tmp_path_factory):
  """configs/unisync.py:tiny trained end to end on 8 devices (its sync evaluation in the loop)."""
  root = tmp_path_factory.mktemp("unisync_run")
  config = unisync_config(data=2, fsdp=2, tensor=2)
  config.data.directory = str(root / "data")
  train.train_and_evaluate(config, str(root / "run"))
  return config, str(root / "run")


def test_a_trained_run_is_read_back_by_the_sync_eval_tool(unisync_run):
  """`synclipmae-sync-eval` on the workdir (checkpoint read API, one device) gives the logged figures."""
  config, workdir = unisync_run
  with open(os.path.join(workdir, "metrics.json")) as f:
    logged = json.load(f)
  report = sync_eval.evaluate(workdir)
  assert report["step"] == config.num_train_steps
  # One device here, the training mesh's 8 in the run: the counted decisions are equal but for
  # near ties within the two programs' rounding (tests/sync_decisions.py).
  allowed = sync_decisions.logged_against_one_device(workdir)
  for name, value in report["metrics"].items():
    assert value == pytest.approx(logged[name], rel=1e-4, abs=allowed.get(name, 0.0) + 1e-6), name
  assert logged["pairs/cross_speaker"] == 1.0


def test_chance_figures_by_hand():
  # Guesses -1, 0, 1 against the truth 0: errors 1, 0, 1.
  out = sync_metrics.chance(max_lag=1, max_true_lag=0, tolerance=0, pool_size=4, ks=(1, 3))
  assert out == pytest.approx({"acc": 1 / 3, "offset": 2 / 3, "rprec@1": 0.25, "rprec@3": 0.75})
  # The evaluator's default protocol: 3 of 31 guesses within +-1 of any truth up to +-10.
  assert sync_metrics.chance(max_lag=15, max_true_lag=10, tolerance=1, pool_size=32,
                             ks=(1,))["acc"] == pytest.approx(3 / 31)


def test_sync_table_has_a_row_per_run_chance_and_refuses_other_protocols(tiny_run, unisync_run,
                                                                          tmp_path):
  _, synclipmae_workdir, _ = tiny_run
  _, unisync_workdir = unisync_run
  table = sync_table.build([synclipmae_workdir, unisync_workdir])
  assert [r["task"] for r in table["rows"]] == ["pretrain", "unisync"]
  # Each row is the run's own evaluation: the figures its training logged at its last step.
  for row, workdir in zip(table["rows"], (synclipmae_workdir, unisync_workdir)):
    with open(os.path.join(workdir, "metrics.json")) as f:
      logged = json.load(f)
    assert row["metrics"] == pytest.approx({name: logged[name] for name in row["metrics"]},
                                           rel=1e-4, abs=1e-6)
  p = table["protocol"]
  assert table["chance"][f"sync/rprec@{p['ks'][0]}"] == pytest.approx(100 * p["ks"][0] / p["pool_size"])
  text = sync_table.markdown(table)
  assert text.count("| tiny_run (pretrain), step 4 |") == 1 and "| chance |" in text
  # Another protocol (a different pool) cannot share the table.
  other = tmp_path / "other"
  shutil.copytree(unisync_workdir, other)
  config = json.loads((other / "config.json").read_text())
  config["evals"]["sync"]["pool_size"] = 4
  (other / "config.json").write_text(json.dumps(config))
  with pytest.raises(ValueError, match="evals.sync.pool_size=4 differs"):
    sync_table.build([unisync_workdir, str(other)])
