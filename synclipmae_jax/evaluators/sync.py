"""Audio-visual sync evaluation on held-out clips (paper 4.1 and 5).

For each held-out clip of N frames the audio is shifted by a known lag L, drawn uniformly
from [-max_true_lag, max_true_lag] (positive: the video lags the audio, so audio frame t
belongs with video frame t + L): the audio window is frames [S + L, N - S + L) with
S = `max_lag`, and the video tokens of all N frames give every candidate lag in [-S, S] a
real frame on every audio frame. The waveform itself is cut at the shifted position, so the
audio encoder sees the shifted stream. Audio tokens are computed exactly as in training: windows
of `data.window_frames` frames slid over the span, each with the training pipeline's audio context
(`data_pipelines.audio_windows`). Vocal-motion tokens and audio tokens go to
`sync_metrics.lag_detection` (Acc and Offset for windows of K frames) and, unshifted, to
`sync_metrics.r_precision` (pool of 32). All tokens are the frozen model's; no extra head
is trained.

Options (`config.evals.<name>`, defaults in `config_defaults.sync_eval_config`): num_clips,
max_true_lag, trials_per_clip, windows, max_lag, tolerance, pool_size, ks, view ("face":
the deterministic face-preserving view, the k highest-weight patches, ties to the lower patch
index: `face_weights.top_k`; "full": all patches), frames_per_call, seed.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import audio_windows, grain_pipeline
from data_pipelines import face_weights as face_weights_lib
from synclipmae_jax import config_defaults, losses, masking, objective, sync_metrics, tasks
from synclipmae_jax.models import audio_encoder as audio_encoder_lib
from synclipmae_jax.models import layers

VIEWS = ("face", "full")


def validate(entry, config) -> list[str]:
  """Problems of a sync evaluator's options (`common.validate` prefixes them)."""
  errors = []
  if entry.view not in VIEWS:
    errors.append(f"view={entry.view!r} must be one of {VIEWS}")
  if entry.num_clips < 1 or entry.trials_per_clip < 1:
    errors.append("num_clips and trials_per_clip must be >= 1")
  if not 0 <= entry.max_true_lag <= entry.max_lag:
    errors.append(f"max_true_lag={entry.max_true_lag} must be in [0, max_lag={entry.max_lag}]")
  if config.data.source == "synthetic":
    s = config.data.synthetic
    n = s.eval_clip_frames - 2 * entry.max_lag
    if n < max(max(entry.windows), config.data.window_frames):
      errors.append(f"max_lag={entry.max_lag}: held-out clips of {s.eval_clip_frames} frames leave {n} "
                    f"audio frames after +-{entry.max_lag} frames of lag context, fewer than the largest "
                    f"window {max(entry.windows)} or data.window_frames={config.data.window_frames}")
    if s.num_eval_clips < entry.num_clips:
      errors.append(f"num_clips={entry.num_clips} > data.synthetic.num_eval_clips={s.num_eval_clips}")
  return errors


def entry_of(config):
  """The config's sync evaluator options (`config.evals.sync` when it is of the type the run's
  task scores sync with, `SYNC_EVALUATOR`; the defaults of that type for a run trained without
  it), for the tools that evaluate a checkpoint."""
  task = tasks.get(config)
  if not hasattr(task, "SYNC_EVALUATOR"):
    raise ValueError(f"a {tasks.name_of(config)} run has no sync evaluation")
  entry = config.evals.get("sync")
  if entry is None or entry.get("type") != task.SYNC_EVALUATOR:
    entry = config.evals.sync = config_defaults.sync_eval_config(type=task.SYNC_EVALUATOR)
  return entry


def evaluator_of_run(config, entry, eval_paths: list[str], *, model=None, audio_encoder=None):
  """The sync-protocol evaluator of a run read from its workdir (the tools): `entry.type`'s
  Evaluator with the run's task's model and audio front end (built from the config unless given,
  e.g. once for many videos)."""
  from synclipmae_jax.evaluators import common  # pylint: disable=import-outside-toplevel
  return common.module(entry.type).Evaluator(
      entry, config, model=model or tasks.get(config).build_model(config),
      audio_encoder=audio_encoder or audio_encoder_lib.build(config.model.audio),
      eval_paths=eval_paths)


