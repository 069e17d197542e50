"""The multislice mesh (sharding.py): the hybrid layout over fake TPU devices of two v5p 2x2x2
slices (the attributes `mesh_utils.create_hybrid_device_mesh` reads: slice_index, coords,
core_on_chip, device_kind, platform), and the errors that name the DCN fields."""

import dataclasses
import itertools

import jax
import numpy as np
import pytest

from configs import demo
from synclipmae_jax import config_validation, sharding


@dataclasses.dataclass(frozen=True)
class FakeTpuDevice:
  id: int
  slice_index: int
  coords: tuple[int, int, int]
  core_on_chip: int = 0
  device_kind: str = "TPU v5"
  platform: str = "tpu"


def v5p_slices(num_slices, bounds=(2, 2, 2)):
  """Devices of `num_slices` slices of a v5p torus, in the order libtpu lists them (x fastest)."""
  return [FakeTpuDevice(id=100_000 * (s + 1) + i, slice_index=s, coords=(x, y, z))
          for s in range(num_slices)
          for i, (z, y, x) in enumerate(itertools.product(*(range(b) for b in reversed(bounds))))]


def mesh(devices, **sizes):
  config = {**dict(data=1, fsdp=1, tensor=1, dcn_data=1, dcn_fsdp=1), **sizes}
  shape = sharding.mesh_shape(config, len(devices))
  return sharding.hybrid_devices(shape, sharding.dcn_shape(config, shape, 2), devices)


def slice_of(array):
  return np.vectorize(lambda d: d.slice_index)(array)


@pytest.mark.parametrize("sizes, dcn_axis", [
    (dict(data=4, fsdp=4, dcn_data=2), 0),
    (dict(data=2, fsdp=4, tensor=2, dcn_data=2), 0),
    (dict(data=2, fsdp=4, tensor=2, dcn_fsdp=2), 1),
])
def test_a_dcn_axis_has_whole_slices_on_its_outer_index(sizes, dcn_axis):
  devices = v5p_slices(2)
  array = mesh(devices, **sizes)
  assert array.shape == tuple(sizes.get(a, 1) for a in sharding.MESH_AXES)
  assert sorted(d.id for d in array.flat) == sorted(d.id for d in devices)  # each device once
  # Along the DCN axis, the first half of the indices is slice 0, the second half slice 1.
  index = np.indices(array.shape)[dcn_axis]
  np.testing.assert_array_equal(slice_of(array), index // (array.shape[dcn_axis] // 2))
  spans = sharding.slices_per_axis(array)
  assert spans == {a: 2 if i == dcn_axis else 1 for i, a in enumerate(sharding.MESH_AXES)}


def test_ici_axes_follow_the_torus_inside_each_slice():
  """Devices next to each other on the tensor axis are ICI neighbours (coords one step apart)."""
  array = mesh(v5p_slices(2), data=2, fsdp=4, tensor=2, dcn_data=2)
  for line in np.moveaxis(array, 2, -1).reshape(-1, 2):
    a, b = line
    assert a.slice_index == b.slice_index
    assert sum(abs(p - q) for p, q in zip(a.coords, b.coords)) == 1


def test_dcn_sizes_are_checked_against_slices_and_axes():
  config = dict(data=-1, fsdp=4, tensor=1, dcn_data=2, dcn_fsdp=1)
  shape = sharding.mesh_shape(config, 16)
  assert sharding.dcn_shape(config, shape, 2) == (2, 1, 1)
  with pytest.raises(ValueError, match=r"mesh.dcn_data \* mesh.dcn_fsdp = 2 must equal the "
                                       r"number of slices the devices belong to \(4\)"):
    sharding.dcn_shape(config, shape, 4)
  with pytest.raises(ValueError, match=r"mesh.dcn_fsdp=3 must divide mesh.fsdp=4"):
    sharding.dcn_shape(dict(config, dcn_fsdp=3), shape, 6)
  with pytest.raises(ValueError, match=r"mesh.dcn_data=0 must be >= 1"):
    sharding.dcn_shape(dict(config, dcn_data=0), shape, None)
  # Devices of two slices need the DCN sizes: a one-slice mesh would hide the DCN hops.
  with pytest.raises(ValueError, match=r"= 1 must equal the number of slices .*\(2\)"):
    sharding.make_mesh(dict(config, dcn_data=1), v5p_slices(2))


def test_cpu_devices_are_one_slice():
  assert sharding.num_slices(jax.devices()) == 1
  assert sharding.num_slices(v5p_slices(3)) == 3
  mesh8 = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2, dcn_data=1, dcn_fsdp=1))
  assert sharding.slices_per_axis(mesh8.devices) == {"data": 1, "fsdp": 1, "tensor": 1}
  with pytest.raises(ValueError, match="number of slices the devices belong to"):
    sharding.make_mesh(dict(data=2, fsdp=2, tensor=2, dcn_data=2, dcn_fsdp=1))


def test_validation_names_the_dcn_fields():
  c = demo.get_config("tiny")
  c.mesh.update(data=4, fsdp=2, tensor=1, dcn_data=2)
  config_validation.validate(c, num_devices=8, num_slices=2)
  config_validation.validate(c, num_devices=8)  # slices unknown: checked by make_mesh
  with pytest.raises(ValueError, match=r"mesh.dcn_data \* mesh.dcn_fsdp = 2 must equal"):
    config_validation.validate(c, num_devices=8, num_slices=1)
  c.mesh.update(dcn_data=1, dcn_fsdp=3)
  with pytest.raises(ValueError, match="mesh.dcn_fsdp=3 must divide mesh.fsdp=2"):
    config_validation.validate(c, num_devices=8)
