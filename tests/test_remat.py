"""Rematerialisation policies (models/remat.py): on 8 devices, with and without nn.scan, each gives
the loss and gradients of no remat; each recomputes what its name says (a block's matmuls); bad
names are errors before anything compiles."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from synclipmae_jax import config_validation, objective, optimizer, sharding, train_state
from synclipmae_jax.models import audio_encoder as audio_encoder_lib
from synclipmae_jax.models import layers, remat, synclipmae

# (scan_layers, encoder policy, decoder policy): every policy in each scan mode, in both stacks.
CASES = [
    (False, "full", "full"),
    (False, "dots_no_batch", "save_all_but_mlp"),
    (False, "qkv_proj", "offload"),
    (True, "full", "full"),
    (True, "save_all_but_mlp", "dots_no_batch"),
    (True, "offload", "qkv_proj"),
]


def test_cases_cover_every_policy_with_and_without_scan():
  for scan in (False, True):
    used = {p for s, e, d in CASES if s == scan for p in (e, d)}
    assert used == set(remat.REMAT_POLICIES) - {"none"}


def config_with(scan, encoder="none", decoder="none"):
  c = demo.get_config("tiny")
  c.mesh.update(data=2, fsdp=2, tensor=2)
  c.model.scan_layers = scan
  c.model.remat_policy.update(encoder=encoder, decoder=decoder)
  return c


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8, "tests/conftest.py fakes 8 CPU devices"
  return sharding.make_mesh(config_with(False).mesh)


def compiled_loss_and_grads(config, mesh, params, batch):
  """(loss, gradients) of the train step's objective on the mesh."""
  model = synclipmae.build(config.model)
  audio_encoder = audio_encoder_lib.build(config.model.audio)  # "mel": no frozen parameters
  groups = train_state.group_size(config, sharding.num_batch_shards(mesh))
  t = config.data.window_frames

  def loss_and_grads(params, batch):
    features = audio_encoder.apply({"params": {}}, batch["audio"], t)
    (loss, _), grads = jax.value_and_grad(objective.compute_losses, has_aux=True)(
        params, model, batch, features, jax.random.PRNGKey(1), config, groups)
    return loss, grads

  rules = sharding.rules(config)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    loss, grads = jax.jit(loss_and_grads)(params, batch)
  return float(loss), jax.device_get(grads)


@pytest.fixture(scope="module")
def baselines(mesh):
  """Per scan mode: the sharded parameters, the batch and the result without remat."""
  out = {}
  for scan in (False, True):
    config = config_with(scan)
    model = synclipmae.build(config.model)
    audio_encoder = audio_encoder_lib.build(config.model.audio)
    tx, schedule = optimizer.make(config.optim, config.num_train_steps)
    fns = train_state.make(config, model, audio_encoder, tx, schedule, sharding.num_batch_shards(mesh))
    _, init, _, _ = train_state.jit_all(fns, mesh, sharding.rules(config), jax.random.PRNGKey(0))
    with jax.set_mesh(mesh):
      params = init(jax.random.PRNGKey(0)).params
    batch = sharding.global_batch(train_state.random_batch(config, seed=3), mesh)
    out[scan] = params, batch, compiled_loss_and_grads(config, mesh, params, batch)
  return out


@pytest.mark.parametrize("scan,encoder,decoder", CASES)
def test_policy_gives_the_loss_and_gradients_of_no_remat(mesh, baselines, scan, encoder, decoder):
  params, batch, (loss0, grads0) = baselines[scan]
  loss, grads = compiled_loss_and_grads(config_with(scan, encoder, decoder), mesh, params, batch)
  # The loss is a sum of means over ~1e3 terms each: reordered float32 sums differ by ~1e-6 of it.
  assert loss == pytest.approx(loss0, rel=1e-5)
  assert jax.tree.structure(grads) == jax.tree.structure(grads0)
  largest = max(np.abs(g0).max() for g0 in jax.tree.leaves(grads0))
  for (path, g), g0 in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(grads0)):
    # f32: recomputation may reorder sums (differences ~1e-6 of a leaf's largest entry seen). Key
    # biases have a zero gradient in exact arithmetic (softmax ignores a shift of all logits): what
    # is compared there is rounding noise, so their floor is relative to the largest gradient.
    name = jax.tree_util.keystr(path)
    scale = largest if name.endswith("['key_bias']") else np.abs(g0).max()
    np.testing.assert_allclose(g, g0, rtol=1e-4, atol=1e-5 * max(scale, 1e-3), err_msg=name)


def recomputed_matmuls(policy):
  """Matmuls in the gradient of one layers.Block beyond those without remat (the jaxpr's, before
  XLA: the CPU compiler merges recomputed matmuls with the forward ones, the TPU compiler does not)."""
  def matmuls(policy):
    block = remat.wrap(layers.Block, policy, scanned=False)(num_heads=4, mlp_dim=256)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 64))
    params = nn.unbox(block.init(jax.random.PRNGKey(1), x)["params"])
    loss = lambda p, x: jnp.sum(block.apply({"params": p}, x) ** 2)
    return str(jax.make_jaxpr(jax.grad(loss))(params, x)).count("dot_general[")
  return matmuls(policy) - matmuls("none")


def test_policies_recompute_what_their_names_say():
  # A block's forward pass has 8 matmuls: q, k, v, logits, context, out, fc1, fc2; fc2's output is
  # never needed by the backward pass, so "full" recomputes the other 7.
  assert {p: recomputed_matmuls(p) for p in remat.REMAT_POLICIES} == {
      "none": 0,
      "dots_no_batch": 2,  # attention's batched matmuls: logits and context
      "save_all_but_mlp": 2,  # fc1 (its output is the MLP hidden activation) and the logits
      "qkv_proj": 4,  # logits, context, out, fc1
      "full": 7,
      "offload": 1,  # every named value comes back from the host; the logits are unnamed
  }


def test_unknown_policy_is_an_error():
  with pytest.raises(ValueError, match="unknown remat policy 'some'"):
    remat.wrap(layers.Block, "some", scanned=False)
  config = config_with(False, encoder="dots")
  config.model.remat_policy.lm_head = "full"
  with pytest.raises(ValueError) as e:
    config_validation.validate(config, num_devices=8)
  assert "model.remat_policy.encoder='dots'" in str(e.value)
  assert "model.remat_policy keys" in str(e.value)
