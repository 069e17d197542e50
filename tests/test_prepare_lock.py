"""Two processes started on the same task of one preparation lose no shard: the second stops
with a clear error while the first holds the task's lock, the first one's temporary shard stays,
and the first finishes every shard (before the lock, the second deleted the first's live
temporary files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from data_pipelines.prepare import plan, prepare, shards
from test_prepare_run import OPTIONS, BrightSquareDetector, drawn_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES = 30  # per video (1.2 s); the detector waits in the second video of a shard
DETECTOR = "test_prepare_lock:WaitingDetector"  # the same run options in both processes


class WaitingDetector(BrightSquareDetector):
  """BrightSquareDetector that, in the second video it sees, waits for the file $GO (the test's
  signal): by then the first video's records are in the shard's temporary file."""

  def __init__(self):
    self.seen = 0

  def detect(self, images):
    if self.seen >= FRAMES:
      while not os.path.exists(os.environ["GO"]):
        time.sleep(0.05)
    self.seen += len(images)
    return super().detect(images)


def prepare_videos(videos, output):
  return prepare.prepare(plan.scan_folder(str(videos)), str(output), OPTIONS, root=str(videos),
                         files_per_shard=2, detector=DETECTOR, progress=False)


def test_a_second_process_on_the_same_task_stops_and_the_first_loses_nothing(tmp_path):
  videos, output, go = tmp_path / "videos", tmp_path / "out", tmp_path / "go"
  videos.mkdir()
  for name in ("a", "b", "c", "d"):
    drawn_video(str(videos / f"{name}.mp4"), FRAMES / 25)
  code = ("import sys; sys.path.insert(0, 'tests'); import pathlib; import test_prepare_lock as t; "
          f"t.prepare_videos(pathlib.Path({str(videos)!r}), {str(output)!r})")
  first = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "GO": str(go)},
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    deadline = time.time() + 180
    live = []
    while not live:
      assert first.poll() is None, first.stdout.read()
      assert time.time() < deadline, "the first process wrote no temporary shard"
      time.sleep(0.1)
      # A temporary shard (not plan.json's temporary, written before the lock is taken).
      live = ([n for n in os.listdir(output) if shards.SUFFIX + ".tmp-" in n]
              if output.exists() else [])
    with pytest.raises(RuntimeError, match="another process is preparing task 0 of 1"):
      prepare_videos(videos, output)
    assert all((output / n).exists() for n in live)  # its work in progress is untouched
  finally:
    go.touch()
  assert first.wait(timeout=300) == 0, first.stdout.read()
  with open(output / "summary.json") as f:
    summary = json.load(f)
  assert sum(summary["clips"].values()) == 4
  assert len([n for n in os.listdir(output) if n.endswith(shards.SUFFIX)]) == 2
  assert not [n for n in os.listdir(output) if ".tmp-" in n]
  # Once the first has finished, the task runs again (a resume with nothing left to do).
  assert prepare_videos(videos, output)["clips"] == summary["clips"]
