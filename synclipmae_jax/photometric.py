"""Photometric jitter of the face-preserving view (paper 3.2: "we apply
color/brightness/saturation perturbations on this view" to suppress appearance leakage).

Images are float in [0, 1], [F, H, W, 3]; every frame draws its own factors, in the order
brightness, contrast, saturation, hue (as torchvision's ColorJitter with a fixed order).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# numpy, not jnp: a jnp constant would start the XLA backend at import, before a multi-host
# run can call jax.distributed.initialize().
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                        [0.596, -0.274, -0.322],
                        [0.211, -0.523, 0.312]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


def _hue_rotation(angle: jax.Array) -> jax.Array:
  """[F] angles (radians) -> [F, 3, 3] RGB matrices rotating hue in YIQ space."""
  c, s = jnp.cos(angle), jnp.sin(angle)
  one, zero = jnp.ones_like(c), jnp.zeros_like(c)
  rot = jnp.stack([jnp.stack([one, zero, zero], -1),
                   jnp.stack([zero, c, -s], -1),
                   jnp.stack([zero, s, c], -1)], -2)
  return jnp.asarray(_YIQ_TO_RGB) @ rot @ _RGB_TO_YIQ


def jitter(rng: jax.Array, images: jax.Array, *, brightness: float, contrast: float,
           saturation: float, hue: float) -> jax.Array:
  """Random per-frame colour jitter. Factors are drawn from [1 - s, 1 + s] for
  brightness/contrast/saturation and the hue angle from [-hue, hue] * pi."""
  f = images.shape[0]
  kb, kc, ks, kh = jax.random.split(rng, 4)

  def factor(key, s):
    return jax.random.uniform(key, (f, 1, 1, 1), minval=1.0 - s, maxval=1.0 + s)

  x = jnp.clip(images * factor(kb, brightness), 0.0, 1.0)
  mean = jnp.einsum("fhwc,c->f", x, _LUMA)[:, None, None, None] / (x.shape[1] * x.shape[2])
  x = jnp.clip(mean + factor(kc, contrast) * (x - mean), 0.0, 1.0)
  gray = jnp.einsum("fhwc,c->fhw", x, _LUMA)[..., None]
  x = jnp.clip(gray + factor(ks, saturation) * (x - gray), 0.0, 1.0)
  angle = jax.random.uniform(kh, (f,), minval=-hue, maxval=hue) * jnp.pi
  x = jnp.einsum("fhwc,fdc->fhwd", x, _hue_rotation(angle))
  return jnp.clip(x, 0.0, 1.0)
