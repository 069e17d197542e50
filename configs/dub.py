r"""The dubbing fine-tune (paper 4.4, `synclipmae-dub-train`): WanVACE-1.3B with the AudioPack, the
Wan backbone frozen, the VACE blocks, the VACE patch embedding and the AudioPack trained by flow
matching on prepared talking-face shards, driven by the exported SyncLipMAE's audio tokens
("audio"), a driving video's vocal-motion tokens ("video") or either, drawn per sample ("mixed").

  synclipmae-dub-train --config=configs/dub.py --workdir=/tmp/dub \
      --config.wan_vace=/path/to/Wan2.1-VACE-1.3B-diffusers --config.synclipmae=/path/to/export \
      --config.shards='/data/prepared/train-*.array_record'

The paper's settings: 17 target frames + 1 identity reference + 1 continuity frame (dropped with
probability 0.1), batch 1 per GPU on 128 GPUs for 30k steps, bf16, gradient checkpointing. On 16
machines of 8 GPUs (each process one GPU and one sample per step, gradients averaged over all):

  torchrun --nnodes=16 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \
      -m synclipmae_torch.dub_train --config=configs/dub.py --workdir=/shared/dub \
      --config.wan_vace=/path/to/Wan2.1-VACE-1.3B-diffusers --config.synclipmae=/path/to/export \
      --config.shards='/data/prepared/train-*.array_record'

(one process, as above, trains at batch `samples_per_process`; a global batch of 128 on fewer
GPUs: raise samples_per_process, which accumulates gradients.)

Variants: `tiny`, a randomly initialised smallest WanVACE and Wan VAE (diffusers' test sizes) for
a few steps on CPU: what the tests train (`wan_vace="tiny"`).
"""

import ml_collections


def get_config(arg: str | None = None):
  if arg not in (None, "tiny"):
    raise ValueError(f"unknown variant {arg!r} of configs/dub.py (known: tiny)")
  c = ml_collections.ConfigDict()
  c.wan_vace = ""  # a local WanVACE folder in diffusers' format (transformer/, vae/), or "tiny"
  c.synclipmae = ""  # the folder `synclipmae-export` wrote
  c.shards = ""  # prepared ArrayRecord shards (a glob)
  # The control tokens the fine-tune sees: "audio" (audio-driven), "video" (vocal motion) or
  # "mixed" (each sample's drawn: video with probability video_probability). Any run is driven
  # by either at inference (synclipmae-dub --speech or --driving_video).
  c.tokens = "audio"
  c.video_probability = 0.5  # of a video-driven sample, with tokens="mixed"
  c.num_frames = 17
  c.drop_continuity = 0.1
  c.num_train_steps = 30_000
  c.learning_rate = 1e-5
  c.weight_decay = 0.0
  c.bf16 = True  # bf16 autocast
  c.frozen_dtype = "bfloat16"  # the frozen Wan backbone held in bf16 (the trained parts: float32)
  c.gradient_checkpointing = True
  c.checkpoint_every_steps = 1000
  c.log_every_steps = 50
  c.audiopack_hidden = 512
  c.prompt_embeds = ""  # a safetensors file with "prompt_embeds" [1, L, text_dim]; "" = zeros
  c.prompt_length = 512  # of the zero prompt
  c.samples_per_process = 1  # per step; the global batch is this x the number of processes
  c.device = "auto"  # "cuda" (the process's LOCAL_RANK) when there is one, else "cpu"
  c.seed = 0
  if arg == "tiny":
    c.wan_vace = "tiny"
    c.num_train_steps = 6
    c.learning_rate = 1e-3
    c.bf16 = False
    c.frozen_dtype = "float32"
    c.gradient_checkpointing = False
    c.checkpoint_every_steps = 3
    c.log_every_steps = 1
    c.audiopack_hidden = 16
    c.prompt_length = 4
  return c
