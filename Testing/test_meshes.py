"""FORAMEN3D meshes: geometry in LPS (any grid orientation), volume preservation, RAS export, file formats."""

from __future__ import annotations

import time

import numpy as np
import pytest
import vtk
from FORAMEN3DLib.meshes import (
    label_surface,
    mesh_points_lps,
    mesh_volume_mm3,
    read_mesh,
    structure_meshes,
    to_ras,
    write_mesh,
)

from spinemorph.errors import InputError, OutputError
from spinemorph.volume import Volume


def _oblique_direction():
    a, b = np.deg2rad(25.0), np.deg2rad(-40.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def _sphere_volume(center_lps, radius_mm, spacing, direction, size=(56, 48, 40), origin=(-14.0, 3.0, 20.0), label=2):
    vol = Volume(np.zeros(size[::-1], np.uint8), spacing, origin, direction)
    kk, jj, ii = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    p = vol.index_to_lps(np.stack([ii, jj, kk], -1).reshape(-1, 3))
    inside = np.linalg.norm(p - np.asarray(center_lps), axis=1) <= radius_mm
    return vol.with_array((inside.reshape(size[::-1]) * label).astype(np.uint8))


@pytest.mark.parametrize("reflect", [False, True])
def test_sphere_mesh_geometry_and_volume(reflect):
    D = _oblique_direction()
    if reflect:  # a left-handed grid (e.g. an image stored with a flipped axis)
        D = D @ np.diag([1.0, -1.0, 1.0])
    spacing = (0.5, 0.6, 0.8)
    vol = _sphere_volume((0, 0, 0), 1.0, spacing, D)  # placeholder to get the grid
    centre = vol.index_to_lps(np.array(vol.size_ijk) / 2.0)
    r = 9.0
    vol = _sphere_volume(centre, r, spacing, D)
    pd = label_surface(vol, 2)
    pts = mesh_points_lps(pd)
    # in LPS around the true centre, on the sphere
    assert np.allclose(pts.mean(0), centre, atol=0.15)
    radial = np.linalg.norm(pts - centre, axis=1)
    assert abs(np.median(radial) - r) < 0.3
    v_true = 4.0 / 3.0 * np.pi * r**3
    v_vox = np.count_nonzero(vol.array) * vol.voxel_volume_mm3
    v_mesh = mesh_volume_mm3(pd)
    assert v_mesh > 0  # outward normals / consistent winding, also for a reflected grid
    assert abs(v_mesh - v_vox) / v_vox < 0.02
    assert abs(v_mesh - v_true) / v_true < 0.03
    # closed surface
    fe = vtk.vtkFeatureEdges()
    fe.SetInputData(pd)
    fe.BoundaryEdgesOn()
    fe.NonManifoldEdgesOff()
    fe.FeatureEdgesOff()
    fe.ManifoldEdgesOff()
    fe.Update()
    assert fe.GetOutput().GetNumberOfCells() == 0


def test_structure_meshes_report_volumes_and_speed():
    # three stacked boxes like L4 / disc / L5 on a 0.5 mm grid
    arr = np.zeros((120, 80, 80), np.uint8)
    arr[70:110, 10:70, 10:70] = 1
    arr[55:70, 10:70, 10:70] = 2
    arr[10:55, 10:70, 10:70] = 3
    vol = Volume(arr, (0.5, 0.5, 0.5), (10.0, -20.0, 5.0), np.eye(3))
    t0 = time.perf_counter()
    meshes = structure_meshes(vol)
    elapsed = time.perf_counter() - t0
    assert set(meshes) == {"L4", "L4-5 disc", "L5"}
    for info in meshes.values():
        assert info.n_triangles > 100
        assert 0.95 < info.volume_ratio < 1.02  # corners of boxes are rounded a little by the smoothing
        s = info.summary()
        assert s["coordinates"] == "LPS" and s["voxel_volume_mm3"] == pytest.approx(info.voxel_volume_mm3, abs=0.1)
    assert meshes["L4"].voxel_volume_mm3 == pytest.approx(40 * 60 * 60 * 0.125)
    assert elapsed < 5.0


def test_ras_export_and_file_formats(tmp_path):
    vol = _sphere_volume((0.0, 10.0, 30.0), 6.0, (0.7, 0.7, 0.7), np.eye(3), size=(40, 40, 40), origin=(-14, -4, 16))
    pd = label_surface(vol, 2)
    lps = mesh_points_lps(pd)
    ras = mesh_points_lps(to_ras(pd))
    assert np.allclose(ras[:, :2], -lps[:, :2]) and np.allclose(ras[:, 2], lps[:, 2])
    assert mesh_volume_mm3(to_ras(pd)) == pytest.approx(mesh_volume_mm3(pd), rel=1e-6)
    for suffix in (".stl", ".vtp", ".obj"):
        p = write_mesh(pd, tmp_path / f"sphere{suffix}")
        back = read_mesh(p)
        assert back.GetNumberOfPolys() == pd.GetNumberOfPolys()
        assert mesh_volume_mm3(back) == pytest.approx(mesh_volume_mm3(pd), rel=1e-3)
    for coordinates in ("LPS", "RAS"):  # a VTP states its coordinate system in its field data
        fd = read_mesh(write_mesh(pd, tmp_path / f"sphere_{coordinates}.vtp", coordinates=coordinates)).GetFieldData()
        assert fd.GetAbstractArray("coordinate_system").GetValue(0) == coordinates
    assert pd.GetFieldData().GetAbstractArray("coordinate_system") is None  # the input mesh is left as it was
    p = write_mesh(pd, tmp_path / "sphere_ras.stl", coordinates="RAS")
    assert np.allclose(mesh_points_lps(read_mesh(p)).mean(0), ras.mean(0), atol=1e-3)
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temporary files left
    with pytest.raises(OutputError):
        write_mesh(pd, tmp_path / "sphere.ply")
    with pytest.raises(InputError):
        label_surface(vol, 7)