@functools.cache
def prompt_tokens_fn(model, view: str, face_weights: tuple[tuple[str, float], ...], mask_ratio: float):
  """Jitted (params, frames uint8 [F, H, W, 3], face_boxes [F, 4], mouth_boxes [F, 4]) ->
  prompt tokens [F, 3, D] (identity, vocal motion, ambient motion), replicated (every host reads
  them whole)."""
  n = model.grid * model.grid
  k = masking.num_visible(n, mask_ratio)

  @jax.jit
  def tokens(params, frames, face_boxes, mouth_boxes):
    patches = objective.images_to_patches(objective.frames_to_unit(frames), model.patch_size)
    f = patches.shape[0]
    if view == "full":
      keep = jnp.broadcast_to(jnp.arange(n), (f, n))
    else:
      weights = face_weights_lib.patch_weights(face_boxes, mouth_boxes, model.grid, **dict(face_weights),
                                               xp=jnp)
      keep = masking.top_weight_keep(weights, k)
    _, prompts = model.apply({"params": params}, patches, keep, method=model.encode)
    return layers.constrain(prompts, None, None, None)

  return tokens


def prompt_tokens_for(model, config, entry):
  """`prompt_tokens_fn` with the view of evaluator options `entry` and the config's masking."""
  return prompt_tokens_fn(model, entry.view, tuple(sorted(config.masking.face_weights.items())),
                         config.masking.mask_ratio)


@functools.cache
def audio_tokens_fn(model, audio_encoder, num_frames: int):
  """Jitted (params, frozen, waveforms [W, audio_encoder.window_samples(num_frames)]) -> audio
  tokens [W, num_frames, D] of W windows (`audio_windows.audio_window`), replicated."""

  @jax.jit
  def tokens(params, frozen, waveforms):
    features = audio_encoder.apply({"params": frozen}, waveforms, num_frames)
    out = model.apply({"params": params}, features, method=model.encode_audio)
    return layers.constrain(out, None, None, None)

  return tokens


