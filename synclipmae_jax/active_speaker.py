"""Who speaks in a video with several faces: the active speaker per frame, from each face track's
sync with the audio.

SyncLipMAE's vocal-motion tokens are trained to agree with the audio tokens of the same instant
(paper 3.2, 5): the face whose mouth makes the sound has a distance-vs-lag curve with a clear
minimum, a listener's face (or a face moving with other speech) a flat one. Per frame f and per
face track k measured there, the curve of the window of `window` frames around f (within the
track's measured run: `sync_metrics.window_curves` of its lag-distance matrix) is scored, and the
active speaker of f is the track of highest score when that score is above `min_confidence` and
at least `margin` times every other track's (a lone track, or others scoring <= 0, need no
margin); otherwise nobody is (silence, a speaker off screen, or faces the model cannot tell
apart). Runs of equal decisions make the time line of who speaks.

The decision takes two passes, because a shift of the whole audio track is the same for every
face on screen:
  1. each window's score is its Sync-C, median minus minimum of its curve (SyncNet's confidence
     on our distances); the file's lag L is the minimum of the mean, over the frames that have a
     speaker, of the speaker's lag-distance column there (never an average of every face's
     offset: a listener's curve has no true minimum and would pull the estimate anywhere);
  2. each window's score becomes its curve's median minus its value at L: a listener's minimum,
     taken on noise at whatever lag, no longer counts, only how well a face agrees with the
     audio at the file's lag. Where several faces are measured, the speakers of this pass give
     the reported time line, and the file's curve and lag (as in 1); a lone face keeps pass 1's
     decision (nobody to compare it with: with one face and `min_confidence` 0, every measured
     frame is its, and the file's curve is its mean curve, as for a single-face video).

The scale of the scores depends on the model (read it off videos known to be in sync before
setting `min_confidence`); `margin` is a ratio and does not. The defaults were read off the quick
demo run (configs/demo.py:quick) on synthetic faces of unseen speakers side by side
(tests/test_active_speaker.py): over 1 s windows a listener's curve is as confident as the
speaker's in a quarter of the frames; over 2 s windows, at the file's lag, the speaker's score is
the highest and at least 1.1 times every other's in 98-100 % of them. A longer window decides more
frames, but blurs a change of speaker over half its width on each side (and the audio encoder's
own context, `model.audio.input_context_frames` on each side, blurs it further).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import tempfile

import jax
import numpy as np

from data_pipelines import schema
from data_pipelines.prepare import shards
from synclipmae_jax import checkpointing, sync_metrics, tasks
from synclipmae_jax.evaluators import sync as sync_evaluator
from synclipmae_jax.models import audio_encoder as audio_encoder_lib

NOBODY = -1  # a measured frame where no track is the active speaker
UNMEASURED = -2  # a frame no track measures (no face, or within max_lag of a clip's edge)
REASONS = {NOBODY: "no clear speaker", UNMEASURED: "not measured"}


@dataclasses.dataclass(frozen=True)
class Options:
  """How the active speaker is decided (see the module docstring)."""

  window: int = 50  # frames of the window around each frame (2 s at 25 fps)
  margin: float = 1.1  # the speaker's confidence is at least this many times every other track's
  min_confidence: float = 0.0  # ... and above this (model-dependent scale)

  def __post_init__(self):
    if self.window < 1:
      raise ValueError(f"active speaker window must be >= 1 frame, got {self.window}")
    if self.margin < 1.0:
      raise ValueError(f"active speaker margin must be >= 1 (a ratio of confidences), got "
                       f"{self.margin}")
    if self.min_confidence < 0.0:
      raise ValueError(f"active speaker min_confidence must be >= 0, got {self.min_confidence}")


def file_distances(pieces: list[tuple[int, np.ndarray]], num_frames: int, num_lags: int
                   ) -> np.ndarray:
  """One track's lag-distance columns on the file's frame grid: [num_lags, num_frames] float64,
  NaN where the track measures nothing.

  Args:
    pieces: (file frame of column 0, [num_lags, T] `sync_metrics.lag_distance_matrix`) per clip.
    num_frames: the file's frames.
    num_lags: 2 * max_lag + 1.
  """
  out = np.full((num_lags, num_frames), np.nan)
  for first, dist in pieces:
    dist = np.asarray(dist, np.float64)
    if dist.shape[0] != num_lags or first < 0 or first + dist.shape[1] > num_frames:
      raise ValueError(f"a clip's distances {dist.shape} at frame {first} do not fit "
                       f"[{num_lags}, {num_frames}]")
    out[:, first:first + dist.shape[1]] = dist
  return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
  """[start, stop) of every run of True."""
  edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
  return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def window_scores(dist: np.ndarray, window: int, max_lag: int, at_lag: int | None = None
                  ) -> np.ndarray:
  """[num_frames] score of the window around each frame (NaN where unmeasured): median minus
  minimum of its curve (Sync-C), or, with `at_lag`, median minus its value at that lag.

  The window of frame f is the `window` frames centred on f, moved inside f's measured run
  (a run shorter than `window` is one window)."""
  scores = np.full(dist.shape[1], np.nan)
  for a, b in _runs(np.isfinite(dist).all(axis=0)):
    w = min(window, b - a)
    curves = sync_metrics.window_curves(dist[:, a:b], w, max_lag)
    low = curves.min(axis=0) if at_lag is None else curves[at_lag + max_lag]
    which = np.clip(np.arange(b - a) - w // 2, 0, b - a - w)
    scores[a:b] = (np.median(curves, axis=0) - low)[which]
  return scores


def decide(scores: np.ndarray, options: Options) -> np.ndarray:
  """Per frame, the index of the active track (a row of `scores` [K, F], NaN where a track is
  absent), NOBODY or UNMEASURED."""
  present = np.isfinite(scores).sum(axis=0)
  if not len(scores):
    return np.full(scores.shape[1], UNMEASURED)
  conf = np.where(np.isfinite(scores), scores, -np.inf)
  frames = np.arange(conf.shape[1])
  best = np.argmax(conf, axis=0)
  top = conf[best, frames]
  others = conf.copy()
  others[best, frames] = -np.inf
  second = np.maximum(others.max(axis=0), 0.0)  # a track scoring <= 0 asks for no margin
  clear = (top > options.min_confidence) & (top >= options.margin * second)
  return np.where(present == 0, UNMEASURED, np.where(clear, best, NOBODY))


def _speaker_curve(dists: list[np.ndarray], speakers: np.ndarray, max_lag: int) -> dict | None:
  """The mean lag-distance column of each frame's speaker (`sync_metrics.curve_estimate`, with
  "frames"), or None when no frame has one."""
  speaking = speakers >= 0
  if not speaking.any():
    return None
  columns = np.stack(dists)[speakers[speaking], :, np.flatnonzero(speaking)]  # [n, num_lags]
  return {**sync_metrics.curve_estimate(columns.mean(axis=0), max_lag),
          "frames": int(speaking.sum())}


def timeline(speakers: np.ndarray, names: list) -> list[dict]:
  """Runs of equal decisions: {"start_frame", "stop_frame", "start", "end" (s), "track" (a name
  from `names`, or None), "reason" (None when a track speaks)}."""
  out = []
  edges = np.flatnonzero(np.diff(speakers)) + 1
  bounds = [0, *edges.tolist(), len(speakers)]
  for a, b in zip(bounds[:-1], bounds[1:]):
    code = int(speakers[a])
    out.append({"start_frame": a, "stop_frame": b, "start": a / schema.FPS, "end": b / schema.FPS,
                "track": names[code] if code >= 0 else None, "reason": REASONS.get(code)})
  return out


def analyse(tracks: dict, num_frames: int, max_lag: int, options: Options = Options()) -> dict:
  """The active-speaker analysis of one file.

  Args:
    tracks: {track name: [(file frame of column 0, [2 max_lag + 1, T] lag-distance matrix)]}.
    num_frames: the file's frames.
    max_lag: the lags -max_lag..max_lag of the matrices.
    options: the decision's window, margin and threshold.

  Returns:
    {"speakers": [F] per-frame decision (a row index of `names`, NOBODY, UNMEASURED),
     "names": the track names in row order, "timeline": `timeline`, "tracks": {name: {"frames"
     (measured), "speaking_frames", and its whole curve's "lags", "distance", "estimate",
     "confidence"}}, "file": the curve of the speaker's frames (of pass 2 where several faces
     are measured; `sync_metrics.curve_estimate` fields, "frames": how many), or None when no
     frame has a speaker}.
  """
  names = list(tracks)
  num_lags = 2 * max_lag + 1
  dists = [file_distances(tracks[n], num_frames, num_lags) for n in names]

  def speakers_of(at_lag):
    if not dists:
      return np.full(num_frames, UNMEASURED)
    return decide(np.stack([window_scores(d, options.window, max_lag, at_lag) for d in dists]),
                  options)

  speakers = speakers_of(None)  # pass 1: Sync-C
  file_curve = _speaker_curve(dists, speakers, max_lag)
  several = sum(np.isfinite(d).all(axis=0).astype(int) for d in dists) >= 2 if dists else False
  if file_curve is not None and np.any(several):  # pass 2: at the file's lag
    speakers = np.where(several, speakers_of(file_curve["estimate"]), speakers)
    file_curve = _speaker_curve(dists, speakers, max_lag)
  per_track = {}
  for k, (name, d) in enumerate(zip(names, dists)):
    measured = np.isfinite(d).all(axis=0)
    per_track[name] = {"frames": int(measured.sum()), "speaking_frames": int((speakers == k).sum()),
                       **sync_metrics.curve_estimate(d[:, measured].mean(axis=1), max_lag)}
  return {"speakers": speakers, "names": names, "timeline": timeline(speakers, names),
          "tracks": per_track, "file": file_curve}


class SpeakerModel:
  """A trained run (its config, checkpoint, task model and audio front end) loaded once, that
  gives prepared clips their lag-distance matrices.

  Args:
    workdir: a training run's workdir (a task with a sync evaluation).
    step: its checkpoint (default: the latest).
  """

  def __init__(self, workdir: str, step: int | None = None):
    self.workdir = os.path.abspath(workdir)
    self.config = checkpointing.read_config(workdir)
    self.restored = checkpointing.load(workdir, step)
    self.model = tasks.get(self.config).build_model(self.config)
    self.audio_encoder = audio_encoder_lib.build(self.config.model.audio)

  def clip_distances(self, shard_paths: list[str], num_clips: int
                     ) -> tuple[list[tuple[int, np.ndarray, dict]], int]:
    """Per clip of `shard_paths` (prepared at the model's image size): (its clip_id, its
    [2 max_lag + 1, T - 2 max_lag] `sync_metrics.lag_distance_matrix`, whose column 0 is its
    frame max_lag, and the sync evaluator's whole-clip trial: "estimate", "confidence"), with
    no shift applied; and max_lag (the run's sync evaluator's)."""
    entry = sync_evaluator.entry_of(self.config).copy_and_resolve_references()
    entry.update(max_true_lag=0, trials_per_clip=1, num_clips=num_clips)
    evaluator = sync_evaluator.evaluator_of_run(self.config, entry, shard_paths, model=self.model,
                                                audio_encoder=self.audio_encoder)
    tokens = evaluator.tokens(self.restored.params, self.restored.frozen)
    _, trials = evaluator.metrics(tokens)
    return [(int(evaluator.clips[t["clip"]]["clip_id"]),
             sync_metrics.lag_distance_matrix(audio, vocal, entry.max_lag, evaluator.DISTANCE), t)
            for t, audio, vocal in zip(trials, tokens["audio"], tokens["video"])], entry.max_lag


class ClipFilter:
  """The preparation's multiple_faces=active_speaker (`process.speaker_filter`): of one file's
  clips of every face track, keeps those whose face is the active speaker (`analyse`) in at least
  `min_share` of its measured frames, and says why each other one is not kept.

  Args:
    workdir: the speaker model's run (`SpeakerModel`).
    options: the active speaker's decision.
    min_share: of a clip's measured frames (all but max_lag at each end) its face must speak in.
  """

  def __init__(self, workdir: str, options: Options = Options(), min_share: float = 0.5):
    if not 0.0 < min_share <= 1.0:
      raise ValueError(f"min_share must be in (0, 1], got {min_share}")
    self.run = SpeakerModel(workdir)
    self.options, self.min_share = options, min_share

  def __call__(self, clips: list[schema.Clip], entries: list[dict]) -> list[str | None]:
    size = self.run.config.model.image_size
    with tempfile.TemporaryDirectory() as folder:
      path = os.path.join(folder, "clips" + shards.SUFFIX)
      writer = shards.AtomicShard(path)
      for clip in clips:
        if clip.frames.shape[1:3] != (size, size):  # the crops at the model's image size
          frames = jax.image.resize(clip.frames.astype(np.float32),
                                    (len(clip.frames), size, size, 3), "linear")
          clip = dataclasses.replace(clip, frames=np.asarray(
              np.clip(np.round(frames), 0, 255), np.uint8))
        writer.write(clip, "png")
      writer.commit()
      measured, max_lag = self.run.clip_distances([path], len(clips))
    by_id = {e["clip_id"]: e for e in entries}
    pieces = collections.defaultdict(list)
    for clip_id, dist, _ in measured:
      entry = by_id[clip_id]
      pieces[entry["track"]].append((round(entry["start"] * schema.FPS) + max_lag, dist))
    num_frames = max(round(e["end"] * schema.FPS) for e in entries)
    analysis = analyse(dict(pieces), num_frames, max_lag, self.options)
    reasons = []
    for entry in entries:
      k = analysis["names"].index(entry["track"])
      said = analysis["speakers"][round(entry["start"] * schema.FPS) + max_lag:
                                  round(entry["end"] * schema.FPS) - max_lag]
      share = float(np.mean(said == k))
      if share >= self.min_share:
        reasons.append(None)
        continue
      others = collections.Counter(analysis["names"][c] for c in said if c >= 0 and c != k)
      reasons.append(
          f"face track {entry['track']} is the active speaker in {share:.0%} of its measured "
          f"frames (< {self.min_share:.0%}); " + (", ".join(
              f"track {name} in {n / len(said):.0%}" for name, n in others.most_common())
              or "no other track") + f" (speaker model {self.run.workdir})")
    return reasons


def define_flags(flags) -> None:
  """--speaker_window, --speaker_margin, --speaker_min_confidence (absl flags) of the tools that
  measure raw videos (fix-sync, sync-eval --videos)."""
  d = Options
  flags.DEFINE_integer("speaker_window", d.window, "Frames of the window the active speaker of "
                       "each frame is decided on.")
  flags.DEFINE_float("speaker_margin", d.margin, "The active speaker's sync confidence is at "
                     "least this many times every other face's.")
  flags.DEFINE_float("speaker_min_confidence", d.min_confidence, "... and above this "
                     "(model-dependent scale); below it a frame has no speaker.")


def options_from_flags(flags_) -> Options:
  return Options(window=flags_.speaker_window, margin=flags_.speaker_margin,
                 min_confidence=flags_.speaker_min_confidence)
