r"""Audio-video drift of a video file, measured with a trained checkpoint, and its correction:
`synclipmae-fix-sync`.

  synclipmae-fix-sync --workdir=workdirs/demo --video=talk.mp4                 # report only
  synclipmae-fix-sync --workdir=workdirs/demo --video=talk.mp4 --out=fixed.mp4 --min_confidence=0.02
  synclipmae-fix-sync --workdir=W --video=crop.mp4 --detector=whole_frame --crop_margin=0  # face crops

The video goes through the training data's own preparation (`data_pipelines.prepare`: decoding by
timestamps at 25 fps and 16 kHz, face detection and tracking, crops at the model's image size) into
a working folder, every face track that passes the size and duration thresholds becoming clips of
its own (`--multiple_faces=each`); the run's sync evaluator (`evaluators/sync.py`, no shift
applied) gives each clip's frames their audio-vs-vocal-token distance at every lag
-max_lag..max_lag. `active_speaker.analyse` then decides, frame by frame (a 2 s window), which
track is the active speaker (the clearest sync, by a margin) or nobody, and the video's curve is
the mean distance over the frames that have a speaker, taken on that speaker's face: a shift of
the audio track is the same for every face, and a listener's face has no true minimum. Its
minimum is the estimated lag L (> 0: the video lags the audio, i.e. the sound comes L frames
early) and median - minimum its confidence. The report also gives every track (its box, its share
of the video, its own curve, lag and confidence, the frames it speaks) and the time line of who
speaks. With one face, every measured frame with a confidence above --speaker_min_confidence is
that face's. With --out, and a confidence of at least --min_confidence, the
corrected copy delays the audio by L frames (`encode.remux(keep_duration=True)`: audio timestamps
moved, packets outside the video dropped; the video stream copied bit for bit, the duration kept).
A file that cannot be prepared (unreadable, no audio, no usable face track), with no active speaker
in any frame, or an estimate below the confidence threshold ends with a message and writes no
file.

The confidence's scale depends on the model: read it off the report of videos known to be in sync
before choosing --min_confidence.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import numpy as np

from data_pipelines import schema
from data_pipelines.prepare import encode, face_detector, prepare, process, report, segments
from synclipmae_jax import active_speaker, checkpointing, command_line


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
    speaker: how the active speaker is decided (`active_speaker.Options`).
  """

  def __init__(self, workdir: str, step: int | None = None, *,
               detector: str = face_detector.DEFAULT, margin: float | None = None,
               speaker: active_speaker.Options = active_speaker.Options()):
    self.workdir = os.path.abspath(workdir)
    self.config = checkpointing.read_config(workdir)
    self.detector = detector
    self.speaker = speaker
    self.options = process.PrepareOptions(
        image_size=self.config.model.image_size,
        segment=segments.SegmentOptions(multiple_faces="each"),  # every face track is measured
        **({} if margin is None else {"margin": margin}))
    self.run = active_speaker.SpeakerModel(workdir, step)

  def __call__(self, video: str, folder: str | None = None) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
      folder = folder or scratch
      try:
        shards, num_clips = prepare.prepare_video(video, folder, self.options, self.detector)
      except prepare.NothingKept as e:
        raise NotEstimated(str(e)) from None
      kept, num_frames = _prepared(folder)
      measured, s = self.run.clip_distances(shards, num_clips)
      clips, pieces = [], {}
      for clip_id, dist, t in measured:
        clip = kept[clip_id]
        first = round(clip["start"] * schema.FPS)
        pieces.setdefault(clip["track"], []).append((first + s, dist))
        clips.append({"frames": clip["num_frames"], "track": clip["track"], "start": clip["start"],
                      "end": clip["end"], "lag_frames": t["estimate"],
                      "confidence": t["confidence"]})
    analysis = active_speaker.analyse(pieces, num_frames, s, self.speaker)
    if analysis["file"] is None:
      raise NotEstimated(
          f"{video}: no active speaker in any frame (no track's sync confidence is above "
          f"{self.speaker.min_confidence:g} and {self.speaker.margin:g} times the others'): "
          f"{len(pieces)} face track(s) measured, no file was written")
    video_curve = analysis["file"]
    lag = video_curve["estimate"]
    return {
        "video": os.path.abspath(video), "workdir": self.workdir, "step": self.run.restored.step,
        "lag_frames": lag, "lag_ms": lag * 1000.0 / schema.FPS,
        "confidence": video_curve["confidence"], "lags": video_curve["lags"],
        "distance": video_curve["distance"], "num_frames": num_frames,
        "speaking_frames": video_curve["frames"], "clips": clips,
        "tracks": _tracks(analysis, kept, num_frames),
        "speakers": analysis["timeline"], "speaker_options": dataclasses.asdict(self.speaker),
        "sign": "lag > 0: the video lags the audio (the sound comes early); the fix delays the audio",
    }


