r"""Audio-video drift of a video file, measured with a trained checkpoint, and its correction:
`synclipmae-fix-sync`.

  synclipmae-fix-sync --workdir=workdirs/demo --video=talk.mp4                 # report only
  synclipmae-fix-sync --workdir=workdirs/demo --video=talk.mp4 --out=fixed.mp4 --min_confidence=0.02
  synclipmae-fix-sync --workdir=W --video=crop.mp4 --detector=whole_frame --crop_margin=0  # face crops

The video goes through the training data's own preparation (`data_pipelines.prepare`: decoding by
timestamps at 25 fps and 16 kHz, face detection and tracking, crops at the model's image size) into
a working folder; the run's sync evaluator (`evaluators/sync.py`, no shift applied) gives each
prepared clip its distance-vs-lag curve (audio tokens against vocal-motion tokens, lags
-max_lag..max_lag); the frame-weighted mean curve of the clips is the video's. Its minimum is the
estimated lag L (> 0: the video lags the audio, i.e. the sound comes L frames early) and
median - minimum its confidence. With --out, and a confidence of at least --min_confidence, the
corrected copy delays the audio by L frames (`encode.remux(keep_duration=True)`: audio timestamps
moved, packets outside the video dropped; the video stream copied bit for bit, the duration kept).
A file that cannot be prepared (unreadable, no audio, no usable face track) or an estimate below
the confidence threshold ends with a message and writes no file.

The confidence's scale depends on the model: read it off the report of videos known to be in sync
before choosing --min_confidence.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from data_pipelines import schema
from data_pipelines.prepare import encode, face_detector, prepare, process
from synclipmae_jax import checkpointing, command_line, sync_metrics, tasks
from synclipmae_jax.evaluators import sync as sync_evaluator
from synclipmae_jax.models import audio_encoder as audio_encoder_lib


class NotEstimated(ValueError):
  """The video could not be measured or corrected (the message says why)."""


class Estimator:
  """A checkpoint loaded once; `estimator(video)` -> the drift report of one video file.

  Args:
    workdir: a training run's workdir.
    step: its checkpoint (default: the latest).
    detector: the preparation's face detector (`face_detector.load_detector`): "mtcnn", or
      "whole_frame" for videos that are face crops already.
    margin: the preparation's crop margin (default `process.PrepareOptions`'); with
      "whole_frame", 0 keeps the frames as they are.
  """

  def __init__(self, workdir: str, step: int | None = None, *,
               detector: str = face_detector.DEFAULT, margin: float | None = None):
    self.workdir = os.path.abspath(workdir)
    self.config = checkpointing.read_config(workdir)
    self.detector = detector
    self.options = process.PrepareOptions(image_size=self.config.model.image_size,
                                          **({} if margin is None else {"margin": margin}))
    self.restored = checkpointing.load(workdir, step)
    self.model = tasks.get(self.config).build_model(self.config)
    self.audio_encoder = audio_encoder_lib.build(self.config.model.audio)

  def __call__(self, video: str, folder: str | None = None) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
      try:
        shards, num_clips = prepare.prepare_video(video, folder or scratch, self.options,
                                                  self.detector)
      except prepare.NothingKept as e:
        raise NotEstimated(str(e)) from None
      entry = sync_evaluator.entry_of(self.config).copy_and_resolve_references()
      entry.update(max_true_lag=0, trials_per_clip=1, num_clips=num_clips)
      evaluator = sync_evaluator.evaluator_of_run(self.config, entry, shards, model=self.model,
                                                  audio_encoder=self.audio_encoder)
      _, trials = evaluator.evaluate(self.restored.params, self.restored.frozen)
      weights = np.array([len(evaluator.clips[t["clip"]]["frames"]) for t in trials], np.float64)
    curves = np.array([t["distance"] for t in trials])
    video_curve = sync_metrics.curve_estimate((weights[:, None] * curves).sum(0) / weights.sum(),
                                              entry.max_lag)
    lag = video_curve["estimate"]
    return {
        "video": os.path.abspath(video), "workdir": self.workdir, "step": self.restored.step,
        "lag_frames": lag, "lag_ms": lag * 1000.0 / schema.FPS,
        "confidence": video_curve["confidence"], "lags": video_curve["lags"],
        "distance": video_curve["distance"],
        "clips": [{"frames": int(w), "lag_frames": t["estimate"], "confidence": t["confidence"]}
                  for w, t in zip(weights, trials)],
        "sign": "lag > 0: the video lags the audio (the sound comes early); the fix delays the audio",
    }


def write_corrected(video: str, out: str, report: dict, min_confidence: float) -> None:
  """Writes the corrected copy, or raises NotEstimated (and writes nothing) below the threshold."""
  if report["confidence"] < min_confidence:
    raise NotEstimated(
        f"{video}: confidence {report['confidence']:.4f} is below --min_confidence={min_confidence}; "
        f"the estimate ({report['lag_frames']:+d} frames, {report['lag_ms']:+.0f} ms) is not trusted "
        "and no file was written")
  encode.remux(video, out, audio_shift=report["lag_frames"] / schema.FPS, keep_duration=True)


def main(flags_) -> None:
  estimator = Estimator(flags_.workdir, flags_.step, detector=flags_.detector,
                        margin=flags_.crop_margin)
  report = estimator(flags_.video)
  print(f"{flags_.video}: lag {report['lag_frames']:+d} frames ({report['lag_ms']:+.0f} ms; > 0: the "
        f"video lags the audio), confidence {report['confidence']:.4f}")
  if flags_.report:
    with open(flags_.report, "w") as f:
      json.dump(report, f, indent=1)
  if flags_.out:
    write_corrected(flags_.video, flags_.out, report, flags_.min_confidence)
    print(f"wrote {flags_.out}: audio delayed by {report['lag_ms']:+.0f} ms, video stream copied")


def run() -> None:
  """Command line (`python -m synclipmae_jax.tools.fix_sync`, console script `synclipmae-fix-sync`)."""
  from absl import flags  # pylint: disable=import-outside-toplevel

  flags.DEFINE_string("workdir", None, "A training run's workdir (config.json and checkpoints/).")
  flags.DEFINE_string("video", None, "The video file to measure.")
  flags.DEFINE_integer("step", None, "The checkpoint (default: the latest).")
  flags.DEFINE_string("out", "", "Write the corrected copy here (only when confident enough).")
  flags.DEFINE_float("min_confidence", 0.02, "Confidence (median - min of the distance curve) "
                     "needed to write --out; model-dependent.")
  flags.DEFINE_string("report", "", "Write the JSON report here.")
  prepare.define_video_preparation_flags(flags)
  flags.mark_flags_as_required(["workdir", "video"])

  def entry(argv):
    del argv
    try:
      main(flags.FLAGS)
    except NotEstimated as e:
      raise SystemExit(f"synclipmae-fix-sync: {e}") from None

  command_line.run(entry, __name__)


if __name__ == "__main__":
  run()
