"""spinemorph.polydata: arrays <-> vtkPolyData round trip with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from spinemorph.errors import InputError
from spinemorph.polydata import polydata_from_triangles, triangles_from_polydata

vtk = pytest.importorskip("vtk")

# unit tetrahedron, counter-clockwise seen from outside
POINTS = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
TRIS = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def test_tetrahedron_volume_area_and_round_trip():
    pd = polydata_from_triangles(POINTS, TRIS)
    assert pd.GetNumberOfPoints() == 4 and pd.GetNumberOfPolys() == 4
    mp = vtk.vtkMassProperties()
    mp.SetInputData(pd)
    mp.Update()
    assert mp.GetVolume() == pytest.approx(1 / 6)
    assert mp.GetSurfaceArea() == pytest.approx(1.5 + np.sqrt(3) / 2)
    pts, tris = triangles_from_polydata(pd)
    assert np.array_equal(pts, POINTS) and np.array_equal(tris, TRIS) and tris.dtype == np.int64


def test_empty_and_bad_meshes():
    pts, tris = triangles_from_polydata(polydata_from_triangles(POINTS, np.zeros((0, 3), int)))
    assert len(pts) == 4 and tris.shape == (0, 3)
    with pytest.raises(InputError, match=r"\(N, 3\)"):
        polydata_from_triangles(np.zeros((4, 2)), TRIS)
    with pytest.raises(InputError, match=r"\(M, 3\)"):
        polydata_from_triangles(POINTS, np.zeros((2, 4), int))
    with pytest.raises(InputError, match="outside"):
        polydata_from_triangles(POINTS, [[0, 1, 4]])
    quad = vtk.vtkPolyData()
    vp = vtk.vtkPoints()
    for p in ((0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)):
        vp.InsertNextPoint(*p)
    quad.SetPoints(vp)
    cells = vtk.vtkCellArray()
    cells.InsertNextCell(4, [0, 1, 2, 3])
    quad.SetPolys(cells)
    with pytest.raises(InputError, match="not triangles"):
        triangles_from_polydata(quad)
