"""The PyTorch usage example of docs/export_and_dubbing.md (between the export-example markers) runs
as written."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

from synclipmae_jax import train_state
from synclipmae_torch import export
from test_export import make_config, random_params

pytest.importorskip("torch")

README = pathlib.Path(__file__).resolve().parents[1] / "docs" / "export_and_dubbing.md"
BLOCK = re.compile(r"<!-- export-example:start -->\s*```python\n(.*?)```\s*<!-- export-example:end -->",
                   re.DOTALL)


def test_readme_pytorch_example_runs(tmp_path, monkeypatch, capsys):
  match = BLOCK.search(README.read_text())
  assert match, f"{README} has no python block between the export-example markers"
  code = match.group(1)
  assert len(code.strip().splitlines()) <= 10
  config = make_config("tiny-mel")
  export.export(config, random_params(config, seed=0), str(tmp_path / "demo-torch"))
  batch = train_state.random_batch(config, seed=0)
  t, context = config.data.window_frames, config.model.audio.input_context_frames
  audio = batch["audio"][0][640 * context:640 * (context + t)]  # the clip's own frames, [640 T]
  np.savez(tmp_path / "clip.npz", frames=batch["frames"][0], face_boxes=batch["face_boxes"][0],
           mouth_boxes=batch["mouth_boxes"][0], audio=audio)
  monkeypatch.chdir(tmp_path)
  exec(compile(code, str(README), "exec"), {})  # pylint: disable=exec-used
  assert capsys.readouterr().out.strip() == "torch.Size([4, 32]) torch.Size([4, 32])"
