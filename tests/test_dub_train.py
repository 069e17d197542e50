"""`synclipmae-dub-train` (synclipmae_torch/dub_train.py, configs/dub.py:tiny) on the smallest
WanVACE and Wan VAE, the exported tiny SyncLipMAE run and its synthetic shards: trains, checkpoints
as safetensors, resume reproduces the uninterrupted (mixed-control) run, audio- and video-driven
samples differ only in their control tokens, `mixed` draws video-driven samples at the configured
rate, bad configs are refused before anything loads; it also trains on the HDTF fixture clips
prepared into shards."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
import safetensors.torch  # pylint: disable=wrong-import-position

from configs import dub  # pylint: disable=wrong-import-position
from data_pipelines import clip_records  # pylint: disable=wrong-import-position
from data_pipelines.prepare import plan, prepare, process  # pylint: disable=wrong-import-position
from fixture_paths import HDTF  # pylint: disable=wrong-import-position
from synclipmae_jax import checkpointing, input_pipeline  # pylint: disable=wrong-import-position
from synclipmae_torch import dub_train, export  # pylint: disable=wrong-import-position


@pytest.fixture(scope="module")
def inputs(tiny_run, tmp_path_factory):
  """(exported SyncLipMAE folder, the tiny run's held-out shards as training data)."""
  config, workdir, _ = tiny_run
  folder = str(tmp_path_factory.mktemp("dub") / "synclipmae")
  restored = checkpointing.load(workdir)
  export.export(config, restored.params, folder, step=restored.step)
  shards = input_pipeline.dataset_paths(config)[1]  # 24-frame clips: room for 17 + 2
  return folder, os.path.join(os.path.dirname(shards[0]), "validation-*")


def tiny_config(inputs, **overrides):
  c = dub.get_config("tiny")
  c.synclipmae, c.shards = inputs
  c.update(overrides)
  return c


def checkpoint(workdir, step):
  return safetensors.torch.load_file(os.path.join(workdir, "checkpoints", f"step_{step}.safetensors"))


def clip_source(inputs):
  return clip_records.ClipSource(sorted(glob.glob(inputs[1])))


def test_resume_reproduces_the_uninterrupted_run(inputs, tmp_path):
  """With tokens="mixed": each step's control is drawn from the seeds as its sample and noise
  are, so the resumed run draws what the uninterrupted one does; the log's video-driven fraction
  of each step is its sample's draw (`dub_train.sample_draws`), and both kinds occur."""
  mixed = dict(tokens="mixed", video_probability=0.5)
  whole = str(tmp_path / "whole")
  last = dub_train.train(tiny_config(inputs, **mixed), whole)
  assert last["step"] == 6 and np.isfinite(last["loss"])
  with open(os.path.join(whole, "metrics.jsonl")) as f:
    logged = [json.loads(line) for line in f]
  assert [m["step"] for m in logged] == [1, 2, 3, 4, 5, 6]
  clips, config = clip_source(inputs), tiny_config(inputs, **mixed)
  drawn = [dub_train.sample_draws(config, clips, s, 0, 0)[2] for s in range(6)]
  assert [m["video_driven"] for m in logged] == [float(c == "video") for c in drawn]
  assert set(drawn) == {"audio", "video"}, drawn  # the run trains on both
  assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(whole, "checkpoints", "*"))) == [
      "step_3.safetensors", "step_6.safetensors"]
  saved = checkpoint(whole, 6)
  assert any(k.startswith("param/audiopack.") for k in saved)
  assert all(k.split("/")[1].startswith(("vace_blocks.", "vace_patch_embedding.", "audiopack."))
             for k in saved)
  # Interrupted after step 3 (its checkpoint), then resumed to 6.
  parts = str(tmp_path / "parts")
  dub_train.train(tiny_config(inputs, num_train_steps=3, **mixed), parts)
  resumed = dub_train.train(tiny_config(inputs, **mixed), parts)
  assert resumed == last
  for key, value in checkpoint(parts, 6).items():
    assert torch.equal(value, saved[key]), key


