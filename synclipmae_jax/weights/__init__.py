"""Pretrained initialisation: wav2vec 2.0, Sapiens and ViTMAE checkpoints into the JAX model.

`apply_pretrained(config, params, frozen)` and `load_into_state(config, state, abstract_state)`
(`pretrained.py`) initialise a fresh train state from `config.model.init`; the per-checkpoint
converters are `wav2vec2_checkpoint`, `sapiens_checkpoint` and `vitmae_checkpoint`;
`synclipmae-inspect-checkpoint` (`inspect.py`) prints what a checkpoint would map where.
"""

from synclipmae_jax.weights.pretrained import apply_pretrained, load_into_state

__all__ = ["apply_pretrained", "load_into_state"]
