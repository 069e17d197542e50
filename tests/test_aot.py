"""AOT compile tool: per-device bytes from shardings, the compiled report of the tiny config on
the 8 local devices (donation, fit, replication checks), and, where libtpu is installed
(`pytest -m tpu` in the tpu venv), the command line against real TPU topologies."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import pytest

from configs import demo
from synclipmae_jax import sharding
from synclipmae_jax.tools import aot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None


def tiny_config(**rules):
  c = demo.get_config("tiny")
  c.mesh.update(data=2, fsdp=2, tensor=2)
  c.sharding.logical_axis_rules = tuple((n, rules.get(n, a)) for n, a in c.sharding.logical_axis_rules)
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
  assert report["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
  assert report["clips_per_device"] == 1.0
  state = report["state_bytes_per_device"]
  assert 2 * state["params"] <= state["opt_state"] < 2 * state["params"] + 1024  # AdamW mu, nu
  assert set(report["functions"]) == {"train_step", "eval_vocal_tokens", "eval_audio_tokens"}
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
  config = tiny_config(embed=None)  # an fsdp mesh whose rules forgot to shard the weights
  r = aot.compile_report(config, jax.devices(), hbm_bytes=2 ** 16, max_replicated_bytes=4096,
                         compile_eval=False)
  assert not r["fits"] and not r["ok"]
  names = [p["name"] for p in r["replicated_parameters"]]
  assert "['encoder']['blocks']['layers_0']['mlp']['fc1']['kernel']" not in names  # split on tensor
  assert "['encoder']['patch_embed']['kernel']" in names
  assert all(p["bytes"] >= 4096 for p in r["replicated_parameters"])
  assert "does not fit" in aot.format_report(r) and "REPLICATED" in aot.format_report(r)


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


@pytest.mark.tpu
@pytest.mark.skipif(not HAS_LIBTPU, reason="needs libtpu (requirements-tpu.txt)")
def test_command_line_compiles_the_tiny_config_for_a_v5p_slice(tmp_path):
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
  assert set(report["functions"]) == {"train_step", "eval_vocal_tokens", "eval_audio_tokens"}
  assert report["ok"] and report["step_seconds_at_mfu"]["0.40"] > 0
  assert result.stdout.rstrip().endswith("OK")

  tight = aot_cli("--hbm_gib=0.001", "--eval=False")
  assert tight.returncode == 1 and "FAILED: does not fit" in tight.stdout
