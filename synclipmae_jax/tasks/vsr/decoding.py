"""Inference of the lip-reading head (paper 4.3): greedy attention decoding, and the joint
CTC/attention beam search of hybrid models (Watanabe et al. 2017, as ESPnet and Auto-AVSR
decode).

A hypothesis h is scored by  (1 - lambda) log p_att(h) + lambda log psi_ctc(h),  lambda =
`ctc_weight`, where psi_ctc(h) is the CTC prefix probability of h (the total probability of the
frame alignments whose collapsed output starts with h; for a hypothesis ended by END, of those
whose output is exactly h), computed incrementally by `CtcPrefixScorer`. Both terms only fall
as a hypothesis grows, so the search stops as soon as an ended hypothesis scores at least the
best live one. Candidates of each hypothesis are its `pre_beam` best units by attention score
(ESPnet's 1.5 x beam), for which the CTC prefix scores are computed.

The decoder runs as one jitted call per step over the (padded) hypotheses of one utterance
(`step_fn`, module-level and cached), recomputing the prefix (no key/value cache: utterances are
short).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from synclipmae_jax.tasks.vsr import text_units


@dataclasses.dataclass
class CtcState:
  """Log-probabilities [T] of the alignments of frames 0..t whose output is the hypothesis,
  ending in a non-blank (r_n) or a blank (r_b) frame."""

  r_n: np.ndarray
  r_b: np.ndarray


class CtcPrefixScorer:
  """Prefix probabilities of unit sequences under CTC log-probabilities [T, V] of one utterance."""

  def __init__(self, log_probs: np.ndarray):
    self.x = np.asarray(log_probs, np.float64)

  def initial(self) -> CtcState:
    """The empty hypothesis: only blanks so far (its prefix probability is 1)."""
    return CtcState(np.full(len(self.x), -np.inf), np.cumsum(self.x[:, text_units.BLANK]))

  def extend(self, state: CtcState, last: int | None, labels: np.ndarray
             ) -> tuple[np.ndarray, list[CtcState]]:
    """(log psi(h + c) [C], states) for each unit c of labels [C] appended to the hypothesis h
    with CTC state `state` and last unit `last` (None: h is empty). c = END scores h ended."""
    x, blank = self.x, text_units.BLANK
    labels = np.asarray(labels)
    xs = x[:, labels]  # [T, C]
    r_n = np.full(xs.shape, -np.inf)
    r_b = np.full(xs.shape, -np.inf)
    if last is None:
      r_n[0] = xs[0]
    phi = np.repeat(np.logaddexp(state.r_n, state.r_b)[:, None], len(labels), axis=1)
    same = labels == last  # a repeated unit needs a blank between its two emissions
    phi[:, same] = state.r_b[:, None]
    psi = r_n[0].copy()
    for t in range(1, len(x)):
      r_n[t] = np.logaddexp(r_n[t - 1], phi[t - 1]) + xs[t]
      r_b[t] = np.logaddexp(r_n[t - 1], r_b[t - 1]) + x[t, blank]
      psi = np.logaddexp(psi, phi[t - 1] + xs[t])
    ended = labels == text_units.END
    psi[ended] = np.logaddexp(state.r_n[-1], state.r_b[-1])
    return psi, [CtcState(r_n[:, k], r_b[:, k]) for k in range(len(labels))]


@functools.cache
def encode_fn(model):
  """Jitted (params, features [B, T, F], mask [B, T]) -> (hidden, CTC log-probabilities)."""

  @jax.jit
  def encode(params, features, mask):
    hidden, ctc_logits = model.apply({"params": params}, features, mask, method=model.encode)
    return hidden, jax.nn.log_softmax(ctc_logits)

  return encode


@functools.cache
def step_fn(model):
  """Jitted (params, hidden [1, T, W], mask [1, T], prefixes [N, L], lengths [N]) -> the
  attention decoder's next-unit log-probabilities [N, V] after each prefix's first lengths[n]
  units."""

  @jax.jit
  def step(params, hidden, mask, prefixes, lengths):
    n = prefixes.shape[0]
    hidden = jnp.broadcast_to(hidden, (n,) + hidden.shape[1:])
    mask = jnp.broadcast_to(mask, (n,) + mask.shape[1:])
    logits = model.apply({"params": params}, hidden, mask, prefixes, method=model.decode)
    return jax.nn.log_softmax(logits[jnp.arange(n), lengths - 1])

  return step


def _prefixes(hyps: list[list[int]], rows: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
  out = np.zeros((rows, max_len + 1), np.int32)
  lengths = np.ones(rows, np.int32)
  for i, h in enumerate(hyps):
    out[i, :len(h)] = h
    lengths[i] = len(h)
  return out, lengths


def greedy(model, params, hidden, mask, *, max_len: int) -> list[int]:
  """The attention decoder's most likely unit at every step, until END or max_len units."""
  step = step_fn(model)
  tokens = [text_units.START]
  for _ in range(max_len):
    prefixes, lengths = _prefixes([tokens], 1, max_len)
    log_p = np.array(step(params, hidden, mask, prefixes, lengths))[0]
    log_p[text_units.BLANK] = log_p[text_units.START] = -np.inf  # never emitted
    unit = int(np.argmax(log_p))
    if unit == text_units.END:
      break
    tokens.append(unit)
  return tokens[1:]


