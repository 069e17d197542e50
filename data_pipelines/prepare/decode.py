"""Decoding with PyAV: any video ffmpeg reads -> 25 fps RGB frames and aligned 16 kHz mono audio.

The common clock is the presentation timestamps of the two streams (pts x time_base, kept
as exact fractions). Time 0 of a prepared file is the presentation time of its first video
frame:

- video: output frame t shows the source frame whose timestamp is nearest to t / 25 s
  (ties to the earlier frame; the rounding of ffmpeg's `fps` filter), for every t / 25 s
  before the end of the last source frame. Constant 25 fps sources map one to one;
  30 / 29.97 / 24 / 22 fps and variable-frame-rate sources are resampled by their
  timestamps, never by frame counting.
- audio: every channel decoded to float, averaged to mono, resampled to 16 kHz with a
  polyphase filter (`scipy.signal.resample_poly`, zero phase, so sample positions do not
  move; block by block as the stream is decoded, `resample.StreamingResampler`, so a long
  file's track is never held whole at the source rate) and placed on the clock by its own timestamps: an audio stream that starts 200 ms
  after the video is preceded by 3200 samples of silence, one that starts earlier loses
  its leading samples, and gaps between audio frames are filled with silence. The result
  is cut or zero-padded to exactly 640 samples per output frame, so frame t covers samples
  [640 t, 640 (t + 1)).
- rotation: the display matrix (phone videos) is applied, so frames come out upright.
"""

from __future__ import annotations

import dataclasses
import fractions
import os
from collections.abc import Iterator

import av
import numpy as np

from data_pipelines import schema
from data_pipelines.prepare import rejects
from data_pipelines.prepare import resample

Fraction = fractions.Fraction
_FPS = Fraction(schema.FPS)
# Audio frames whose timestamp lands within this many seconds of the end of the audio
# decoded so far are appended as they are (timestamps of compressed audio jitter by a
# sample or two); larger jumps are gaps (filled with silence) or overlaps (dropped).
_AUDIO_JITTER = Fraction(1, 500)


@dataclasses.dataclass(frozen=True)
class MediaInfo:
  """What `probe` learns about a file without decoding it."""

  path: str
  width: int  # displayed (after rotation)
  height: int
  rotation: int  # degrees counter-clockwise applied to each decoded frame
  video_codec: str
  audio_codec: str
  average_fps: float  # as the container states it (0 when unknown)
  sample_rate: int  # of the source audio
  channels: int
  start: Fraction  # presentation time of the first video frame: time 0 of the prepared file
  duration: float  # seconds of video, as the container states it (0 when unknown)


def _open(path: str) -> av.container.InputContainer:
  if not os.path.exists(path):
    raise rejects.Rejected(rejects.UNREADABLE, f"{path} does not exist")
  if os.path.getsize(path) == 0:
    raise rejects.Rejected(rejects.EMPTY_FILE, f"{path} has 0 bytes")
  try:
    return av.open(path)
  except (av.error.FFmpegError, UnicodeDecodeError) as e:
    raise rejects.Rejected(rejects.UNREADABLE, f"ffmpeg cannot open it: {e}") from e


def probe(path: str) -> MediaInfo:
  """Opens `path` and checks it has a video and an audio stream; raises `Rejected` if not."""
  with _open(path) as container:
    if not container.streams.video:
      raise rejects.Rejected(rejects.NO_VIDEO, f"streams: {[s.type for s in container.streams]}")
    if not container.streams.audio:
      raise rejects.Rejected(rejects.NO_AUDIO, f"streams: {[s.type for s in container.streams]}")
    video, audio = container.streams.video[0], container.streams.audio[0]
    try:  # the display matrix sits on the first frame's side data
      first = next(container.decode(video))
    except StopIteration:
      raise rejects.Rejected(rejects.TOO_SHORT, "the video stream holds no frame") from None
    except av.error.FFmpegError as e:
      raise rejects.Rejected(rejects.DECODE_ERROR, f"first video frame: {e}") from e
    rotation = _rotation(first)
    width, height = video.codec_context.width, video.codec_context.height
    if rotation % 180:
      width, height = height, width
    return MediaInfo(
        path=path, width=width, height=height, rotation=rotation,
        video_codec=video.codec_context.name, audio_codec=audio.codec_context.name,
        average_fps=float(video.average_rate or 0), sample_rate=audio.codec_context.sample_rate,
        channels=audio.codec_context.channels, start=_time(first) or Fraction(0),
        duration=_video_duration(container, video))


