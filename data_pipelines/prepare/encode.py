"""Writing audio-visual files with PyAV: frames and waveform -> a video file, and remuxing.

Used by the preview (an mp4 of a prepared clip) and to make test media: constant or
variable frame rates (explicit frame timestamps), any codec PyAV was built with, an
audio stream starting at an offset, a display rotation, and stream copies (`remux`) that
change only timestamps, so a test can shift a real recording's audio without re-encoding it.
"""

from __future__ import annotations

import fractions
from collections.abc import Sequence

import av
import numpy as np

Fraction = fractions.Fraction
_AUDIO_CHUNK = 1024  # samples per audio frame handed to the encoder


def write_video(path: str, frames: Sequence[np.ndarray] | None, audio: np.ndarray | None = None,
                *, fps: float = 25.0, times: Sequence[float] | None = None,
                video_codec: str = "libx264", pix_fmt: str = "yuv420p",
                sample_rate: int = 16_000, audio_codec: str = "aac", audio_start: float = 0.0,
                rotation: int = 0, options: dict | None = None) -> None:
  """Encodes frames and/or audio into `path` (container from the extension).

  Args:
    path: output file.
    frames: uint8 RGB [H, W, 3] images (even sides for yuv420p), or None for no video.
    audio: float waveform in [-1, 1], [samples] (mono) or [channels, samples], or None.
    fps: frame rate when `times` is None.
    times: presentation time (s) of every frame: variable frame rate (1 ms resolution).
    video_codec: any encoder of PyAV's ffmpeg ("libx264", "libx265", "mpeg4", ...).
    pix_fmt: pixel format of the encoded video.
    sample_rate: of `audio`.
    audio_codec: audio encoder ("aac", "pcm_s16le", "libopus", ...).
    audio_start: presentation time (s) of the first audio sample.
    rotation: display rotation (degrees counter-clockwise) stored in the stream.
    options: encoder options of the video stream (e.g. {"preset": "ultrafast"}).
  """
  with av.open(path, "w") as out:
    video = sound = None
    if frames is not None:
      if times is None:
        video = out.add_stream(video_codec, rate=Fraction(fps).limit_denominator(1001))
      else:
        video = out.add_stream(video_codec, rate=1000)
        video.codec_context.time_base = Fraction(1, 1000)
      video.height, video.width = frames[0].shape[:2]
      video.pix_fmt = pix_fmt
      if options:
        video.options = dict(options)
      if rotation:
        video.set_display_rotation(rotation)
    if audio is not None:
      audio = np.atleast_2d(np.asarray(audio, np.float32))
      sound = out.add_stream(audio_codec, rate=sample_rate)
      sound.layout = "mono" if audio.shape[0] == 1 else "stereo"
    if video is not None:
      for i, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        if times is not None:
          frame.pts = round(times[i] * 1000)
          frame.time_base = Fraction(1, 1000)
        out.mux(video.encode(frame))
      out.mux(video.encode(None))
    if sound is not None:
      offset = round(audio_start * sample_rate)
      for i in range(0, audio.shape[1], _AUDIO_CHUNK):
        piece = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[:, i:i + _AUDIO_CHUNK]),
                                           format="fltp", layout=sound.layout.name)
        piece.sample_rate = sample_rate
        piece.pts = offset + i
        piece.time_base = Fraction(1, sample_rate)
        out.mux(sound.encode(piece))
      out.mux(sound.encode(None))


def remux(source: str, path: str, *, audio_source: str | None = None, audio_shift: float = 0.0,
          drop_audio: bool = False, drop_video: bool = False, keep_duration: bool = False,
          container_options: dict | None = None) -> None:
  """Copies streams into `path` without re-encoding them.

  Args:
    source: input file (its video, and its audio unless `audio_source` is given).
    path: output file.
    audio_source: take the audio stream from this file instead.
    audio_shift: seconds added to every audio timestamp (positive: the audio plays later).
    drop_audio: leave the audio stream out.
    drop_video: leave the video stream out.
    keep_duration: drop the audio packets that the shift moves before 0 or past the end of the
      video stream, so that the copy lasts as long as the video (to within one audio packet):
      a drift correction that changes nothing but the audio's timing.
    container_options: muxer options, e.g. {"movflags": "faststart"} (mp4 index first).
  """
  video_end = _video_end(source) if keep_duration else None
  inputs = [av.open(source)]
  try:
    if audio_source is not None:
      inputs.append(av.open(audio_source))
    wanted = {id(c): (c, []) for c in inputs}  # streams to copy, per container
    if not drop_video and inputs[0].streams.video:
      wanted[id(inputs[0])][1].append(inputs[0].streams.video[0])
    if not drop_audio and inputs[-1].streams.audio:
      wanted[id(inputs[-1])][1].append(inputs[-1].streams.audio[0])
    with av.open(path, "w", options=container_options or {}) as out:
      copies = {id(s): out.add_stream_from_template(s) for _, ss in wanted.values() for s in ss}
      for container, streams in wanted.values():
        for packet in container.demux(*streams) if streams else ():
          if packet.dts is None:  # the demuxer's end-of-stream packet
            continue
          if packet.stream.type == "audio" and audio_shift:
            shift = round(audio_shift / packet.time_base)
            packet.pts += shift
            packet.dts += shift
          if video_end is not None and packet.stream.type == "audio":
            start = packet.pts * packet.time_base
            if start < 0 or start >= video_end:
              continue
          packet.stream = copies[id(packet.stream)]
          out.mux(packet)
  finally:
    for container in inputs:
      container.close()


def _video_end(path: str) -> Fraction:
  """Time (s) at which the first video stream of `path` ends: its last packet's pts + duration."""
  with av.open(path) as container:
    if not container.streams.video:
      raise ValueError(f"{path} has no video stream")
    stream = container.streams.video[0]
    end = Fraction(0)
    for packet in container.demux(stream):
      if packet.pts is not None:
        end = max(end, (packet.pts + (packet.duration or 0)) * Fraction(packet.time_base))
  return end
