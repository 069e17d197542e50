"""The tiny training set-up shared by the training tests (test_train*.py, the pair-model tasks)."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from configs import demo
from data_pipelines import grain_pipeline
from synclipmae_jax import experiment, input_pipeline, optimizer, sharding, train_state


def tiny_config(data_dir, **overrides):
  """configs/demo.py:tiny on the synthetic data in `data_dir`, with dotted-key overrides."""
  c = demo.get_config("tiny")
  c.data.directory = data_dir
  for key, value in overrides.items():
    node = c
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return c


def final_params(workdir):
  """(latest step, its trainable parameters) of a training workdir."""
  ckpt = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), item_names=("state", "iter"))
  step = ckpt.latest_step()
  restored = ckpt.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  ckpt.close()
  return step, restored.state["params"]


def per_step_reference(config, steps):
  """What the loop computes, fetched after every step: the same batches (grain is
  deterministic), the same initial state. Returns (final params, [metrics of each step])."""
  mesh = sharding.make_mesh(config.mesh)
  exp = experiment.build(config, mesh)
  train_paths, _ = input_pipeline.dataset_paths(config)
  batches = grain_pipeline.make_train_iterator(input_pipeline.train_dataset(config, train_paths))
  history = []
  with exp.scope():
    state = exp.init(jax.random.PRNGKey(config.seed))
    for _ in range(steps):
      state, metrics = exp.train_step(state, sharding.global_batch(next(batches), mesh))
      history.append(jax.device_get(metrics))
  return jax.device_get(state.params), history


def first_moment(opt_state):
  """AdamW's first moment in `optimizer.make`'s state (global-norm clipping, then AdamW), live
  (optax's named tuples) or restored from a checkpoint as a tree of dicts."""
  adam = opt_state[1][0]
  return adam["mu"] if isinstance(adam, dict) else adam.mu


def learning_rates(config, steps: int) -> list[float]:
  """The learning rates of a run's first `steps` steps (`optimizer.make`'s schedule)."""
  _, schedule = optimizer.make(config.optim, config.num_train_steps)
  return [float(schedule(i)) for i in range(steps)]


def assert_same_training(params, other_params, moment, other_moment, rates) -> None:
  """Two runs of the same AdamW steps by different programs (device counts, processes) agree as
  far as float32 arithmetic lets them; `moment`s are AdamW's first moments, `rates` the learning
  rates of the steps taken.

  The gradients must agree. AdamW's first moment is their running mean, compared entry by entry
  to 1e-4 of its largest entry (the gradient's scale): the programs reduce in different orders,
  and float32 rounding (unit 6e-8) of sums of up to ~1000 terms of that scale stays below it,
  while a wrong reduction (a shard counted twice or lost, a mean taken twice) is off by 1e-1 or
  more. An absolute, not a relative, bound: a gradient that is zero in exact arithmetic (an
  attention key bias: softmax ignores a shift of all logits) is pure rounding noise of the other
  terms' size.
  The parameters need only agree to what AdamW can do with that noise: it divides by the gradient's
  own scale, so a noise gradient moves its parameter by up to the learning rate, either way
  (|m_hat| / sqrt(v_hat) <= 1 in the first steps at b1^2 < b2), so two runs may differ by twice
  the sum of the learning rates (weight decay adds lr * 0.05 * |p|, below the rounding of p).
  """
  largest = max(float(np.abs(m).max()) for m in jax.tree.leaves(moment))
  assert largest > 0
  other = dict(jax.tree_util.tree_leaves_with_path(other_moment))
  for path, m in jax.tree_util.tree_leaves_with_path(moment):
    name = jax.tree_util.keystr(path)
    np.testing.assert_allclose(m, other[path], rtol=0, atol=1e-4 * largest, err_msg=name)
  bound = 2 * sum(rates) * 1.01
  other = dict(jax.tree_util.tree_leaves_with_path(other_params))
  assert len(other) == len(jax.tree.leaves(params))
  for path, p in jax.tree_util.tree_leaves_with_path(params):
    np.testing.assert_allclose(p, other[path], rtol=len(rates) * 1.2e-7, atol=bound,
                               err_msg=jax.tree_util.keystr(path))


def steps_on_one_and_eight_devices(task, make_config, num_steps: int = 3) -> dict:
  """{"one" / "eight": (parameters after `num_steps` train steps, the last step's metrics, the
  initial parameters, AdamW's first moment)} of `task` (a tasks/ module) on 1 device and on 8
  (data=2, fsdp=2, tensor=2), from the same initialisation and random batches;
  make_config(**mesh) -> config."""
  batches = [train_state.random_batch(make_config(), seed=s, clips_per_identity=2)
             for s in range(num_steps)]
  states = {}
  for name, mesh_shape, devices in (("one", dict(data=1, fsdp=1, tensor=1), jax.devices()[:1]),
                                    ("eight", dict(data=2, fsdp=2, tensor=2), jax.devices())):
    config = make_config(**mesh_shape)
    task.validate(config, num_devices=len(devices), process_count=1)
    mesh = sharding.make_mesh(config.mesh, devices)
    exp = task.build(config, mesh)
    with exp.scope():
      state = exp.init(jax.random.PRNGKey(0))
      initial = jax.device_get(state.params)
      for batch in batches:
        state, metrics = exp.train_step(state, sharding.global_batch(batch, mesh))
    states[name] = (jax.device_get(state.params), jax.device_get(metrics), initial,
                    jax.device_get(first_moment(state.opt_state)))
  return states
