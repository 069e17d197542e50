"""The output units of lip reading (paper 4.3): a SentencePiece model trained from the training
transcripts (the `sentencepiece` package), with the reserved ids the heads rely on.

Id 0 is the CTC blank (and the padding of target sequences): SentencePiece's pad piece, never
produced by encoding. Ids 1, 2, 3 are unknown, start (the decoder's first input) and end (the
decoder's last target). The model travels as its serialised bytes (`Units.model_bytes`), saved
beside a VSR run's checkpoints.
"""

from __future__ import annotations

import dataclasses
import io

import sentencepiece as spm

BLANK, UNK, START, END = 0, 1, 2, 3
MODEL_TYPES = ("unigram", "bpe", "char", "word")


def train(transcripts: list[str], *, vocab_size: int, model_type: str = "unigram") -> "Units":
  """A SentencePiece model of `vocab_size` pieces (at most: `hard_vocab_limit` off, so a small
  corpus gets what it supports) trained on the non-empty `transcripts`."""
  if model_type not in MODEL_TYPES:
    raise ValueError(f"model_type={model_type!r} must be one of {MODEL_TYPES}")
  sentences = [t.strip() for t in transcripts if t.strip()]
  if not sentences:
    raise ValueError("no non-empty transcripts to train the units from")
  # Every character of the corpus (and the word-boundary piece) must be a unit of its own.
  required = len(set("".join(sentences).replace(" ", ""))) + 1 + END + 1
  if vocab_size < required:
    raise ValueError(f"vocab_size={vocab_size} is smaller than the {required} units the transcripts "
                     f"need (their characters, the word boundary and {END + 1} reserved ids)")
  out = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_writer=out, vocab_size=vocab_size,
      model_type=model_type, character_coverage=1.0, hard_vocab_limit=False,
      pad_id=BLANK, unk_id=UNK, bos_id=START, eos_id=END, pad_piece="<blank>",
      minloglevel=2, num_threads=1)
  return Units(out.getvalue())


@dataclasses.dataclass
class Units:
  """A trained SentencePiece model: text <-> unit ids."""

  model_bytes: bytes

  def __post_init__(self):
    self.processor = spm.SentencePieceProcessor(model_proto=self.model_bytes)
    if (self.processor.pad_id(), self.processor.unk_id(), self.processor.bos_id(),
        self.processor.eos_id()) != (BLANK, UNK, START, END):
      raise ValueError("not a units model of this codebase (reserved ids differ)")

  @property
  def vocab_size(self) -> int:
    return self.processor.get_piece_size()

  def encode(self, text: str) -> list[int]:
    return self.processor.encode(text.strip())

  def decode(self, ids) -> str:
    """Text of unit ids; reserved ids, and ids beyond this model's pieces (a head may have more
    outputs than a small corpus gave pieces), are dropped."""
    return self.processor.decode([int(i) for i in ids if END < int(i) < self.vocab_size])
