"""Contrastive negatives from the whole global batch (`loss.contrastive.negatives = "global"`:
`losses.batch_infonce` under `objective.contrastive_over_batch`): on 8 fake devices the loss, its
metrics and its gradients are those of one device holding the whole batch, at the loss level and
in the train step's objective; a bad value is refused before anything compiles.

Tolerance 1e-5 (relative; for gradients, of the largest entry): the sharded and the one-device
programs compute every logit and every row's logsumexp over the same candidates in float32; they
differ in how sums over anchors are split (8 partial sums added by `psum`, or the reduce-scatter
of the gathered tokens' cotangents) and in XLA's blocking of the matmuls. Reordering a float32 sum
of n terms changes it by at most (n - 1) * 2^-24 of the sum of the terms' magnitudes: for the
loss (nonnegative terms, n = 128 anchors) 7.6e-6 of its value; for a gradient entry (a sum over
at most the 64 anchors and 64 candidates it meets) about the same fraction of the largest entry.
"""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import demo
from synclipmae_jax import (config_validation, losses, objective, optimizer, sharding,
                            train_state)
from synclipmae_jax.models import audio_encoder as audio_encoder_lib
from synclipmae_jax.models import synclipmae

RTOL = 1e-5
INFONCE = dict(temperature=0.3, neighbor_delta=1, similarity_threshold=0.8)
BATCH_RULES = (("batch", ("data", "fsdp")),)


@pytest.fixture(scope="module")
def batch():
  """16 clips x 4 frames: tokens, and audio features around 3 prototypes so that the
  similarity expansion pairs frames of clips on different devices."""
  rng = np.random.default_rng(0)
  b, t, d, f = 16, 4, 8, 6
  audio = rng.normal(size=(b, t, d)).astype(np.float32)
  vocal = (0.5 * audio + rng.normal(size=(b, t, d))).astype(np.float32)
  prototypes = rng.normal(size=(3, f))
  features = (4.0 + prototypes[rng.integers(0, 3, size=(b, t))]
              + 0.1 * rng.normal(size=(b, t, f))).astype(np.float32)
  return audio, vocal, features


def loss_and_grads(fn, *args):
  return jax.jit(jax.value_and_grad(fn, argnums=(0, 1), has_aux=True))(*args)


def assert_grads_close(got, want):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    g, w = np.asarray(g), np.asarray(w)
    np.testing.assert_allclose(g, w, rtol=0, atol=RTOL * max(np.abs(w).max(), 1e-30))


def test_global_on_8_devices_equals_one_device_with_the_whole_batch(batch):
  audio, vocal, features = batch
  b = audio.shape[0]
  # One device, the whole batch as one contrastive group: the group loss's own code path.
  (want, want_metrics), want_grads = loss_and_grads(
      lambda a, v: losses.multi_positive_infonce(a, v, features, **INFONCE), audio, vocal)
  mesh = sharding.make_mesh(dict(data=4, fsdp=2, tensor=1))
  with sharding.scope(mesh, BATCH_RULES):
    on_shards = [jax.device_put(x, NamedSharding(mesh, P(("data", "fsdp")))) for x in batch]
    (got, metrics), grads = loss_and_grads(
        lambda a, v, s: objective.contrastive_over_batch(a, v, s, **INFONCE), *on_shards)
  np.testing.assert_allclose(float(got), float(want), rtol=RTOL)
  for k in want_metrics:
    np.testing.assert_allclose(float(metrics[k]), float(want_metrics[k]), rtol=RTOL)
  assert_grads_close(grads, want_grads)
  # Positive sets span devices (at most 3 aligned or neighbouring frames per anchor with
  # delta = 1), and the global loss is not the mean of the devices' own groups.
  assert float(metrics["num_positives"]) > 3.5
  per_device = jax.jit(jax.vmap(lambda *x: losses.multi_positive_infonce(*x, **INFONCE)[0]))(
      *(x.reshape((8, b // 8) + x.shape[1:]) for x in batch))
  assert abs(float(per_device.mean()) - float(want)) > 0.1


def tiny_config(negatives: str):
  config = demo.get_config("tiny")  # 8 clips x 4 frames
  config.mesh.update(data=2, fsdp=2, tensor=2)  # 4 batch shards, each replicated over tensor
  config.loss.contrastive.negatives = negatives
  return config


def test_train_step_objective_scores_each_frame_against_the_whole_batch():
  """The train step's objective (`objective.compute_losses`, jitted with the step's shardings on
  8 devices) with global negatives gives the contrastive loss and metrics of the group loss with
  the whole batch as one group on one device, from the very tokens and features it computed.
  (Its gradient is the loss-level test's: the objective passes it on through the model.)"""
  config = tiny_config("global")
  # Only what the contrastive term needs (a smaller program to compile).
  config.loss.weights.update(recon_audio=0.0, decorrelation=0.0)
  config.masking.photometric = False
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.rules(config)
  model = synclipmae.build(config.model)
  audio_encoder = audio_encoder_lib.build(config.model.audio)  # "mel": no frozen parameters
  tx, schedule = optimizer.make(config.optim, config.num_train_steps)
  groups = train_state.group_size(config, sharding.num_batch_shards(mesh))
  fns = train_state.make(config, model, audio_encoder, tx, schedule, groups)
  abstract, _, _, _ = train_state.jit_all(fns, mesh, rules, jax.random.PRNGKey(0))
  b, t = config.data.global_batch_size, config.data.window_frames

  def objective_fn(params, batch):
    features = audio_encoder.apply({"params": {}}, batch["audio"], t)
    _, (metrics, aux) = objective.compute_losses(params, model, batch, features,
                                                 jax.random.PRNGKey(1), config, groups)
    return metrics, aux["audio"], aux["vocal"], features

  with sharding.scope(mesh, rules):
    rng = np.random.default_rng(0)  # any parameters of the model's shapes (no init to compile)
    params = jax.tree.map(lambda a: jax.device_put(
        rng.normal(0.0, 0.3, a.shape).astype(a.dtype), a.sharding), abstract.params)
    batch = sharding.global_batch(train_state.random_batch(config, seed=3), mesh)
    lowered = jax.jit(objective_fn).lower(params, batch)
    # The gather is the shard_map's own collective (GSPMD's would appear only after partitioning):
    # the step ran each shard's anchors against the gathered batch, not the whole square anywhere.
    assert "all_gather" in lowered.as_text()
    metrics, audio, vocal, features = jax.device_get(lowered.compile()(params, batch))
  c = config.loss.contrastive
  want, want_metrics = losses.multi_positive_infonce(
      *(x.reshape((b, t, -1)) for x in (audio, vocal, features)), temperature=c.temperature,
      neighbor_delta=c.neighbor_delta, similarity_threshold=c.similarity_threshold)
  np.testing.assert_allclose(metrics["loss/contrastive"], float(want), rtol=RTOL)
  for k, v in want_metrics.items():
    np.testing.assert_allclose(metrics[f"contrastive/{k}"], float(v), rtol=RTOL, err_msg=k)


def test_negatives_value_is_validated():
  with pytest.raises(ValueError, match=r"loss\.contrastive\.negatives='batch' must be one of"):
    config_validation.validate(tiny_config("batch"), num_devices=8)
  config_validation.validate(tiny_config("global"), num_devices=8)
