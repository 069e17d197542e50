r"""`synclipmae-dub-train`: the dubbing fine-tune (paper 4.4) in one linear `train` (configs/dub.py).

  synclipmae-dub-train --config=configs/dub.py --workdir=/tmp/dub --config.wan_vace=... \
      --config.synclipmae=... --config.shards=...

models (WanVACE transformer and VAE from a local diffusers folder; the exported SyncLipMAE's
tokenizer; the AudioPack attached) -> what trains (`dub_step.freeze`) -> data (the shards' clips,
streamed: each sample reads only its frames and the audio around them, `dub_samples.shard_sample`;
step s draws its clip, window, reference, continuity drop, noise level, noise and control from
seeds (seed, s), so a resumed run sees what an uninterrupted one does) -> checkpoint (the trained
parameters and the optimizer's state as safetensors, `checkpoints/step_<s>.safetensors`) -> loop.

The control (paper 4.4: "switching [audio tokens] vs. [vocal-motion tokens] toggles audio-driven
vs. video-driven control within the same model"): `config.tokens` = "audio" (the target frames'
audio tokens), "video" (their vocal-motion tokens) or "mixed" (each sample's control drawn, video
with probability `config.video_probability`; metrics.jsonl logs each step's video-driven
fraction). Whatever a run was trained on, `synclipmae-dub` drives it by either: the two kinds of
token share one space (the pretraining's contrastive alignment of audio and vocal-motion tokens).

Data parallel over processes started by torchrun (torch.distributed; NCCL on GPUs, Gloo on CPUs):

  torchrun --nnodes=16 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \
      -m synclipmae_torch.dub_train --config=configs/dub.py --workdir=/shared/dub ...

Every process holds the whole model (the frozen backbone is not sharded) on its own device
(`cuda:LOCAL_RANK`, or the CPU) and draws `samples_per_process` samples per step; sample i of
step s (i = rank x samples_per_process + j) comes from the seeds (seed, s, i) whatever the number
of processes, and the trained parameters' gradients are averaged over all of them (an all-reduce
after the backward passes), so N processes with one sample each take the step one process takes
with N samples. Process 0 writes the log and the checkpoints; every process resumes from them.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np
from PIL import Image
import safetensors.torch
import torch
from torch import distributed

from data_pipelines import clip_records
from synclipmae_torch import audiopack, dub_samples, dub_step, tokens as tokens_lib
from synclipmae_jax import command_line

CONTROLS = ("audio", "video")  # what drives a sample or a dub: audio tokens, vocal-motion tokens
TOKEN_SOURCES = CONTROLS + ("mixed",)  # config.tokens; mixed: each sample's control drawn
DEVICES = ("auto", "cpu", "cuda")  # auto: cuda when there is one
FROZEN_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}  # of the frozen backbone
SIGMA_SHIFT = 5.0  # Wan's flow shift: noise levels sigma = s u / (1 + (s - 1) u), u ~ U(0, 1)


def validate(config) -> None:
  """Raises ValueError naming every bad value, before anything loads."""
  errors = []
  if config.tokens not in TOKEN_SOURCES:
    errors.append(f"tokens={config.tokens!r} must be one of {TOKEN_SOURCES}")
  if config.tokens == "mixed" and not 0.0 < config.video_probability < 1.0:
    errors.append(f"video_probability={config.video_probability} must be in (0, 1) with "
                  "tokens='mixed' (0 or 1: train with tokens='audio' or 'video')")
  elif not 0.0 <= config.video_probability <= 1.0:
    errors.append(f"video_probability={config.video_probability} must be in [0, 1]")
  if config.num_frames < 1 or (config.num_frames - 1) % audiopack.FRAMES_PER_LATENT:
    errors.append(f"num_frames={config.num_frames} must be 1 + 4k (the Wan VAE's unit)")
  if not 0.0 <= config.drop_continuity <= 1.0:
    errors.append(f"drop_continuity={config.drop_continuity} must be in [0, 1]")
  if config.frozen_dtype not in FROZEN_DTYPES:
    errors.append(f"frozen_dtype={config.frozen_dtype!r} must be one of {tuple(FROZEN_DTYPES)}")
  elif config.frozen_dtype == "bfloat16" and not config.bf16:
    errors.append("frozen_dtype='bfloat16' needs bf16=True (the autocast that runs it)")
  if config.device not in DEVICES:
    errors.append(f"device={config.device!r} must be one of {DEVICES}")
  for name in ("num_train_steps", "checkpoint_every_steps", "log_every_steps", "samples_per_process"):
    if config[name] < 1:
      errors.append(f"{name}={config[name]} must be >= 1")
  for name in ("wan_vace", "synclipmae", "shards"):
    if not config[name]:
      errors.append(f"{name} is empty: give a local path")
  if config.wan_vace and config.wan_vace != "tiny" and not os.path.isdir(config.wan_vace):
    errors.append(f"wan_vace={config.wan_vace!r} is not a folder (a local WanVACE in diffusers' "
                  "format; nothing is downloaded)")
  if config.synclipmae and not os.path.isfile(os.path.join(config.synclipmae, "config.json")):
    errors.append(f"synclipmae={config.synclipmae!r} holds no exported SyncLipMAE (synclipmae-export)")
  if config.shards and not glob.glob(config.shards):
    errors.append(f"shards={config.shards!r} matches no file")
  if errors:
    raise ValueError("invalid config:\n  " + "\n  ".join(errors))


def tiny_wan_vace():
  """The smallest WanVACE transformer and Wan VAE (diffusers' test sizes), randomly initialised."""
  from diffusers import AutoencoderKLWan, WanVACETransformer3DModel  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  transformer = WanVACETransformer3DModel(
      patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
      out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=4, cross_attn_norm=True,
      qk_norm="rms_norm_across_heads", rope_max_seq_len=32, vace_layers=[0, 2], vace_in_channels=96)
  vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                         temperal_downsample=[False, True, True])
  return transformer, vae


