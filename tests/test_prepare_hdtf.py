"""Acceptance on the real HDTF clips: faces found, 25 fps, 640 samples per frame, mouth-first
face weights, identity ids from the manifest, and the preview."""

from __future__ import annotations

import json
import os

import av
import numpy as np
import pytest
from PIL import Image

from data_pipelines import face_weights
from data_pipelines import labels
from data_pipelines import grain_pipeline
from data_pipelines.prepare import decode
from data_pipelines.prepare import face_detector
from data_pipelines.prepare import plan
from data_pipelines.prepare import prepare
from data_pipelines.prepare import preview
from data_pipelines.prepare import process
from fixture_paths import HDTF

AOC = os.path.join(HDTF, "WDA_AlexandriaOcasioCortez_000.mp4")
HILL = os.path.join(HDTF, "WDA_KatieHill_000.mp4")
SIZE = 64
# The users' own vocabularies (CelebV-HQ's emotions; three actions), as --emotions / --actions give them.
LABELS = labels.Labels(("neutral", "happy", "sad", "anger", "fear", "surprise", "disgust", "contempt"),
                       ("talk", "nod", "smile"))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("hdtf")
  manifest = root / "manifest.jsonl"
  manifest.write_text(
      json.dumps({"path": HILL, "speaker": "katie_hill", "split": "validation",
                  "transcript": "words of the whole clip", "emotion": "surprise",
                  "actions": "talk;smile"}) + "\n" +
      json.dumps({"path": AOC, "speaker": "aoc", "split": "train", "actions": []}) + "\n")
  output = root / "out"
  summary = prepare.prepare(plan.read_manifest(str(manifest)), str(output),
                            process.PrepareOptions(image_size=SIZE), progress=False,
                            labels=LABELS)
  clips = {}
  for split in ("train", "validation"):
    with open(output / "dataset_info.json") as f:
      files = json.load(f)["files"][split]
    for clip in grain_pipeline.load_eval_clips([str(output / name) for name in files]):
      clips[split] = clip
  return output, summary, clips


def test_faces_found_in_95_percent_of_frames(prepared):
  output, summary, _ = prepared
  for name in os.listdir(output / "parts"):
    with open(output / "parts" / name) as f:
      for entry in json.load(f)["files"]:
        assert entry["num_frames"] == 200  # 8 s at 25 fps
        assert entry["detection_rate"] >= 0.95, entry
  assert summary["face_detection_rate"] >= 0.95
  assert summary["rejected"] == {}


def test_clips_are_25_fps_with_640_samples_per_frame(prepared):
  _, summary, clips = prepared
  assert summary["clips"] == {"train": 1, "validation": 1, "test": 0}
  for split, path in (("train", AOC), ("validation", HILL)):
    clip = clips[split]
    assert clip["frames"].shape == (200, SIZE, SIZE, 3)
    assert clip["audio"].shape == (200 * 640,)
    with av.open(path) as container:  # the source's own audio, channels averaged
      raw = np.concatenate([f.to_ndarray().mean(0) for f in container.decode(audio=0)])
    expected = decode.to_int16(raw[:200 * 640]).astype(np.float32) / 32768.0
    np.testing.assert_allclose(clip["audio"], expected, atol=1.5 / 32768)


def test_identity_ids_splits_and_labels_from_the_manifest(prepared):
  output, _, clips = prepared
  with open(output / "dataset_info.json") as f:
    info = json.load(f)
  assert info["speakers"] == {"aoc": 0, "katie_hill": 1}
  assert info["identities"] == {"train": [0], "validation": [1], "test": []}
  assert (clips["train"]["identity_id"], clips["train"]["transcript"], clips["train"]["emotion"]
          ) == (0, "", -1)
  assert (clips["validation"]["identity_id"], clips["validation"]["transcript"],
          clips["validation"]["emotion"]) == (1, "words of the whole clip", 5)
  # Clip-level actions flag every frame, in the vocabulary's order; an empty list is "none".
  np.testing.assert_array_equal(clips["validation"]["actions"], np.tile([[1, 0, 1]], (200, 1)))
  np.testing.assert_array_equal(clips["train"]["actions"], np.zeros((200, 3)))
  assert labels.read(str(output)) == LABELS
  with open(output / "manifest.jsonl") as f:
    kept = [json.loads(line) for line in f]
  assert [(c["speaker"], c["identity_id"], c["mouth_from"]) for c in kept] == [
      ("aoc", 0, "landmarks"), ("katie_hill", 1, "landmarks")]


