"""A drift correction's copy (`encode.remux(..., audio_shift=s, keep_duration=True)`) on a real
clip: the video stream is bit-identical, the duration is unchanged (to within one audio packet),
and the audio comes out moved by exactly s * 16000 samples, for a delay and for an advance."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np
import pytest

from data_pipelines.prepare import decode
from data_pipelines.prepare import encode
from fixture_paths import HDTF

SOURCE = os.path.join(HDTF, "WDA_KatieHill_000.mp4")
AUDIO_PACKET = 1024 / 16000  # seconds of one AAC frame at 16 kHz


def video_packets(path: str) -> list[tuple[int, bytes]]:
  with av.open(path) as container:
    return [(p.pts, bytes(p)) for p in container.demux(container.streams.video[0]) if p.dts is not None]


def duration(path: str) -> float:
  with av.open(path) as container:
    return container.duration / av.time_base


@pytest.mark.parametrize("frames", [3, -8])
def test_shifted_copy_keeps_video_and_duration_and_moves_the_audio(frames, tmp_path):
  seconds = frames / 25
  out = str(tmp_path / "corrected.mp4")
  encode.remux(SOURCE, out, audio_shift=seconds, keep_duration=True)
  assert video_packets(out) == video_packets(SOURCE)
  assert abs(duration(out) - duration(SOURCE)) <= AUDIO_PACKET
  original, _ = decode.read_audio(SOURCE, Fraction(0), 200)
  shifted, _ = decode.read_audio(out, Fraction(0), 200)
  lag = round(seconds * 16000)
  if lag > 0:
    np.testing.assert_array_equal(shifted[lag:], original[:-lag])
  else:  # the first audio packets moved before 0 are dropped: compare after them
    skip = int(np.ceil(-lag / 1024)) * 1024 + 1024
    np.testing.assert_array_equal(shifted[skip:lag], original[skip - lag:])


def test_without_keep_duration_a_delay_lengthens_the_file(tmp_path):
  out = str(tmp_path / "longer.mp4")
  encode.remux(SOURCE, out, audio_shift=0.32)
  assert duration(out) > duration(SOURCE) + 0.2
