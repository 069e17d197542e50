r"""Converts shards of the one-record-per-clip layout (before clip layout 2) to `clip_records`'
layout, keeping every encoded frame byte for byte.

  python -m data_pipelines.convert_shards --input 'data/prepared/*.array_record' --output data/v2/

Each input shard becomes the shard of the same name in --output (written under a temporary name
and renamed when complete); a shard already converted there is skipped, so an interrupted run
continues. Copy the other files of a prepared directory (dataset_info.json, manifest.jsonl,
labels.json, ...) yourself: they do not change.
"""

from __future__ import annotations

import argparse
import glob
import os

import msgpack
from array_record.python import array_record_module

from data_pipelines import clip_records


def convert_shard(source: str, target: str) -> int:
  """Converts one shard; returns its number of clips."""
  reader = array_record_module.ArrayRecordReader(source)
  tmp = target + ".converting"
  writer = clip_records.ShardWriter(tmp)
  try:
    for i in range(reader.num_records()):
      r = msgpack.unpackb(reader.read([i])[0], raw=False)
      if not isinstance(r, dict) or "frames" not in r or "audio" not in r:
        raise ValueError(f"{source}: record {i} is not a clip of the one-record-per-clip layout")
      frames, audio = r.pop("frames"), r.pop("audio")
      writer.write_encoded(r, frames, audio)
    writer.close()
  finally:
    reader.close()
  os.replace(tmp, target)
  return writer.num_clips


def main(argv: list[str] | None = None) -> dict[str, int]:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--input", required=True, help="glob of the old shards")
  p.add_argument("--output", required=True, help="directory of the converted shards")
  a = p.parse_args(argv)
  sources = sorted(glob.glob(a.input))
  if not sources:
    p.error(f"--input {a.input!r} matches no file")
  os.makedirs(a.output, exist_ok=True)
  done = {}
  for source in sources:
    target = os.path.join(a.output, os.path.basename(source))
    if os.path.exists(target):
      continue
    done[target] = convert_shard(source, target)
    print(f"{source} -> {target}: {done[target]} clips")
  return done


if __name__ == "__main__":
  main()