def test_face_weights_concentrate_on_the_moving_mouth(prepared):
  _, _, clips = prepared
  patch = 8
  grid = SIZE // patch
  for clip in clips.values():
    face, mouth = clip["face_boxes"], clip["mouth_boxes"]
    # The mouth box is inside the face box, in its lower half, near its middle (heads turn).
    assert (mouth[:, 0] > face[:, 0]).all() and (mouth[:, 2] < face[:, 2]).all()
    assert (mouth[:, 1] > (face[:, 1] + face[:, 3]) / 2).all()
    assert np.abs((mouth[:, 0] + mouth[:, 2]) / 2 - (face[:, 0] + face[:, 2]) / 2).max() < 0.15
    w = face_weights.patch_weights(face, mouth, grid, **face_weights.DEFAULT_WEIGHTS)
    w = w.reshape(-1, grid, grid)
    rows = np.arange(grid)[None, :, None]
    centroid_row = (w * rows).sum(axis=(1, 2)) / w.sum(axis=(1, 2))
    assert (centroid_row > grid / 2).all()  # the weight mass sits in the lower half
    # The heaviest patch of every frame overlaps the mouth box.
    top = w.reshape(len(w), -1).argmax(axis=1)
    r, c = top // grid, top % grid
    assert ((c + 1) / grid > mouth[:, 0]).all() and (c / grid < mouth[:, 2]).all()
    assert ((r + 1) / grid > mouth[:, 1]).all() and (r / grid < mouth[:, 3]).all()
    # Independent check that the box is on the mouth: speech moves the pixels in the mouth
    # box more than those of most boxes of its size elsewhere on the face.
    frames = clip["frames"].astype(np.float32).mean(-1)
    motion = np.abs(np.diff(frames, axis=0)).mean(0)
    m = np.round(mouth.mean(0) * SIZE).astype(int)
    f = np.round(face.mean(0) * SIZE).astype(int)
    h, w = m[3] - m[1], m[2] - m[0]
    others = [motion[y:y + h, x:x + w].mean()
              for y in range(f[1], f[3] - h + 1) for x in range(f[0], f[2] - w + 1)]
    assert np.mean(np.array(others) < motion[m[1]:m[3], m[0]:m[2]].mean()) > 0.75


def test_preview_renders_png_and_mp4(prepared, tmp_path):
  output, _, clips = prepared
  written = preview.main(["--shards", str(output / "validation-*.array_record"),
                          "--output", str(tmp_path), "--num_frames", "4", "--mp4"])
  png, mp4 = written
  with Image.open(png) as im:
    assert im.size[0] > 4 * SIZE and np.asarray(im.convert("L")).std() > 20
  info = decode.probe(mp4)
  frames = sum(1 for _ in decode.iter_frames(mp4, 0))
  assert frames == 200 and (info.width, info.height) == (SIZE, SIZE)
  maps = preview.weight_maps(clips["validation"], patch=8)
  assert maps.shape == (200, SIZE, SIZE) and maps.max() == pytest.approx(16.0, rel=0.3)


def test_track_video_is_the_preparations_pass_one_on_a_single_video():
  """`process.track_video` (what synclipmae-dub tracks the source's face with): the speaker's one
  track over all 200 frames, boxes in the source's 512 x 512 pixels."""
  n, tracks = process.track_video(HILL, face_detector.load_detector("mtcnn"))
  assert n == 200
  longest = max(tracks, key=lambda t: len(t.boxes))
  assert (longest.start, longest.stop) == (0, 200)
  assert (longest.boxes >= -1).all() and (longest.boxes[:, 2:] <= 513).all()
  sides = longest.boxes[:, 2:] - longest.boxes[:, :2]
  assert 64 < sides.min() and sides.max() < 512
