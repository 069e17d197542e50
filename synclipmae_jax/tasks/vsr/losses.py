"""The hybrid CTC/attention loss of lip reading (paper 4.3, the Auto-AVSR recipe):

  L = w * L_CTC + (1 - w) * L_att,   w = `ctc_weight` (0.1),

L_CTC the CTC negative log-likelihood of the unit sequence given the encoder's per-frame
logits (`optax.ctc_loss`, blank = `text_units.BLANK`), averaged over utterances; L_att the
label-smoothed cross-entropy of the decoder's next-unit predictions under teacher forcing,
averaged over the real (unpadded) target units.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from synclipmae_jax.tasks.vsr import text_units


def decoder_io(units, unit_mask):
  """Teacher forcing: units [B, L] (padded with BLANK where unit_mask is False) -> (decoder
  inputs [B, L + 1] = START + units, targets [B, L + 1] = units + END, target mask [B, L + 1])."""
  b = units.shape[0]
  lengths = unit_mask.sum(1)
  inputs = jnp.concatenate([jnp.full((b, 1), text_units.START, units.dtype), units], axis=1)
  padded = jnp.concatenate([units, jnp.zeros((b, 1), units.dtype)], axis=1)
  positions = jnp.arange(units.shape[1] + 1)[None]
  targets = jnp.where(positions == lengths[:, None], text_units.END, padded)
  return inputs, targets, positions <= lengths[:, None]


def ctc_loss(ctc_logits, frame_mask, units, unit_mask):
  """Mean over utterances of the CTC negative log-likelihood [scalar]."""
  per_utterance = optax.ctc_loss(ctc_logits, 1.0 - frame_mask.astype(jnp.float32), units,
                                 1.0 - unit_mask.astype(jnp.float32), blank_id=text_units.BLANK)
  return per_utterance.mean()


def attention_loss(att_logits, targets, target_mask, label_smoothing: float):
  """Label-smoothed cross-entropy averaged over the real target units [scalar]."""
  vocab = att_logits.shape[-1]
  labels = optax.smooth_labels(jnp.eye(vocab, dtype=jnp.float32)[targets], label_smoothing)
  per_unit = optax.softmax_cross_entropy(att_logits, labels)
  weights = target_mask.astype(jnp.float32)
  return (per_unit * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def hybrid_loss(ctc_logits, frame_mask, att_logits, targets, target_mask, units, unit_mask, *,
                ctc_weight: float, label_smoothing: float) -> dict:
  """{"total", "ctc", "attention"} of one batch."""
  ctc = ctc_loss(ctc_logits, frame_mask, units, unit_mask)
  att = attention_loss(att_logits, targets, target_mask, label_smoothing)
  return {"total": ctc_weight * ctc + (1.0 - ctc_weight) * att, "ctc": ctc, "attention": att}
