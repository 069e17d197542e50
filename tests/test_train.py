"""Training: sharded == single device, the frozen encoder, weight decay, config checks, the NaN
guard's message. The slow end-to-end loop tests: test_train_resume.py, test_train_loop.py."""

import os

import jax
import numpy as np
import pytest

from configs import demo, pretrain
from synclipmae_jax import config_validation, experiment, optimizer, progress
from synclipmae_jax import sharding, train
from synclipmae_jax import train_state
from tests import tiny_training


def run_steps(config, mesh, batches):
  exp = experiment.build(config, mesh)
  with exp.scope():
    state = exp.init(jax.random.PRNGKey(0))
    history = []
    for batch in batches:
      state, metrics = exp.train_step(state, sharding.global_batch(batch, mesh))
      history.append(jax.device_get(metrics))
  return jax.device_get(state), history


def test_sharded_step_matches_single_device(data_dir):
  assert jax.device_count() == 8, "tests/conftest.py fakes 8 CPU devices"
  config = tiny_training.tiny_config(data_dir, **{"loss.contrastive.group_size": 2})
  batches = [train_state.random_batch(config, s, clips_per_identity=2) for s in range(2)]
  single = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  state1, hist1 = run_steps(config, single, batches)
  config.mesh.update(data=2, fsdp=2, tensor=2)
  mesh8 = sharding.make_mesh(config.mesh)
  state8, hist8 = run_steps(config, mesh8, batches)
  for h1, h8 in zip(hist1, hist8):
    for k in h1:
      if k == "contrastive/contrastive_top1":
        # An argmax over the logits of an untrained model, where near ties are the rule: a
        # difference of rounding may move it by one anchor (1 / 32 here); it is no equivalence.
        continue
      np.testing.assert_allclose(h1[k], h8[k], rtol=2e-4, atol=1e-5, err_msg=k)
  tiny_training.assert_same_training(
      state1.params, state8.params, tiny_training.first_moment(state1.opt_state),
      tiny_training.first_moment(state8.opt_state), tiny_training.learning_rates(config, 2))


def test_sharded_parameters_are_split_over_fsdp_and_tensor(data_dir):
  config = tiny_training.tiny_config(data_dir)
  config.mesh.update(data=2, fsdp=2, tensor=2)
  abstract = experiment.build(config, sharding.make_mesh(config.mesh)).abstract_state
  fc1 = abstract.params["encoder"]["blocks"]["layers_0"]["mlp"]["fc1"]["kernel"]
  assert fc1.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  mu = abstract.opt_state[1][0].mu["encoder"]["blocks"]["layers_0"]["mlp"]["fc1"]["kernel"]
  assert mu.sharding.spec == fc1.sharding.spec  # optimizer state sharded like its parameter


def test_frozen_wav2vec2_gets_no_update_and_no_optimizer_state(data_dir):
  config = tiny_training.tiny_config(data_dir, **{"model.audio.frontend": "wav2vec2"})
  config.model.audio.wav2vec2.update(
      hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
      conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=8,
      num_conv_pos_embedding_groups=2)
  mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  exp = experiment.build(config, mesh)
  step = exp.train_step
  with exp.scope():
    state = exp.init(jax.random.PRNGKey(0))
    frozen_before = jax.device_get(state.frozen)
    params_before = jax.device_get(state.params)
    for s in range(2):
      batch = train_state.random_batch(config, s, clips_per_identity=2)
      state, _ = step(state, sharding.global_batch(batch, mesh))
  frozen_after = jax.device_get(state.frozen)
  assert jax.tree.leaves(frozen_before), "wav2vec2 has parameters"
  for a, b in zip(jax.tree.leaves(frozen_before), jax.tree.leaves(frozen_after)):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(params_before), jax.tree.leaves(jax.device_get(state.params))))
  adam = state.opt_state[1][0]
  assert jax.tree.structure(adam.mu) == jax.tree.structure(state.params)
  n_opt = sum(x.size for x in jax.tree.leaves(state.opt_state))
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  assert n_opt < 2 * n_params + 8  # mu and nu of the trainable parameters only


