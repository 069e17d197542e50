"""AOT compile tool: per-device bytes from shardings, the compiled report of the tiny config on
the 8 local devices (donation, fit, replication checks of trainable and frozen weights), the remat
search's choice, and, where libtpu is installed (`pytest -m tpu` in the tpu venv), the command
lines against real TPU topologies, multislice included."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import optax
import pytest

from configs import demo
from synclipmae_jax import sharding, train_state
from synclipmae_jax.models import audio_encoder as audio_encoder_lib
from synclipmae_jax.models import synclipmae
from synclipmae_jax.tools import aot, remat_search

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None


def tiny_config(**rules):
  c = demo.get_config("tiny")
  c.mesh.update(data=2, fsdp=2, tensor=2)
  c.sharding.logical_axis_rules = tuple((n, rules.get(n, a)) for n, a in c.sharding.logical_axis_rules)
  return c


def with_tiny_wav2vec2(c):
  """`c` with a small frozen wav2vec2 front end (hidden 64: its 64 x 64 kernels are 16 KiB)."""
  c.model.audio.frontend = "wav2vec2"
  c.model.audio.wav2vec2.update(
      hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128,
      conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=8,
      num_conv_pos_embedding_groups=2)
  return c


def test_bytes_per_device_counts_each_devices_shard():
  mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
  tree = {"a": jax.ShapeDtypeStruct((8, 6), jnp.float32, sharding=NamedSharding(mesh, P("fsdp", "tensor"))),
          "b": jax.ShapeDtypeStruct((10,), jnp.bfloat16, sharding=NamedSharding(mesh, P()))}
  assert aot.bytes_per_device(tree) == 4 * 3 * 4 + 10 * 2
  assert [x["name"] for x in aot.replicated_leaves(tree, 20)] == ["['b']"]
  assert aot.replicated_leaves(tree, 21) == []


@pytest.fixture(scope="module")
def report():
  return aot.compile_report(tiny_config(), jax.devices(), hbm_bytes=2 ** 30)


def test_report_of_the_tiny_config_on_eight_devices(report):
  assert report["num_devices"] == 8 and report["num_hosts"] == 1
  assert report["num_slices"] == 1 and report["dcn_axes"] == {}
  assert report["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
  assert report["clips_per_device"] == 1.0
  state = report["state_bytes_per_device"]
  assert 2 * state["params"] <= state["opt_state"] < 2 * state["params"] + 1024  # AdamW mu, nu
  assert set(report["functions"]) == {"train_step", "eval_prompt_tokens", "eval_audio_tokens"}
  step = report["functions"]["train_step"]
  m = step["memory"]
  assert m["total"] == m["argument"] + m["output"] - m["alias"] + m["temp"] + m["generated_code"]
  # The donated train state is updated in place: every byte of it is aliased by the output.
  assert m["alias"] >= state["params"] + state["opt_state"] + state["frozen"]
  assert m["argument"] >= m["alias"] + state["batch"]
  assert step["fits"] and 0.0 < step["headroom"] < 1.0 and report["ok"]
  assert step["flops_per_device"] > 0 and step["compile_seconds"] > 0
  assert report["flops"]["compiled_over_analytical"] == pytest.approx(
      8 * step["flops_per_device"] / report["flops"]["analytical_per_step"])
  text = aot.format_report(report)
  assert "train_step" in text and text.endswith("OK")


def test_does_not_fit_and_replicated_weights_fail_the_report():
  # An fsdp mesh whose rules forgot to shard the weights, trainable and frozen.
  config = with_tiny_wav2vec2(tiny_config(embed=None, audio_embed=None))
  r = aot.compile_report(config, jax.devices(), hbm_bytes=2 ** 16, max_replicated_bytes=4096,
                         compile_eval=False)
  assert not r["fits"] and not r["ok"]
  names = [p["name"] for p in r["replicated_parameters"]]
  assert "['encoder']['blocks']['layers_0']['mlp']['fc1']['kernel']" not in names  # split on tensor
  assert "['encoder']['patch_embed']['kernel']" in names
  w2v = "['frozen']['wav2vec2']['encoder']['layers_0']"
  assert f"{w2v}['attention']['q_proj']['kernel']" not in names  # split on tensor (audio_heads)
  assert f"{w2v}['attention']['out_proj']['kernel']" not in names
  assert f"{w2v}['feed_forward']['output_dense']['kernel']" not in names  # audio_mlp on tensor
  assert f"{w2v}['feed_forward']['output_dense']['bias']" not in names  # 256 bytes
  assert "['frozen']['wav2vec2']['encoder']['pos_conv_embed']['conv']['weight_v']" in names
  assert all(p["bytes"] >= 4096 for p in r["replicated_parameters"])
  assert "does not fit" in aot.format_report(r) and "REPLICATED" in aot.format_report(r)


def test_default_rules_shard_the_frozen_wav2vec2_over_fsdp():
  config = with_tiny_wav2vec2(tiny_config())
  mesh = sharding.make_mesh(config.mesh)
  fns = train_state.make(config, synclipmae.build(config.model),
                         audio_encoder_lib.build(config.model.audio), optax.sgd(0.1), lambda s: 0.1,
                         sharding.num_batch_shards(mesh))
  abstract, *_ = train_state.jit_all(fns, mesh, sharding.rules(config), jax.random.PRNGKey(0))
  assert aot.replicated_leaves(abstract.frozen, 1024) == []
  kernel = abstract.frozen["wav2vec2"]["encoder"]["layers_0"]["feed_forward"]["intermediate_dense"]["kernel"]
  assert kernel.sharding.spec == P("fsdp", "tensor")


def test_bad_headroom_is_a_value_error():
  with pytest.raises(ValueError, match="min_headroom=1.5"):
    aot.compile_report(tiny_config(), jax.devices(), hbm_bytes=2 ** 30, min_headroom=1.5)


@pytest.mark.skipif(HAS_LIBTPU, reason="libtpu is installed")
def test_topology_without_libtpu_names_the_extra():
  with pytest.raises(ValueError, match="requirements-tpu.txt"):
    aot.topology_devices("v5p:2x2x1")


@pytest.mark.tpu
@pytest.mark.skipif(not HAS_LIBTPU, reason="needs libtpu (requirements-tpu.txt)")
def test_chip_tables_follow_the_topology():
  v5p = aot.topology_devices("v5p:4x4x8")
  assert len(v5p) == 128 and len({d.process_index for d in v5p}) == 32
  assert aot.hbm_bytes_per_device(v5p) == 95 * 2 ** 30
  assert aot.hbm_bytes_per_device(aot.topology_devices("v5e:2x2")) == 16 * 2 ** 30
  v4 = aot.topology_devices("v4:2x2x2")  # listed per TensorCore: two devices share a chip
  assert aot.devices_per_chip(v4) == 2 and aot.hbm_bytes_per_device(v4) == 16 * 2 ** 30
  # Two slices repeat each chip's coordinates: chips are told apart by slice too.
  two = aot.topology_devices("v5p:2x2x2", num_slices=2)
  assert len(two) == 16 and sharding.num_slices(two) == 2 and aot.devices_per_chip(two) == 1
  assert aot.devices_per_chip(aot.topology_devices("v4:2x2x2", num_slices=2)) == 2


@pytest.mark.tpu
@pytest.mark.skipif(not HAS_LIBTPU, reason="needs libtpu (requirements-tpu.txt)")
def test_command_line_compiles_the_tiny_config_for_one_and_two_v5p_slices(tmp_path):
  def aot_cli(*flags):
    return subprocess.run(
        [sys.executable, "-m", "synclipmae_jax.tools.aot", "--config=configs/demo.py:tiny",
         "--topology=v5p:2x2x2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2", *flags],
        cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))

  out = tmp_path / "aot.json"
  result = aot_cli(f"--json_out={out}", "--min_headroom=0.15")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report["topology"] == "v5p:2x2x2" and report["device_kind"] == "TPU v5"
  assert report["num_devices"] == 8 and report["num_hosts"] == 2
  assert report["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
  assert set(report["functions"]) == {"train_step", "eval_prompt_tokens", "eval_audio_tokens"}
  assert report["ok"] and report["step_seconds_at_mfu"]["0.40"] > 0
  assert result.stdout.rstrip().endswith("OK")

  # Two slices (16 chips), data split over DCN, in 1 MiB of HBM: compiled, reported per chip
  # with the axis that crosses DCN, and refused as too large. (configs/pretrain.py on
  # 2 x v5p:4x4x8 is BENCHMARKS.md (c)'s multislice row: a compile of minutes.)
  out = tmp_path / "two_slices.json"
  tight = aot_cli("--num_slices=2", "--config.mesh.dcn_data=2", "--clips_per_chip=1",
                  "--hbm_gib=0.001", "--eval=False", f"--json_out={out}")
  assert tight.returncode == 1 and "FAILED: does not fit" in tight.stdout, tight.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report["num_devices"] == 16 and report["num_slices"] == 2 and report["num_hosts"] == 4
  assert report["mesh"] == {"data": 4, "fsdp": 2, "tensor": 2}
  assert report["dcn_axes"] == {"data": 2}  # fsdp and tensor stay inside a slice (ICI)
  assert report["functions"]["train_step"]["memory"]["total"] > 2 ** 20
  assert "2 slice(s); data crosses DCN (2 slices)" in tight.stdout
  unmatched = aot_cli("--num_slices=2", "--eval=False")  # no DCN axis for two slices
  assert unmatched.returncode != 0
  assert "mesh.dcn_data * mesh.dcn_fsdp = 1 must equal the number of slices" in unmatched.stderr


def search_row(candidate, clips, fits, flops, headroom=0.5):
  return {"candidate": candidate, "clips_per_chip": clips, "fits": fits, "flops_per_device": flops,
          "headroom": headroom, "offloads": "offload" in candidate}


def test_remat_search_chooses_the_fewest_flops_that_fit_at_the_largest_batch():
  rows = [search_row("none", 48, False, 1.0), search_row("full", 48, True, 1.3),
          search_row("qkv_proj", 48, True, 1.2, 0.2), search_row("offload", 48, True, 1.01),
          search_row("dots_no_batch", 24, True, 1.0)]
  assert remat_search.choose(rows)["candidate"] == "qkv_proj"  # offload only if nothing else fits
  assert remat_search.choose(rows[:1] + rows[3:4])["candidate"] == "offload"
  assert remat_search.choose([search_row("full", 48, True, 1.0, 0.2),
                              search_row("qkv_proj", 48, True, 1.0, 0.3)])["candidate"] == "qkv_proj"
  assert remat_search.choose(rows[:1]) is None
  assert remat_search.parse_candidate("full") == {"encoder": "full", "decoder": "full"}
  assert remat_search.parse_candidate("dots_no_batch:full") == {"encoder": "dots_no_batch",
                                                                "decoder": "full"}
  with pytest.raises(ValueError, match="ENCODER:DECODER"):
    remat_search.parse_candidate("full:none:none")
  with pytest.raises(ValueError, match="ENCODER:DECODER"):
    remat_search.search(tiny_config(), jax.devices(), [1], ["none", "dots"], min_headroom=0.15)


def test_remat_search_resumes_from_its_json_without_compiling_the_rows_it_has(tmp_path):
  config = tiny_config()
  done = [search_row("full", 1, False, 1.3), search_row("qkv_proj", 1, True, 1.2)]
  # Both candidates are done: nothing is compiled (the local CPU devices have no HBM size, so
  # a compile would fail), and the first-fit search stops at the fitting row it already has.
  result = remat_search.search(config, jax.devices(), [1], ["full", "qkv_proj", "none"],
                               min_headroom=0.15, first_fit=True, done_rows=done)
  assert result["rows"] == done and result["choice"]["candidate"] == "qkv_proj"

  path = tmp_path / "search.json"
  assert remat_search.resumable_rows(str(path), "v5p:2x2x2", config, 0.15) == []
  path.write_text(json.dumps({"topology": "v5p:2x2x2", "min_headroom": 0.15,
                              "num_train_steps": config.num_train_steps, "rows": done}))
  assert remat_search.resumable_rows(str(path), "v5p:2x2x2", config, 0.15) == done
  with pytest.raises(ValueError, match="v6e:16x16"):
    remat_search.resumable_rows(str(path), "v6e:16x16", config, 0.15)
  with pytest.raises(ValueError, match="min_headroom"):
    remat_search.resumable_rows(str(path), "v5p:2x2x2", config, 0.2)


@pytest.mark.tpu
@pytest.mark.skipif(not HAS_LIBTPU, reason="needs libtpu (requirements-tpu.txt)")
def test_remat_search_command_line_on_a_v5p_slice(tmp_path):
  """A non-trivial policy compiled by the TPU compiler: "full" runs more FLOPs than
  dots_no_batch (which keeps the projections), and the search chooses the latter."""
  out = tmp_path / "remat.json"
  result = subprocess.run(
      [sys.executable, "-m", "synclipmae_jax.tools.remat_search", "--config=configs/demo.py:tiny",
       "--topology=v5p:2x2x2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2", "--clips_per_chip=2",
       "--candidates=full,dots_no_batch", "--min_headroom=0.15", f"--json_out={out}"],
      cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
  assert result.returncode == 0, result.stderr[-3000:]
  table = json.loads(out.read_text())
  assert table["topology"] == "v5p:2x2x2" and table["num_chips"] == 8
  full, dots = table["rows"]
  assert full["fits"] and dots["fits"] and full["clips_per_chip"] == 2
  # The tiny model's step is mostly element-wise work (masking, losses): the recomputed
  # projections are ~3 % of it.
  assert full["flops_per_device"] > 1.01 * dots["flops_per_device"]
  assert dots["flops_over_analytical"] < full["flops_over_analytical"]
  assert table["choice"]["candidate"] == "dots_no_batch"
  assert full["step_seconds"]["0.40"] > full["step_seconds"]["0.60"] > 0
  assert "CHOICE: 2 clips per chip" in result.stdout