def load_wan_vace(path: str):
  """(transformer, VAE) of a local diffusers folder, or the tiny random pair for "tiny"."""
  if path == "tiny":
    return tiny_wan_vace()
  from diffusers import AutoencoderKLWan, WanVACETransformer3DModel  # pylint: disable=import-outside-toplevel
  return (WanVACETransformer3DModel.from_pretrained(path, subfolder="transformer", local_files_only=True),
          AutoencoderKLWan.from_pretrained(path, subfolder="vae", local_files_only=True))


def control_tokens(tokenizer, clip: dict, sample: dict, source: str) -> torch.Tensor:
  """[1, F, D] tokens of the sample's target frames: the audio tokens of its speech (read with
  the clip's audio around it as context) or the vocal-motion tokens of its frames (resized to the
  tokenizer's image size when the shards are prepared at another). `clip` is a whole clip or the
  part of one `dub_samples.shard_sample` reads (audio and boxes from the sample's frame 0)."""
  if source not in CONTROLS:
    raise ValueError(f"control {source!r} must be one of {CONTROLS}")
  start, stop = sample["start"], sample["start"] + len(sample["target"])
  if source == "audio":
    return tokenizer.audio_tokens(clip["audio"], start, stop)[None]
  frames = sample["target"]
  if frames.shape[1] != tokenizer.image_size:
    frames = np.stack([np.asarray(Image.fromarray(f).resize((tokenizer.image_size,) * 2, Image.BICUBIC))
                       for f in frames])
  return tokenizer.prompt_tokens(frames, clip["face_boxes"][start:stop],
                                 clip["mouth_boxes"][start:stop])["vocal"][None]


def draw_control(config, rng: np.random.Generator) -> str:
  """The control of a sample (one of CONTROLS): config.tokens, or for "mixed" "video" with
  probability config.video_probability (one uniform draw of `rng`), else "audio"."""
  if config.tokens != "mixed":
    return config.tokens
  return "video" if rng.random() < config.video_probability else "audio"


def sample_draws(config, clips: clip_records.ClipSource, step: int, index: int,
                 context_frames: int) -> tuple[dict, dict, str, int]:
  """(the clip's part, the sample, its control, the seed of its noise level and noise) of sample
  `index` of `step`, all from the seeds (config.seed, step, index): what a resumed run or another
  number of processes draws alike. The control is drawn last, so a mixed run sees the samples and
  noise that an audio or a video run with the same seed sees."""
  rng = np.random.default_rng([config.seed, step, index])
  clip, sample = dub_samples.shard_sample(clips, rng, num_frames=config.num_frames,
                                          drop_continuity=config.drop_continuity,
                                          context_frames=context_frames)
  noise_seed = int(rng.integers(2**62))
  return clip, sample, draw_control(config, rng), noise_seed


