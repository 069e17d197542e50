"""Grain input pipelines over clip shards (synthetic or real video, same `schema`).

Training: each example is a random window of `window_frames` consecutive frames of
one clip with the audio those frames cover (frame t <-> samples [640 t, 640 (t+1))) and
`audio_context_frames` frames of audio on each side (`audio_windows.audio_window`, silence beyond
the clip), so audio and video stay aligned sample-exactly; the per-frame audio tokens and
vocal-motion tokens of SyncLipMAE (paper 3.2-3.3) are computed from such windows.
Only the window's frames and audio are read and decoded (the shards' layout: `clip_records`).

The pipeline is a `grain.MapDataset` (global shuffle, or runs of `clips_per_identity` clips of one
identity (`identity_groups`); infinite repeat with a new order every epoch, random window, batch,
per-process block of every global batch), so its iterator is
deterministic and checkpointable: `get_state`/`set_state`, or
`grain.checkpoint.CheckpointSave`/`CheckpointRestore` inside an orbax
CheckpointManager.
"""

from __future__ import annotations

import functools

from absl import flags
import grain
import numpy as np

from data_pipelines import audio_windows, clip_records, identity_groups, schema

PREFETCH_BATCHES = 4  # batches read ahead (grain's default, 500, would hold hundreds in memory)


def _flip_boxes(boxes: np.ndarray) -> np.ndarray:
  """Mirrors normalised (x0, y0, x1, y1) boxes horizontally."""
  return np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], axis=1)


def _sample_window(clip: int, rng: np.random.Generator, *, source: clip_records.ClipAccess,
                   window_frames: int, audio_context_frames: int,
                   horizontal_flip: float) -> dict[str, np.ndarray]:
  """Clip index -> a random aligned window of `window_frames` frames and their audio, reading
  only those frames and that audio (clip_records.py); the frames stay encoded (`_decode_batch`
  decodes a whole batch into its array)."""
  n = int(source.num_frames[clip])  # >= window_frames: make_train_dataset checked every clip
  start = int(rng.integers(0, n - window_frames + 1))
  stop = start + window_frames
  r = source.window(clip, start, stop, audio_context_frames)
  face_boxes, mouth_boxes = r["face_boxes"], r["mouth_boxes"]
  flip = rng.random() < horizontal_flip
  if flip:
    face_boxes, mouth_boxes = _flip_boxes(face_boxes), _flip_boxes(mouth_boxes)
  encoded = np.empty(window_frames, object)
  encoded[:] = r["frames"]
  return {
      "encoded_frames": encoded,
      "flip": np.bool_(flip),
      "audio": r["audio"],
      "face_boxes": np.array(face_boxes, np.float32),
      "mouth_boxes": np.array(mouth_boxes, np.float32),
      "identity_id": np.int32(r["identity_id"]),
      "clip_id": np.int32(r["clip_id"]),
      "start_frame": np.int32(start),
  }


