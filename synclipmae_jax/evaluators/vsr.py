"""Word and character error rates of the lip-reading head (paper 4.3, Table 5).

Each utterance of the evaluated split (`split`, its first `num_clips`; 0 = all) is encoded once
(`vsr_decoding.encode_fn`, padded to `data.max_frames`: one compilation) and decoded by the
joint CTC/attention beam search (`beam`, `ctc_weight`; beam 1 and CTC weight 0 is greedy
attention decoding); WER and CER over the split are jiwer's (`jiwer.wer` / `jiwer.cer`: the
edit distance summed over utterances over the reference length), in %.

Options (`config.evals.<name>`, defaults in `config_defaults.vsr_eval_config`): split,
num_clips, beam, ctc_weight.
"""

from __future__ import annotations

import jiwer
import numpy as np

from data_pipelines import schema
from synclipmae_jax.tasks.vsr import data as vsr_data
from synclipmae_jax.tasks.vsr import decoding as vsr_decoding


def validate(entry, config) -> list[str]:
  """Problems of a VSR evaluator's options (`common.validate` prefixes them)."""
  errors = []
  if entry.split not in schema.SPLITS:
    errors.append(f"split={entry.split!r} must be one of {schema.SPLITS}")
  if entry.beam < 1 or entry.num_clips < 0:
    errors.append(f"beam={entry.beam} must be >= 1 and num_clips={entry.num_clips} >= 0")
  if not 0.0 <= entry.ctc_weight <= 1.0:
    errors.append(f"ctc_weight={entry.ctc_weight} must be in [0, 1]")
  del config
  return errors


def error_rates(references: list[str], hypotheses: list[str]) -> dict[str, float]:
  """{"wer", "cer"} in % over a corpus (jiwer)."""
  return {"wer": 100.0 * jiwer.wer(references, hypotheses),
          "cer": 100.0 * jiwer.cer(references, hypotheses)}


class Evaluator:
  """Holds the split's utterances; `run(params, frozen)` -> {"vsr/wer": ..., "vsr/cer": ...}."""

  def __init__(self, entry, config, *, model, units, utterances: dict, **unused):
    del unused
    self.c = entry
    self.model = model
    self.units = units
    self.max_frames, self.max_units = config.data.max_frames, config.data.max_units
    self.utterances = utterances[entry.split][:entry.num_clips or None]
    if not self.utterances:
      raise ValueError(f"the {entry.split} split has no utterances with a transcript")

  def decode(self, params, utterance: dict) -> str:
    padded = vsr_data.pad(utterance, self.max_frames, self.max_units)
    mask = padded["frame_mask"][None]
    hidden, log_probs = vsr_decoding.encode_fn(self.model)(params, padded["features"][None], mask)
    ids = vsr_decoding.beam_search(
        self.model, params, hidden, mask, np.asarray(log_probs[0, :len(utterance["features"])]),
        beam=self.c.beam, ctc_weight=self.c.ctc_weight, max_len=self.max_units)
    return self.units.decode(ids)

  def evaluate(self, params) -> tuple[dict[str, float], list[dict]]:
    """(metrics, per utterance its clip, reference and hypothesis)."""
    rows = [{"clip_id": int(u["clip_id"]), "reference": u["transcript"],
             "hypothesis": self.decode(params, u)} for u in self.utterances]
    rates = error_rates([r["reference"] for r in rows], [r["hypothesis"] for r in rows])
    return {f"vsr/{k}": v for k, v in rates.items()}, rows

  def run(self, params, frozen) -> dict[str, float]:
    del frozen
    return self.evaluate(params)[0]