def noise_level(generator: torch.Generator) -> torch.Tensor:
  u = torch.rand(1, generator=generator)
  return SIGMA_SHIFT * u / (1 + (SIGMA_SHIFT - 1) * u)


def resolve_device(device: str) -> torch.device:
  """One of DEVICES -> this process's device (`cuda:LOCAL_RANK` for "cuda")."""
  if device not in DEVICES:
    raise ValueError(f"device={device!r} must be one of {DEVICES}")
  if device == "auto":
    device = "cuda" if torch.cuda.is_available() else "cpu"
  if device == "cpu":
    return torch.device("cpu")
  local = int(os.environ.get("LOCAL_RANK", "0"))
  torch.cuda.set_device(local)
  return torch.device("cuda", local)


def processes(device: str) -> tuple[int, int, torch.device]:
  """(rank, world size, this process's device); joins the process group when torchrun started
  several processes (NCCL on GPUs, Gloo on CPUs)."""
  world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
  place = resolve_device(device)
  if world > 1 and not distributed.is_initialized():
    distributed.init_process_group("nccl" if place.type == "cuda" else "gloo")
  return rank, world, place


def average_gradients(trained: list, world: int) -> None:
  """Sums the trained parameters' gradients over the processes (each already divided by the
  number of samples of the step), flattened into one buffer per dtype for one all-reduce each."""
  if world == 1:
    return
  grads = [p.grad for _, p in trained if p.grad is not None]
  for dtype in {g.dtype for g in grads}:
    group = [g for g in grads if g.dtype == dtype]
    flat = torch.cat([g.reshape(-1) for g in group])
    distributed.all_reduce(flat)
    offset = 0
    for g in group:
      g.copy_(flat[offset:offset + g.numel()].view_as(g))
      offset += g.numel()


def save_checkpoint(path: str, step: int, trained: list, optimizer) -> None:
  """The trained parameters and AdamW's state (moments and step of each) as one safetensors file."""
  tensors = {f"param/{name}": p.detach().contiguous() for name, p in trained}
  state = optimizer.state_dict()["state"]
  for index, (name, _) in enumerate(trained):
    for key, value in state.get(index, {}).items():
      tensors[f"adam/{name}/{key}"] = torch.as_tensor(value).detach().contiguous()
  tmp = path + ".tmp"
  safetensors.torch.save_file(tensors, tmp, metadata={"step": str(step)})
  os.replace(tmp, path)


def latest_checkpoint(workdir: str) -> tuple[int, str] | None:
  paths = glob.glob(os.path.join(workdir, "checkpoints", "step_*.safetensors"))
  if not paths:
    return None
  steps = [(int(os.path.basename(p)[5:-12]), p) for p in paths]
  return max(steps)


def restore_checkpoint(path: str, trained: list, optimizer) -> int:
  """Loads `path` into the trained parameters and the optimizer (None: parameters only, for
  inference); returns its step."""
  tensors = safetensors.torch.load_file(path)
  with safetensors.safe_open(path, "pt") as f:
    step = int(f.metadata()["step"])
  missing = [name for name, _ in trained if f"param/{name}" not in tensors]
  if missing:
    raise ValueError(f"{path} lacks trained parameters {missing[:3]}: another model or AudioPack")
  with torch.no_grad():
    for name, p in trained:
      p.copy_(tensors[f"param/{name}"])
  if optimizer is not None:
    state = optimizer.state_dict()
    for index, (name, _) in enumerate(trained):
      moments = {key.rsplit("/", 1)[1]: value for key, value in tensors.items()
                 if key.startswith(f"adam/{name}/")}
      if moments:
        state["state"][index] = moments
    optimizer.load_state_dict(state)
  return step


def build_models(config):
  """(transformer, VAE, tokenizer, AudioPack attached to the transformer) of a dub config."""
  transformer, vae = load_wan_vace(config.wan_vace)
  vae.eval().requires_grad_(False)
  tokenizer = tokens_lib.SyncTokenizer.from_pretrained(config.synclipmae)
  tokenizer.requires_grad_(False)
  width = transformer.config.num_attention_heads * transformer.config.attention_head_dim
  pack = audiopack.AudioPack(tokenizer.model.arch["encoder"]["width"], width,
                             hidden=config.audiopack_hidden)
  audiopack.attach(transformer, pack)
  return transformer, vae, tokenizer, pack


