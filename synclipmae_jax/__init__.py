"""SyncLipMAE in JAX/Flax: synchronisation-aware talking-face representation pretraining."""
