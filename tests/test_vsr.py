"""Lip reading (paper 4.3): the Conformer's padding and causality, the hybrid loss against a
brute-force CTC, the CTC prefix scores against enumeration, the joint beam search against greedy
decoding and against the exact best CTC labelling, the SentencePiece units."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from data_pipelines.synthetic import phones
from synclipmae_jax.tasks.vsr import decoding as vsr_decoding
from synclipmae_jax.tasks.vsr import losses as vsr_losses
from synclipmae_jax.tasks.vsr import text_units
from synclipmae_jax.models import conformer, vsr

V = 7  # blank, unk, start, end and three units


def _collapse(path):
  out = [p for i, p in enumerate(path) if i == 0 or p != path[i - 1]]
  return tuple(p for p in out if p != text_units.BLANK)


def _path_log_probs(log_probs, symbols):
  """{path: log-probability} of every alignment over `symbols`."""
  t = len(log_probs)
  return {path: sum(log_probs[i, s] for i, s in enumerate(path))
          for path in itertools.product(symbols, repeat=t)}


def _log_sum(values):
  values = np.asarray(list(values))
  return np.logaddexp.reduce(values) if len(values) else -np.inf


def test_ctc_loss_is_the_negative_log_likelihood_summed_over_alignments():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 4, V)).astype(np.float32)
  frame_mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool)  # the second has 3 real frames
  units = np.array([[4, 4], [5, 0]], np.int32)
  unit_mask = np.array([[1, 1], [1, 0]], bool)
  got = vsr_losses.ctc_loss(jnp.asarray(logits), jnp.asarray(frame_mask), jnp.asarray(units),
                            jnp.asarray(unit_mask))
  expected = []
  for b, (n, target) in enumerate(((4, (4, 4)), (3, (5,)))):
    log_probs = np.asarray(jax.nn.log_softmax(logits[b, :n]), np.float64)
    paths = _path_log_probs(np.asarray(log_probs), range(V))
    expected.append(-_log_sum(lp for p, lp in paths.items() if _collapse(p) == target))
  np.testing.assert_allclose(got, np.mean(expected), rtol=1e-5)
  # optax.ctc_loss on each utterance cut to its real frames and units (no padding at all).
  unpadded = [optax.ctc_loss(logits[b:b + 1, :n], np.zeros((1, n)), np.array([target]),
                             np.zeros((1, len(target))), blank_id=text_units.BLANK)[0]
              for b, (n, target) in enumerate(((4, (4, 4)), (3, (5,))))]
  np.testing.assert_allclose(got, np.mean(unpadded), rtol=1e-5)


def test_decoder_io_and_the_attention_loss_ignore_padding():
  units = jnp.array([[4, 5, 6], [5, 0, 0]])
  mask = jnp.array([[1, 1, 1], [1, 0, 0]], bool)
  inputs, targets, target_mask = vsr_losses.decoder_io(units, mask)
  assert inputs.tolist() == [[2, 4, 5, 6], [2, 5, 0, 0]]
  assert targets.tolist() == [[4, 5, 6, 3], [5, 3, 0, 0]]
  assert target_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
  logits = jax.random.normal(jax.random.key(0), (2, 4, V))
  loss = vsr_losses.attention_loss(logits, targets, target_mask, 0.0)
  nll = -jax.nn.log_softmax(logits)[np.arange(2)[:, None], np.arange(4)[None], targets]
  np.testing.assert_allclose(loss, (nll * target_mask).sum() / 6, rtol=1e-6)
  # Whatever the padded positions predict does not count.
  changed = logits.at[1, 2:].set(100.0)
  np.testing.assert_allclose(vsr_losses.attention_loss(changed, targets, target_mask, 0.0), loss, rtol=1e-6)
  out = vsr_losses.hybrid_loss(jnp.zeros((2, 5, V)), jnp.ones((2, 5), bool), logits, targets,
                               target_mask, units, mask, ctc_weight=0.1, label_smoothing=0.1)
  np.testing.assert_allclose(out["total"], 0.1 * out["ctc"] + 0.9 * out["attention"], rtol=1e-6)


def test_ctc_prefix_scores_equal_enumeration():
  rng = np.random.default_rng(1)
  log_probs = np.asarray(jax.nn.log_softmax(rng.normal(size=(4, V)) * 2), np.float64)
  paths = _path_log_probs(log_probs, range(V))
  scorer = vsr_decoding.CtcPrefixScorer(log_probs)
  labels = np.array([4, 5, text_units.END])
  empty = scorer.initial()
  psi, states = scorer.extend(empty, None, labels)
  for c, value in zip(labels[:2], psi[:2]):
    np.testing.assert_allclose(value, _log_sum(lp for p, lp in paths.items() if _collapse(p)[:1] == (c,)))
  np.testing.assert_allclose(psi[2], _log_sum(lp for p, lp in paths.items() if _collapse(p) == ()))
  # From h = (4,): (4, 4) needs a blank between, (4, 5) does not; (4,) ended is exactly (4,).
  psi2, _ = scorer.extend(states[0], 4, labels)
  for target, value in (((4, 4), psi2[0]), ((4, 5), psi2[1])):
    np.testing.assert_allclose(value, _log_sum(lp for p, lp in paths.items() if _collapse(p)[:2] == target))
  np.testing.assert_allclose(psi2[2], _log_sum(lp for p, lp in paths.items() if _collapse(p) == (4,)))


@pytest.fixture(scope="module")
def tiny_model():
  model = vsr.VsrModel(vocab_size=V, width=16, encoder_depth=1, decoder_depth=1, num_heads=2,
                       mlp_dim=32, conv_kernel=3)
  features = jax.random.normal(jax.random.key(1), (1, 6, 8))
  mask = jnp.ones((1, 6), bool)
  params = model.init(jax.random.key(0), features, mask, jnp.zeros((1, 3), jnp.int32))["params"]
  # Larger output weights: peaked, varied predictions instead of near-uniform ones.
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x * 8 if "out_head" in jax.tree_util.keystr(p) else x, params)
  return model, params, features, mask


def test_beam_one_without_ctc_is_greedy_decoding(tiny_model):
  model, params, features, mask = tiny_model
  for seed in range(4):
    f = jax.random.normal(jax.random.key(seed), features.shape)
    hidden, ctc = vsr_decoding.encode_fn(model)(params, f, mask)
    greedy = vsr_decoding.greedy(model, params, hidden, mask, max_len=5)
    beam = vsr_decoding.beam_search(model, params, hidden, mask, np.asarray(ctc[0]), beam=1,
                                    ctc_weight=0.0, max_len=5)
    assert beam == greedy


def test_ctc_only_beam_search_finds_the_most_probable_labelling(tiny_model):
  model, params, features, mask = tiny_model
  rng = np.random.default_rng(2)
  log_probs = rng.normal(size=(4, V)) * 2
  log_probs[:, [text_units.UNK, text_units.START, text_units.END]] = -1e9
  log_probs = np.asarray(jax.nn.log_softmax(log_probs), np.float64)
  paths = _path_log_probs(log_probs, (0, 4, 5, 6))
  labellings = {}
  for p, lp in paths.items():
    labellings[_collapse(p)] = np.logaddexp(labellings.get(_collapse(p), -np.inf), lp)
  best = max(labellings, key=labellings.get)
  hidden, _ = vsr_decoding.encode_fn(model)(params, features, mask)
  got = vsr_decoding.beam_search(model, params, hidden, mask, log_probs, beam=V, ctc_weight=1.0,
                                 max_len=5)
  assert tuple(got) == best


def test_conformer_ignores_padding_and_the_causal_convolution_ignores_the_future():
  enc = conformer.ConformerEncoder(width=16, depth=2, num_heads=2, mlp_dim=32, kernel_size=5)
  x = jax.random.normal(jax.random.key(0), (2, 10, 8))
  mask = jnp.arange(10)[None] < jnp.array([[10], [6]])
  params = enc.init(jax.random.key(1), x, mask)["params"]
  out = enc.apply({"params": params}, x, mask)
  assert out.shape == (2, 10, 16)
  noisy = x.at[1, 6:].set(1e3)
  np.testing.assert_allclose(enc.apply({"params": params}, noisy, mask)[1, :6], out[1, :6], atol=1e-5)
  conv = conformer.ConvModule(kernel_size=5, causal=True)
  h = jax.random.normal(jax.random.key(2), (1, 10, 16))
  full = jnp.ones((1, 10), bool)
  cp = conv.init(jax.random.key(3), h, full)["params"]
  base = conv.apply({"params": cp}, h, full)
  shake = jax.random.normal(jax.random.key(4), (1, 3, 16))  # (a constant would be normalised away)
  future = conv.apply({"params": cp}, h.at[:, 7:].add(shake), full)
  np.testing.assert_allclose(future[0, :7], base[0, :7], atol=1e-6)
  assert not np.allclose(future[0, 7], base[0, 7])
  centred = conformer.ConvModule(kernel_size=5, causal=False)
  cc = centred.init(jax.random.key(3), h, full)["params"]
  moved = centred.apply({"params": cc}, h.at[:, 7:].add(shake), full)
  assert not np.allclose(moved[0, 5], centred.apply({"params": cc}, h, full)[0, 5])  # sees t + 2


def test_units_from_transcripts_keep_the_reserved_ids():
  rng = np.random.default_rng(0)
  transcripts = [" ".join(rng.choice(phones.VOCABULARY, 8)) for _ in range(200)]
  units = text_units.train(transcripts, vocab_size=40)
  assert units.vocab_size <= 40
  assert units.processor.id_to_piece(text_units.BLANK) == "<blank>"
  for t in transcripts[:20]:
    ids = units.encode(t)
    assert min(ids) > text_units.END and units.decode(ids) == t
  again = text_units.Units(units.model_bytes)
  assert again.encode(transcripts[0]) == units.encode(transcripts[0])
  with pytest.raises(ValueError, match="vocab_size=10 is smaller than the 26 units"):
    text_units.train(transcripts, vocab_size=10)  # 21 characters, the boundary, 4 reserved ids
  with pytest.raises(ValueError, match="no non-empty transcripts"):
    text_units.train(["", " "], vocab_size=10)
