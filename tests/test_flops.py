"""The analytical FLOP count (`flops.train_step_flops`) against XLA's count of the step (no scan,
no remat; its cost analysis of the lowered step, the whole program before partitioning and
XLA's optimisations: a function of the program alone, and within 1 % of the compiled step's on
test_loss_weights' configs), for loss.contrastive.group_size=0 on 1 and 2 batch shards: the
count follows the group the step really uses (one batch shard's clips)."""

import jax
import pytest

from configs import demo
from synclipmae_jax import experiment, sharding

pytestmark = pytest.mark.slow  # three lowerings of larger steps (a few seconds each)


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


def test_the_count_is_within_two_percent_of_xlas_where_matmuls_dominate():
  xla, analytical = xla_and_analytical("B", 8, 1)
  assert analytical == pytest.approx(xla, rel=0.02)
