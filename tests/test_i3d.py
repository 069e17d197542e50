"""The FVD I3D (synclipmae_torch/i3d.py) layer by layer against hand computations on random
weights (numpy, float64): TensorFlow "SAME" padding, the unit (conv, BatchNorm eps 1e-5, ReLU),
the zero-padded max pool, the Inception module's four branches, the logits head (2x7x7 mean,
1x1x1 conv with bias, mean over time) and the input's resize, centre crop and scaling
(VideoGPT's); the real architecture's names and widths (pytorch_i3d's, of
`i3d_pretrained_400.pt`) and the weight file's loading. A narrow network (every width / 16)
keeps it to CPU seconds."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from random_weights import randomize  # pylint: disable=wrong-import-position
from synclipmae_torch import i3d  # pylint: disable=wrong-import-position

NARROW = lambda name, width: max(2, width // 16)


@pytest.fixture(scope="module")
def model():
  return randomize(i3d.I3D(NARROW), seed=1)


def naive_unit(unit: i3d.Unit3D, x: np.ndarray, pads) -> np.ndarray:
  """The unit by hand: zero padding ((t0, t1), (h0, h1), (w0, w1)), a direct convolution, then
  BatchNorm and ReLU (or the bias of the logits)."""
  w = unit.conv3d.weight.double().numpy()
  k, s = w.shape[2:], unit.stride
  xp = np.pad(x, ((0, 0), (0, 0)) + tuple(pads))
  out_shape = [(xp.shape[2 + d] - k[d]) // s[d] + 1 for d in range(3)]
  y = np.zeros((x.shape[0], w.shape[0], *out_shape))
  for t in range(out_shape[0]):
    for i in range(out_shape[1]):
      for j in range(out_shape[2]):
        patch = xp[:, :, t * s[0]:t * s[0] + k[0], i * s[1]:i * s[1] + k[1],
                   j * s[2]:j * s[2] + k[2]]
        y[:, :, t, i, j] = np.einsum("ncabd,ocabd->no", patch, w)
  if unit.logits:
    return y + unit.conv3d.bias.double().numpy().reshape(1, -1, 1, 1, 1)
  bn, shape = unit.bn, (1, -1, 1, 1, 1)
  y = ((y - bn.running_mean.double().numpy().reshape(shape))
       / np.sqrt(bn.running_var.double().numpy().reshape(shape) + 1e-5)
       * bn.weight.double().numpy().reshape(shape) + bn.bias.double().numpy().reshape(shape))
  return np.maximum(y, 0)


def naive_max_pool(x: np.ndarray, kernel, stride, pads) -> np.ndarray:
  xp = np.pad(x, ((0, 0), (0, 0)) + tuple(pads))
  out_shape = [(xp.shape[2 + d] - kernel[d]) // stride[d] + 1 for d in range(3)]
  y = np.zeros(x.shape[:2] + tuple(out_shape))
  for t in range(out_shape[0]):
    for i in range(out_shape[1]):
      for j in range(out_shape[2]):
        y[:, :, t, i, j] = xp[:, :, t * stride[0]:t * stride[0] + kernel[0],
                              i * stride[1]:i * stride[1] + kernel[1],
                              j * stride[2]:j * stride[2] + kernel[2]].max(axis=(2, 3, 4))
  return y


def _run(module, x: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return module(torch.from_numpy(x).float()).double().numpy()


def _close(ours, expected):
  np.testing.assert_allclose(ours, expected, atol=1e-4 * max(1.0, np.abs(expected).max()))


def test_same_padding_by_hand():
  """TensorFlow's SAME: total max(k - s, 0) if s divides n else max(k - n % s, 0); the odd cell
  after. F.pad order: width, height, time."""
  assert i3d.same_padding((16, 224, 224), (7, 7, 7), (2, 2, 2)) == (2, 3, 2, 3, 2, 3)
  assert i3d.same_padding((5, 7, 6), (3, 3, 3), (2, 1, 2)) == (0, 1, 1, 1, 1, 1)
  assert i3d.same_padding((5, 7, 7), (2, 2, 2), (2, 2, 2)) == (0, 1, 0, 1, 0, 1)
  assert i3d.same_padding((8, 56, 56), (1, 3, 3), (1, 2, 2)) == (0, 1, 0, 1, 0, 0)


def test_unit_and_max_pool_by_hand():
  unit = randomize(i3d.Unit3D(NARROW, "u", 3, 64, (3, 3, 3), (2, 1, 2)), seed=2)
  x = np.random.default_rng(0).normal(size=(2, 3, 5, 7, 6))
  _close(_run(unit, x), naive_unit(unit, x, ((1, 1), (1, 1), (0, 1))))
  relu = np.maximum(x, 0)  # the pools' inputs are ReLU outputs
  pool = i3d.MaxPool3dSame((3, 3, 3), (2, 2, 2))
  _close(_run(pool, relu), naive_max_pool(relu, (3, 3, 3), (2, 2, 2), ((1, 1), (1, 1), (0, 1))))


def test_inception_module_is_its_four_branches_by_hand(model):
  block = model.Mixed_4c
  x = np.maximum(np.random.default_rng(1).normal(size=(1, block.b0.conv3d.in_channels, 3, 5, 4)), 0)
  same3 = ((1, 1), (1, 1), (1, 1))  # 3x3x3, stride 1
  none = ((0, 0),) * 3
  expected = np.concatenate([
      naive_unit(block.b0, x, none),
      naive_unit(block.b1b, naive_unit(block.b1a, x, none), same3),
      naive_unit(block.b2b, naive_unit(block.b2a, x, none), same3),
      naive_unit(block.b3b, naive_max_pool(x, (3, 3, 3), (1, 1, 1), same3), none)], axis=1)
  _close(_run(block, x), expected)


def test_head_and_input_scaling_by_hand(model):
  """On 16 frames at 224 px: the first unit sees 2 x / 255 - 1 of the resized frames (a constant
  255 clip: ones), Mixed_5c leaves 2 x 7 x 7 cells, and the logits are the 1x1x1 conv with bias
  of their mean, averaged over time."""
  seen = {}
  hooks = [model.Conv3d_1a_7x7.register_forward_hook(lambda m, i, o: seen.update(first=i[0])),
           model.Mixed_5c.register_forward_hook(lambda m, i, o: seen.update(last=o))]
  clips = np.random.default_rng(2).integers(0, 256, (2, i3d.FRAMES, 40, 40, 3), dtype=np.uint8)
  clips[1] = 255
  try:
    ours = i3d.clip_features(model, clips, batch=2)
  finally:
    for h in hooks:
      h.remove()
  assert ours.shape == (2, model.logits.out_channels)
  assert seen["first"].shape == (2, 3, 16, 224, 224)
  np.testing.assert_allclose(seen["first"][1].numpy(), 1.0, atol=1e-6)  # resampling's rounding
  assert -1 - 1e-6 <= float(seen["first"].min()) and float(seen["first"].max()) <= 1 + 1e-6
  last = seen["last"].double().numpy()
  assert last.shape[2:] == (2, 7, 7)
  pooled = last.mean(axis=(2, 3, 4))  # a 2x7x7 window over 2x7x7 cells: one output, T' = 1
  w = model.logits.conv3d.weight.double().numpy()[:, :, 0, 0, 0]
  _close(ours, pooled @ w.T + model.logits.conv3d.bias.double().numpy())


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) weights of a bilinear resize with corners not aligned: output i reads input
  (i + 0.5) n_in / n_out - 0.5, clamped at 0, between its two neighbours."""
  m = np.zeros((n_out, n_in))
  for i in range(n_out):
    src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
    lo = min(int(src), n_in - 1)
    hi, frac = min(lo + 1, n_in - 1), src - lo
    m[i, lo] += 1 - frac
    m[i, hi] += frac
  return m