# Every parameter name of the model and whether it gets weight decay (paper 5 trains with AdamW):
# every weight matrix of dense, attention and convolution layers does; nothing else.
DECAY_BY_NAME = {
    "kernel": True, "query_kernel": True, "key_kernel": True, "value_kernel": True,
    "out_kernel": True,
    "bias": False, "query_bias": False, "key_bias": False, "value_bias": False, "out_bias": False,
    "scale": False, "pos_embed": False, "prompts": False, "mask_token": False,
}


def test_weight_decay_of_every_pretrain_parameter():
  """Every parameter path of the configs/pretrain.py model (shapes only) and its decay decision."""
  config = pretrain.get_config()
  config.data.global_batch_size = 1
  mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  params = experiment.build(config, mesh).abstract_state.params
  mask = optimizer.decay_mask(params)
  decisions = {jax.tree_util.keystr(path): decided
               for path, decided in jax.tree_util.tree_flatten_with_path(mask)[0]}
  assert len(decisions) == len(jax.tree.leaves(params))
  for path, decided in decisions.items():
    name = path.rsplit("['", 1)[1].rstrip("']")
    assert name in DECAY_BY_NAME, f"{path}: a parameter name the decay rule does not know"
    assert decided is DECAY_BY_NAME[name], path
  attention = [p for p in decisions if "attn" in p and p.endswith("_kernel']")]
  assert len(attention) == 4 * (24 + 2 * 8)  # q, k, v, out of 24 encoder and 8 x 2 decoder attentions
  assert all(decisions[p] for p in attention)
  decayed = sum(x.size for x, d in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if d)
  assert decayed > 0.98 * sum(x.size for x in jax.tree.leaves(params))


def test_invalid_config_is_reported_before_compiling(data_dir):
  config = tiny_training.tiny_config(data_dir, **{"masking.mode": "random", "masking.mask_ratio": 1.5,
                                                  "data.global_batch_size": 6})
  with pytest.raises(ValueError) as e:
    config_validation.validate(config, num_devices=8)
  for fragment in ("masking.mode='random'", "mask_ratio=1.5", "global_batch_size=6"):
    assert fragment in str(e.value)


def test_check_finite_names_step_and_term():
  progress.check_finite(3, {"loss/recon_video": 1.0, "grad_norm": 2.0, "learning_rate": float("nan")})
  with pytest.raises(progress.NonFiniteLossError, match="non-finite contrastive .* at step 7"):
    progress.check_finite(7, {"loss/recon_video": 1.0, "loss/contrastive": float("inf")})


def test_shipped_configs_validate():
  config_validation.validate(demo.get_config(), num_devices=1)
  config_validation.validate(demo.get_config("tiny"), num_devices=8)
  c = pretrain.get_config()
  c.model.audio.allow_random_wav2vec2 = True
  with pytest.raises(ValueError, match="train_pattern"):
    config_validation.validate(c, num_devices=128, process_count=32)
  c.data.train_pattern = c.data.eval_pattern = "/data/*.array_record"
  config_validation.validate(c, num_devices=128, process_count=32)
  with pytest.raises(ValueError, match="mesh"):
    config_validation.validate(c, num_devices=100, process_count=25)


def test_pretrain_refuses_a_random_frozen_wav2vec2(tmp_path):
  """configs/pretrain.py as shipped (empty model.init.wav2vec2) does not start; the message names
  the switch. With the switch it validates, and the run's start warns about both random parts."""
  c = pretrain.get_config()
  c.data.train_pattern = c.data.eval_pattern = "/data/*.array_record"
  with pytest.raises(ValueError, match=r"--config\.model\.audio\.allow_random_wav2vec2=True"):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")  # refused before touching the workdir
  config_validation.validate(c, num_devices=128, process_count=32, training=False)  # AOT tool
  c.model.audio.allow_random_wav2vec2 = True
  config_validation.validate(c, num_devices=128, process_count=32)
  warnings = config_validation.init_warnings(c)
  assert len(warnings) == 2 and "RANDOMLY INITIALISED frozen wav2vec 2.0" in warnings[0]
  assert "model.init.sapiens" in warnings[1]
  c.model.init.wav2vec2 = "/ckpt/wav2vec2-base"
  assert len(config_validation.init_warnings(c)) == 1
