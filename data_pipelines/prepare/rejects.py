"""Why a file or a segment is not kept: the reasons and the exception that carries one.

Every input file and every frame range of a decoded file either becomes clips or is
reported in the rejects report with one of these reasons, so that a person can see what
a run threw away and why.
"""

from __future__ import annotations

import errno

# File-level reasons.
EMPTY_FILE = "empty_file"  # zero bytes
UNREADABLE = "unreadable"  # not a media file ffmpeg opens (text, truncated container, ...)
NO_VIDEO = "no_video_stream"
NO_AUDIO = "no_audio_stream"
DECODE_ERROR = "decode_error"  # the container opens but a stream fails to decode
ERROR = "error"  # an unexpected exception while preparing the file (a bug: see the detail)
# Segment-level reasons (also used for a whole file when it applies to all of it).
TOO_SHORT = "too_short"  # fewer frames than the minimum clip length
NO_FACE = "no_face"
FACE_TOO_SMALL = "face_too_small"
SEVERAL_FACES = "several_faces"
SILENCE = "silence"
NOT_SPEAKING = "not_speaking"  # multiple_faces=active_speaker: the face is not the one speaking

REASONS = (EMPTY_FILE, UNREADABLE, NO_VIDEO, NO_AUDIO, DECODE_ERROR, ERROR, TOO_SHORT, NO_FACE,
           FACE_TOO_SMALL, SEVERAL_FACES, SILENCE, NOT_SPEAKING)


class Rejected(Exception):
  """A whole input file cannot be used; `reason` is one of REASONS."""

  def __init__(self, reason: str, detail: str = ""):
    if reason not in REASONS:
      raise ValueError(f"unknown rejection reason {reason!r} (known: {REASONS})")
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason = reason
    self.detail = detail


# Failures of the machine, not of the file: they stop the run (the file's shard is not marked
# done, so a resume retries it) instead of rejecting the file.
INFRASTRUCTURE_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EROFS, errno.EDQUOT, errno.ENOMEM,
                                   errno.ESTALE, errno.ENODEV})
INFRASTRUCTURE_EXCEPTION_NAMES = frozenset({"ResourceExhaustedError"})  # TensorFlow's out of memory


def is_infrastructure_failure(error: BaseException) -> bool:
  """Whether `error` is the machine's (out of memory, a full, read-only, vanished or failing
  disk) rather than the input file's."""
  if isinstance(error, MemoryError):
    return True
  if isinstance(error, OSError) and error.errno in INFRASTRUCTURE_ERRNOS:
    return True
  return type(error).__name__ in INFRASTRUCTURE_EXCEPTION_NAMES
