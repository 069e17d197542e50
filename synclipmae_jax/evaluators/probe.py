"""Linear probes of the frozen encoder (paper 4.2, Table 3): emotion and facial actions.

Labelled clips come split into train / validation / test: by default the labelled synthetic
set (`synthetic_dataset.ensure_labelled_dataset`: speakers no pretraining split holds, each
clip with its emotion and per-frame action flags), or prepared shards (`pattern`) whose
records carry `split`, `emotion` and `actions` (schema.py; a clip without a label is left out
of that task). Every frame goes once through the frozen encoder with all patches visible
(`frame_features`: its identity, vocal-motion and ambient-motion prompts and the mean patch
token); clips of each length in `clip_frames` are the non-overlapping windows of that many
frames of each clip, featured by the mean of their frames' features (`linear_probe`: the mean
of frame logits). A window's emotion is its clip's; an action is present in a window when any
of its frames shows it. Each (task, length) probe is `linear_probe.select`ed by a grid on
validation and reported on test.

Options (`config.evals.<name>`, defaults in `config_defaults.probe_eval_config`): pattern,
synthetic (the labelled set's parameters), clip_frames, tasks, feature, learning_rates,
weight_decays, steps, frames_per_call.
"""

from __future__ import annotations

import os

import numpy as np

from data_pipelines import labels
from synclipmae_jax import config_defaults, frame_features, input_pipeline, linear_probe

TASKS = ("emotion", "actions")
# Per-frame feature of the probe: the paper's mean of the two motion tokens, single prompt
# tokens, the mean patch token, and concatenations.
FEATURES = ("motion", "identity", "vocal", "ambient", "patch_mean", "prompts", "prompts_patch")


def validate(entry, config) -> list[str]:
  """Problems of a probe evaluator's options (`common.validate` prefixes them)."""
  errors = []
  if entry.feature not in FEATURES:
    errors.append(f"feature={entry.feature!r} must be one of {FEATURES}")
  if not entry.tasks or any(t not in TASKS for t in entry.tasks):
    errors.append(f"tasks={tuple(entry.tasks)} must be a non-empty subset of {TASKS}")
  if not entry.clip_frames or min(entry.clip_frames) < 1:
    errors.append(f"clip_frames={tuple(entry.clip_frames)} must be lengths >= 1")
  elif not entry.pattern and max(entry.clip_frames) > entry.synthetic.clip_frames:
    errors.append(f"clip_frames={tuple(entry.clip_frames)}: the labelled synthetic clips have "
                  f"synthetic.clip_frames={entry.synthetic.clip_frames} frames")
  if not entry.learning_rates or min(entry.learning_rates) <= 0:
    errors.append(f"learning_rates={tuple(entry.learning_rates)} must be > 0")
  if not entry.weight_decays or min(entry.weight_decays) < 0:
    errors.append(f"weight_decays={tuple(entry.weight_decays)} must be >= 0")
  if entry.steps < 1 or entry.frames_per_call < 1:
    errors.append("steps and frames_per_call must be >= 1")
  del config
  return errors


def entry_of(config):
  """The config's probe options (`config.evals.probe`; the defaults for a run trained without
  that evaluator), for the tools that probe a checkpoint."""
  entry = config.evals.get("probe")
  if entry is None or entry.get("type") != "probe":
    entry = config.evals.probe = config_defaults.probe_eval_config()
  return entry


def frame_feature(parts: np.ndarray, feature: str) -> np.ndarray:
  """The probe's per-frame feature `feature` (one of FEATURES) from frame_features.PARTS [F, 4, D]."""
  row = {name: parts[:, i] for i, name in enumerate(frame_features.PARTS)}
  if feature == "motion":
    return 0.5 * (row["vocal"] + row["ambient"])
  if feature == "prompts":
    return parts[:, :3].reshape(len(parts), -1)
  if feature == "prompts_patch":
    return parts.reshape(len(parts), -1)
  return row[feature]


class Evaluator:
  """Holds the labelled clips; `run(params, frozen)` -> {"probe/emotion_acc@16": ..., ...}."""

  def __init__(self, entry, config, *, model, clips: dict | None = None, **unused):
    """clips: the options' `input_pipeline.labelled_clips` when already loaded (tools probing
    several encoders at one image size)."""
    del unused  # the audio encoder and held-out sync clips: the probes use neither
    self.c = entry
    self.features_fn = frame_features.frame_features_fn(model)
    self.clips = clips if clips is not None else input_pipeline.labelled_clips(
        config, pattern=entry.pattern, synthetic=entry.synthetic.to_dict())
    # The classes: the prepared dataset's labels.json beside its shards, or the synthetic set's.
    self.labels = labels.read(os.path.dirname(entry.pattern)) if entry.pattern else labels.Labels()

  def extract(self, params) -> dict[str, list[np.ndarray]]:
    """{split: per clip, frame_features.PARTS [N, 4, D]}: every frame through the encoder once."""
    return {split: frame_features.extract(self.features_fn, params, clips, self.c.frames_per_call)
            for split, clips in self.clips.items()}

  def windows(self, features: dict[str, list[np.ndarray]], task: str, length: int):
    """{split: linear_probe.Split} of `task` over the windows of `length` frames."""
    out = {}
    for split, clips in self.clips.items():
      x, y = [], []
      for clip, parts in zip(clips, features[split]):
        frame = frame_feature(parts, self.c.feature)
        for s in range(0, len(frame) - length + 1, length):
          if task == "emotion" and clip["emotion"] >= 0:
            y.append(clip["emotion"])
          elif task == "actions" and clip["actions"] is not None and clip["actions"].shape[1]:
            y.append(clip["actions"][s:s + length].any(0))
          else:
            continue
          x.append(frame[s:s + length].mean(0))
      dim = frame_feature(features[split][0][:1], self.c.feature).shape[1]
      out[split] = linear_probe.Split(np.asarray(x, np.float32).reshape(-1, dim), np.asarray(y))
    return out

  def fit(self, features) -> tuple[dict[str, float], dict]:
    """(metrics, per (task, length) the chosen grid point, validation figures and clip counts)."""
    metrics, details = {}, {}
    for task in self.c.tasks:
      for length in self.c.clip_frames:
        splits = self.windows(features, task, length)
        multi = task == "actions"
        names = self.labels.actions if multi else self.labels.emotions
        num_classes = len(names)
        width = splits["train"].targets.shape[1] if multi and len(splits["train"].targets) else None
        if width not in (None, num_classes):
          raise ValueError(f"probe actions: the records flag {width} actions, the dataset's labels "
                           f"name {num_classes} ({list(names)}; labels.json beside the shards)")
        try:
          result = linear_probe.select(
              splits["train"], splits["validation"], splits["test"], num_classes=num_classes,
              multi_label=multi, learning_rates=tuple(self.c.learning_rates),
              weight_decays=tuple(self.c.weight_decays), steps=self.c.steps)
        except ValueError as e:
          raise ValueError(f"probe {task} at {length} frames: {e}") from e
        for figure in ("acc", "auc"):
          metrics[f"probe/{task}_{figure}@{length}"] = result["test"][figure]
        details[f"{task}@{length}"] = dict(result, classes=list(names))
    return metrics, details

  def run(self, params, frozen) -> dict[str, float]:
    del frozen
    return self.fit(self.extract(params))[0]