def train(config, workdir: str) -> dict:
  """Trains (resuming from `workdir`'s latest checkpoint); returns the last step's metrics."""
  # ---------------------------------------------------------------- config, processes & workdir
  validate(config)
  rank, world, device = processes(config.device)
  samples = config.samples_per_process * world  # per step, over all processes
  if rank == 0:
    os.makedirs(os.path.join(workdir, "checkpoints"), exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      f.write(config.to_json(indent=1))

  # ---------------------------------------------------------------- models
  transformer, vae, tokenizer, pack = build_models(config)
  for module in (transformer, vae, tokenizer, pack):
    module.to(device)
  if config.gradient_checkpointing:
    transformer.enable_gradient_checkpointing()
  pipe = dub_step.pipeline(transformer, vae)

  # ---------------------------------------------------------------- what trains
  trained = dub_step.freeze(transformer, pack)
  dub_step.cast_frozen(transformer, FROZEN_DTYPES[config.frozen_dtype])
  optimizer = torch.optim.AdamW([p for _, p in trained], lr=config.learning_rate,
                                weight_decay=config.weight_decay)

  # ---------------------------------------------------------------- data
  clips = clip_records.ClipSource(sorted(glob.glob(config.shards)))  # streamed: samples read their frames
  context = tokenizer.model.arch["audio"]["input_context_frames"]
  if config.prompt_embeds:
    prompt = safetensors.torch.load_file(config.prompt_embeds)["prompt_embeds"]
  else:
    prompt = torch.zeros(1, config.prompt_length, transformer.config.text_dim)
  prompt = prompt.to(device)

  # ---------------------------------------------------------------- checkpoint
  step = 0
  latest = latest_checkpoint(workdir)
  if latest is not None:
    step = restore_checkpoint(latest[1], trained, optimizer)

  # ---------------------------------------------------------------- loop
  metrics = {}
  log = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8") if rank == 0 else None  # pylint: disable=consider-using-with
  try:
    while step < config.num_train_steps:
      optimizer.zero_grad(set_to_none=True)
      # sums over this process's samples: loss, sigma, video-driven samples
      figures = torch.zeros(3, dtype=torch.float64)
      for j in range(config.samples_per_process):
        index = rank * config.samples_per_process + j
        clip, sample, source, noise_seed = sample_draws(config, clips, step, index, context)
        with torch.no_grad():
          control = control_tokens(tokenizer, clip, sample, source)
        encoded = dub_step.encode_sample(pipe, sample)
        generator = torch.Generator().manual_seed(noise_seed)  # noise on the CPU:
        sigma = noise_level(generator)  # the same draws on every device
        noise = torch.randn(encoded["latents"].shape, generator=generator).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
          loss = dub_step.flow_matching_loss(transformer, pack, encoded, control, prompt,
                                             sigma.to(device), noise)
        (loss / samples).backward()
        figures += torch.tensor([loss.item(), float(sigma), float(source == "video")],
                                dtype=torch.float64)
      if world > 1:
        distributed.all_reduce(figures)
      mean_loss, mean_sigma, video = (figures / samples).tolist()
      if not np.isfinite(mean_loss):
        raise FloatingPointError(f"step {step + 1}: the flow-matching loss is {mean_loss}; "
                                 "nothing of this step is saved")
      average_gradients(trained, world)
      optimizer.step()
      step += 1
      metrics = {"step": step, "loss": mean_loss, "sigma": mean_sigma, "video_driven": video}
      if rank == 0 and (step % config.log_every_steps == 0 or step == config.num_train_steps):
        log.write(json.dumps(metrics) + "\n")
        log.flush()
      if rank == 0 and (step % config.checkpoint_every_steps == 0 or step == config.num_train_steps):
        save_checkpoint(os.path.join(workdir, "checkpoints", f"step_{step}.safetensors"), step,
                        trained, optimizer)
  finally:
    if log is not None:
      log.close()
  if world > 1:
    distributed.barrier()  # the last checkpoint is written before any process returns
  return metrics


def run() -> None:
  """Command line (`synclipmae-dub-train`)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel

  config = config_flags.DEFINE_config_file("config", None, "configs/dub.py[:tiny]", lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "Checkpoints and metrics.jsonl go here.")
  flags.mark_flags_as_required(["config", "workdir"])
  def main(argv):
    del argv
    metrics = train(config.value, workdir.value)
    if distributed.is_initialized():
      distributed.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
      print(metrics)

  command_line.run(main, __name__)


if __name__ == "__main__":
  run()
