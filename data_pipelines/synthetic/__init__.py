"""Procedural talking faces: a built-in audio-visual dataset for SyncLipMAE.

A speaker (`identity.Identity`) says random words from a small vocabulary of CV syllables
(`phones`). One articulatory trajectory, sampled at audio rate, drives both streams
(`speech`): the waveform and the mouth (openness and spread/rounding). Everything else in
the picture -- blinks, gaze, head translation, yaw and roll, and the emotion's brows and
mouth-corner curvature -- comes from an independent `ambient_seed` (`ambient`). The three
factors the paper's encoder separates into per-frame prompt tokens (identity, vocal motion,
ambient motion; SyncLipMAE 3.1-3.2) are thereby independent by construction, and the
mouth's motion is the only link between sound and image (`render`, on the anti-aliased
primitives of `raster`).

  talking_face.generate_clip         one clip (schema.Clip) from an identity and two seeds
  identity.make_identity             a speaker's appearance and voice from its id and a seed
  data_pipelines.synthetic_dataset   many clips written to ArrayRecord shards (the demo's data)
"""