@dataclasses.dataclass
class _Hyp:
  tokens: list[int]  # START first
  att: float  # log p_att of the units after START
  ctc: float  # log psi_ctc
  state: CtcState | None
  score: float


def beam_search(model, params, hidden, mask, ctc_log_probs, *, beam: int, ctc_weight: float,
                max_len: int) -> list[int]:
  """The best hypothesis of the joint CTC/attention beam search (see the module docstring) for
  one utterance: hidden [1, T, W], mask [1, T], ctc_log_probs [T_real, V] (its real frames)."""
  if beam < 1 or not 0.0 <= ctc_weight <= 1.0:
    raise ValueError(f"beam={beam} must be >= 1 and ctc_weight={ctc_weight} in [0, 1]")
  step = step_fn(model)
  scorer = CtcPrefixScorer(ctc_log_probs) if ctc_weight > 0 else None
  pre_beam = min(ctc_log_probs.shape[1], max(beam, int(1.5 * beam)))
  hyps = [_Hyp([text_units.START], 0.0, 0.0, scorer.initial() if scorer else None, 0.0)]
  ended: list[_Hyp] = []
  for _ in range(max_len):
    prefixes, lengths = _prefixes([h.tokens for h in hyps], beam, max_len)
    log_p = np.array(step(params, hidden, mask, prefixes, lengths))
    candidates = []
    for h, lp in zip(hyps, log_p):
      lp[text_units.BLANK] = lp[text_units.START] = -np.inf  # never emitted
      top = np.argsort(-lp, kind="stable")[:pre_beam if scorer else beam]
      if scorer:
        last = h.tokens[-1] if len(h.tokens) > 1 else None
        psi, states = scorer.extend(h.state, last, top)
      else:
        psi, states = np.zeros(len(top)), [None] * len(top)
      for c, ctc, state in zip(top, psi, states):
        att = h.att + float(lp[c])
        candidates.append(_Hyp(h.tokens + [int(c)], att, float(ctc), state,
                               (1.0 - ctc_weight) * att + ctc_weight * float(ctc)))
    candidates.sort(key=lambda h: -h.score)
    hyps = []
    for h in candidates[:beam]:
      (ended if h.tokens[-1] == text_units.END else hyps).append(h)
    if not hyps or (ended and max(e.score for e in ended) >= hyps[0].score):
      break
  best = max(ended or hyps, key=lambda h: h.score)
  return [t for t in best.tokens[1:] if t != text_units.END]
