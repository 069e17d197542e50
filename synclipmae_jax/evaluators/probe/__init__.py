"""Linear probes of the frozen encoder (paper 4.2, Table 3, and its appendix): emotion and facial
actions, scored per video.

Labelled videos come split into train / validation / test: by default the labelled synthetic
set (`synthetic_dataset.ensure_labelled_dataset`: speakers no pretraining split holds, each
clip with its emotion and per-frame action flags), or prepared shards (`pattern`) whose
records carry `split`, `emotion` and `actions` (schema.py; a clip without a label is left out
of that task). A video is one labelled record: prepare cuts a source video longer than its
`--max_seconds` (10 s by default) into several records, so prepare CelebV-HQ with a
`--max_seconds` above its longest video to score whole videos. Every frame goes once through
the frozen encoder with all patches visible (`frame_features`: its identity, vocal-motion and
ambient-motion prompts and the mean patch token).

Each video is one sample of each probe, scored as the paper scores it ("video-level Accuracy
and AUC"). For each count in `frames` (the paper's 16 and 80), `sample_indices` draws that
many of the video's frames uniformly over the whole video:
- `protocol="frames"` (the paper's for SyncLipMAE, "frame-averaging models use uniformly
  sampled frames and average per-frame predictions", Korbar et al. 2019): the frames at the
  centres of `frames` equal segments of the video;
- `protocol="clips"` (the paper's for clip-based baselines, "uniformly sample clips ... and
  average their predictions", VideoMAE's multi-clip test): frames / clip_length clips of
  `clip_length` consecutive frames, their starts spread evenly from the first frame to the last
  (the paper's clip counts are lost in our copy of its text; 80 frames as 5 clips of 16 is
  VideoMAE's Kinetics protocol). The encoders here are per-frame: a clip's feature is the mean
  of its frames' features.
A video with fewer frames than a sample needs is sampled with repetition: the same rules, each
of its frames then drawn floor or ceil of (frames / its length) times (a clip longer than the
video: the clip's frames drawn that way from the whole video).

The video's logits are the mean of the linear head's logits over its samples (frames or
clips); the head is linear, so that is the head applied to the mean sampled feature, which is
what the probe trains and scores on (`linear.py`). A video's emotion is its record's; an
action is present in a video when any of its frames shows it (all its frames, sampled or not).
Emotion is scored by accuracy and macro one-vs-rest AUC, actions (multi-label) by accuracy per
action and mean one-vs-rest AUC (`metrics.py`). Each (task, frames) probe is
`linear_probe.select`ed by a grid on validation and reported on test.

Options (`config.evals.<name>`, defaults in `config_defaults.probe_eval_config`): pattern,
synthetic (the labelled set's parameters), frames, protocol, clip_length, tasks, feature,
learning_rates, weight_decays, steps, frames_per_call.
"""

from __future__ import annotations

import os

import numpy as np

from data_pipelines import labels
from synclipmae_jax import config_defaults, frame_features, input_pipeline
from synclipmae_jax.evaluators.probe import linear as linear_probe

TASKS = ("emotion", "actions")
# Per-frame feature of the probe: the paper's mean of the two motion tokens, single prompt
# tokens, the mean patch token, and concatenations.
FEATURES = ("motion", "identity", "vocal", "ambient", "patch_mean", "prompts", "prompts_patch")
# How a video's frames are sampled (module docstring): frame-averaging or clip-based.
PROTOCOLS = ("frames", "clips")


def validate(entry, config) -> list[str]:
  """Problems of a probe evaluator's options (`common.validate` prefixes them)."""
  known = set(config_defaults.probe_eval_config().keys())
  unknown, missing = sorted(set(entry.keys()) - known), sorted(known - set(entry.keys()))
  if unknown or missing:
    renamed = " (clip_frames is now frames: the frames sampled per video)" * (
        "clip_frames" in unknown)
    return [f"options unknown {unknown}, missing {missing}: the options are those of "
            f"config_defaults.probe_eval_config{renamed}"]
  errors = []
  if entry.feature not in FEATURES:
    errors.append(f"feature={entry.feature!r} must be one of {FEATURES}")
  if not entry.tasks or any(t not in TASKS for t in entry.tasks):
    errors.append(f"tasks={tuple(entry.tasks)} must be a non-empty subset of {TASKS}")
  if entry.protocol not in PROTOCOLS:
    errors.append(f"protocol={entry.protocol!r} must be one of {PROTOCOLS}")
  if not entry.frames or min(entry.frames) < 1:
    errors.append(f"frames={tuple(entry.frames)} must be counts >= 1")
  elif entry.clip_length < 1:
    errors.append(f"clip_length={entry.clip_length} must be >= 1")
  elif entry.protocol == "clips" and any(n % entry.clip_length for n in entry.frames):
    errors.append(f"frames={tuple(entry.frames)} must be multiples of clip_length="
                  f"{entry.clip_length} with protocol='clips' (frames / clip_length clips)")
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