def _video_duration(container: av.container.InputContainer, video: av.video.stream.VideoStream
                    ) -> float:
  """Seconds of video the file states: the stream's duration, Matroska's DURATION tag, or
  the container's (which may include a longer audio stream); 0 when none is known."""
  if video.duration:
    return float(video.duration * video.time_base)
  tag = video.metadata.get("DURATION", "")  # Matroska: "HH:MM:SS.nnnnnnnnn"
  if tag.count(":") == 2:
    hours, minutes, seconds = tag.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
  return (container.duration or 0) / av.time_base


def _rotation(frame: av.VideoFrame) -> int:
  """Counter-clockwise rotation (a multiple of 90) that displays `frame` upright."""
  angle = frame.rotation or 0
  return int(round(angle / 90.0)) * 90 % 360


def _time(frame: av.frame.Frame) -> Fraction | None:
  if frame.pts is None or frame.time_base is None:
    return None
  return frame.pts * Fraction(frame.time_base)


def iter_frames(path: str, rotation: int, size: tuple[int, int] | None = None,
                errors: list[str] | None = None) -> Iterator[np.ndarray]:
  """The 25 fps frames of `path` as upright uint8 RGB arrays [H, W, 3], in order.

  Args:
    path: the video file.
    rotation: counter-clockwise degrees to apply (`MediaInfo.rotation`).
    size: (width, height) of the upright output, scaled by swscale while converting to
      RGB; None keeps the decoded size.
    errors: if given, a stream that breaks after some frames (a truncated file) ends there
      and the error is appended to this list.

  Raises:
    Rejected: DECODE_ERROR when the stream cannot be decoded (at all, if `errors` is given).
  """
  coded = None if size is None else (size if rotation % 180 == 0 else size[::-1])

  def rgb(frame: av.VideoFrame) -> np.ndarray:
    if coded is None:
      image = frame.to_ndarray(format="rgb24")
    else:
      image = frame.reformat(width=coded[0], height=coded[1], format="rgb24").to_ndarray()
    return np.ascontiguousarray(np.rot90(image, rotation // 90)) if rotation else image

  with _open(path) as container:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    fallback_step = 1 / Fraction(stream.average_rate) if stream.average_rate else 1 / _FPS
    start = None  # time of output frame 0
    index = 0  # next output frame
    prev, prev_time, prev_step = None, None, fallback_step
    try:
      for frame in container.decode(stream):
        time = _time(frame)
        if time is None:  # no timestamp: assume the nominal rate
          time = Fraction(0) if prev_time is None else prev_time + prev_step
        if prev_time is not None and time <= prev_time:
          continue  # a timestamp going backwards or repeating: keep the first frame
        if prev is None:
          start = time
        else:
          prev_step = time - prev_time
          boundary = (prev_time + time) / 2  # output times up to here are nearest to prev
          if start + index / _FPS <= boundary:
            image = rgb(prev)
            while start + index / _FPS <= boundary:
              yield image
              index += 1
        prev, prev_time = frame, time
    except av.error.FFmpegError as e:
      if errors is None or prev is None:
        raise rejects.Rejected(rejects.DECODE_ERROR, f"video after frame {index}: {e}") from e
      errors.append(f"the video stream breaks at {float(prev_time - start):.2f} s: {e}")
    if prev is not None:
      duration = prev.duration * Fraction(prev.time_base) if prev.duration else prev_step
      end = prev_time + duration
      if start + index / _FPS < end:
        image = rgb(prev)
        while start + index / _FPS < end:
          yield image
          index += 1


class _FormatChange(Exception):
  """The sample rate or channel layout of the audio stream changes mid-stream."""


def read_audio(path: str, start: Fraction, num_frames: int, errors: list[str] | None = None
               ) -> tuple[np.ndarray, int]:
  """Mono 16 kHz float32 audio [640 * num_frames] aligned to the video clock.

  Args:
    path: the media file.
    start: time of output frame 0 (`MediaInfo.start`).
    num_frames: number of 25 fps output frames.
    errors: if given, a stream that breaks after some audio (a truncated file) ends there
      and the error is appended to this list.

  Returns:
    (audio, end): sample i of audio is the sound at time start + i / 16000 s (silence
    where the audio stream has none); the stream's audio ends before sample `end`.
  """
  total = schema.SAMPLES_PER_FRAME * num_frames
  result = np.zeros(total, np.float32)
  position = 0  # samples (at the source rate) placed so far
  first = None  # time of source sample 0
  rate = None
  stream_out = None  # the 16 kHz resampler of the source samples, in order
  written = 0  # its output samples so far (output sample j lands at result[offset + j])
  offset = 0

  def place(out: np.ndarray) -> None:
    nonlocal written
    lo, hi = max(offset + written, 0), min(offset + written + len(out), total)
    if lo < hi:
      result[lo:hi] = out[lo - offset - written:hi - offset - written]
    written += len(out)

  def feed(samples: np.ndarray) -> None:
    nonlocal position
    place(stream_out.push(samples))
    position += len(samples)

  with _open(path) as container:
    stream = container.streams.audio[0]
    converter = None
    try:
      for frame in container.decode(stream):
        if rate is None:
          rate, layout = frame.sample_rate, frame.layout.name
          # Planar float at the source rate and layout: a format conversion only (no delay).
          converter = av.AudioResampler(format="fltp", layout=frame.layout, rate=rate)
          stream_out = resample.StreamingResampler(rate, schema.SAMPLE_RATE)
        elif (frame.sample_rate, frame.layout.name) != (rate, layout):
          # Broadcast streams (.ts) may switch; the audio after the switch is not used.
          raise _FormatChange(f"the audio changes from {rate} Hz {layout} to "
                              f"{frame.sample_rate} Hz {frame.layout.name}")
        time = _time(frame)
        for out in converter.resample(frame):
          samples = out.to_ndarray().mean(axis=0, dtype=np.float32)
          if first is None:
            first = time if time is not None else start
            offset = round((first - start) * schema.SAMPLE_RATE)  # where source sample 0 lands
          if time is not None:
            expected = round((time - first) * rate)
            if abs(expected - position) > _AUDIO_JITTER * rate:
              if expected > position:  # a gap: silence
                feed(np.zeros(expected - position, np.float32))
              else:  # an overlap: drop what was already placed
                samples = samples[position - expected:]
          feed(samples)
          time = None  # a second output frame of the same input frame follows on directly
      if converter is not None:
        for out in converter.resample(None):
          feed(out.to_ndarray().mean(axis=0, dtype=np.float32))
    except (av.error.FFmpegError, _FormatChange) as e:
      if errors is None or not position:
        raise rejects.Rejected(rejects.DECODE_ERROR, f"audio after {position} samples: {e}") from e
      broken_at = float(first - start) + position / rate
      errors.append(f"the audio stream breaks at {broken_at:.2f} s: {e}")
  if not position:
    return result, 0
  place(stream_out.finish())
  np.clip(result, -1.0, 1.0, out=result)
  return result, max(0, offset) + max(0, min(written - max(0, -offset), total - max(0, offset)))


def to_int16(audio: np.ndarray) -> np.ndarray:
  """float waveform in [-1, 1] -> int16 samples (the record's audio format)."""
  return np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
