"""Device mesh, logical-axis rules and shardings (MaxText style: the rules are config data).

Mesh axes are ("data", "fsdp", "tensor"). The batch is split over data x fsdp; parameters
are split over fsdp on their `embed` axis and over tensor on `mlp` / `heads`, as the
config's `sharding.logical_axis_rules` says.

Multislice (MaxText's DCN / ICI axes): `mesh.data`, `mesh.fsdp` and `mesh.tensor` are the
axes' total sizes over all devices; `mesh.dcn_data` and `mesh.dcn_fsdp` (default 1) say how
much of the data and fsdp axes crosses slices over the data-centre network. Each slice holds
data / dcn_data x fsdp / dcn_fsdp x tensor devices linked by ICI, and an axis split over DCN
has whole slices on its outer index (`mesh_utils.create_hybrid_device_mesh`). Tensor never
crosses DCN: its collectives run in every layer. The product of the DCN sizes must be the
number of slices the devices belong to (`device.slice_index`; devices without one, as on CPU
or a single TPU slice, are one slice).
"""

from __future__ import annotations

import contextlib
import math

import flax.linen as nn
import jax
from jax.experimental import mesh_utils
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
# The config field holding the part of a mesh axis that crosses slices (DCN); tensor has none.
DCN_FIELDS = {"data": "dcn_data", "fsdp": "dcn_fsdp"}


@contextlib.contextmanager
def scope(mesh: Mesh, rules):
  """The mesh and logical-axis rules under which a run's jitted functions are traced and run."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, ...]:
  """Resolves the config's axis sizes (one may be -1: the rest of the devices)."""
  sizes = [int(mesh_config[a]) for a in MESH_AXES]
  if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"mesh sizes {dict(zip(MESH_AXES, sizes))}: each must be >= 1, one may be -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} does not divide {num_devices} devices")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                     f"there are {num_devices}")
  return tuple(sizes)


def num_slices(devices) -> int:
  """The number of slices the devices belong to (one for devices without a `slice_index`)."""
  return len({getattr(d, "slice_index", 0) for d in devices})


def dcn_shape(mesh_config, shape: tuple[int, ...], slices: int | None) -> tuple[int, ...]:
  """The part of each mesh axis that crosses slices, checked against the axes' total sizes
  `shape` (from `mesh_shape`) and the number of slices (None: not known yet, not checked)."""
  dcn = tuple(int(mesh_config.get(DCN_FIELDS[a], 1)) if a in DCN_FIELDS else 1 for a in MESH_AXES)
  fields = " * ".join(f"mesh.{f}" for f in DCN_FIELDS.values())
  problems = []
  for axis, size, d in zip(MESH_AXES, shape, dcn):
    if axis not in DCN_FIELDS:
      continue
    if d < 1:
      problems.append(f"mesh.{DCN_FIELDS[axis]}={d} must be >= 1")
    elif size % d:
      problems.append(f"mesh.{DCN_FIELDS[axis]}={d} must divide mesh.{axis}={size} (the axis's "
                      "total size over all slices)")
  if not problems and slices is not None and math.prod(dcn) != slices:
    problems.append(f"{fields} = {math.prod(dcn)} must equal the number of slices the devices "
                    f"belong to ({slices})")
  if problems:
    raise ValueError("; ".join(problems))
  return dcn


def hybrid_devices(shape: tuple[int, ...], dcn: tuple[int, ...], devices) -> np.ndarray:
  """Devices laid out as a `shape` mesh whose axes cross slices by `dcn`: slice by slice an
  ICI mesh of shape // dcn (physical-torus aware on TPU), the slices tiled by `dcn`."""
  ici = tuple(s // d for s, d in zip(shape, dcn))
  return mesh_utils.create_hybrid_device_mesh(ici, dcn, list(devices),
                                              allow_split_physical_axes=True)


def slices_per_axis(device_array: np.ndarray) -> dict[str, int]:
  """For each mesh axis, how many slices one line of devices along it spans (1 = ICI only)."""
  slice_of = np.vectorize(lambda d: getattr(d, "slice_index", 0), otypes=[int])(device_array)
  spans = {}
  for i, axis in enumerate(MESH_AXES):
    lines = np.moveaxis(slice_of, i, -1).reshape(-1, slice_of.shape[i])
    spans[axis] = max(len(set(line)) for line in lines.tolist())
  return spans


def make_mesh(mesh_config, devices=None) -> Mesh:
  """The config's mesh over `devices` (default all): one slice through `jax.make_mesh`,
  several through `hybrid_devices`."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  dcn = dcn_shape(mesh_config, shape, num_slices(devices))
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  if math.prod(dcn) == 1:
    return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
  return Mesh(hybrid_devices(shape, dcn, devices), MESH_AXES, axis_types=axis_types)


def rules(config) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
  return tuple((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes)
               for name, axes in config.sharding.logical_axis_rules)


def num_batch_shards(mesh: Mesh) -> int:
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (clip) axis split over data x fsdp, replicated over tensor."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def tree_shardings(abstract_boxed_tree, mesh: Mesh, logical_rules):
  """NamedShardings for a tree whose leaves may be `nn.LogicallyPartitioned` boxes."""
  specs = nn.get_partition_spec(abstract_boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, logical_rules)


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Assembles the global batch from this process's slice (multi-host safe)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}
