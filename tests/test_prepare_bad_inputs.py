"""Every bad or awkward input of the issue in one run with the shipped detector: each unusable
file is reported with its reason, nothing crashes, the usable ones (HEVC portrait, stereo
48 kHz, 30 fps, variable frame rate, the real clip) are prepared."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from data_pipelines import clip_records, schema
from data_pipelines.prepare import decode
from data_pipelines.prepare import encode
from data_pipelines.prepare import plan
from data_pipelines.prepare import prepare
from data_pipelines.prepare import process
from data_pipelines.prepare import rejects
from data_pipelines.prepare import segments
from fixture_paths import HDTF

SOURCE = os.path.join(HDTF, "WDA_KatieHill_000.mp4")
N = 40  # 1.6 s

EXPECTED_REJECTS = {  # file -> reasons in its lines of the rejects report
    "empty.mp4": [rejects.EMPTY_FILE],
    "truncated.mp4": [rejects.UNREADABLE],
    "text.mp4": [rejects.UNREADABLE],
    "no_audio.mp4": [rejects.NO_AUDIO],
    "no_video.mp4": [rejects.NO_VIDEO],
    "single_frame.mp4": [rejects.TOO_SHORT],
    "no_face.mp4": [rejects.NO_FACE],
    "silent.mp4": [rejects.SILENCE],
}
EXPECTED_KEPT = ("fps30.mp4", "good.mp4", "portrait_hevc.mp4", "stereo48k.mp4", "vfr.mkv")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("bad")
  videos = root / "videos"
  videos.mkdir()
  faces = [np.asarray(Image.fromarray(f).resize((128, 128), Image.BILINEAR))
           for _, f in zip(range(N), decode.iter_frames(SOURCE, 0))]
  info = decode.probe(SOURCE)
  speech = decode.read_audio(SOURCE, info.start, N)[0]

  def at(name):
    return str(videos / name)

  open(at("empty.mp4"), "wb").close()
  with open(SOURCE, "rb") as f:
    data = f.read()
  with open(at("truncated.mp4"), "wb") as f:
    f.write(data[:len(data) // 2])
  with open(at("text.mp4"), "w") as f:
    f.write("This is a text file, not a video.\n" * 20)
  encode.remux(SOURCE, at("no_audio.mp4"), drop_audio=True)
  encode.remux(SOURCE, at("no_video.mp4"), drop_video=True)
  encode.write_video(at("single_frame.mp4"), faces[:1], speech)
  rng = np.random.default_rng(0)
  noise = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(N)]
  encode.write_video(at("no_face.mp4"), noise, speech)
  encode.write_video(at("silent.mp4"), faces, np.zeros_like(speech))
  # HEVC, displayed portrait 1080 x 1920: stored landscape with a display rotation, as phones do.
  portrait = np.full((1920, 1080, 3), 90, np.uint8)
  frames = []
  for face in faces[:30]:
    portrait[420:1500] = np.asarray(Image.fromarray(face).resize((1080, 1080), Image.BILINEAR))
    frames.append(np.ascontiguousarray(np.rot90(portrait, -1)))
  encode.write_video(at("portrait_hevc.mp4"), frames, speech[:30 * 640], video_codec="libx265",
                     rotation=90, options={"preset": "ultrafast", "x265-params": "log-level=error"})
  stereo = np.stack([speech, 0.5 * speech])
  stereo48 = np.repeat(stereo, 3, axis=1)  # 48 kHz (a sample-and-hold upsampling)
  encode.write_video(at("stereo48k.mp4"), faces, stereo48, sample_rate=48_000)
  at_30fps = [faces[min(N - 1, int(j * 25 / 30 + 0.5))] for j in range(48)]
  encode.write_video(at("fps30.mp4"), at_30fps, speech, fps=30)
  times = np.round(np.arange(N) / 25 + rng.uniform(-0.01, 0.01, N), 3)
  times[0] = 0
  encode.write_video(at("vfr.mkv"), faces, speech, times=times.tolist())
  os.symlink(SOURCE, at("good.mp4"))
  output = root / "out"
  options = process.PrepareOptions(
      image_size=32, detect_size=160,
      segment=segments.SegmentOptions(min_frames=25, min_face_size=32))
  summary = prepare.prepare(plan.scan_folder(str(videos)), str(output), options,
                            root=str(videos), files_per_shard=4, progress=False)
  return output, summary


def test_each_unusable_file_is_reported_with_its_reason(prepared):
  output, summary = prepared
  with open(output / "rejects.tsv", encoding="utf-8") as f:
    lines = list(csv.DictReader(f, delimiter="\t"))
  got = {}
  for line in lines:
    got.setdefault(os.path.basename(line["path"]), []).append(line["reason"])
  assert got == EXPECTED_REJECTS, lines
  assert all(line["detail"] for line in lines)  # every line says why in words
  assert summary["files"] == {"total": 13, "with_clips": 5, "rejected_whole": 6}
  assert {k: v["count"] for k, v in summary["rejected"].items()} == {
      rejects.EMPTY_FILE: 1, rejects.UNREADABLE: 2, rejects.NO_AUDIO: 1, rejects.NO_VIDEO: 1,
      rejects.TOO_SHORT: 1, rejects.NO_FACE: 1, rejects.SILENCE: 1}


def test_usable_files_are_prepared(prepared):
  output, summary = prepared
  with open(output / "manifest.jsonl") as f:
    kept = [json.loads(line) for line in f]
  assert sorted({os.path.basename(c["path"]) for c in kept}) == list(EXPECTED_KEPT)
  spans = {os.path.basename(c["path"]): (c["start"], c["end"]) for c in kept}
  assert spans["good.mp4"] == (0.0, 8.0)
  assert spans["portrait_hevc.mp4"] == (0.0, 1.2)
  for name in ("stereo48k.mp4", "fps30.mp4", "vfr.mkv"):
    assert spans[name] == (0.0, 1.6), name
  paths = sorted(str(output / p) for p in os.listdir(output) if p.endswith(".array_record"))
  source = clip_records.ClipSource(paths)
  assert len(source) == len(kept) == sum(summary["clips"].values())
  records = {r["clip_id"]: r for r in (source.clip(i) for i in range(len(source)))}
  by_name = {os.path.basename(c["path"]): records[c["clip_id"]] for c in kept}
  reference = by_name["fps30.mp4"]["audio"].astype(np.float32)
  # Stereo 48 kHz comes out mono 16 kHz, at the same place: (L + R) / 2 = 0.75 x the speech.
  stereo = by_name["stereo48k.mp4"]["audio"].astype(np.float32)
  assert np.corrcoef(stereo, reference)[0, 1] > 0.95
  assert np.std(stereo) / np.std(reference) == pytest.approx(0.75, rel=0.05)
  media = {}
  for part in os.listdir(output / "parts"):
    with open(output / "parts" / part) as f:
      media.update({os.path.basename(e["path"]): e["media"] for e in json.load(f)["files"]})
  assert media["portrait_hevc.mp4"]["video_codec"] == "hevc"
  assert (media["portrait_hevc.mp4"]["width"], media["portrait_hevc.mp4"]["height"]) == (1080, 1920)
