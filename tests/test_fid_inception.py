"""The FID Inception-v3 (synclipmae_torch/fid_inception.py) on random weights against
`pytorch-fid`'s own code: its FID blocks' forward methods (FIDInceptionA, C, E_1, E_2) and its
InceptionV3.forward (resize, scaling, the four blocks), taken from the installed
`pytorch_fid/inception.py` and run on our modules (same attribute names; pytorch-fid cannot be
imported here, see tests/test_frechet.py), plus the unit by hand and the weight file's loading.
A narrow network (every width / 16) keeps it to CPU seconds."""

import argparse
import ast

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # pylint: disable=wrong-import-position
from torch.nn import functional as F  # pylint: disable=wrong-import-position

import pytorch_fid_source  # pylint: disable=wrong-import-position
from random_weights import randomize  # pylint: disable=wrong-import-position
from synclipmae_torch import fid_inception  # pylint: disable=wrong-import-position

NARROW = lambda name, width: max(2, width // 16)


def _class_forward(node):
  """(class name, its forward) of a top-level class that has one."""
  if isinstance(node, ast.ClassDef):
    for n in node.body:
      if isinstance(n, ast.FunctionDef) and n.name == "forward":
        return node.name, n
  return None, None


@pytest.fixture(scope="module")
def peer():
  """pytorch-fid's forward methods: {"FIDInceptionA": forward, ..., "InceptionV3": forward}."""
  return pytorch_fid_source.functions("inception.py", _class_forward, {"torch": torch, "F": F})


@pytest.fixture(scope="module")
def model():
  torch.manual_seed(0)
  return randomize(fid_inception.FidInceptionV3(NARROW), seed=1)


def _close(a, b, tol=1e-4):
  scale = max(1.0, float(b.abs().max()))
  assert float((a - b).abs().max()) <= tol * scale


def test_fid_blocks_equal_pytorch_fids_forward(model, peer):
  torch.manual_seed(2)
  for name, cls in (("Mixed_5b", "FIDInceptionA"), ("Mixed_6c", "FIDInceptionC"),
                    ("Mixed_7b", "FIDInceptionE_1"), ("Mixed_7c", "FIDInceptionE_2")):
    block = getattr(model, name)
    x = torch.rand(2, block.branch1x1.conv.in_channels, 9, 11)
    with torch.no_grad():
      _close(block(x), peer[cls](block, x))


def test_network_equals_pytorch_fids_inception_v3_forward(model, peer):
  """pytorch-fid's InceptionV3 (output block 3: the 2048-d pool) built of our modules in its
  grouping of torchvision's Inception-v3."""
  holder = nn.Module()
  holder.resize_input = holder.normalize_input = True
  holder.output_blocks, holder.last_needed_block = [3], 3
  holder.blocks = nn.ModuleList([
      nn.Sequential(model.Conv2d_1a_3x3, model.Conv2d_2a_3x3, model.Conv2d_2b_3x3,
                    nn.MaxPool2d(kernel_size=3, stride=2)),
      nn.Sequential(model.Conv2d_3b_1x1, model.Conv2d_4a_3x3,
                    nn.MaxPool2d(kernel_size=3, stride=2)),
      nn.Sequential(*(getattr(model, n) for n in fid_inception.FidInceptionV3.MIXED[:8])),
      nn.Sequential(*(getattr(model, n) for n in fid_inception.FidInceptionV3.MIXED[8:]),
                    nn.AdaptiveAvgPool2d(output_size=(1, 1)))])
  frames = np.random.default_rng(3).integers(0, 256, (3, 64, 48, 3), dtype=np.uint8)
  x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
  with torch.no_grad():
    theirs = peer["InceptionV3"](holder, x)[0].flatten(1)
  ours = fid_inception.frame_features(model, frames, batch=2)
  assert ours.shape == (3, model.features) and ours.dtype == np.float64
  _close(torch.from_numpy(ours).float(), theirs)


def test_basic_conv_by_hand(model):
  """conv (no bias) + BatchNorm (eps 0.001) + ReLU, computed with numpy in float64."""
  unit = model.Conv2d_2b_3x3  # 3x3, padding 1
  x = np.random.default_rng(4).normal(size=(1, unit.conv.in_channels, 5, 6))
  w = unit.conv.weight.double().numpy()
  padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
  conv = np.zeros((1, w.shape[0], 5, 6))
  for i in range(5):
    for j in range(6):
      conv[0, :, i, j] = np.einsum("oikl,ikl->o", w, padded[0, :, i:i + 3, j:j + 3])
  bn = unit.bn
  shape = (1, -1, 1, 1)
  expected = ((conv - bn.running_mean.double().numpy().reshape(shape))
              / np.sqrt(bn.running_var.double().numpy().reshape(shape) + 0.001)
              * bn.weight.double().numpy().reshape(shape) + bn.bias.double().numpy().reshape(shape))
  with torch.no_grad():
    ours = unit(torch.from_numpy(x).float()).double().numpy()
  np.testing.assert_allclose(ours, np.maximum(expected, 0),
                             atol=1e-4 * max(1, np.abs(expected).max()))


def test_real_architecture_has_pytorch_fids_names_and_widths():
  """(The narrow network of the same wiring runs at 299 x 299 in the InceptionV3 test.)"""
  with torch.device("meta"):
    full = fid_inception.FidInceptionV3()
  assert full.features == fid_inception.FEATURES
  shapes = {k: tuple(v.shape) for k, v in full.state_dict().items()}
  assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
  assert shapes["Mixed_6b.branch7x7dbl_2.conv.weight"] == (128, 128, 7, 1)
  assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
  assert shapes["Mixed_7c.branch3x3dbl_3b.bn.running_var"] == (384,)
  assert full.Mixed_6a.out_channels == 768 and full.Mixed_7a.out_channels == 1280


def test_loading_a_file_and_its_errors(model, tmp_path):
  """A file in pytorch-fid's layout (with its classifier, without BatchNorm's counters) loads as
  the same network; a file without a tensor is refused naming it and the flag."""
  state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
  state["fc.weight"], state["fc.bias"] = torch.zeros(1008, model.features), torch.zeros(1008)
  torch.save(state, tmp_path / "fid.pth")
  loaded = fid_inception.load(str(tmp_path / "fid.pth"))
  frames = np.random.default_rng(5).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
  np.testing.assert_array_equal(fid_inception.frame_features(loaded, frames),
                                fid_inception.frame_features(model, frames))
  del state["Mixed_6e.branch_pool.bn.running_mean"]
  torch.save(state, tmp_path / "broken.pth")
  with pytest.raises(ValueError,
                     match=r"--fid_inception: .*Mixed_6e\.branch_pool\.bn\.running_mean"):
    fid_inception.load(str(tmp_path / "broken.pth"))
  with pytest.raises(FileNotFoundError, match="--fid_inception"):
    fid_inception.load(str(tmp_path / "absent.pth"))


def test_weight_files_are_read_without_unpickling_objects(model, tmp_path):
  """safetensors loads as the PyTorch file does; a file holding an object (not unpickled), a
  corrupt safetensors file and a list of tensors are refused naming the flag and the file."""
  state = {k: v.contiguous() for k, v in model.state_dict().items()}
  safetensors_torch = pytest.importorskip("safetensors.torch")
  safetensors_torch.save_file(state, tmp_path / "fid.safetensors")
  loaded = fid_inception.load(str(tmp_path / "fid.safetensors"))
  for key, value in state.items():
    assert torch.equal(loaded.state_dict()[key], value), key
  torch.save({"state_dict": state, "args": argparse.Namespace(lr=1)}, tmp_path / "object.pth")
  with pytest.raises(ValueError, match=r"--fid_inception: .*object\.pth is not a file of plain "
                     "tensors"):
    fid_inception.load(str(tmp_path / "object.pth"))
  (tmp_path / "corrupt.safetensors").write_bytes(b"not a safetensors file")
  with pytest.raises(ValueError, match="corrupt.safetensors is not a file of plain tensors"):
    fid_inception.load(str(tmp_path / "corrupt.safetensors"))
  torch.save(list(state.values()), tmp_path / "list.pth")
  with pytest.raises(ValueError, match="list.pth holds a list, not a state dict"):
    fid_inception.load(str(tmp_path / "list.pth"))
