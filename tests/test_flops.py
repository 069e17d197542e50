"""The analytical FLOP count (`flops.train_step_flops`) against XLA's count of the step (no scan,
no remat; its cost analysis of the lowered step, the whole program before partitioning and
XLA's optimisations: a function of the program alone, and within 1 % of the compiled step's on
test_loss_weights' configs), for loss.contrastive.group_size=0 on 1 and 2 batch shards: the
count follows the group the step really uses (one batch shard's clips)."""

import jax
import pytest

from configs import demo
from synclipmae_jax import experiment, flops, losses, sharding
from synclipmae_jax.models import vit


def xla_and_analytical(encoder: str, window_frames: int, shards: int) -> tuple[float, float]:
  config = demo.get_config("tiny")
  config.model.update(encoder_size=encoder, image_size=16, patch_size=8)
  config.model.decoder.update(width=64, depth=1, num_heads=2, mlp_dim=256)
  config.data.update(global_batch_size=8, window_frames=window_frames)
  config.loss.contrastive.group_size = 0  # one batch shard's clips per group
  config.mesh.update(data=shards, fsdp=1, tensor=1)
  exp = experiment.build(config, sharding.make_mesh(config.mesh, jax.devices()[:shards]))
  with exp.scope():
    lowered = exp.train_step.lower(exp.abstract_state, exp.abstract_batch)
  return lowered.cost_analysis()["flops"], exp.step_flops  # the whole program's, all shards


@pytest.fixture(scope="module")
def logits_heavy():
  """128-frame windows: the contrastive logits and positive sets are ~8 % of the step."""
  return {shards: xla_and_analytical("mini", 128, shards) for shards in (1, 2)}


@pytest.mark.slow  # three lowerings of larger steps (a few seconds each)
@pytest.mark.xfail(strict=True, reason=(
    "since issue 16's decorrelation change XLA's count of (1 shard - 2 shards) differs from the "
    "analytical 470 M FLOPs by 7-8 % (compiled step: 431 M, lowered step: 504 M); without the "
    "penalty the compiled count is 395 M, so the analytical logits/positives terms overcount by "
    "~16 % and the old penalty's shard asymmetry hid it; to investigate (issue 16 note)"))
def test_the_count_follows_the_contrastive_group_of_each_batch_sharding(logits_heavy):
  (xla_1, analytical_1), (xla_2, analytical_2) = logits_heavy[1], logits_heavy[2]
  # Halving the group (2 shards) removes half of the group-size-dependent work.
  assert analytical_1 - analytical_2 == pytest.approx(xla_1 - xla_2, rel=0.05)
  assert analytical_1 - analytical_2 > 0.01 * analytical_1


@pytest.mark.slow
def test_the_count_is_within_two_percent_of_xlas_where_matmuls_dominate():
  xla, analytical = xla_and_analytical("B", 8, 1)
  assert analytical == pytest.approx(xla, rel=0.02)


@pytest.mark.parametrize("negatives", ["group", "global"])
def test_contrastive_count_is_xlas_count_of_the_loss(negatives):
  """`flops.contrastive_flops` against XLA's count of the contrastive loss's forward pass on one
  device (128 clips x 4 frames, ViT-B's 768-wide tokens and wav2vec2-base's 13 x 768 audio
  features). Per pair of frames the matmuls cost 2 * (768 + 9984) FLOPs against some 50
  element-wise ones (the softmaxes, masks and comparisons), and the features' centring and
  normalisation a few FLOPs per feature, under 1 % beside their similarity with >= 256
  candidates: hence 2 %. Group: 2 groups of 64 clips (vmapped); global: `losses.batch_infonce`
  of the whole batch (both directions, one similarity)."""
  config = demo.get_config("tiny")
  config.model.encoder_size = "B"
  config.data.update(global_batch_size=128, window_frames=4)
  config.loss.contrastive.negatives = negatives
  b, t, d, layers, channels, g = 128, 4, vit.vit_size("B").width, 13, 768, 64
  audio = jax.ShapeDtypeStruct((b, t, d), "float32")
  features = jax.ShapeDtypeStruct((b, t, layers * channels), "float32")
  infonce = dict(temperature=0.1, neighbor_delta=1,
                 similarity_threshold=config.loss.contrastive.similarity_threshold)

  def fn(a, v, f):
    if negatives == "global":
      return losses.batch_infonce(a, v, f, axis_name=None, **infonce)[0]
    return jax.vmap(lambda *x: losses.multi_positive_infonce(*x, **infonce)[0])(
        *(x.reshape((b // g, g) + x.shape[1:]) for x in (a, v, f))).mean()

  xla = jax.jit(fn).lower(audio, audio, features).cost_analysis()["flops"]
  logits, positives = flops.contrastive_flops(config, group_size=g,
                                              audio_features=(layers, channels))
  assert logits + positives == pytest.approx(xla, rel=0.02)
  assert flops.contrastive_candidates(config, g) == (b if negatives == "global" else g) * t
