"""Export to PyTorch: parity of the PyTorch modules with the JAX model, round trip, bf16, errors.

Random parameters (every leaf, norms and biases too) of the tiny config and of a mid-size one
(ViT-S encoder, 4 decoder layers, scanned layers), with the mel and the tiny wav2vec2 front ends;
the wav2vec2 weights are a random transformers model, converted to JAX by
`wav2vec2_checkpoint.load` and loaded by the PyTorch side from the same directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import transformers
from safetensors.numpy import save_file

from configs import demo
from data_pipelines import face_weights
from synclipmae_jax import masking, objective, train_state
from synclipmae_jax.evaluators import sync
from synclipmae_jax.models import audio_encoder, audio_signal, synclipmae
from synclipmae_jax.weights import param_tree, wav2vec2_checkpoint
from synclipmae_torch import export, layout
from tests import cell_boxes
from torch_peers import random_eval_model
from wav2vec2_tiny import TINY, VARIANTS

torch = pytest.importorskip("torch")
from synclipmae_torch import audio, modules, tokens  # pylint: disable=wrong-import-position

TOLERANCE = 1e-4  # float32 parity, absolute
OUTPUTS = ("identity", "vocal", "ambient", "audio", "pred_video", "pred_audio")
CASES = {
    # name: (encoder, decoder (width, depth, heads, mlp), image, front end, wav2vec2 variant,
    #        alignment, cross_attention, scan_layers)
    "tiny-mel": ("tiny", (16, 1, 2, 32), 16, "mel", None, "resample", True, False),
    "tiny-wav2vec2-concat": ("tiny", (16, 1, 2, 32), 16, "wav2vec2", "base", "resample", False, False),
    "mid-mel-scan": ("S", (128, 4, 4, 256), 32, "mel", None, "resample", True, True),
    "mid-wav2vec2-scan": ("S", (128, 4, 4, 256), 32, "wav2vec2", "stable", "interpolate", True, True),
}


def make_config(case: str) -> ml_collections.ConfigDict:
  encoder, (width, depth, heads, mlp), image, frontend, variant, alignment, cross, scan = CASES[case]
  c = demo.get_config("tiny")
  c.data.update(global_batch_size=2, window_frames=4)
  c.model.update(encoder_size=encoder, image_size=image, scan_layers=scan)
  c.model.decoder.update(width=width, depth=depth, num_heads=heads, mlp_dim=mlp, cross_attention=cross)
  c.model.audio.update(frontend=frontend, alignment=alignment)
  if variant:
    c.model.audio.wav2vec2 = ml_collections.ConfigDict(dict(TINY, **VARIANTS[variant]))
  return c


def random_params(config, seed: int) -> dict:
  """Every parameter random: norm scales 1 + N(0, 0.2^2), biases N(0, 0.2^2), embeddings and
  tokens N(0, 0.5^2), kernels N(0, 1 / fan_in)."""
  rng = np.random.default_rng(seed)
  flat = {}
  for path, shape in export.model_shapes(config).items():
    leaf = path.split("/")[-1]
    scanned = "/blocks/layers/" in path
    core = shape[1:] if scanned else shape
    if leaf == "scale":
      value = 1.0 + 0.2 * rng.standard_normal(shape)
    elif leaf.endswith("bias"):
      value = 0.2 * rng.standard_normal(shape)
    elif leaf in ("pos_embed", "prompts", "mask_token"):
      value = 0.5 * rng.standard_normal(shape)
    else:
      fan_in = int(np.prod(core[:-1])) if leaf == "out_kernel" else core[0]
      value = rng.standard_normal(shape) / np.sqrt(fan_in)
    flat[path] = value.astype(np.float32)
  return param_tree.unflatten(flat)


def random_views(config, batch, seed: int):
  """The model's inputs but the audio features: (context patches, uniform keep, motion patches,
  motion keep) of the two bypasses (paper 3.2) from the batch's frames with random kept indices,
  and an identity permutation (numpy only: no XLA compilation)."""
  rng = np.random.default_rng(seed)
  frames = batch["frames"].reshape((-1,) + batch["frames"].shape[2:])
  f, n = frames.shape[0], (config.model.image_size // config.model.patch_size) ** 2
  k = masking.num_visible(n, config.masking.mask_ratio)

  def patches(images):
    return np.asarray(masking.patchify((images - objective.PIXEL_MEAN) / objective.PIXEL_STD,
                                       config.model.patch_size), np.float32)

  def keep():
    return np.sort(np.argsort(rng.random((f, n)), axis=1)[:, :k], axis=1).astype(np.int32)

  images = frames.astype(np.float32) / 255.0
  return (patches(images), keep(), patches(images[::-1] * 0.8), keep()), rng.permutation(f).astype(np.int32)


def to_torch(x, dtype=None):
  t = torch.from_numpy(np.array(x))
  return t.long() if t.dtype == torch.int32 else t.to(dtype) if dtype else t


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
  """(name, config, params, folder, wav2vec2 dir or None, JAX inputs, JAX outputs)."""
  name = request.param
  config = make_config(name)
  root = tmp_path_factory.mktemp(name)
  w2v_dir, frozen = None, {}
  if config.model.audio.frontend == "wav2vec2":
    w2v_config = transformers.Wav2Vec2Config(**config.model.audio.wav2vec2.to_dict())
    w2v_dir = str(root / "wav2vec2")
    random_eval_model(transformers.Wav2Vec2Model, w2v_config).save_pretrained(w2v_dir)
    frozen = {"wav2vec2": wav2vec2_checkpoint.load(w2v_dir, expected_config=w2v_config)[1]}
  params = random_params(config, seed=len(name))
  batch = train_state.random_batch(config, seed=1)
  encoder = audio_encoder.build(config.model.audio)
  features = jax.jit(encoder.apply, static_argnums=2)(
      {"params": frozen}, batch["audio"], config.data.window_frames)
  views, perm = random_views(config, batch, seed=2)
  inputs = (*views, features, perm)
  outputs = jax.jit(synclipmae.build(config.model).apply)({"params": params}, *inputs)
  folder = str(root / "export")
  export.export(config, params, folder, step=7)
  return name, config, params, folder, w2v_dir, batch, inputs, jax.device_get(outputs)


def torch_outputs(folder, w2v_dir, batch, inputs, config, dtype=None):
  model = modules.SyncLipMAE.from_pretrained(folder, dtype=dtype)
  frontend = audio.from_pretrained(folder, w2v_dir)
  context, context_keep, motion, motion_keep, _, perm = inputs
  with torch.no_grad():
    features = frontend(to_torch(batch["audio"]), config.data.window_frames)
    return features, model(to_torch(context), to_torch(context_keep), to_torch(motion),
                           to_torch(motion_keep), features, to_torch(perm))


def test_pytorch_modules_compute_the_jax_outputs(case):
  name, config, _, folder, w2v_dir, batch, inputs, expected = case
  features, ours = torch_outputs(folder, w2v_dir, batch, inputs, config)
  errors = {"features": float(np.abs(features.numpy() - np.asarray(inputs[4])).max())}
  for key in OUTPUTS:
    assert ours[key].shape == expected[key].shape, key
    errors[key] = float(np.abs(ours[key].numpy() - expected[key]).max())
  print(f"{name}: max abs error {errors}")
  assert max(errors.values()) < TOLERANCE, errors
  assert np.abs(expected["vocal"]).max() > 0.1 and np.abs(expected["pred_audio"]).max() > 0.1


def test_round_trip_is_bit_identical(case):
  _, config, params, folder, *_ = case
  back = param_tree.flatten(export.import_params(folder, config))
  original = param_tree.flatten(params)
  assert back.keys() == original.keys()
  for path, value in original.items():
    assert back[path].dtype == np.float32
    np.testing.assert_array_equal(back[path], value, err_msg=path)


def test_exported_names_are_the_pytorch_state_dict(case):
  _, config, _, folder, *_ = case
  with open(os.path.join(folder, layout.CONFIG_FILE)) as f:
    saved = json.load(f)
  assert saved["step"] == 7 and saved["training_config"]["model"]["encoder_size"] == config.model.encoder_size
  tensors = layout.read_tensors(folder, "numpy")
  state = modules.SyncLipMAE(saved["model"]).state_dict()
  frontend = {n for n in tensors if n.startswith(layout.FRONTEND_PREFIX)}
  assert set(tensors) - frontend == set(state)
  assert bool(frontend) == (config.model.audio.frontend == "mel")
  assert all(tensors[n].flags.c_contiguous for n in tensors)
  with open(os.path.join(folder, layout.README_FILE)) as f:
    readme = f.read()
  assert "decoder.blocks.0.self_attn.q_proj.weight" in readme and "SyncTokenizer" in readme


@pytest.fixture(scope="module")
def tiny_mel(tmp_path_factory):
  """The tiny mel case alone (for the dtype and error tests)."""
  name = "tiny-mel"
  config = make_config(name)
  params = random_params(config, seed=0)
  batch = train_state.random_batch(config, seed=1)
  features = audio_encoder.build(config.model.audio).apply({"params": {}}, batch["audio"], 4)
  views, perm = random_views(config, batch, seed=2)
  inputs = (*views, features, perm)
  folder = str(tmp_path_factory.mktemp("tiny_mel") / "f32")
  export.export(config, params, folder)
  _, outputs = torch_outputs(folder, None, batch, inputs, config)
  return config, params, folder, batch, inputs, {k: v.numpy() for k, v in outputs.items()}


# bf16 keeps 8 mantissa bits: parameters and activations round at ~0.4 %, through 2 encoder and
# 1 decoder layers that is a few percent of a token's largest entry.
BF16_TOLERANCE = 0.05  # max abs error / max abs value, per output


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_export_stays_close_to_float32(tiny_mel, tmp_path, dtype):
  config, params, _, batch, inputs, f32 = tiny_mel
  folder = str(tmp_path / dtype)
  export.export(config, params, folder, dtype=dtype)
  tensors = layout.read_tensors(folder, "pt")
  assert tensors["encoder.prompts"].dtype == modules.TORCH_DTYPES[dtype]
  assert tensors[layout.MEL_FILTERS_TENSOR].dtype == torch.float32
  _, ours = torch_outputs(folder, None, batch, inputs, config)
  for key in OUTPUTS:
    relative = np.abs(ours[key].float().numpy() - f32[key]).max() / np.abs(f32[key]).max()
    print(f"{dtype} {key}: max abs error / max abs value {relative:.4f}")
    assert relative < BF16_TOLERANCE, (key, relative)
  # Imported back, the half-precision values are exactly the rounded float32 ones.
  back = param_tree.flatten(export.import_params(folder, config))
  rounded = np.asarray(params["encoder"]["prompts"]).astype(export.NUMPY_DTYPES[dtype])
  np.testing.assert_array_equal(back["encoder/prompts"], rounded.astype(np.float32))


def rewrite(folder: str, change) -> None:
  tensors = layout.read_tensors(folder, "numpy")
  change(tensors)
  save_file(tensors, os.path.join(folder, layout.WEIGHTS_FILE))


def copy_folder(source: str, target) -> str:
  os.makedirs(target)
  for name in (layout.WEIGHTS_FILE, layout.CONFIG_FILE):
    with open(os.path.join(source, name), "rb") as f, open(os.path.join(target, name), "wb") as g:
      g.write(f.read())
  return str(target)


def load_errors(folder: str, config) -> tuple[str, str]:
  """(PyTorch error, JAX import error) for a broken folder."""
  with pytest.raises(ValueError) as torch_error:
    modules.SyncLipMAE.from_pretrained(folder)
  with pytest.raises(ValueError) as jax_error:
    export.import_params(folder, config)
  return str(torch_error.value), str(jax_error.value)


def test_missing_unexpected_and_misshapen_tensors_are_listed(tiny_mel, tmp_path):
  config, _, source, *_ = tiny_mel
  folder = copy_folder(source, tmp_path / "broken")

  def change(tensors):
    del tensors["decoder.blocks.0.cross_attn.k_proj.weight"]
    tensors["encoder.blocks.0.rotary.weight"] = np.zeros((4, 4), np.float32)
    tensors["audio_adapter.proj_in.weight"] = np.zeros((32, 8), np.float32)

  rewrite(folder, change)
  for message in load_errors(folder, config):
    assert "3 problem(s)" in message, message
    assert "missing tensor decoder.blocks.0.cross_attn.k_proj.weight (16, 16)" in message
    assert "unexpected tensor encoder.blocks.0.rotary.weight (4, 4)" in message
    assert "shape mismatch: audio_adapter.proj_in.weight is (32, 8), the model needs (32, 160)" in message


def test_truncated_file_is_a_clear_error(tiny_mel, tmp_path):
  config, _, source, *_ = tiny_mel
  folder = copy_folder(source, tmp_path / "truncated")
  path = os.path.join(folder, layout.WEIGHTS_FILE)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: len(data) - 1000])
  for message in load_errors(folder, config):
    assert "not a complete safetensors file" in message and path in message


def test_config_mismatch_lists_the_differing_fields(tiny_mel):
  config, _, folder, *_ = tiny_mel
  other = make_config("tiny-mel")
  other.model.decoder.depth = 2
  other.model.audio.n_mels = 16
  with pytest.raises(ValueError) as e:
    export.import_params(folder, other)
  message = str(e.value)
  assert "decoder.depth: 1 in the folder != 2" in message
  assert "audio.n_mels: 8 in the folder != 16" in message
  assert "audio.feature_dim" in message


def test_a_parameter_tree_of_another_config_is_refused(tiny_mel, tmp_path):
  config, params, *_ = tiny_mel
  broken = param_tree.flatten(params)
  del broken["decoder/head/bias"]
  with pytest.raises(ValueError, match=r"missing tensor decoder/head/bias \(192,\)"):
    export.export(config, param_tree.unflatten(broken), str(tmp_path / "x"))
  with pytest.raises(ValueError, match="dtype must be one of"):
    export.export(config, params, str(tmp_path / "x"), dtype="int8")


def test_wav2vec2_checkpoint_of_another_architecture_is_refused(tmp_path):
  config = make_config("tiny-wav2vec2-concat")
  folder = str(tmp_path / "export")
  export.export(config, random_params(config, 0), folder)
  other = transformers.Wav2Vec2Config(**dict(TINY, num_hidden_layers=3), **VARIANTS["base"])
  transformers.Wav2Vec2Model(other).save_pretrained(tmp_path / "w2v")
  with pytest.raises(ValueError, match="num_hidden_layers: 3 in .* != 2 in the export"):
    audio.from_pretrained(folder, tmp_path / "w2v")
  with pytest.raises(ValueError, match="pass wav2vec2="):
    tokens.SyncTokenizer.from_pretrained(folder)


def test_tokenizer_view_and_tokens_match_the_jax_evaluator(tiny_mel):
  """SyncTokenizer's face view keeps the JAX evaluator's patches, and its tokens are the JAX ones."""
  config, params, folder, batch, _, _ = tiny_mel
  model = synclipmae.build(config.model)
  tokenizer = tokens.SyncTokenizer.from_pretrained(folder)
  frames, face, mouth = (batch[k][0] for k in ("frames", "face_boxes", "mouth_boxes"))
  face = face + np.linspace(-0.1, 0.1, len(face), dtype=np.float32)[:, None]  # a moving face
  grid = config.model.image_size // config.model.patch_size
  k = masking.num_visible(grid * grid, config.masking.mask_ratio)

  @jax.jit
  def jax_view(frames, face, mouth):  # the view of evaluators.sync (config.evals.sync.view="face")
    weights = face_weights.patch_weights(face, mouth, grid, **config.masking.face_weights, xp=jnp)
    patches = objective.images_to_patches(objective.frames_to_unit(frames), config.model.patch_size)
    return patches, masking.top_weight_keep(weights, k)

  patches, keep = jax_view(frames, face, mouth)
  vocal = sync.prompt_tokens_for(model, config, config.evals.sync)(params, frames, face, mouth)[:, 1]
  # The batch's audio is a training window: 4 frames with `context` frames of audio on each side.
  context, spf = config.model.audio.input_context_frames, audio_signal.SAMPLES_PER_FRAME
  assert context > 0
  audio_tokens = sync.audio_tokens_fn(model, audio_encoder.build(config.model.audio), 4)(
      params, {}, batch["audio"][:1])[0]
  waveform = batch["audio"][0][context * spf:(context + 4) * spf]
  ours_patches, ours_keep = tokenizer.view(frames, face, mouth)
  np.testing.assert_array_equal(ours_keep.numpy(), np.asarray(keep))
  np.testing.assert_allclose(ours_patches.numpy(), np.asarray(patches), atol=1e-6)
  with torch.no_grad():
    ours = tokenizer(frames, face, mouth, waveform)
    ours_audio = tokenizer.audio_tokens(batch["audio"][0], context, context + 4)
  assert ours["vocal"].shape == ours["audio"].shape == (4, 32)
  np.testing.assert_allclose(ours["vocal"].numpy(), np.asarray(vocal), atol=TOLERANCE)
  np.testing.assert_allclose(ours_audio.numpy(), np.asarray(audio_tokens), atol=TOLERANCE)
  with pytest.raises(ValueError, match="4 frames need 2560 audio samples"):
    tokenizer(frames, face, mouth, waveform[:-1])


def test_tokenizer_keeps_the_jax_patches_where_face_weights_tie(tmp_path):
  """A 6 x 6 grid, where cell edges j / 6 are no float32 fractions (coverage (hi - lo) * grid of
  rounded edges made equal weights unequal, differently in numpy and XLA), with boxes on cell
  edges so that most frames' view cuts among equal weights: the tokenizer keeps the JAX
  evaluator's patches and its prompt tokens are the JAX ones."""
  config = make_config("tiny-mel")
  config.model.image_size = 48
  grid, f = 6, 24
  k = masking.num_visible(grid * grid, config.masking.mask_ratio)
  params = random_params(config, seed=3)
  folder = str(tmp_path / "export")
  export.export(config, params, folder)
  tokenizer = tokens.SyncTokenizer.from_pretrained(folder)
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (f, 48, 48, 3), dtype=np.uint8)
  face, mouth = cell_boxes.cell_edge_boxes(rng, f, grid)
  ranked = -np.sort(-face_weights.patch_weights(face, mouth, grid, **config.masking.face_weights))
  assert (ranked[:, k - 1] == ranked[:, k]).sum() >= f // 2  # the premise: ties at the cut
  jax_keep = jax.jit(lambda f, m: masking.top_weight_keep(face_weights.patch_weights(
      f, m, grid, **config.masking.face_weights, xp=jnp), k))(face, mouth)
  _, ours_keep = tokenizer.view(frames, face, mouth)
  np.testing.assert_array_equal(ours_keep.numpy(), np.asarray(jax_keep))
  expected = sync.prompt_tokens_for(synclipmae.build(config.model), config, config.evals.sync)(
      params, frames, face, mouth)
  with torch.no_grad():
    ours = tokenizer.prompt_tokens(frames, face, mouth)
  # Float32 rounding through the encoder: a few ulp of tokens of magnitude ~3 (ulp 2.4e-7),
  # where one other kept patch moves a token by O(1).
  for i, name in enumerate(("identity", "vocal", "ambient")):
    np.testing.assert_allclose(ours[name].numpy(), np.asarray(expected[:, i]), atol=1e-5,
                               err_msg=name)


def test_encoder_compiles_to_one_graph(tiny_mel):
  """torch.compile captures the encoder whole (fullgraph: no graph break); the "aot_eager"
  backend runs the captured graph without inductor's C++ build (minutes on CI's CPU)."""
  _, _, folder, _, inputs, outputs = tiny_mel
  model = modules.SyncLipMAE.from_pretrained(folder)
  compiled = torch.compile(model.encoder, fullgraph=True, backend="aot_eager")
  with torch.no_grad():
    _, prompts = compiled(to_torch(inputs[0]), to_torch(inputs[1]))
  np.testing.assert_allclose(prompts[:, 0].numpy(), outputs["identity"], atol=TOLERANCE)


def test_pytorch_side_imports_no_jax():
  code = ("import sys, synclipmae_torch, synclipmae_torch.audio, synclipmae_torch.tokens; "
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.stdout.strip() == "[]", out.stdout
