"""SyncLipMAE pretraining (paper 3) as a task of `train.py` (see `tasks/__init__.py`)."""

from __future__ import annotations

from absl import logging
import jax

from data_pipelines import grain_pipeline
from synclipmae_jax import config_validation, console, experiment, input_pipeline, visualize
from synclipmae_jax import weights
from synclipmae_jax.models import synclipmae


def validate(config, *, num_devices: int, process_count: int) -> None:
  config_validation.validate(config, num_devices=num_devices, process_count=process_count)


def init_warnings(config) -> list[str]:
  return config_validation.init_warnings(config)


def make_input(config, workdir: str):
  """(this process's Grain iterator of training windows, {"eval_paths": held-out shards})."""
  del workdir
  train_paths, eval_paths = input_pipeline.dataset_paths(config)
  train_iter = grain_pipeline.make_train_iterator(
      input_pipeline.train_dataset(config, train_paths, process_index=jax.process_index(),
                                   process_count=jax.process_count()),
      worker_count=config.data.worker_count, worker_buffer_size=config.data.worker_buffer_size)
  return train_iter, {"eval_paths": eval_paths}


build = experiment.build
SYNC_EVALUATOR = "sync"  # the evaluator type of the sync tools' protocol on this task's runs


def build_model(config):
  return synclipmae.build(config.model)


def summary(config, exp, log_path: str) -> str:
  return console.config_summary(config, exp, log_path)


def evaluator_kwargs(exp, eval_inputs: dict) -> dict:
  return {"model": exp.model, "audio_encoder": exp.audio_encoder, **eval_inputs}


def initialize(exp, state):
  """A fresh state with the pretrained weights of `config.model.init` (where given)."""
  if any(exp.config.model.init.values()):
    state, reports = weights.load_into_state(exp.config, state, exp.abstract_state)
    for report in reports:
      logging.info("%s", report.format())
  return state


def write_images(writer, exp, state, batch, step: int) -> None:
  """Original / masked view / video-driven / audio-driven reconstruction of the first clip."""
  m = exp.config.model
  with exp.scope():
    vis = jax.device_get(exp.visual_step(state, batch))
  image = visualize.reconstruction_grid(
      vis["targets"], vis["context_keep"], vis["pred_video"], vis["pred_audio"],
      patch=m.patch_size, grid=m.image_size // m.patch_size, norm_pix=exp.config.loss.norm_pix)
  writer.write_images(step, {"reconstructions": image[None]})
