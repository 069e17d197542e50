"""One source video -> schema clips and the report of what was rejected.

Two passes over the video keep memory bounded whatever its length:
1. decode at the detector's resolution: face detection (batched), scene-cut thumbnails;
   then the audio, scene cuts, face tracks and segments (`segments`).
2. decode again at full resolution and crop only the frames of the kept clips; each clip
   is handed to `write` as soon as its last frame is cropped.
CPU seconds are counted per stage (decode, detect, crop, encode) for the benchmarks.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import os
import time
import traceback
from collections.abc import Callable

import numpy as np

from data_pipelines import schema
from data_pipelines.prepare import crop
from data_pipelines.prepare import decode
from data_pipelines.prepare import face_detector
from data_pipelines.prepare import rejects
from data_pipelines.prepare import scenes
from data_pipelines.prepare import segments
from data_pipelines.prepare import tracking

MAX_CLIPS_PER_FILE = 1024  # clip ids are file_index * MAX_CLIPS_PER_FILE + clip number
_TRUNCATION_SLACK = 0.5  # seconds of video a container may announce beyond its last frame


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
  """How clips are made (the CLI's flags)."""

  image_size: int = 224  # output crops are image_size x image_size
  margin: float = 0.2  # crop side = (1 + 2 margin) x the face box's longer side
  image_format: str = "jpeg"  # of the frames in the records ("jpeg" q95 or "png")
  detect_size: int = 224  # frames reach the detector with this shorter side (or smaller)
  detect_batch: int = 32  # frames per detector call
  segment: segments.SegmentOptions = segments.SegmentOptions()

  def __post_init__(self):
    if self.image_size < 8:
      raise ValueError(f"image_size must be >= 8, got {self.image_size}")
    if self.image_format not in ("jpeg", "png"):
      raise ValueError(f"image_format must be 'jpeg' or 'png', got {self.image_format!r}")
    if self.detect_size < 32 or self.detect_batch < 1:
      raise ValueError(f"need detect_size >= 32 and detect_batch >= 1, got {self.detect_size}, "
                       f"{self.detect_batch}")


@dataclasses.dataclass(frozen=True)
class Source:
  """One input video and its labels (a manifest row)."""

  path: str
  speaker: str
  identity_id: int
  split: str
  file_index: int  # position in the plan: clip ids derive from it
  transcript: str = ""
  emotion: int = -1
  actions: tuple[int, ...] = ()  # one 0/1 flag per action of the run's labels; () = unknown


@dataclasses.dataclass
class FileReport:
  """What became of one source: kept clips, rejected ranges, CPU seconds per stage."""

  source: Source
  num_frames: int = 0
  kept: list[dict] = dataclasses.field(default_factory=list)
  rejected: list[dict] = dataclasses.field(default_factory=list)
  cpu: dict[str, float] = dataclasses.field(
      default_factory=lambda: collections.defaultdict(float))
  detection_rate: float = 0.0  # fraction of frames where the detector found a face
  not_faces: list[dict] = dataclasses.field(default_factory=list)  # tracks that are not faces
  media: dict = dataclasses.field(default_factory=dict)

  def not_a_face(self, track: tracking.Track):
    """Reports a track the preparation ignored because its landmarks are not a face's
    (`tracking.Track.not_face`): its frames, median box (source pixels) and confidence."""
    box = np.median(track.boxes[track.detected], axis=0)
    self.not_faces.append({
        "path": self.source.path, "start": track.start / schema.FPS, "end": track.stop / schema.FPS,
        "box": [round(float(v), 1) for v in box], "confidence": round(track.score, 3),
        "detail": track.not_face})

  def reject(self, start: int, stop: int | None, reason: str, detail: str = ""):
    self.rejected.append({
        "path": self.source.path, "start": start / schema.FPS,
        "end": None if stop is None else stop / schema.FPS, "reason": reason, "detail": detail})


class _Clock:
  """Adds the CPU time of a `with` block to report.cpu[stage]."""

  def __init__(self, report: FileReport, stage: str):
    self.report, self.stage = report, stage

  def __enter__(self):
    self.t = time.process_time()

  def __exit__(self, *exc):
    self.report.cpu[self.stage] += time.process_time() - self.t


def _detect(source: Source, info: decode.MediaInfo, detector: face_detector.FaceDetector,
            options: PrepareOptions, report: FileReport, errors: list[str]
            ) -> tuple[list[list[face_detector.Face]], np.ndarray]:
  """Pass 1: faces (in source pixels) and scene thumbnails of every 25 fps frame."""
  scale = min(1.0, options.detect_size / min(info.width, info.height))
  size = (max(1, round(info.width * scale)), max(1, round(info.height * scale)))
  faces, thumbs, batch = [], [], []

  def flush():
    with _Clock(report, "detect"):
      found = detector.detect(batch)
    if len(found) != len(batch):  # a plugged-in detector: never shift faces against frames
      raise RuntimeError(f"the detector returned {len(found)} results for {len(batch)} images")
    faces.extend([f.scaled(1 / scale) for f in image_faces] for image_faces in found)
    batch.clear()

  frames = decode.iter_frames(source.path, info.rotation, size, errors)
  while True:
    with _Clock(report, "decode"):
      image = next(frames, None)
      if image is not None:
        thumbs.append(scenes.thumbnail(image))
    if image is None:
      break
    batch.append(image)
    if len(batch) == options.detect_batch:
      flush()
  if batch:
    flush()
  return faces, np.stack(thumbs) if thumbs else np.zeros((0, 1, 1), np.float32)


def track_video(path: str, detector: face_detector.FaceDetector,
                options: PrepareOptions = PrepareOptions()) -> tuple[int, list[tracking.Track]]:
  """The preparation's pass 1 on one video, for tools that work on a single video
  (synclipmae-dub): frames decoded at the detection size, detected, tracked over the whole video
  (no scene cuts). Returns (number of 25 fps frames, face tracks in source pixels)."""
  report = FileReport(Source(path=path, speaker="", identity_id=0, split="train", file_index=0))
  faces, _ = _detect(report.source, decode.probe(path), detector, options, report, [])
  return len(faces), tracking.track_faces(faces, 0, len(faces))


def prepare_file(source: Source, detector: face_detector.FaceDetector, options: PrepareOptions,
                 write: Callable[[schema.Clip], None]) -> FileReport:
  """Prepares one video: every kept clip goes to `write`; returns the report.

  Never raises for a bad input: a file that cannot be used is reported with its reason
  (an unexpected exception too, as ERROR, keeping the clips already written). A failure of
  the machine (`rejects.is_infrastructure_failure`: out of memory, a full or failing disk)
  is raised: the run stops with it and a resume retries the file.
  """
  report = FileReport(source)
  try:
    _prepare(source, detector, options, write, report)
  except rejects.Rejected as e:
    report.reject(0, None, e.reason, e.detail)
  except Exception as e:  # pylint: disable=broad-except
    if rejects.is_infrastructure_failure(e):
      raise
    # A bug met on one input must not stop the run: report it with where it happened.
    where = traceback.extract_tb(e.__traceback__)[-1]
    report.reject(0, None, rejects.ERROR,
                  f"{type(e).__name__}: {e} ({os.path.basename(where.filename)}:{where.lineno})")
  return report


def _prepare(source: Source, detector: face_detector.FaceDetector, options: PrepareOptions,
             write: Callable[[schema.Clip], None], report: FileReport) -> None:
  seg = options.segment
  with _Clock(report, "decode"):
    info = decode.probe(source.path)
  report.media = {"width": info.width, "height": info.height, "rotation": info.rotation,
                  "video_codec": info.video_codec, "audio_codec": info.audio_codec,
                  "fps": round(info.average_fps, 3), "sample_rate": info.sample_rate,
                  "channels": info.channels}
  video_errors, audio_errors = [], []
  faces, thumbs = _detect(source, info, detector, options, report, video_errors)
  n = report.num_frames = len(faces)
  report.detection_rate = float(np.mean([bool(f) for f in faces])) if n else 0.0
  if n < seg.min_frames:
    raise rejects.Rejected(rejects.TOO_SHORT, f"{n} frames at 25 fps < {seg.min_frames}")
  stated = round(info.duration * schema.FPS)
  if video_errors or n / schema.FPS < info.duration - _TRUNCATION_SLACK:
    # Keep what decodes, report the rest.
    report.reject(n, stated if stated > n else None, rejects.DECODE_ERROR, "; ".join(
        video_errors) or f"the video ends at {n / schema.FPS:.2f} s of the "
        f"{info.duration:.2f} s the container states (truncated file?)")
  with _Clock(report, "decode"):
    audio, audio_end = decode.read_audio(source.path, info.start, n, audio_errors)
  usable = n
  if audio_errors:  # frames past the end of a broken audio stream have no sound
    usable = min(n, audio_end // schema.SAMPLES_PER_FRAME)
    report.reject(usable, n, rejects.DECODE_ERROR, "; ".join(audio_errors))
  numbers = {}  # id(track) -> its number in the file (scene by scene, by first frame)
  with _Clock(report, "track"):
    parts = []
    for a, b in scenes.scene_ranges(usable, scenes.find_cuts(thumbs[:usable])):
      tracks = tracking.track_faces(faces, a, b)
      numbers.update({id(t): len(numbers) + i for i, t in enumerate(tracks)})
      for t in tracks:
        if t.not_face is not None and len(t.boxes) >= seg.min_track_frames:
          report.not_a_face(t)
      parts += segments.scene_segments(a, b, tracks, seg)
    parts = segments.cut_clips(parts, audio, seg)
  clips = [p for p in parts if p.reason is None]
  for p in parts:
    if p.reason is not None:
      report.reject(p.start, p.stop, p.reason, p.detail)
  if len(clips) > MAX_CLIPS_PER_FILE:
    for p in clips[MAX_CLIPS_PER_FILE:]:
      report.reject(p.start, p.stop, rejects.ERROR,
                    f"more than {MAX_CLIPS_PER_FILE} clips in one file")
    clips = clips[:MAX_CLIPS_PER_FILE]
  if clips and seg.multiple_faces == "active_speaker":
    _write_speakers(source, info, clips, audio, options, write, report,
                    [numbers[id(c.track)] for c in clips])
  elif clips:
    _crop_and_write(source, info, clips, audio, options, write, report,
                    [numbers[id(c.track)] for c in clips])


# The active-speaker decision of multiple_faces=active_speaker: a callable class of the model
# side (it needs a trained run), named here rather than imported (data_pipelines imports nothing
# of synclipmae_jax), loaded once per process and workdir.
SPEAKER_FILTER = "synclipmae_jax.active_speaker:ClipFilter"
_speaker_filters: dict[str, Callable] = {}


def speaker_filter(workdir: str) -> Callable[[list[schema.Clip], list[dict]], list[str | None]]:
  """SPEAKER_FILTER of `workdir`: given a file's clips of every face track and their manifest
  entries ("clip_id", "track", "start", "end"), the reason each is not kept (None: kept)."""
  if workdir not in _speaker_filters:
    module, attribute = SPEAKER_FILTER.split(":")
    _speaker_filters[workdir] = getattr(importlib.import_module(module), attribute)(workdir)
  return _speaker_filters[workdir]


def _write_speakers(source: Source, info: decode.MediaInfo, clips: list[segments.Segment],
                    audio: np.ndarray, options: PrepareOptions,
                    write: Callable[[schema.Clip], None], report: FileReport,
                    track_numbers: list[int]) -> None:
  """multiple_faces=active_speaker: crops the clips of every face track, keeps (writes) those
  whose face the speaker model finds speaking and rejects the others as NOT_SPEAKING. The file's
  crops are held in memory until the decision (cut hours-long multi-person videos first)."""
  cropped = []
  first = len(report.kept)
  _crop_and_write(source, info, clips, audio, options, cropped.append, report, track_numbers)
  entries = report.kept[first:]
  decisions = speaker_filter(options.segment.speaker_model)(cropped, entries)
  del report.kept[first:]
  for clip, entry, reason in zip(cropped, entries, decisions):
    if reason is None:
      write(clip)
      report.kept.append(entry)
    else:
      report.reject(round(entry["start"] * schema.FPS), round(entry["end"] * schema.FPS),
                    rejects.NOT_SPEAKING, reason)


def _crop_and_write(source: Source, info: decode.MediaInfo, clips: list[segments.Segment],
                    audio: np.ndarray, options: PrepareOptions,
                    write: Callable[[schema.Clip], None], report: FileReport,
                    track_numbers: list[int]) -> None:
  """Pass 2: crops the frames of `clips` and writes each clip when complete (`track_numbers`:
  the file's number of each clip's face track, for the manifest)."""
  plans = []
  for number, c in enumerate(clips):
    track = c.track
    lo, hi = c.start - track.start, c.stop - track.start
    faces_px = track.boxes[lo:hi]
    corners = None if track.mouth_corners is None else track.mouth_corners[lo:hi]
    windows = crop.crop_windows(faces_px, options.margin)
    plans.append(dict(
        clip=c, number=number, windows=windows, frames=[], track=track_numbers[number],
        face_box=[round(float(v), 1) for v in np.median(faces_px, axis=0)],
        face_boxes=crop.normalise(faces_px, windows),
        mouth_boxes=crop.normalise(crop.mouth_boxes(faces_px, corners), windows)))
  by_frame = collections.defaultdict(list)
  for plan in plans:
    for f in range(plan["clip"].start, plan["clip"].stop):
      by_frame[f].append(plan)
  last = max(c.stop for c in clips)
  errors, written = [], set()
  frames = decode.iter_frames(source.path, info.rotation, errors=errors)
  try:
    _crop_frames(source, frames, last, by_frame, audio, options, write, report, written)
  finally:
    frames.close()
  for plan in plans:  # the second decoding ended early (it met an error the first did not)
    c = plan["clip"]
    if plan["number"] not in written:
      report.reject(c.start, c.stop, rejects.DECODE_ERROR,
                    "the second decoding pass ended before this clip's last frame"
                    + (f": {'; '.join(errors)}" if errors else ""))


def _crop_frames(source: Source, frames, last: int, by_frame: dict, audio: np.ndarray,
                 options: PrepareOptions, write: Callable[[schema.Clip], None],
                 report: FileReport, written: set[int]) -> None:
  spf = schema.SAMPLES_PER_FRAME
  for f in range(last):
    with _Clock(report, "decode"):
      image = next(frames, None)
    if image is None:
      return
    for plan in by_frame.get(f, ()):
      c = plan["clip"]
      with _Clock(report, "crop"):
        window = plan["windows"][f - c.start]
        plan["frames"].append(crop.crop_frame(image, window, options.image_size))
      if f + 1 == c.stop:
        with _Clock(report, "encode"):
          whole = c.start == 0 and c.stop == report.num_frames
          clip = schema.Clip(
              clip_id=source.file_index * MAX_CLIPS_PER_FILE + plan["number"],
              identity_id=source.identity_id, split=source.split,
              frames=np.stack(plan["frames"]),
              audio=decode.to_int16(audio[spf * c.start:spf * c.stop]),
              face_boxes=plan["face_boxes"], mouth_boxes=plan["mouth_boxes"],
              transcript=source.transcript if whole else "", emotion=source.emotion,
              actions=(np.tile(np.asarray(source.actions, np.uint8), (c.stop - c.start, 1))
                       if source.actions else None))
          plan["frames"] = []
          write(clip)
          written.add(plan["number"])
        report.kept.append({
            "clip_id": clip.clip_id, "path": source.path, "speaker": source.speaker,
            "identity_id": source.identity_id, "split": source.split, "start": c.start / schema.FPS,
            "end": c.stop / schema.FPS, "num_frames": c.num_frames,
            "face_size": round(c.track.size, 1), "track": plan["track"],
            "face_box": plan["face_box"],
            "mouth_from": "landmarks" if c.track.mouth_corners is not None else "face_box"})