def _decode_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Decodes a batch's encoded frames [b, T] straight into its uint8 [b, T, H, W, 3] array
  (mirrored where `flip`): one copy per frame, as bare decoding makes."""
  encoded, flips = batch.pop("encoded_frames"), batch.pop("flip")
  first = schema.decode_image(encoded[0, 0])
  frames = np.empty(encoded.shape + first.shape, np.uint8)
  for (b, t), data in np.ndenumerate(encoded):
    image = first if (b, t) == (0, 0) else schema.decode_image(data)
    frames[b, t] = image[:, ::-1] if flips[b] else image
  return {"frames": frames, **batch}


def open_clips(paths) -> clip_records.ClipAccess:
  """Shard paths (clip_records' layout) -> their ClipSource; a ClipAccess (e.g. a TFDS dataset's
  `tfds_clips.TfdsClipSource`) is returned as it is."""
  if isinstance(paths, clip_records.ClipAccess):
    if not len(paths):
      raise ValueError(f"{paths} holds no clip")
    return paths
  if not paths:
    raise ValueError("paths is empty")
  return clip_records.ClipSource(list(paths))


def make_train_dataset(paths: list[str] | clip_records.ClipAccess, *, global_batch_size: int,
                       window_frames: int, seed: int, process_index: int = 0, process_count: int = 1,
                       horizontal_flip: float = 0.0, audio_context_frames: int = 0,
                       clips_per_identity: int = 0, read_threads: int = 2) -> grain.IterDataset:
  """Infinite, shuffled training batches of aligned audio-video windows for one process.

  Args:
    paths: ArrayRecord shards of `schema` clips (`clip_records`), or a ClipAccess (`open_clips`).
    global_batch_size: batch size summed over processes; must divide by process_count.
    window_frames: frames per example (T).
    seed: seed of the shuffle (new order each epoch) and of the window/flip draws.
    process_index: this process's index; processes read disjoint slices of every epoch.
    process_count: number of processes.
    horizontal_flip: probability of mirroring an example (frames and boxes).
    audio_context_frames: C, frames of audio around each window (`model.audio.input_context_frames`).
    clips_per_identity: K > 0: every K consecutive clips of a batch are K clips of one identity
      (`identity_groups`; the speakers come from the shards' indexes); 0: a global shuffle.
    read_threads: threads reading and decoding batches ahead in this process (0: none; each
      costs CPU time beyond the work, BENCHMARKS.md (f): with worker processes use 0).

  Returns:
    An IterDataset of dicts: frames uint8 [b, T, H, W, 3], audio float32 [b, (T + 2 C) * 640],
    face_boxes / mouth_boxes float32 [b, T, 4], identity_id / clip_id / start_frame int32 [b],
    with b = global_batch_size // process_count.
  """
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"need 0 <= process_index < process_count, got {process_index}, "
                     f"{process_count}")
  if global_batch_size < process_count or global_batch_size % process_count:
    raise ValueError(f"global_batch_size {global_batch_size} is not a positive multiple of "
                     f"process_count {process_count}")
  if window_frames < 1:
    raise ValueError(f"window_frames must be >= 1, got {window_frames}")
  per_process = global_batch_size // process_count
  if clips_per_identity < 0 or (clips_per_identity and per_process % clips_per_identity):
    raise ValueError(f"clips_per_identity={clips_per_identity} must be >= 0 and divide the "
                     f"{per_process} clips of each process's batch")
  if read_threads < 0:
    raise ValueError(f"read_threads must be >= 0, got {read_threads}")
  if audio_context_frames < 0:
    raise ValueError(f"audio_context_frames must be >= 0, got {audio_context_frames}")
  if not 0.0 <= horizontal_flip <= 1.0:
    raise ValueError(f"horizontal_flip must be a probability, got {horizontal_flip}")
  source = open_clips(paths)
  short = np.flatnonzero(source.num_frames < window_frames)
  if len(short):
    raise ValueError(f"clip {source.header(int(short[0]))['clip_id']} has "
                     f"{source.num_frames[short[0]]} frames, fewer than window_frames="
                     f"{window_frames} ({len(short)} of {len(source)} clips are that short)")
  clips = range(len(source))  # the dataset is over clip indices; windows read their records
  if clips_per_identity:
    ds = grain.MapDataset.source(identity_groups.IdentityGroupedRecords(
        clips, source.identity_ids, clips_per_identity, seed))
  else:
    ds = grain.MapDataset.source(identity_groups.ShuffledRecords(clips, seed))
  ds = ds.random_map(functools.partial(_sample_window, source=source, window_frames=window_frames,
                                       audio_context_frames=audio_context_frames,
                                       horizontal_flip=horizontal_flip), seed=seed)
  # Process i takes the i-th contiguous block of every global batch: the global batch is
  # the same records in the same order whatever the process count (MapDataset is lazy, so
  # a process only reads and decodes its own blocks).
  ds = ds.batch(per_process, drop_remainder=True)
  ds = ds[process_index::process_count].map(_decode_batch)
  return ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                              prefetch_buffer_size=PREFETCH_BATCHES))


def make_train_iterator(dataset: grain.IterDataset, *, worker_count: int = 0,
                        worker_buffer_size: int = 2) -> grain.DatasetIterator:
  """A checkpointable iterator over `dataset`, prefetched in `worker_count` processes if > 0."""
  if worker_count < 0:
    raise ValueError(f"worker_count must be >= 0, got {worker_count}")
  if worker_count > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags: outside absl.app,
      flags.FLAGS.mark_as_parsed()  # use their defaults
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=worker_count, per_worker_buffer_size=worker_buffer_size))
  return iter(dataset)


def load_eval_clips(paths: list[str] | clip_records.ClipAccess,
                    max_clips: int | None = None) -> list[dict]:
  """Reads the first `max_clips` (default: all) clips of `paths` (`open_clips`) in order, fully
  decoded.

  Returns:
    One dict per clip: frames uint8 [N, H, W, 3], audio float32 [N * 640], face_boxes and
    mouth_boxes float32 [N, 4], identity_id, clip_id, split, transcript, emotion, and actions
    (uint8 [N, A], or None when the record has none).
  """
  source = open_clips(paths)
  count = len(source) if max_clips is None else min(max_clips, len(source))
  clips = []
  for i in range(count):
    r = source.clip(i)
    clips.append({
        "frames": schema.decode_frames(r),
        "audio": r["audio"].astype(np.float32) / audio_windows.INT16_SCALE,
        "face_boxes": r["face_boxes"].copy(),
        "mouth_boxes": r["mouth_boxes"].copy(),
        "identity_id": r["identity_id"],
        "clip_id": r["clip_id"],
        "split": r["split"],
        "transcript": r["transcript"],
        "emotion": r["emotion"],
        "actions": None if r["actions"] is None else r["actions"].copy(),
    })
  return clips