def windows_per_call(entry, window_frames: int) -> int:
  """Audio windows per call of `audio_tokens_fn`: about frames_per_call frames."""
  return max(1, entry.frames_per_call // window_frames)


class Evaluator:
  """Holds the held-out clips; `run(params, frozen)` -> {"sync/acc_k5": ..., ...}. DISTANCE: the
  metrics' distance between tokens (`sync_metrics.DISTANCES`)."""

  DISTANCE = "cosine"

  def __init__(self, entry, config, *, model, audio_encoder, eval_paths: list[str]):
    self.load(entry, config, model, audio_encoder, eval_paths)
    self.prompt_fn = prompt_tokens_for(model, config, entry)
    self.audio_fn = audio_tokens_fn(model, audio_encoder, self.window_frames)

  def load(self, entry, config, model, audio_encoder, eval_paths: list[str]) -> None:
    """The options, the models, the held-out clips and the trials (clip, true lag)."""
    self.c = entry
    self.model = model
    self.audio_encoder = audio_encoder
    self.window_frames = config.data.window_frames
    self.windows_per_call = windows_per_call(entry, self.window_frames)
    self.clips = grain_pipeline.load_eval_clips(eval_paths, max_clips=entry.num_clips)
    if len(self.clips) < entry.num_clips:
      raise ValueError(f"num_clips={entry.num_clips} but only {len(self.clips)} held-out clips")
    m = entry.max_true_lag
    rng = np.random.default_rng(entry.seed)
    self.trials = [(i, int(rng.integers(-m, m + 1))) for i in range(len(self.clips))
                   for _ in range(entry.trials_per_clip)]

  def prompt_tokens(self, params, clip: dict, start: int, stop: int) -> np.ndarray:
    """Prompt tokens [stop - start, 3, D] of frames [start, stop) of `clip`, frames_per_call at a
    time."""
    out, step = [], self.c.frames_per_call
    for s in range(start, stop, step):
      e = min(s + step, stop)
      out.append(np.asarray(self.prompt_fn(
          params, clip["frames"][s:e], clip["face_boxes"][s:e], clip["mouth_boxes"][s:e])))
    return np.concatenate(out)

  def video_tokens(self, params, clip: dict, start: int, stop: int) -> np.ndarray:
    """Vocal-motion tokens [stop - start, D] of frames [start, stop) of `clip`."""
    return self.prompt_tokens(params, clip, start, stop)[:, 1]

  def clip_tokens(self, params, clip: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """(the video tokens [N, D] the lag sweep compares, the prompts [N, 3, D] of the factor
    correlations) of all N frames of `clip`."""
    prompts = self.prompt_tokens(params, clip, 0, len(clip["frames"]))
    return prompts[:, 1], prompts

  def sliding_audio(self, fn, clip: dict, start: int, stop: int) -> np.ndarray:
    """fn's per-frame outputs [stop - start, ...] for frames [start, stop) of `clip`: fn maps
    waveforms of training's windows of `data.window_frames` frames with their audio context
    [W, samples] to [W, window_frames, ...]; the windows slide over the span."""
    t, per_call = self.window_frames, self.windows_per_call
    starts, window, offset = audio_windows.sliding_windows(start, stop, t)
    context = self.audio_encoder.input_context_frames
    waves = np.stack([audio_windows.audio_window(clip["audio"], s, s + t, context) for s in starts])
    waves = np.concatenate([waves, np.zeros((-len(waves) % per_call,) + waves.shape[1:], np.float32)])
    out = np.concatenate([np.asarray(fn(waves[i:i + per_call])) for i in range(0, len(waves), per_call)])
    return out[window, offset]

  def audio_tokens(self, params, frozen, clip: dict, start: int, stop: int) -> np.ndarray:
    """Audio tokens [stop - start, D] of frames [start, stop) of `clip` (`sliding_audio`)."""
    return self.sliding_audio(lambda waves: self.audio_fn(params, frozen, waves), clip, start, stop)

  def run(self, params, frozen) -> dict[str, float]:
    return self.evaluate(params, frozen)[0]

  def tokens(self, params, frozen) -> dict:
    """What the metrics are computed from: per trial its audio and video tokens ("audio",
    "video"; video with max_lag frames of context on each side) and true lag ("lags"); per
    clip its time-aligned audio tokens ("aligned_audio"), vocal tokens ("aligned_video") and
    prompts ("prompts"; None for models without them)."""
    s = self.c.max_lag
    clip_tokens = [self.clip_tokens(params, clip) for clip in self.clips]
    out = {"audio": [], "video": [], "lags": [], "aligned_video": [v for v, _ in clip_tokens],
           "prompts": [p for _, p in clip_tokens]}
    for i, lag in self.trials:
      n = len(self.clips[i]["frames"])
      out["audio"].append(self.audio_tokens(params, frozen, self.clips[i], s + lag, n - s + lag))
      out["video"].append(out["aligned_video"][i])
      out["lags"].append(lag)
    out["aligned_audio"] = [self.audio_tokens(params, frozen, clip, 0, len(clip["frames"]))
                            for clip in self.clips]
    return out

  def evaluate(self, params, frozen) -> tuple[dict[str, float], list[dict]]:
    """The metrics, and per trial: its clip, true lag, per-K accuracy and offset, and the
    whole-clip distance-vs-lag curve with its estimate and confidence (`sync_metrics.lag_curve`)."""
    return self.metrics(self.tokens(params, frozen))

  def metrics(self, tokens: dict) -> tuple[dict[str, float], list[dict]]:
    """`evaluate`'s metrics and trials from `tokens`' tokens."""
    s = self.c.max_lag
    results = sync_metrics.lag_detection(
        tokens["audio"], tokens["video"], tokens["lags"], windows=tuple(self.c.windows), max_lag=s,
        tolerance=self.c.tolerance, distance=self.DISTANCE)
    metrics = {}
    for k, r in results.items():
      metrics[f"sync/acc_k{k}"] = 100.0 * float(r["acc"])
      metrics[f"sync/offset_k{k}"] = float(r["offset"])
    trials = []
    for j, ((i, lag), audio, video) in enumerate(zip(self.trials, tokens["audio"], tokens["video"])):
      trial = {"clip": i, "true_lag": lag, **sync_metrics.lag_curve(audio, video, s, self.DISTANCE)}
      for k, r in results.items():
        trial[f"acc_k{k}"] = 100.0 * r["acc_per_video"][j]
        trial[f"offset_k{k}"] = r["offset_per_video"][j]
      trials.append(trial)
    rp = sync_metrics.r_precision(np.concatenate(tokens["aligned_audio"]),
                                  np.concatenate(tokens["aligned_video"]),
                                  pool_size=self.c.pool_size, ks=tuple(self.c.ks), seed=self.c.seed,
                                  distance=self.DISTANCE)
    for k, v in rp.items():
      metrics[f"sync/rprec@{k}"] = 100.0 * float(v)
    if tokens["prompts"][0] is not None:
      metrics.update(factor_correlations(np.concatenate(tokens["prompts"])))
    return metrics, trials


def factor_correlations(prompts: np.ndarray) -> dict[str, float]:
  """How much the factors share (paper 3.3's decorrelation, seen on held-out frames): the mean
  absolute Pearson correlation between the dimensions of two prompt tokens, over frames [F, 3, D].
  Independent tokens give about sqrt(2 / (pi F)); one token a copy of the other about 1 / D + that."""
  identity, vocal, ambient = (prompts[:, i] for i in range(3))
  return {f"factors/corr_{a}_{b}": float(np.mean(np.abs(losses.cross_correlation(x, y))))
          for a, b, x, y in (("vocal", "ambient", vocal, ambient),
                             ("identity", "vocal", identity, vocal))}