def test_video_driven_samples_train_the_same_model_on_vocal_motion_tokens(inputs, tmp_path):
  """An audio run against a mixed run whose one sample drew video (the first seed that does; the
  control is drawn after the sample and noise, so both runs see the same ones): they differ in
  the AudioPack only, where the tokens enter. (tokens="video" takes that branch for every
  sample: tests/test_dub.py trains such a run.)"""
  clips = clip_source(inputs)
  seed = next(s for s in range(100) if dub_train.sample_draws(
      tiny_config(inputs, seed=s, tokens="mixed"), clips, 0, 0, 0)[2] == "video")
  audio = dub_train.train(tiny_config(inputs, num_train_steps=1, seed=seed), str(tmp_path / "audio"))
  video = dub_train.train(tiny_config(inputs, num_train_steps=1, seed=seed, tokens="mixed"),
                          str(tmp_path / "video"))
  assert (audio["video_driven"], video["video_driven"]) == (0.0, 1.0)
  a, v = checkpoint(tmp_path / "audio", 1), checkpoint(tmp_path / "video", 1)
  assert a.keys() == v.keys()
  # The first step's gradients reach only the zero-initialised output projection of the pack
  # through the tokens: that is where the two sources differ.
  assert not torch.equal(a["param/audiopack.out.weight"], v["param/audiopack.out.weight"])
  for key in a:  # everything outside the pack took the same first step
    if not key.split("/")[1].startswith("audiopack."):
      assert torch.equal(a[key], v[key]), key
  assert audio["sigma"] == video["sigma"]  # the same draws


def test_mixed_draws_video_driven_samples_at_the_configured_rate(inputs):
  """200 samples' draws (steps 0-99, two samples each: what the loop draws, from the seeds):
  the video-driven count is within 4 binomial standard deviations of 200 p, and the samples and
  noise are the audio run's (the control is drawn last; checked on the first 10)."""
  clips, n, p = clip_source(inputs), 200, 0.3
  mixed, audio = tiny_config(inputs, tokens="mixed", video_probability=p), tiny_config(inputs)
  video = 0
  for k in range(n):
    step, index = divmod(k, 2)
    _, sample, control, noise = dub_train.sample_draws(mixed, clips, step, index, 0)
    assert control in dub_train.CONTROLS
    video += control == "video"
    if k < 10:
      _, same, only_audio, same_noise = dub_train.sample_draws(audio, clips, step, index, 0)
      assert only_audio == "audio" and noise == same_noise and sample["start"] == same["start"]
      np.testing.assert_array_equal(sample["target"], same["target"])
  sd = np.sqrt(n * p * (1 - p))  # 6.5
  assert abs(video - n * p) <= 4 * sd, video


def test_bad_configs_are_refused_before_anything_loads(inputs, tmp_path):
  config = tiny_config(inputs, tokens="text", num_frames=16, wan_vace=str(tmp_path / "absent"),
                       device="tpu", samples_per_process=0, frozen_dtype="bfloat16", bf16=False)
  config.shards = str(tmp_path / "none-*")
  with pytest.raises(ValueError) as e:
    dub_train.train(config, str(tmp_path / "run"))
  message = str(e.value)
  for part in ("tokens='text' must be one of ('audio', 'video', 'mixed')",
               "num_frames=16 must be 1 + 4k",
               "is not a folder (a local WanVACE", "matches no file",
               "device='tpu' must be one of ('auto', 'cpu', 'cuda')", "samples_per_process=0 must be >= 1",
               "frozen_dtype='bfloat16' needs bf16=True"):
    assert part in message
  assert not os.path.exists(tmp_path / "run")
  with pytest.raises(ValueError, match=r"video_probability=1.0 must be in \(0, 1\) with "
                     "tokens='mixed'"):
    dub_train.validate(tiny_config(inputs, tokens="mixed", video_probability=1.0))
  with pytest.raises(ValueError, match=r"video_probability=-0.5 must be in \[0, 1\]"):
    dub_train.validate(tiny_config(inputs, video_probability=-0.5))


