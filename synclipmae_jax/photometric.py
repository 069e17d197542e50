"""Photometric jitter of the face-preserving view (paper 3.2: "we apply
color/brightness/saturation perturbations on this view" to suppress appearance leakage).

Images are float in [0, 1], [F, H, W, 3]; every frame draws its own factors, in the order
brightness, contrast, saturation, hue. Each adjustment has the semantics of torchvision's
`ColorJitter` with that fixed order (`functional.adjust_*` on float images): brightness scales,
contrast and saturation blend with the grey mean / grey image (luma 0.299, 0.587, 0.114), and hue
shifts the HSV hue channel by a factor in [-hue, hue] of a full turn (hue = 0.5 reaches 180
degrees either way).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# numpy, not jnp: a jnp constant would start the XLA backend at import, before a multi-host
# run can call jax.distributed.initialize().
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
MAX_HUE = 0.5  # masking.jitter.hue: half a turn either way covers every hue


def _rgb_to_hsv(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """[..., 3] RGB in [0, 1] -> hue in [0, 1), saturation, value (torchvision's `_rgb2hsv`)."""
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  maxc, minc = jnp.max(x, axis=-1), jnp.min(x, axis=-1)
  grey = maxc == minc
  chroma = maxc - minc
  s = chroma / jnp.where(grey, 1.0, maxc)
  divisor = jnp.where(grey, 1.0, chroma)
  rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
  h = jnp.where(maxc == r, bc - gc, jnp.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
  return jnp.mod(h / 6.0 + 1.0, 1.0), s, maxc


def _hsv_to_rgb(h: jax.Array, s: jax.Array, v: jax.Array) -> jax.Array:
  """Inverse of `_rgb_to_hsv` (torchvision's `_hsv2rgb`): [...] each -> [..., 3]."""
  i = jnp.floor(h * 6.0)
  f = h * 6.0 - i
  i = jnp.mod(i, 6).astype(jnp.int32)
  p = jnp.clip(v * (1.0 - s), 0.0, 1.0)
  q = jnp.clip(v * (1.0 - s * f), 0.0, 1.0)
  t = jnp.clip(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
  sector = [jnp.stack(c, axis=-1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v),
                                            (v, p, q))]
  return jnp.select([(i == k)[..., None] for k in range(6)], sector)


def adjust_hue(images: jax.Array, factor: jax.Array) -> jax.Array:
  """Shifts the hue of [F, H, W, 3] images in [0, 1] by factor [F] (a fraction of a full turn,
  in [-0.5, 0.5]), as torchvision's `functional.adjust_hue`."""
  h, s, v = _rgb_to_hsv(images)
  return _hsv_to_rgb(jnp.mod(h + factor[:, None, None], 1.0), s, v)


def jitter(rng: jax.Array, images: jax.Array, *, brightness: float, contrast: float,
           saturation: float, hue: float) -> jax.Array:
  """Random per-frame colour jitter. Factors are drawn from [1 - s, 1 + s] for
  brightness/contrast/saturation and the hue shift from [-hue, hue] turns (hue <= 0.5)."""
  if not 0.0 <= hue <= MAX_HUE:
    raise ValueError(f"hue must be in [0, {MAX_HUE}] (a fraction of a full turn), got {hue}")
  f = images.shape[0]
  kb, kc, ks, kh = jax.random.split(rng, 4)

  def factor(key, s):
    return jax.random.uniform(key, (f, 1, 1, 1), minval=1.0 - s, maxval=1.0 + s)

  x = jnp.clip(images * factor(kb, brightness), 0.0, 1.0)
  mean = jnp.einsum("fhwc,c->f", x, _LUMA)[:, None, None, None] / (x.shape[1] * x.shape[2])
  x = jnp.clip(mean + factor(kc, contrast) * (x - mean), 0.0, 1.0)
  gray = jnp.einsum("fhwc,c->fhw", x, _LUMA)[..., None]
  x = jnp.clip(gray + factor(ks, saturation) * (x - gray), 0.0, 1.0)
  if hue == 0.0:
    return x
  return adjust_hue(x, jax.random.uniform(kh, (f,), minval=-hue, maxval=hue))
