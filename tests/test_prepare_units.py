"""Unit tests of data_pipelines.prepare: decoding clock, scenes, tracking, crops, segments, plan."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from scipy import signal

from data_pipelines import clip_records, schema
from data_pipelines.prepare import crop
from data_pipelines.prepare import decode
from data_pipelines.prepare import encode
from data_pipelines.prepare import face_detector
from data_pipelines.prepare import plan
from data_pipelines.prepare import rejects
from data_pipelines.prepare import scenes
from data_pipelines.prepare import segments
from data_pipelines.prepare import shards
from data_pipelines.prepare import tracking
from fixture_paths import HDTF



def level_frames(n: int, size: int = 32) -> list[np.ndarray]:
  """Frame k is a uniform grey of level 5 k + 2 (survives lossy coding), k < 51."""
  return [np.full((size, size, 3), 5 * k + 2, np.uint8) for k in range(n)]


def levels(path: str) -> list[int]:
  """The index k of every 25 fps output frame of a `level_frames` video."""
  info = decode.probe(path)
  return [int(round((im.mean() - 2) / 5)) for im in decode.iter_frames(path, info.rotation)]


def nearest_reference(times: list[float], end: float) -> list[int]:
  """Naive 25 fps resampling: for each t / 25 < end, the source frame nearest in time."""
  out, t = [], 0
  while t / 25 < end - 1e-9:
    d = [abs(s - t / 25) for s in times]
    out.append(min(range(len(times)), key=lambda k: (round(d[k], 9), k)))
    t += 1
  return out


@pytest.mark.parametrize("fps", [30.0, 30000 / 1001, 24.0, 22.0, 50.0])
def test_constant_frame_rates_resample_to_nearest_frame(tmp_path, fps):
  n = int(round(fps * 1.0))
  path = str(tmp_path / "cfr.mp4")
  encode.write_video(path, level_frames(n), np.zeros(16000, np.float32), fps=fps)
  times = [k / fps for k in range(n)]
  assert levels(path) == nearest_reference(times, n / fps)
  assert len(levels(path)) == pytest.approx(n / fps * 25, abs=1)  # same duration


def test_variable_frame_rate_resamples_by_timestamps(tmp_path):
  rng = np.random.default_rng(0)
  times = np.round(np.concatenate([[0], np.cumsum(rng.uniform(0.012, 0.07, 29))]), 3).tolist()
  path = str(tmp_path / "vfr.mkv")
  encode.write_video(path, level_frames(30), np.zeros(16000, np.float32), times=times)
  got = levels(path)
  # The last frame's display time is not in the file (its duration is a 1 ms tick):
  # every output frame before the last source frame's timestamp is determined.
  ref = nearest_reference(times, times[-1])
  assert got[:len(ref)] == ref
  assert len(got) in (len(ref), len(ref) + 1)


def noise_bursts(seconds: float) -> np.ndarray:
  """16 kHz mono test signal: two low-passed noise bursts (at 0.3 s and 0.9 s) in silence."""
  rng = np.random.default_rng(5)
  audio = np.zeros(int(seconds * 16000))
  for start in (0.3, 0.9):
    a = int(start * 16000)
    audio[a:a + 4000] = rng.standard_normal(4000)
  sos = signal.butter(8, 3000, fs=16000, output="sos")
  return (0.3 * signal.sosfiltfilt(sos, audio)).astype(np.float32)


def lag_of(got: np.ndarray, reference: np.ndarray) -> int:
  """Samples by which `got` is delayed relative to `reference` (cross-correlation peak)."""
  corr = signal.correlate(got, reference, mode="full", method="fft")
  return int(np.argmax(corr)) - (len(reference) - 1)


@pytest.mark.parametrize("container,codec,rate,channels", [
    ("mkv", "pcm_s16le", 48_000, 2),  # stereo 48 kHz
    ("mp4", "aac", 44_100, 1),  # AAC and its encoder delay
    ("mkv", "pcm_s16le", 16_000, 1),
])
@pytest.mark.parametrize("audio_start,video_start", [(0.1, 0.0), (0.0, 0.2), (0.0, 0.0)])
def test_audio_is_aligned_by_stream_timestamps(tmp_path, container, codec, rate, channels,
                                               audio_start, video_start):
  path = str(tmp_path / f"noise.{container}")
  reference = noise_bursts(1.6)
  g = np.gcd(rate, 16000)
  source = signal.resample_poly(reference, rate // g, 16000 // g).astype(np.float32)
  times = [video_start + k / 25 for k in range(40)]
  encode.write_video(path, level_frames(40), np.tile(source, (channels, 1)), times=times,
                     sample_rate=rate, audio_codec=codec, audio_start=audio_start)
  info = decode.probe(path)
  assert float(info.start) == pytest.approx(video_start)
  frames = levels(path)
  audio, end = decode.read_audio(path, info.start, len(frames))
  assert audio.shape == (640 * len(frames),) and audio.dtype == np.float32
  # An mp4 edit list counts in milliseconds (movie time scale 1000): the muxer may store
  # an AAC stream's start (0.1 s minus its 1024-sample priming) up to 1 ms early.
  tolerance = 16 if container == "mp4" else 0
  assert abs(lag_of(audio, reference) - round((audio_start - video_start) * 16000)) <= tolerance
  if codec != "aac":  # lossless: the very same waveform, only moved
    lag = round((audio_start - video_start) * 16000)
    assert end == min(len(audio), lag + len(reference))
    moved = np.zeros_like(audio)
    lo, hi = max(0, lag), min(len(audio), len(reference) + lag)
    moved[lo:hi] = reference[lo - lag:hi - lag]
    np.testing.assert_allclose(audio, moved, atol=2e-3)


def test_rotation_of_the_display_matrix_is_applied(tmp_path):
  upright = np.zeros((64, 32, 3), np.uint8)
  upright[:16, :16] = 255  # bright top-left corner of a portrait frame
  path = str(tmp_path / "rotated.mp4")
  coded = np.ascontiguousarray(np.rot90(upright, -1))  # stored as landscape
  encode.write_video(path, [coded] * 3, np.zeros(3200, np.float32), rotation=90)
  info = decode.probe(path)
  assert (info.width, info.height, info.rotation) == (32, 64, 90)
  image = next(decode.iter_frames(path, info.rotation))
  assert image.shape == (64, 32, 3)
  assert image[:16, :16].mean() > 200 and image[16:].mean() < 20
  small = next(decode.iter_frames(path, info.rotation, (16, 32)))
  assert small.shape == (32, 16, 3) and small[:8, :8].mean() > 200


@pytest.mark.parametrize("make,reason", [
    (lambda p: open(p, "wb").close(), rejects.EMPTY_FILE),
    (lambda p: open(p, "w").write("not a video\n" * 20), rejects.UNREADABLE),
    (lambda p: encode.write_video(p, level_frames(3), None), rejects.NO_AUDIO),
    (lambda p: encode.write_video(p, None, np.zeros(16000, np.float32)), rejects.NO_VIDEO),
])
def test_probe_rejects_unusable_files(tmp_path, make, reason):
  path = str(tmp_path / "bad.mp4")
  make(path)
  with pytest.raises(rejects.Rejected) as e:
    decode.probe(path)
  assert e.value.reason == reason


def test_scene_cut_found_at_the_junction_of_two_videos():
  parts = []
  for name in sorted(os.listdir(HDTF))[:2]:
    path = os.path.join(HDTF, name)
    parts.append(np.stack([scenes.thumbnail(im) for im in decode.iter_frames(path, 0, (64, 64))]))
  thumbs = np.concatenate([parts[0][:60], parts[1][:60], parts[0][100:150]])
  assert scenes.find_cuts(thumbs) == [60, 120]
  assert scenes.scene_ranges(170, [60, 120]) == [(0, 60), (60, 120), (120, 170)]
  assert scenes.find_cuts(parts[0]) == []  # a talking head is one scene


def test_thumbnail_matches_block_means():
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
  grey = image.astype(np.float64) @ [0.299, 0.587, 0.114]
  naive = grey.reshape(32, 2, 32, 3).mean(axis=(1, 3))
  np.testing.assert_allclose(scenes.thumbnail(image), naive, rtol=1e-5)


def test_iou_matches_naive():
  rng = np.random.default_rng(2)
  def boxes(n):
    x, y = np.sort(rng.uniform(0, 10, (2, n, 2)), axis=-1)
    return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)

  a, b = boxes(5), boxes(4)
  for i in range(5):
    for j in range(4):
      ix = max(0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
      iy = max(0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
      area = lambda x: (x[2] - x[0]) * (x[3] - x[1])
      expected = ix * iy / (area(a[i]) + area(b[j]) - ix * iy)
      assert tracking.iou(a, b)[i, j] == pytest.approx(expected)


def face(x, y, s=40, landmarks=True):
  marks = np.array([[x + .3 * s, y + .4 * s], [x + .7 * s, y + .4 * s], [x + .5 * s, y + .6 * s],
                    [x + .35 * s, y + .8 * s], [x + .65 * s, y + .8 * s]], np.float32)
  return face_detector.Face(np.array([x, y, x + s, y + s], np.float32), 0.99,
                            marks if landmarks else None)


def test_tracker_links_interpolates_and_smooths():
  n = 60
  faces = [[] for _ in range(n)]
  for f in range(n):
    if f not in (20, 21, 22):  # a 3-frame miss inside track A
      faces[f].append(face(10 + f, 10))
    if f >= 30:
      faces[f].append(face(200, 50))  # track B appears later, far away
  faces[40][0] = face(10 + 40 + 6, 10)  # a jittered box that still links (IoU 0.70)
  tracks = tracking.track_faces(faces, 0, n, smooth=5)
  assert [(t.start, t.stop) for t in tracks] == [(0, 60), (30, 60)]
  a = tracks[0]
  assert not a.detected[20:23].any() and a.detected[:20].all()
  np.testing.assert_allclose(a.boxes[21, 0], 31, atol=1e-4)  # interpolated over the miss
  assert abs(a.boxes[40, 0] - 50) <= 1  # the 6 px jitter is filtered out
  assert a.size == pytest.approx(40)
  assert a.mouth_corners.shape == (60, 2, 2)


def test_tracker_ends_a_track_after_max_missed_frames():
  faces = [[face(10, 10)] if f < 10 or f >= 20 else [] for f in range(30)]
  assert [(t.start, t.stop) for t in tracking.track_faces(faces, 0, 30, max_missed=12)] == [(0, 30)]
  assert [(t.start, t.stop) for t in tracking.track_faces(faces, 0, 30, max_missed=5)] == [
      (0, 10), (20, 30)]


def ramp(h: int, w: int) -> np.ndarray:
  """uint8 image whose channels are linear in x and y: resampling must reproduce them."""
  y, x = np.mgrid[0:h, 0:w]
  return np.stack([10 + x, 20 + y, 30 + x + y], -1).astype(np.uint8)


def expected_ramp(window, size):
  """The ramp sampled at the centres of the output pixels of `window`."""
  x0, y0, x1, _ = window
  step = (x1 - x0) / size
  xs = x0 + (np.arange(size) + 0.5) * step - 0.5  # in source pixel indices
  ys = y0 + (np.arange(size) + 0.5) * step - 0.5
  return np.stack(np.broadcast_arrays(10 + xs[None, :], 20 + ys[:, None],
                                      30 + xs[None, :] + ys[:, None]), -1)


def test_crop_frame_samples_the_window_and_fills_outside():
  image = ramp(100, 120)
  for window, size in (((20, 10, 60, 50), 20), ((30.5, 12.25, 70.5, 52.25), 40)):
    got = crop.crop_frame(image, np.array(window, np.float32), size)
    np.testing.assert_allclose(got, expected_ramp(window, size), atol=1.01)
  window = (-40, -20, 40, 60)  # a quarter of the window lies left of / above the frame
  got = crop.crop_frame(image, np.array(window, np.float32), 40)
  assert (got[:10, :] == crop.FILL).all() and (got[:, :20] == crop.FILL).all()
  np.testing.assert_allclose(got[12:, 22:], expected_ramp(window, 40)[12:, 22:], atol=1.01)


def test_windows_and_normalised_boxes():
  boxes = np.array([[100, 50, 180, 170]], np.float32)  # 80 x 120 face
  windows = crop.crop_windows(boxes, margin=0.25)
  np.testing.assert_allclose(windows, [[50, 20, 230, 200]])  # side 1.5 x 120, same centre
  np.testing.assert_allclose(crop.normalise(boxes, windows),
                             [[50 / 180, 30 / 180, 130 / 180, 150 / 180]], rtol=1e-6)
  corners = np.array([[[120, 150], [160, 150]]], np.float32)
  np.testing.assert_allclose(crop.mouth_boxes(boxes, corners), [[110, 132, 170, 176]])
  np.testing.assert_allclose(crop.mouth_boxes(boxes, None), [[120, 122, 160, 160.4]], rtol=1e-6)


def track(start, stop, size=100.0, corners=True, score=0.99, detected=None):
  n = stop - start
  boxes = np.tile(np.array([0, 0, size, size], np.float32), (n, 1))
  found = np.ones(n, bool) if detected is None else np.arange(n) < detected
  return tracking.Track(start, boxes, np.zeros((n, 2, 2), np.float32) if corners else None,
                        found, np.where(found, score, 0.0).astype(np.float32))


def test_scene_segments_reasons_and_multiple_face_modes():
  opts = segments.SegmentOptions(min_frames=10, max_frames=100, min_face_size=50)
  tracks = [track(10, 80), track(50, 100, size=120), track(0, 3), track(85, 95, size=20)]
  got = [(s.start, s.stop, s.reason, s.track.start if s.track else None)
         for s in segments.scene_segments(0, 100, tracks, opts)]
  assert got == [(0, 10, rejects.NO_FACE, None), (10, 50, None, 10),
                 (50, 80, rejects.SEVERAL_FACES, None), (80, 100, None, 50)]
  largest = segments.scene_segments(0, 100, tracks, segments.SegmentOptions(
      min_frames=10, max_frames=100, min_face_size=50, multiple_faces="largest"))
  assert [(s.start, s.stop, s.track.start if s.track else s.reason) for s in largest] == [
      (0, 10, rejects.NO_FACE), (10, 50, 10), (50, 100, 50)]
  each = segments.scene_segments(0, 100, tracks, segments.SegmentOptions(
      min_frames=10, max_frames=100, min_face_size=50, multiple_faces="each"))
  assert [(s.start, s.stop, s.reason) for s in each] == [
      (0, 10, rejects.NO_FACE), (10, 80, None), (50, 100, None)]
  small = segments.scene_segments(0, 40, [track(0, 40, size=30)], opts)
  assert [(s.reason, s.detail) for s in small] == [(rejects.FACE_TOO_SMALL, "face 30 px < 50 px")]
  assert segments.scene_segments(0, 40, [], opts)[0].detail == "no face tracked over 40 frames"


def test_cut_clips_lengths_silence_and_too_short():
  opts = segments.SegmentOptions(min_frames=20, max_frames=50)
  rng = np.random.default_rng(4)
  audio = (0.1 * rng.standard_normal(640 * 200)).astype(np.float32)
  audio[640 * 150:] = 0.0  # silent from frame 150
  segs = [segments.Segment(0, 120, track(0, 120)), segments.Segment(120, 130, track(120, 130)),
          segments.Segment(130, 200, track(130, 200)),
          segments.Segment(200, 200, reason=rejects.NO_FACE)]
  got = [(s.start, s.stop, s.reason) for s in segments.cut_clips(segs, audio, opts)]
  assert got == [(0, 40, None), (40, 80, None), (80, 120, None), (120, 130, rejects.TOO_SHORT),
                 (130, 165, None), (165, 200, rejects.SILENCE),
                 (200, 200, rejects.NO_FACE)]
  assert segments.active_fraction(audio[:640 * 10], -40) == 1.0
  # 35 frames with clips of 20 to 30: two equal parts (17, 18) would both be too short.
  tight = segments.SegmentOptions(min_frames=20, max_frames=30)
  got = segments.cut_clips([segments.Segment(0, 35, track(0, 35))], audio, tight)
  assert [(s.start, s.stop, s.reason) for s in got] == [(0, 30, None), (30, 35, rejects.TOO_SHORT)]
  with pytest.raises(ValueError, match="multiple_faces"):
    segments.SegmentOptions(multiple_faces="all")


def test_plan_ids_splits_and_manifests(tmp_path):
  videos = tmp_path / "videos"
  for rel in ("spk_b/v1/a.mp4", "spk_a/x.mp4", "loose.mp4", "spk_b/v2/b.MOV", "notes.txt"):
    (videos / rel).parent.mkdir(parents=True, exist_ok=True)
    (videos / rel).write_bytes(b"")
  rows = plan.scan_folder(str(videos))
  assert [os.path.relpath(r["path"], videos) for r in rows] == [
      "loose.mp4", "spk_a/x.mp4", "spk_b/v1/a.mp4", "spk_b/v2/b.MOV"]
  p = plan.make_plan(rows, root=str(videos), seed=0, validation_fraction=0.0, test_fraction=0.0,
                     files_per_shard=2)
  assert p["speakers"] == {"loose": 0, "spk_a": 1, "spk_b": 2}
  assert [s["identity_id"] for s in p["sources"]] == [0, 1, 2, 2]
  assert [(s["name"], s["files"]) for s in p["shards"]] == [
      ("train-00000-of-00002", [0, 1]), ("train-00001-of-00002", [2, 3])]
  # Hashed splits: reproducible, independent of the listing order, speaker-disjoint.
  many = [{"path": f"/v/{i}.mp4", "speaker": f"s{i % 50}"} for i in range(500)]
  kw = dict(root=None, seed=3, validation_fraction=0.2, test_fraction=0.1, files_per_shard=64)
  p1, p2 = plan.make_plan(many, **kw), plan.make_plan(many[::-1], **kw)
  assert p1 == p2
  split_of = {}
  for s in p1["sources"]:
    assert split_of.setdefault(s["speaker"], s["split"]) == s["split"]
  counts = {k: list(split_of.values()).count(k) for k in schema.SPLITS}
  assert counts["train"] > counts["validation"] > counts["test"] > 0
  assert plan.make_plan(many, **dict(kw, seed=4)) != p1
  # Manifests: CSV and JSONL, relative paths, labels.
  (tmp_path / "m.csv").write_text("path,speaker,split,transcript,emotion\n"
                                  "videos/loose.mp4,alice,validation,hello there,happy\n"
                                  "videos/spk_a/x.mp4,bob,train,,2\n")
  (tmp_path / "m.jsonl").write_text(json.dumps({"path": "videos/loose.mp4", "speaker": "alice",
                                                "split": "validation", "transcript": "hello there",
                                                "emotion": "happy"}) + "\n" + json.dumps(
      {"path": "videos/spk_a/x.mp4", "speaker": "bob", "split": "train", "emotion": 2}) + "\n")
  for name in ("m.csv", "m.jsonl"):
    m = plan.make_plan(plan.read_manifest(str(tmp_path / name)), root=None, seed=0,
                       validation_fraction=0, test_fraction=0, files_per_shard=8)
    assert [(s["speaker"], s["identity_id"], s["split"], s["transcript"], s["emotion"])
            for s in m["sources"]] == [("alice", 0, "validation", "hello there", 1),
                                       ("bob", 1, "train", "", 2)]
    assert m["sources"][0]["path"] == str(videos / "loose.mp4")
  with pytest.raises(ValueError, match="listed twice"):
    plan.make_plan(rows + rows[:1], root=None, seed=0, validation_fraction=0, test_fraction=0,
                   files_per_shard=2)
  with pytest.raises(ValueError, match="emotion 'bored'"):
    plan.make_plan([{"path": "/a.mp4", "emotion": "bored"}], root=None, seed=0,
                   validation_fraction=0, test_fraction=0, files_per_shard=2)
  with pytest.raises(ValueError, match="split 'dev'"):
    plan.make_plan([{"path": "/a.mp4", "split": "dev"}], root=None, seed=0,
                   validation_fraction=0, test_fraction=0, files_per_shard=2)


def test_plan_is_stored_and_a_different_rerun_is_refused(tmp_path):
  rows = [{"path": "/a.mp4"}, {"path": "/b.mp4"}]
  p = plan.make_plan(rows, root=None, seed=0, validation_fraction=0, test_fraction=0,
                     files_per_shard=1)
  stored = plan.load_or_store(str(tmp_path), p, {"image_size": 64})
  assert plan.load_or_store(str(tmp_path), p, {"image_size": 64}) == stored
  with pytest.raises(ValueError, match="other \\['parameters'\\]"):
    plan.load_or_store(str(tmp_path), p, {"image_size": 32})


def test_atomic_shard_commit_abort_and_leftovers(tmp_path):
  path = str(tmp_path / "train-00000-of-00001.array_record")
  clips = [schema.Clip(clip_id=i, identity_id=7, split="train",
                       frames=np.full((2, 8, 8, 3), i, np.uint8), audio=np.zeros(1280, np.int16),
                       face_boxes=np.zeros((2, 4), np.float32),
                       mouth_boxes=np.zeros((2, 4), np.float32)) for i in range(2)]
  shard = shards.AtomicShard(path)
  shard.write(clips[0], "png")
  shard.write(clips[1], "png")
  assert not os.path.exists(path) and len(os.listdir(tmp_path)) == 1  # only the temporary
  assert shard.commit() == 2 and os.listdir(tmp_path) == [os.path.basename(path)]
  source = clip_records.ClipSource([path])
  assert [source.clip(i)["clip_id"] for i in range(len(source))] == [0, 1]
  other = shards.AtomicShard(str(tmp_path / "x.array_record"))
  other.write(clips[0], "png")
  other.abort()
  assert os.listdir(tmp_path) == [os.path.basename(path)]
  assert shards.AtomicShard(str(tmp_path / "empty.array_record")).commit() == 0
  assert os.listdir(tmp_path) == [os.path.basename(path)]  # an empty shard is not created
  (tmp_path / "y.array_record.tmp-123").write_bytes(b"partial")
  assert shards.remove_temporaries([str(tmp_path / "y.array_record")]) == 1


def test_load_detector_by_import_path():
  det = face_detector.load_detector("tests.test_prepare_units:GreyDetector", threshold=7)
  assert det.threshold == 7
  with pytest.raises(ValueError, match=r"neither one of \['mtcnn', 'whole_frame'\]"):
    face_detector.load_detector("nonsense")
  with pytest.raises(ValueError, match="no detect"):
    face_detector.load_detector("builtins:dict")


class GreyDetector:
  """A stand-in detector for the plug-in test."""

  def __init__(self, threshold: int = 0):
    self.threshold = threshold

  def detect(self, images):
    return [[] for _ in images]


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_stated_duration_is_the_video_streams(tmp_path, container):
  path = str(tmp_path / f"long_audio.{container}")  # 0.8 s of video, 2 s of audio
  encode.write_video(path, level_frames(20), np.zeros(32000, np.float32))
  assert decode.probe(path).duration == pytest.approx(0.8, abs=0.05)
