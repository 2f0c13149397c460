"""Triangle meshes as numpy arrays ↔ ``vtkPolyData`` (the one place that builds a polydata from arrays).

A mesh as arrays: ``points`` ``(N, 3)`` float (whatever coordinate system the caller uses; the core's is LPS mm) and
``triangles`` ``(M, 3)`` integer point indices, counter-clockwise seen from outside for outward normals. VTK is
imported when a function is called, so importing this module needs no VTK.
"""

from __future__ import annotations

import numpy as np

from spinemorph.errors import InputError


def polydata_from_triangles(points, triangles):
    """``vtkPolyData`` with ``points`` ``(N, 3)`` and one triangle cell per row of ``triangles`` ``(M, 3)``."""
    import vtk
    from vtk.util import numpy_support

    pts = np.ascontiguousarray(points, dtype=np.float64)
    tri = np.asarray(triangles, dtype=np.int64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(f"mesh points must be an (N, 3) array, got shape {pts.shape}")
    if tri.size == 0:
        tri = tri.reshape(0, 3)
    if tri.ndim != 2 or tri.shape[1] != 3:
        raise InputError(f"mesh triangles must be an (M, 3) array of point indices, got shape {tri.shape}")
    if tri.size and (tri.min() < 0 or tri.max() >= len(pts)):
        raise InputError(f"mesh triangles refer to points outside 0..{len(pts) - 1}")
    pd = vtk.vtkPolyData()
    vp = vtk.vtkPoints()
    vp.SetData(numpy_support.numpy_to_vtk(pts, deep=True))
    pd.SetPoints(vp)
    offsets = np.arange(0, 3 * len(tri) + 1, 3, dtype=np.int64)
    cells = vtk.vtkCellArray()
    cells.SetData(
        numpy_support.numpy_to_vtkIdTypeArray(offsets, deep=True),
        numpy_support.numpy_to_vtkIdTypeArray(np.ascontiguousarray(tri.ravel()), deep=True),
    )
    pd.SetPolys(cells)
    return pd


def triangles_from_polydata(polydata) -> tuple[np.ndarray, np.ndarray]:
    """``(points (N, 3) float64, triangles (M, 3) int64)`` of a polydata whose polygons are all triangles."""
    from vtk.util import numpy_support

    vp = polydata.GetPoints()
    pts = np.zeros((0, 3)) if vp is None else numpy_support.vtk_to_numpy(vp.GetData()).astype(np.float64)
    polys = polydata.GetPolys()
    n = polys.GetNumberOfCells()
    if n == 0:
        return pts, np.zeros((0, 3), np.int64)
    offsets = numpy_support.vtk_to_numpy(polys.GetOffsetsArray())
    if not np.all(np.diff(offsets) == 3):
        raise InputError("the mesh has polygons that are not triangles; triangulate it first (vtkTriangleFilter)")
    conn = numpy_support.vtk_to_numpy(polys.GetConnectivityArray()).astype(np.int64)
    return pts, conn.reshape(-1, 3)
