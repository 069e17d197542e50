"""A loss term of weight 0 costs nothing: `objective.compute_losses` neither computes nor logs it,
nor what only serves it (the audio-driven decoder pass of recon_audio; the adapter, logits and
positive sets of the contrastive term), and the analytical FLOP count (`flops.train_step_flops`)
drops by what XLA's count of the step drops (its cost analysis of the lowered step: within 1 % of
the compiled step's, without a compile)."""

import jax
import numpy as np
import pytest

from configs import demo
from synclipmae_jax import experiment, objective, sharding, train_state
from synclipmae_jax.models import audio_encoder as audio_encoder_lib
from synclipmae_jax.models import synclipmae

ZERO = {"default": {}, "no_audio_pass": dict(recon_audio=0.0),
        "plain_mae": dict(recon_audio=0.0, contrastive=0.0, decorrelation=0.0)}


def config_for(weights: dict):
  c = demo.get_config("tiny")
  c.model.update(encoder_size="mini", image_size=16, patch_size=8)
  c.model.decoder.update(width=64, depth=2, num_heads=2, mlp_dim=256)
  c.loss.weights.update(weights)
  c.mesh.update(data=1, fsdp=1, tensor=1)
  return c


@pytest.fixture(scope="module")
def steps():
  """{name: (XLA's FLOPs of the train step, the analytical count, the experiment)}."""
  out = {}
  for name, weights in ZERO.items():
    config = config_for(weights)
    exp = experiment.build(config, sharding.make_mesh(config.mesh, jax.devices()[:1]))
    with exp.scope():
      lowered = exp.train_step.lower(exp.abstract_state, exp.abstract_batch)
    out[name] = (lowered.cost_analysis()["flops"], exp.step_flops, exp)
  return out


def test_zero_weight_terms_are_neither_computed_nor_logged(steps):
  exp = steps["default"][2]
  with exp.scope():
    state = jax.device_get(exp.init(jax.random.PRNGKey(0)))
  batch = train_state.random_batch(exp.config, seed=0, clips_per_identity=2)
  t = exp.config.data.window_frames
  features = audio_encoder_lib.build(exp.config.model.audio).apply({"params": {}}, batch["audio"], t)
  model = synclipmae.build(exp.config.model)
  results = {}
  for name, weights in ZERO.items():
    config = config_for(weights)
    losses = jax.jit(lambda p, b, f, config=config: objective.compute_losses(
        p, model, b, f, jax.random.PRNGKey(3), config, 8))
    total, (metrics, aux) = jax.device_get(losses(state.params, batch, features))
    results[name] = (float(total), metrics, aux)
  full, no_audio, plain = results["default"], results["no_audio_pass"], results["plain_mae"]
  assert {"loss/recon_audio", "loss/contrastive", "loss/decorrelation"} <= set(full[1])
  assert "loss/recon_audio" not in no_audio[1] and no_audio[2]["pred_audio"] is None
  assert not any(k.startswith(("loss/contrastive", "contrastive/", "loss/decorrelation"))
                 for k in plain[1])
  # The video-driven pass is the same computation with or without the audio-driven one beside it,
  # in programs that XLA fuses differently: equal to float32 rounding of values of size ~1, and the
  # losses (means over ~1e4 terms) to ~1e-6 of their size.
  np.testing.assert_allclose(no_audio[2]["pred_video"], full[2]["pred_video"], rtol=1e-5, atol=1e-6)
  w = exp.config.loss.weights
  assert plain[0] == pytest.approx(float(full[1]["loss/recon_video"]), rel=1e-5)
  assert no_audio[0] == pytest.approx(full[0] - w.recon_audio * float(full[1]["loss/recon_audio"]),
                                      rel=1e-5)


def test_the_step_does_less_work_and_the_count_follows(steps):
  xla = {name: flops for name, (flops, _, _) in steps.items()}
  analytical = {name: count for name, (_, count, _) in steps.items()}
  # The audio-driven decoder pass: ~12 % of this step, removed in both counts alike.
  saved = xla["default"] - xla["no_audio_pass"]
  assert saved > 0.08 * xla["default"]
  assert analytical["default"] - analytical["no_audio_pass"] == pytest.approx(saved, rel=0.15)
  assert xla["plain_mae"] < xla["no_audio_pass"]
  assert analytical["plain_mae"] < analytical["no_audio_pass"]


def test_a_run_without_the_audio_pass_writes_its_reconstruction_images(steps):
  """The image summary of a plain-MAE run has the original, masked and video-driven panels only
  (visual_step once crashed on the missing audio-driven reconstruction)."""
  from synclipmae_jax.tasks import pretrain  # pylint: disable=import-outside-toplevel

  written = {}

  class Writer:
    def write_images(self, step, images):
      written[step] = images

  images = {}
  for name in ("default", "plain_mae"):
    exp = steps[name][2]
    with exp.scope():
      state = exp.init(jax.random.PRNGKey(0))
    batch = train_state.random_batch(exp.config, seed=0, clips_per_identity=2)
    pretrain.write_images(Writer(), exp, state, batch, 7)
    images[name] = written.pop(7)["reconstructions"]
  # One panel fewer: the audio-driven reconstruction's.
  assert images["plain_mae"].shape[2] * 4 == images["default"].shape[2] * 3