def test_two_processes_take_the_step_of_one_process_with_two_samples(inputs, tmp_path):
  """torchrun (Gloo on CPU) with one sample per process == one process with two samples, and the
  command line writes what `train` does.

  The two are different programs: one process runs both samples with the machine's threads and
  accumulates their gradients; two single-threaded processes each run one and sum them with an
  all-reduce. Their matmuls reduce in different orders, so they agree to float32 rounding, not bit
  for bit, and what must agree is what the all-reduce decides: the step's gradient. AdamW's saved
  first moment is that gradient's running mean (0.1 g1 after step 1, 0.09 g1 + 0.1 g2 after
  step 2), compared norm-wise over all trained parameters. The parameters themselves are not
  compared: a parameter whose gradient is zero in exact arithmetic (the cross-attention's
  norm_k: the zero prompt gives identical keys) gets rounding noise as its gradient, and AdamW,
  dividing by the gradient's own scale, moves it by a whole learning rate with the noise's sign.
  """
  one = str(tmp_path / "one")
  dub_train.train(tiny_config(inputs, num_train_steps=2, samples_per_process=2,
                              checkpoint_every_steps=1), one)
  folder, shards = inputs
  two = tmp_path / "two"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
       "-m", "synclipmae_torch.dub_train", "--config=configs/dub.py:tiny", f"--workdir={two}",
       f"--config.synclipmae={folder}", f"--config.shards={shards}", "--config.num_train_steps=2",
       "--config.checkpoint_every_steps=1"],
      cwd=root, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS="1"))
  assert result.returncode == 0, result.stderr[-3000:]
  with open(two / "config.json") as f:
    assert json.load(f)["num_train_steps"] == 2
  with open(os.path.join(one, "metrics.jsonl")) as f, open(two / "metrics.jsonl") as g:
    a, b = [json.loads(line) for line in f], [json.loads(line) for line in g]
  assert [m["step"] for m in b] == [1, 2]
  # Float32 rounding (unit 6e-8) accumulated over the tiny model's layers stays orders of
  # magnitude below 1e-4 of the loss and of the gradient's norm; a wrong reduction (a sample
  # counted twice, a mean taken twice, a process's gradient lost) is off by 1e-1 or more.
  for x, y in zip(a, b):
    assert x["loss"] == pytest.approx(y["loss"], rel=1e-4) and x["sigma"] == pytest.approx(y["sigma"])
  for step in (1, 2):
    single, pair = checkpoint(one, step), checkpoint(str(two), step)
    assert single.keys() == pair.keys()
    moments = sorted(k for k in single if k.endswith("/exp_avg"))
    assert len(moments) == sum(k.startswith("param/") for k in single)
    flat = lambda saved: torch.cat([saved[k].reshape(-1) for k in moments])  # noqa: E731
    g_one, g_two = flat(single), flat(pair)
    assert torch.linalg.vector_norm(g_one) > 0
    assert torch.linalg.vector_norm(g_two - g_one) <= 1e-4 * torch.linalg.vector_norm(g_one), step


def test_the_papers_precision_trains_with_the_backbone_in_bfloat16(inputs, tmp_path):
  """configs/dub.py's precision: bf16 autocast, the frozen backbone held in bfloat16, the trained
  parameters (and their checkpoint) in float32."""
  last = dub_train.train(tiny_config(inputs, num_train_steps=2, bf16=True, frozen_dtype="bfloat16"),
                         str(tmp_path))
  assert np.isfinite(last["loss"])
  saved = checkpoint(tmp_path, 2)
  assert {v.dtype for k, v in saved.items() if k.startswith("param/")} == {torch.float32}


def test_fine_tunes_on_real_video_prepared_into_shards(inputs, tmp_path):
  """The HDTF fixture clips prepared by synclipmae-prepare (MTCNN, 32 px crops) as the training
  data: a few audio-driven and video-driven steps with finite losses and their checkpoints."""
  rows = [{"path": row["path"], "split": "train"} for row in plan.scan_folder(HDTF)]
  prepare.prepare(rows, str(tmp_path / "prepared"), process.PrepareOptions(image_size=32),
                  progress=False)
  folder, _ = inputs
  shards = str(tmp_path / "prepared" / "train-*.array_record")
  for tokens in ("audio", "video"):
    last = dub_train.train(tiny_config((folder, shards), num_train_steps=3, tokens=tokens),
                           str(tmp_path / tokens))
    assert last["step"] == 3 and np.isfinite(last["loss"])
    with open(tmp_path / tokens / "metrics.jsonl") as f:
      assert all(np.isfinite(json.loads(line)["loss"]) for line in f)
    assert os.path.exists(tmp_path / tokens / "checkpoints" / "step_3.safetensors")