def segment_centres(num_frames: int, count: int) -> np.ndarray:
  """`count` frame indices spread uniformly over a video of `num_frames` frames: the centre frame
  of each of `count` equal segments, floor((i + 1/2) num_frames / count) in integers (exact on
  every back end). Increasing; consecutive ones floor or ceil of num_frames / count apart; the
  first within the first segment, the last within the last. With count > num_frames every frame
  appears floor or ceil of count / num_frames times."""
  i = np.arange(count, dtype=np.int64)
  return (2 * i + 1) * num_frames // (2 * count)


def clip_starts(num_frames: int, num_clips: int, clip_length: int) -> np.ndarray:
  """The first frames of `num_clips` clips of `clip_length` frames spread evenly over a video of
  `num_frames >= clip_length` frames: from 0 to num_frames - clip_length (the first clip starts
  at the first frame, the last ends at the last), rounded half up; one clip is centred."""
  span = num_frames - clip_length
  if num_clips == 1:
    return np.array([span // 2], np.int64)
  j = np.arange(num_clips, dtype=np.int64)
  return (2 * j * span + num_clips - 1) // (2 * (num_clips - 1))


def sample_indices(num_frames: int, count: int, protocol: str, clip_length: int) -> np.ndarray:
  """The frames of a video of `num_frames` frames that the probe's `count`-frame sample reads
  (module docstring): [samples, frames per sample] indices, one row per frame ("frames",
  [count, 1]) or per clip ("clips", [count // clip_length, clip_length])."""
  if num_frames < 1:
    raise ValueError("a video needs at least one frame")
  if protocol == "frames":
    return segment_centres(num_frames, count)[:, None]
  if protocol != "clips":
    raise ValueError(f"protocol={protocol!r} must be one of {PROTOCOLS}")
  num_clips = count // clip_length
  if num_frames < clip_length:  # every clip is the whole video, frames repeated
    return np.broadcast_to(segment_centres(num_frames, clip_length), (num_clips, clip_length))
  return clip_starts(num_frames, num_clips, clip_length)[:, None] + np.arange(clip_length)


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
  """Holds the labelled videos; `run(params, frozen)` -> {"probe/emotion_acc@16": ..., ...}."""

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
    """{split: per video, frame_features.PARTS [N, 4, D]}: every frame through the encoder once."""
    return {split: frame_features.extract(self.features_fn, params, clips, self.c.frames_per_call)
            for split, clips in self.clips.items()}

  def videos(self, features: dict[str, list[np.ndarray]], task: str, count: int):
    """{split: linear_probe.Split} of `task`, one sample per labelled video: the mean feature of
    its `count`-frame sample (`sample_indices`) and its label (emotion; actions any frame shows)."""
    out = {}
    for split, clips in self.clips.items():
      x, y = [], []
      for clip, parts in zip(clips, features[split]):
        if task == "emotion" and clip["emotion"] >= 0:
          y.append(clip["emotion"])
        elif task == "actions" and clip["actions"] is not None and clip["actions"].shape[1]:
          y.append(clip["actions"].any(0))
        else:
          continue
        idx = sample_indices(len(parts), count, self.c.protocol, self.c.clip_length)
        # The mean over samples of each sample's mean frame feature: all samples are equally long.
        x.append(frame_feature(parts[idx.reshape(-1)], self.c.feature).mean(0))
      dim = frame_feature(features[split][0][:1], self.c.feature).shape[1]
      out[split] = linear_probe.Split(np.asarray(x, np.float32).reshape(-1, dim), np.asarray(y))
    return out

  def fit(self, features) -> tuple[dict[str, float], dict]:
    """(metrics, per (task, frames) the chosen grid point, validation figures and video counts)."""
    metrics, details = {}, {}
    for task in self.c.tasks:
      for count in self.c.frames:
        splits = self.videos(features, task, count)
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
          raise ValueError(f"probe {task} at {count} frames: {e}") from e
        for figure in ("acc", "auc"):
          metrics[f"probe/{task}_{figure}@{count}"] = result["test"][figure]
        details[f"{task}@{count}"] = dict(result, classes=list(names))
    return metrics, details

  def run(self, params, frozen) -> dict[str, float]:
    del frozen
    return self.fit(self.extract(params))[0]