def test_preprocessing_is_videogpts_resize_and_centre_crop():
  """The shorter side to 224, the centre 224 x 224 kept, [0, 255] -> [-1, 1]: a 224 x 448 frame
  keeps its size (the resize is the identity) and loses 112 columns on each side, a 300 x 224
  frame 38 rows above and below; a 112 px square is upsampled x2 by hand."""
  rng = np.random.default_rng(3)
  scaled = lambda clips: 2 * clips.transpose(0, 4, 1, 2, 3).astype(np.float64) / 255 - 1
  wide = rng.integers(0, 256, (1, 2, 224, 448, 3), dtype=np.uint8)
  _close(i3d.preprocess(wide).double().numpy(), scaled(wide[:, :, :, 112:336]))
  tall = rng.integers(0, 256, (2, 1, 300, 224, 3), dtype=np.uint8)
  _close(i3d.preprocess(tall).double().numpy(), scaled(tall[:, :, 38:262]))
  small = rng.integers(0, 256, (1, 1, 112, 112, 3), dtype=np.uint8)
  m = _bilinear_matrix(112, 224)
  up = np.einsum("ik,ntklc,jl->ntijc", m, small.astype(np.float64), m, optimize=True)
  ours = i3d.preprocess(small)
  assert ours.shape == (1, 3, 1, 224, 224)
  _close(ours.double().numpy(), scaled(up))


def test_real_architecture_has_pytorch_i3d_names_and_widths():
  """(The narrow network of the same wiring runs at 16 x 224 x 224 in the head's test.)"""
  with torch.device("meta"):
    full = i3d.I3D()
  shapes = {k: tuple(v.shape) for k, v in full.state_dict().items()}
  assert shapes["Conv3d_1a_7x7.conv3d.weight"] == (64, 3, 7, 7, 7)
  assert shapes["Conv3d_2c_3x3.bn.running_var"] == (192,)
  assert shapes["Mixed_4f.b1b.conv3d.weight"] == (320, 160, 3, 3, 3)
  assert shapes["Mixed_5c.b3b.conv3d.weight"] == (128, 832, 1, 1, 1)
  assert shapes["logits.conv3d.weight"] == (400, 1024, 1, 1, 1) and "logits.conv3d.bias" in shapes
  assert not any(k.startswith("pools") for k in shapes)


def test_loading_a_file_and_its_errors(model, tmp_path):
  state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
  torch.save(state, tmp_path / "i3d.pt")
  loaded = i3d.load(str(tmp_path / "i3d.pt"))
  for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
    if not k.endswith("num_batches_tracked"):
      assert torch.equal(a, b), k
  del state["Mixed_3c.b2b.conv3d.weight"]
  torch.save(state, tmp_path / "broken.pt")
  with pytest.raises(ValueError, match=r"--i3d: .*Mixed_3c\.b2b\.conv3d\.weight"):
    i3d.load(str(tmp_path / "broken.pt"))
