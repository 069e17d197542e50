"""From scenes and face tracks to clips: which frame ranges are kept, and why the others are not.

Inside each scene every frame gets an owner: the one face track large enough to keep, or
a reason why there is none (no face, a face too small, several faces). Runs of frames with
the same owning track become segments, which are cut into clips of at most `max_frames`
(equal parts) and kept when they have at least `min_frames` frames and their audio is
not silent. Every frame range that is not kept is reported with its reason.

Several faces: "reject" drops the frames where two or more kept-size faces are tracked at
once (the default: who speaks is unknown), "largest" keeps the largest face there, and
"each" makes a clip of every face track (SyncNet's choice; an active-speaker filter such
as a SyncNet confidence threshold should then follow: a listener's face is otherwise paired
with another person's speech). "active_speaker" segments as "each", and the preparation keeps
only the clips whose face `speaker_model` finds speaking (`process.speaker_filter`). Two
overlapping tracks are two faces only when they are comparable (`weaker_face`): both detected
in at least `second_face_min_frames` frames, confidences within `second_face_score_ratio` and
sizes within `second_face_size_ratio` of each other; otherwise the weaker is ignored (a detector's hits on posters, patterns or background
objects), as tracks shorter than `min_track_frames` are, and tracks whose landmarks lack a
face's geometry (`Track.not_face`: clasped hands) are ignored altogether (the preparation
reports them as not faces).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from data_pipelines import schema
from data_pipelines.prepare import rejects
from data_pipelines.prepare import tracking

MULTIPLE_FACES = ("reject", "largest", "each", "active_speaker")
_NONE, _SEVERAL, _SMALL = -1, -2, -3  # owner codes of frames that have no kept face


@dataclasses.dataclass(frozen=True)
class SegmentOptions:
  """Thresholds of the segmentation (frames are 25 fps frames)."""

  min_frames: int = 50  # 2 s
  max_frames: int = 250  # 10 s: longer segments are cut into equal clips
  min_face_size: float = 64.0  # pixels of the source frame, smaller side of the face box
  min_track_frames: int = 5  # shorter tracks are detector noise and ignored
  multiple_faces: str = "reject"
  speaker_model: str = ""  # the run that decides the active speaker (multiple_faces=active_speaker)
  second_face_min_frames: int = 25  # a second face is detected in at least this many frames
  second_face_size_ratio: float = 0.5  # ... is at least this fraction of the largest face's size
  second_face_score_ratio: float = 0.9  # ... and of its median detector confidence
  silence_db: float = -40.0  # a 40 ms frame is active when its RMS exceeds this (dBFS)
  min_active: float = 0.2  # a clip with fewer active frames than this fraction is silence

  def __post_init__(self):
    if not 1 <= self.min_frames <= self.max_frames:
      raise ValueError(f"need 1 <= min_frames <= max_frames, got {self.min_frames}, "
                       f"{self.max_frames}")
    if self.multiple_faces not in MULTIPLE_FACES:
      raise ValueError(f"multiple_faces must be one of {MULTIPLE_FACES}, got "
                       f"{self.multiple_faces!r}")
    if (self.multiple_faces == "active_speaker") != bool(self.speaker_model):
      raise ValueError("multiple_faces='active_speaker' needs a speaker_model (a SyncLipMAE run's "
                       "workdir), and a speaker_model is only used with it; got "
                       f"{self.multiple_faces!r}, {self.speaker_model!r}")
    if not 0.0 <= self.min_active <= 1.0:
      raise ValueError(f"min_active must be in [0, 1], got {self.min_active}")
    if self.second_face_min_frames < 1:
      raise ValueError(f"second_face_min_frames must be >= 1, got {self.second_face_min_frames}")
    for name in ("second_face_size_ratio", "second_face_score_ratio"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class Segment:
  """Frames [start, stop) of a file: a clip to keep (reason None) or a rejected range."""

  start: int
  stop: int
  track: tracking.Track | None = None
  reason: str | None = None
  detail: str = ""

  @property
  def num_frames(self) -> int:
    return self.stop - self.start


def _runs(codes: np.ndarray) -> list[tuple[int, int, int]]:
  """(start, stop, code) of every run of equal values."""
  edges = np.flatnonzero(np.diff(codes)) + 1
  bounds = [0, *edges.tolist(), len(codes)]
  return [(a, b, int(codes[a])) for a, b in zip(bounds[:-1], bounds[1:])]


def weaker_face(a: tracking.Track, b: tracking.Track, options: SegmentOptions
                ) -> tracking.Track | None:
  """Of two tracks that overlap in time, the one that is not a face beside the other (None when
  both are: two speakers). In order: a track detected in fewer than `second_face_min_frames`
  frames; the less confident when the confidences are not within `second_face_score_ratio` (a
  detector's big, unsure box on the background loses to the face); the smaller when the sizes are
  not within `second_face_size_ratio`."""
  for t, other in ((a, b), (b, a)):
    if int(t.detected.sum()) < options.second_face_min_frames <= int(other.detected.sum()):
      return t
  if min(a.score, b.score) < options.second_face_score_ratio * max(a.score, b.score):
    return min((a, b), key=lambda t: t.score)
  if min(a.size, b.size) < options.second_face_size_ratio * max(a.size, b.size):
    return min((a, b), key=lambda t: t.size)
  return None


def _credible(big: list[tracking.Track], options: SegmentOptions) -> list[tracking.Track]:
  """`big` without every track that is the weaker of a pair overlapping in time."""
  weaker = set()
  for i, a in enumerate(big):
    for b in big[i + 1:]:
      if a.start < b.stop and b.start < a.stop:
        loser = weaker_face(a, b, options)
        if loser is not None:
          weaker.add(id(loser))
  return [t for t in big if id(t) not in weaker]


def _evidence(faces: list[tracking.Track]) -> str:
  return "; ".join(f"{t.size:.0f} px, confidence {t.score:.2f}, detected in {int(t.detected.sum())} "
                   f"of frames {t.start}-{t.stop - 1}" for t in sorted(faces, key=lambda t: -t.size))


def scene_segments(start: int, stop: int, tracks: list[tracking.Track],
                   options: SegmentOptions) -> list[Segment]:
  """Kept face segments (not yet cut to length) and rejected ranges of one scene."""
  tracks = [t for t in tracks if len(t.boxes) >= options.min_track_frames and t.not_face is None]
  big = _credible([t for t in tracks if t.size >= options.min_face_size], options)
  n = stop - start
  covered_big = np.zeros((len(big), n), bool)
  for i, t in enumerate(big):
    covered_big[i, t.start - start:t.stop - start] = True
  covered_small = np.zeros(n, bool)
  small_sizes = []
  for t in tracks:
    if t.size < options.min_face_size:
      covered_small[t.start - start:t.stop - start] = True
      small_sizes.append(t.size)
  codes = np.where(covered_small, _SMALL, _NONE)
  count = covered_big.sum(axis=0)
  if options.multiple_faces == "largest" and big:
    sizes = np.array([t.size for t in big])
    largest = np.argmax(np.where(covered_big, sizes[:, None], -1.0), axis=0)
    codes = np.where(count > 0, largest, codes)
  elif options.multiple_faces in ("each", "active_speaker") and big:
    codes = np.where(count > 0, len(big), codes)  # covered: each track is a segment below
  else:
    codes = np.where(count == 1, np.argmax(covered_big, axis=0) if big else 0, codes)
    codes = np.where(count > 1, _SEVERAL, codes)
  segments = []
  for a, b, code in _runs(codes):
    if code == _NONE:
      segments.append(Segment(start + a, start + b, reason=rejects.NO_FACE,
                              detail=f"no face tracked over {b - a} frames"))
    elif code == _SMALL:
      detail = f"face {min(small_sizes):.0f} px < {options.min_face_size:.0f} px"
      segments.append(Segment(start + a, start + b, reason=rejects.FACE_TOO_SMALL, detail=detail))
    elif code == _SEVERAL:
      faces = [t for i, t in enumerate(big) if covered_big[i, a:b].any()]
      segments.append(Segment(start + a, start + b, reason=rejects.SEVERAL_FACES,
                              detail=f"{int(count[a:b].max())} faces: {_evidence(faces)}"))
    elif code == len(big):  # "each", "active_speaker"
      continue
    else:
      segments.append(Segment(start + a, start + b, track=big[code]))
  if options.multiple_faces in ("each", "active_speaker"):
    segments.extend(Segment(t.start, t.stop, track=t) for t in big)
  return sorted(segments, key=lambda s: (s.start, s.stop))


def active_fraction(audio: np.ndarray, silence_db: float) -> float:
  """Fraction of 40 ms frames (640 samples) of float audio whose RMS exceeds `silence_db`."""
  frames = audio.reshape(-1, schema.SAMPLES_PER_FRAME).astype(np.float64)
  rms_db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-20)
  return float(np.mean(rms_db > silence_db))


def cut_clips(segments: list[Segment], audio: np.ndarray, options: SegmentOptions
              ) -> list[Segment]:
  """Cuts kept segments into clips of at most max_frames and rejects the short or silent ones.

  A segment longer than max_frames becomes equal parts when they can all be at least
  min_frames long, else clips of max_frames and a remainder (rejected if too short).

  Args:
    segments: from `scene_segments`; rejected ones pass through unchanged.
    audio: the file's float audio [640 * num_frames].
    options: thresholds.
  """
  spf = schema.SAMPLES_PER_FRAME
  result = []
  for s in segments:
    if s.reason is not None:
      result.append(s)
      continue
    if s.num_frames < options.min_frames:
      result.append(dataclasses.replace(
          s, track=None, reason=rejects.TOO_SHORT,
          detail=f"{s.num_frames} frames < {options.min_frames}"))
      continue
    parts = math.ceil(s.num_frames / options.max_frames)
    if parts <= s.num_frames // options.min_frames:  # equal parts, each in [min, max]
      bounds = np.linspace(s.start, s.stop, parts + 1).round().astype(int)
    else:  # equal parts would all be too short: full-length clips, the rest rejected
      bounds = np.append(np.arange(s.start, s.stop, options.max_frames), s.stop)
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
      piece = dataclasses.replace(s, start=a, stop=b)
      active = active_fraction(audio[spf * a:spf * b], options.silence_db)
      if b - a < options.min_frames:
        piece = dataclasses.replace(piece, track=None, reason=rejects.TOO_SHORT,
                                    detail=f"{b - a} frames < {options.min_frames}")
      elif active < options.min_active:
        piece = dataclasses.replace(
            piece, track=None, reason=rejects.SILENCE,
            detail=f"{active:.0%} of frames above {options.silence_db:g} dBFS")
      result.append(piece)
  return result
