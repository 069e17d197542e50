"""The shards' clip layout (data_pipelines/clip_records.py): a window reads its header, its frames
and the audio records around it, nothing else, and gets what the whole clip would give; the
shards' indexes give lengths and speakers; shards of the old one-record-per-clip layout are refused
with the converter's name, and the converter keeps every frame byte for byte."""

import msgpack
import numpy as np
import pytest
from array_record.python import array_record_module

from data_pipelines import audio_windows, clip_records, convert_shards, schema


def make_clip(clip_id: int, num_frames: int, identity_id: int) -> schema.Clip:
  rng = np.random.default_rng(clip_id)
  boxes = np.sort(rng.uniform(0, 1, (num_frames, 2, 2)), axis=1).reshape(num_frames, 4)
  return schema.Clip(clip_id=clip_id, identity_id=identity_id, split="train",
                     frames=rng.integers(0, 255, (num_frames, 8, 8, 3), dtype=np.uint8),
                     audio=rng.integers(-30000, 30000, 640 * num_frames, dtype=np.int16),
                     face_boxes=boxes.astype(np.float32), mouth_boxes=boxes[:, ::-1].astype(np.float32),
                     transcript=f"clip {clip_id}", emotion=clip_id % 5,
                     actions=rng.integers(0, 2, (num_frames, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  """Two shards: clips of 60 (three audio records, the last partial) and 25 frames, then 31."""
  root = tmp_path_factory.mktemp("clips")
  clips = [make_clip(0, 60, 4), make_clip(1, 25, 9), make_clip(2, 31, 4)]
  paths = [str(root / "train-00000-of-00002.array_record"), str(root / "train-00001-of-00002.array_record")]
  for path, members in zip(paths, (clips[:2], clips[2:])):
    writer = clip_records.ShardWriter(path)
    for clip in members:
      writer.write(clip)
    writer.close()
  return paths, clips


class CountingRecords:
  """The source's records, counting the reads."""

  def __init__(self, records):
    self.records, self.keys = records, []

  def __getitem__(self, key):
    self.keys.append(key)
    return self.records[key]


def test_the_index_gives_lengths_and_speakers_across_shards(shards):
  paths, clips = shards
  source = clip_records.ClipSource(paths)
  assert len(source) == 3
  assert source.num_frames.tolist() == [60, 25, 31]
  assert source.identity_ids.tolist() == [4, 9, 4]
  for i, clip in enumerate(clips):
    r = source.clip(i)
    np.testing.assert_array_equal(schema.decode_frames(r), clip.frames)
    np.testing.assert_array_equal(r["audio"], clip.audio)
    np.testing.assert_array_equal(r["face_boxes"], clip.face_boxes)
    np.testing.assert_array_equal(r["actions"], clip.actions)
    assert (r["clip_id"], r["transcript"], r["emotion"]) == (i, f"clip {i}", i % 5)


@pytest.mark.parametrize("start", [0, 1, 17, 24, 25, 40, 52])
@pytest.mark.parametrize("context", [0, 3, 25])
def test_a_window_reads_only_its_records_and_equals_the_whole_clips_slice(shards, start, context):
  paths, clips = shards
  source = clip_records.ClipSource(paths)
  counting = source._records = CountingRecords(source._records)  # pylint: disable=protected-access
  stop = start + 8
  r = source.window(0, start, stop, context)
  whole = clips[0]
  np.testing.assert_array_equal(schema.decode_frames(r), whole.frames[start:stop])
  np.testing.assert_array_equal(r["face_boxes"], whole.face_boxes[start:stop])
  np.testing.assert_array_equal(r["mouth_boxes"], whole.mouth_boxes[start:stop])
  np.testing.assert_array_equal(r["audio"], audio_windows.audio_window(whole.audio, start, stop, context))
  lo, hi = max(0, start - context), min(60, stop + context)
  chunks = (hi - 1) // 25 - lo // 25 + 1
  assert len(counting.keys) == 1 + 8 + chunks  # header, frames, audio records: nothing else
  assert sorted(counting.keys)[:9] == [0] + list(range(1 + start, 1 + stop))


def test_old_shards_are_refused_and_the_converter_keeps_every_frame(shards, tmp_path):
  _, clips = shards
  old = str(tmp_path / "old" / "train-00000-of-00001.array_record")
  (tmp_path / "old").mkdir()
  writer = array_record_module.ArrayRecordWriter(old, "group_size:1")
  encoded = []
  for clip in clips:  # the one-record-per-clip layout: one msgpack map with every field
    fields = clip_records.header_fields(clip, "jpeg")
    frames = [schema.encode_image(f, "jpeg") for f in clip.frames]
    encoded.append(frames)
    writer.write(msgpack.packb({**fields, "frames": frames, "audio": clip.audio.astype("<i2").tobytes()},
                               use_bin_type=True))
  writer.close()
  with pytest.raises(ValueError, match=r"not a shard of clip layout 2.*python -m data_pipelines.convert_shards"):
    clip_records.ClipSource([old])
  done = convert_shards.main(["--input", str(tmp_path / "old" / "*.array_record"),
                              "--output", str(tmp_path / "new")])
  assert list(done.values()) == [3]
  source = clip_records.ClipSource(list(done))
  for i, clip in enumerate(clips):
    r = source.clip(i)
    assert r["frames"] == encoded[i]  # byte for byte: JPEG is not re-encoded
    np.testing.assert_array_equal(r["audio"], clip.audio)
    assert r["image_format"] == "jpeg" and r["clip_id"] == clip.clip_id
  assert convert_shards.main(["--input", str(tmp_path / "old" / "*.array_record"),
                              "--output", str(tmp_path / "new")]) == {}  # already converted


def test_bad_audio_length_and_windows_outside_the_clip_are_refused(shards):
  paths, _ = shards
  with pytest.raises(ValueError, match="1279 audio samples for 2 frames"):
    clip_records.encoded_records({"clip_id": 5}, [b"a", b"b"], b"\0" * 2558)
  with pytest.raises(ValueError, match=r"outside clip 1's 25 frames"):
    clip_records.ClipSource(paths).audio(1, 20, 26)
