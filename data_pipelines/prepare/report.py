"""The reports of a finished run, merged from the per-shard parts.

Written into the output directory once every shard of the plan is done:

  manifest.jsonl      one line per clip written: clip_id, identity_id, speaker, split,
                      source path, start / end (s), frames, shard, face size, mouth source,
                      face track (numbered in the file) and its median box (source pixels)
  rejects.tsv         one line per rejected file or frame range: path, start, end (s;
                      end empty when unknown), reason, detail
  not_faces.tsv       one line per face track ignored because its landmarks lack a face's
                      geometry (`face_detector.geometry_failure`; hands, say): path, start,
                      end (s), median box (x0 y0 x1 y1, source pixels), confidence, detail
  summary.json        hours kept, clips and identities per split, rejects counted per
                      reason (ranges and hours), detection rate, CPU seconds per stage
  dataset_info.json   counts, identities and shard files per split (as the synthetic
                      dataset's), and the preparation parameters
"""

from __future__ import annotations

import collections
import json
import os

from data_pipelines import schema
from data_pipelines.prepare import plan as plan_lib
from data_pipelines.prepare import rejects
from data_pipelines.prepare import shards

PARTS = "parts"
MANIFEST, REJECTS, NOT_FACES = "manifest.jsonl", "rejects.tsv", "not_faces.tsv"
SUMMARY, INFO = "summary.json", "dataset_info.json"
STAGES = ("decode", "detect", "track", "crop", "encode")


def part_path(output: str, shard_name: str) -> str:
  return os.path.join(output, PARTS, shard_name + ".json")


def finalize(output: str, stored_plan: dict) -> dict:
  """Merges the parts of every shard into the four reports; returns the summary."""
  parts = []
  for shard in stored_plan["shards"]:
    with open(part_path(output, shard["name"]), encoding="utf-8") as f:
      parts.append(json.load(f))
  kept = sorted((c for p in parts for c in p["kept"]), key=lambda c: c["clip_id"])
  rejected = sorted((r for p in parts for r in p["rejected"]),
                    key=lambda r: (r["path"], r["start"]))
  files = [f for p in parts for f in p["files"]]

  shards.write_text(os.path.join(output, MANIFEST), "".join(json.dumps(c) + "\n" for c in kept))
  lines = ["path\tstart\tend\treason\tdetail\n"]
  for r in rejected:
    end = "" if r["end"] is None else f"{r['end']:.2f}"
    detail = r["detail"].replace("\t", " ").replace("\n", " ")
    lines.append(f"{r['path']}\t{r['start']:.2f}\t{end}\t{r['reason']}\t{detail}\n")
  shards.write_text(os.path.join(output, REJECTS), "".join(lines))
  not_faces = sorted((x for p in parts for x in p.get("not_faces", [])),
                     key=lambda x: (x["path"], x["start"]))
  shards.write_text(os.path.join(output, NOT_FACES), "path\tstart\tend\tbox\tconfidence\tdetail\n"
                    + "".join(f"{x['path']}\t{x['start']:.2f}\t{x['end']:.2f}\t"
                              f"{' '.join(f'{v:g}' for v in x['box'])}\t{x['confidence']:.3f}\t"
                              f"{x['detail']}\n" for x in not_faces))

  reasons = collections.Counter(r["reason"] for r in rejected)
  rejected_hours = collections.Counter()
  for r in rejected:
    if r["end"] is not None:
      rejected_hours[r["reason"]] += (r["end"] - r["start"]) / 3600
  seconds = sum(c["num_frames"] for c in kept) / schema.FPS
  video_seconds = sum(f["num_frames"] for f in files) / schema.FPS
  cpu = {s: sum(p["cpu"].get(s, 0.0) for p in parts) for s in STAGES}
  frames_total = sum(f["num_frames"] for f in files)
  summary = {
      "hours_kept": seconds / 3600,
      "hours_decoded": video_seconds / 3600,
      "clips": {s: sum(c["split"] == s for c in kept) for s in schema.SPLITS},
      "identities": {s: len({c["identity_id"] for c in kept if c["split"] == s})
                     for s in schema.SPLITS},
      "files": {"total": len(files), "with_clips": len({c["path"] for c in kept}),
                "rejected_whole": len({r["path"] for r in rejected  # reject(0, None): whole
                                       if r["start"] == 0 and r["end"] is None})},
      "rejected": {reason: {"count": reasons[reason], "hours": rejected_hours[reason]}
                   for reason in rejects.REASONS if reasons[reason]},
      "not_faces": len(not_faces),
      "face_detection_rate": (sum(f["detection_rate"] * f["num_frames"] for f in files)
                              / frames_total if frames_total else 0.0),
      "cpu_seconds": cpu,
      "video_seconds_per_cpu_second": {s: video_seconds / cpu[s] if cpu[s] else None
                                       for s in STAGES},
  }
  shards.write_json(os.path.join(output, SUMMARY), summary)
  present = {s["name"] for s, p in zip(stored_plan["shards"], parts) if p["num_clips"]}
  shards.write_json(os.path.join(output, INFO), {
      "parameters": stored_plan["parameters"],
      "counts": summary["clips"],
      "identities": {s: sorted({c["identity_id"] for c in kept if c["split"] == s})
                     for s in schema.SPLITS},
      "speakers": stored_plan["speakers"],
      "files": {s: [x["name"] + shards.SUFFIX for x in stored_plan["shards"]
                    if x["split"] == s and x["name"] in present] for s in schema.SPLITS},
      "plan": plan_lib.PLAN_FILE,
  })
  return summary