def _prepared(folder: str) -> tuple[dict[int, dict], int]:
  """The kept clips of a `prepare_video` folder by clip id, and the video's number of frames."""
  with open(os.path.join(folder, report.MANIFEST)) as f:
    kept = {c["clip_id"]: c for c in map(json.loads, filter(str.strip, f))}
  with open(os.path.join(folder, report.SUMMARY)) as f:
    num_frames = round(json.load(f)["hours_decoded"] * 3600 * schema.FPS)
  return kept, num_frames


def _tracks(analysis: dict, kept: dict[int, dict], num_frames: int) -> list[dict]:
  """Per face track: its box (median of its clips', source pixels), its share of the video (its
  clips' frames), its own curve, lag and confidence, and the share of the video it speaks in."""
  out = []
  for name in analysis["names"]:
    mine = [c for c in kept.values() if c["track"] == name]
    frames = sum(c["num_frames"] for c in mine)
    t = analysis["tracks"][name]
    out.append({
        "track": name, "face_box": np.median([c["face_box"] for c in mine], axis=0).tolist(),
        "frames": frames, "share": frames / num_frames, "measured_frames": t["frames"],
        "speaking_frames": t["speaking_frames"], "speaking_share": t["speaking_frames"] / num_frames,
        "lag_frames": t["estimate"], "lag_ms": t["estimate"] * 1000.0 / schema.FPS,
        "confidence": t["confidence"], "lags": t["lags"], "distance": t["distance"]})
  return out


def write_corrected(video: str, out: str, report: dict, min_confidence: float) -> None:
  """Writes the corrected copy, or raises NotEstimated (and writes nothing) below the threshold."""
  if report["confidence"] < min_confidence:
    raise NotEstimated(
        f"{video}: confidence {report['confidence']:.4f} is below --min_confidence={min_confidence}; "
        f"the estimate ({report['lag_frames']:+d} frames, {report['lag_ms']:+.0f} ms) is not trusted "
        "and no file was written")
  encode.remux(video, out, audio_shift=report["lag_frames"] / schema.FPS, keep_duration=True)


def tracks_summary(result: dict) -> str:
  """Every face track of a report (box, share, own lag and confidence, speaking share) and the
  time line of who speaks, as text lines."""
  lines = [f"  track {t['track']}: box {' '.join(f'{v:.0f}' for v in t['face_box'])}, "
           f"{t['share']:.0%} of the video, own lag {t['lag_frames']:+d} frames, confidence "
           f"{t['confidence']:.4f}, speaks in {t['speaking_share']:.0%}" for t in result["tracks"]]
  lines += ["  who speaks: " + ", ".join(
      f"{s['start']:.2f}-{s['end']:.2f} s " + (f"track {s['track']}" if s["track"] is not None
                                             else f"nobody ({s['reason']})")
      for s in result["speakers"])]
  return "\n".join(lines)


def main(flags_) -> None:
  estimator = Estimator(flags_.workdir, flags_.step, detector=flags_.detector,
                        margin=flags_.crop_margin,
                        speaker=active_speaker.options_from_flags(flags_))
  result = estimator(flags_.video)
  print(f"{flags_.video}: lag {result['lag_frames']:+d} frames ({result['lag_ms']:+.0f} ms; > 0: the "
        f"video lags the audio), confidence {result['confidence']:.4f}")
  print(tracks_summary(result))
  if flags_.report:
    with open(flags_.report, "w") as f:
      json.dump(result, f, indent=1)
  if flags_.out:
    write_corrected(flags_.video, flags_.out, result, flags_.min_confidence)
    print(f"wrote {flags_.out}: audio delayed by {result['lag_ms']:+.0f} ms, video stream copied")


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
  active_speaker.define_flags(flags)
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
