"""The demo training runs unchanged on shards prepared from the real HDTF clips."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from configs import demo
from data_pipelines.prepare import prepare
from data_pipelines.prepare import process
from data_pipelines.prepare import segments
from synclipmae_jax import train
from fixture_paths import HDTF



@pytest.mark.slow
def test_demo_tiny_trains_on_prepared_real_shards(tmp_path):
  config = demo.get_config("tiny")
  rows = [{"path": os.path.join(HDTF, "WDA_AlexandriaOcasioCortez_000.mp4"), "split": "train"},
          {"path": os.path.join(HDTF, "WDA_KatieHill_000.mp4"), "split": "validation"}]
  options = process.PrepareOptions(  # crops at the tiny model's resolution, 2 s clips
      image_size=config.model.image_size, detect_size=160,
      segment=segments.SegmentOptions(min_frames=50, max_frames=50))
  summary = prepare.prepare(rows, str(tmp_path / "data"), options, progress=False)
  assert summary["clips"] == {"train": 4, "validation": 4, "test": 0}
  config.data.source = "array_record"
  config.data.train_pattern = str(tmp_path / "data" / "train-*.array_record")
  config.data.eval_pattern = str(tmp_path / "data" / "validation-*.array_record")
  metrics = train.train_and_evaluate(config, str(tmp_path / "work"))
  with open(tmp_path / "work" / "metrics.json") as f:
    assert json.load(f)["step"] == config.num_train_steps
  losses = {k: v for k, v in metrics.items() if k.startswith("loss/")}
  assert losses and all(np.isfinite(v) for v in losses.values())
