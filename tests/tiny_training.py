"""The tiny training set-up shared by the training tests (test_train*.py, the pair-model tasks)."""

import os

import jax
import orbax.checkpoint as ocp

from configs import demo
from data_pipelines import grain_pipeline
from synclipmae_jax import experiment, input_pipeline, sharding, train_state


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


def steps_on_one_and_eight_devices(task, make_config, num_steps: int = 3) -> dict:
  """{"one" / "eight": (parameters after `num_steps` train steps, the last step's metrics, the
  initial parameters)} of `task` (a tasks/ module) on 1 device and on 8 (data=2, fsdp=2,
  tensor=2), from the same initialisation and random batches; make_config(**mesh) -> config."""
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
    states[name] = (jax.device_get(state.params), jax.device_get(metrics), initial)
  return states
