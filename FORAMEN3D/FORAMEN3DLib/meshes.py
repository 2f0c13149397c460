"""Surface meshes of label-map structures (L4, L4-5 disc, L5) with VTK, in patient coordinates.

Pipeline per structure: crop to the label's bounding box (+2 voxels) → ``vtkDiscreteFlyingEdges3D`` on the index
grid → transform to **LPS** mm with the volume's full geometry (spacing, origin, direction; triangle order reversed
when the direction matrix is a reflection so normals keep pointing outwards) → volume-preserving smoothing
(``vtkWindowedSincPolyDataFilter``, normalised coordinates, no boundary or feature-edge smoothing) → normals.

Meshes are in LPS (the core's convention); :func:`to_ras` flips x and y for consumers that work in RAS (3D Slicer's
scene is RAS internally; the Slicer glue converts at the boundary), and ``write_mesh(..., coordinates="RAS")`` writes
such a file (the STL header states the system used). Every file is written atomically (:mod:`spinemorph.atomic`).
:class:`MeshInfo` reports the mesh volume (``vtkMassProperties``) next to the voxel volume of the label so that
smoothing can be checked to preserve volume.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import vtk
from vtkmodules.util import numpy_support

from spinemorph.atomic import atomic_path
from spinemorph.errors import InputError, OutputError
from spinemorph.labels import FORAMEN_LABELS
from spinemorph.masks import bounding_box
from spinemorph.volume import Volume

MESH_FORMATS = (".stl", ".vtp", ".obj")


@dataclasses.dataclass
class MeshInfo:
    """A structure's surface and its size.

    Attributes
    ----------
    name : str
    label : int
    polydata : vtk.vtkPolyData
        Triangle surface in LPS mm.
    mesh_volume_mm3 : float
        Volume enclosed by the surface (``vtkMassProperties``).
    voxel_volume_mm3 : float
        Number of voxels of the label × voxel volume.
    surface_area_mm2 : float
    n_points, n_triangles : int
    """

    name: str
    label: int
    polydata: vtk.vtkPolyData
    mesh_volume_mm3: float
    voxel_volume_mm3: float
    surface_area_mm2: float
    n_points: int
    n_triangles: int

    @property
    def volume_ratio(self) -> float:
        """Mesh volume / voxel volume (1.0 = perfectly volume-preserving)."""
        return self.mesh_volume_mm3 / self.voxel_volume_mm3 if self.voxel_volume_mm3 else float("nan")

    def summary(self) -> dict:
        return {
            "name": self.name,
            "label": self.label,
            "mesh_volume_mm3": round(self.mesh_volume_mm3, 1),
            "voxel_volume_mm3": round(self.voxel_volume_mm3, 1),
            "volume_ratio": round(self.volume_ratio, 4),
            "surface_area_mm2": round(self.surface_area_mm2, 1),
            "n_points": self.n_points,
            "n_triangles": self.n_triangles,
            "coordinates": "LPS",
        }


def _image_data(mask: np.ndarray) -> vtk.vtkImageData:
    """uint8 mask indexed [k, j, i] → vtkImageData on the index grid (spacing 1, origin 0)."""
    k, j, i = mask.shape
    img = vtk.vtkImageData()
    img.SetDimensions(i, j, k)
    arr = numpy_support.numpy_to_vtk(np.ascontiguousarray(mask, dtype=np.uint8).ravel(order="C"), deep=True)
    img.GetPointData().SetScalars(arr)
    return img


def _matrix(m: np.ndarray) -> vtk.vtkMatrix4x4:
    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(m[r, c]))
    return out


def mesh_volume_mm3(polydata: vtk.vtkPolyData) -> float:
    """Volume enclosed by a closed triangle surface (``vtkMassProperties``)."""
    if polydata.GetNumberOfPoints() == 0:
        return 0.0
    tri = vtk.vtkTriangleFilter()
    tri.SetInputData(polydata)
    mp = vtk.vtkMassProperties()
    mp.SetInputConnection(tri.GetOutputPort())
    mp.Update()
    return float(mp.GetVolume())


def _surface_area(polydata: vtk.vtkPolyData) -> float:
    if polydata.GetNumberOfPoints() == 0:
        return 0.0
    mp = vtk.vtkMassProperties()
    mp.SetInputData(polydata)
    mp.Update()
    return float(mp.GetSurfaceArea())


def label_surface(
    labels: Volume,
    label: int,
    smoothing_iterations: int = 20,
    pass_band: float = 0.05,
) -> vtk.vtkPolyData:
    """Smoothed closed surface (LPS mm) of the voxels equal to ``label``.

    Parameters
    ----------
    labels : Volume
        Label map (any orientation / spacing).
    label : int
        Label value.
    smoothing_iterations : int
        ``vtkWindowedSincPolyDataFilter`` iterations (0 = no smoothing).
    pass_band : float
        Windowed-sinc pass band (smaller = smoother; 0.05 keeps volume within about 1 %).

    Raises
    ------
    InputError
        The label is absent.
    """
    arr = np.asarray(labels.array)
    mask = arr == label
    if not mask.any():
        raise InputError(f"label {label} is absent from the label map; nothing to mesh")
    lo, hi = bounding_box(mask)
    lo = np.maximum(lo - 2, 0)
    hi = np.minimum(hi + 2, np.array(mask.shape))
    sub = np.zeros(tuple(hi - lo + 4), np.uint8)  # 2 more voxels of zeros on every side: a closed surface
    sub[2:-2, 2:-2, 2:-2] = mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    fe = vtk.vtkDiscreteFlyingEdges3D()
    fe.SetInputData(_image_data(sub))
    fe.SetValue(0, 1)
    fe.ComputeNormalsOff()
    fe.ComputeGradientsOff()
    fe.ComputeScalarsOff()
    fe.Update()
    # index (i, j, k) of the padded crop → LPS
    shift = lo[::-1].astype(float) - 2.0
    aff = labels.affine_lps.copy()
    aff[:3, 3] = aff[:3, :3] @ shift + aff[:3, 3]
    tf = vtk.vtkTransform()
    tf.SetMatrix(_matrix(aff))
    tpf = vtk.vtkTransformFilter()
    tpf.SetInputConnection(fe.GetOutputPort())
    tpf.SetTransform(tf)
    port = tpf.GetOutputPort()
    if np.linalg.det(aff[:3, :3]) < 0:  # a reflection flips the triangle winding: flip it back
        rev = vtk.vtkReverseSense()
        rev.SetInputConnection(port)
        rev.ReverseCellsOn()
        rev.ReverseNormalsOn()
        port = rev.GetOutputPort()
    if smoothing_iterations > 0:
        sm = vtk.vtkWindowedSincPolyDataFilter()
        sm.SetInputConnection(port)
        sm.SetNumberOfIterations(int(smoothing_iterations))
        sm.SetPassBand(float(pass_band))
        sm.BoundarySmoothingOff()
        sm.FeatureEdgeSmoothingOff()
        sm.NonManifoldSmoothingOn()
        sm.NormalizeCoordinatesOn()
        port = sm.GetOutputPort()
    nm = vtk.vtkPolyDataNormals()
    nm.SetInputConnection(port)
    nm.SplittingOff()
    nm.ConsistencyOn()
    nm.AutoOrientNormalsOff()
    nm.ComputePointNormalsOn()
    nm.Update()
    out = vtk.vtkPolyData()
    out.DeepCopy(nm.GetOutput())
    return out


def structure_meshes(
    labels: Volume,
    names: dict | None = None,
    smoothing_iterations: int = 20,
    pass_band: float = 0.05,
) -> dict:
    """Meshes of every structure in ``names`` (default L4, L4-5 disc, L5): ``{name: MeshInfo}`` (LPS mm).

    Absent labels are skipped.
    """
    names = names or FORAMEN_LABELS
    arr = np.asarray(labels.array)
    out = {}
    for lab, name in names.items():
        n_vox = int(np.count_nonzero(arr == lab))
        if n_vox == 0:
            continue
        pd = label_surface(labels, lab, smoothing_iterations, pass_band)
        out[name] = MeshInfo(
            name=name,
            label=int(lab),
            polydata=pd,
            mesh_volume_mm3=mesh_volume_mm3(pd),
            voxel_volume_mm3=n_vox * labels.voxel_volume_mm3,
            surface_area_mm2=_surface_area(pd),
            n_points=int(pd.GetNumberOfPoints()),
            n_triangles=int(pd.GetNumberOfPolys()),
        )
    return out


def to_ras(polydata: vtk.vtkPolyData) -> vtk.vtkPolyData:
    """Copy of an LPS mesh in RAS (x and y negated; a rotation, so the triangle winding is kept)."""
    tf = vtk.vtkTransform()
    tf.Scale(-1.0, -1.0, 1.0)
    f = vtk.vtkTransformFilter()
    f.SetInputData(polydata)
    f.SetTransform(tf)
    f.Update()
    out = vtk.vtkPolyData()
    out.DeepCopy(f.GetOutput())
    return out


def _with_coordinate_system(polydata: vtk.vtkPolyData, coordinates: str) -> vtk.vtkPolyData:
    """Shallow copy of ``polydata`` carrying a field-data string array ``coordinate_system`` (``"LPS"`` / ``"RAS"``)."""
    out = vtk.vtkPolyData()
    out.ShallowCopy(polydata)
    fd = vtk.vtkFieldData()
    fd.DeepCopy(polydata.GetFieldData())
    fd.RemoveArray("coordinate_system")
    sa = vtk.vtkStringArray()
    sa.SetName("coordinate_system")
    sa.InsertNextValue(coordinates)
    fd.AddArray(sa)
    out.SetFieldData(fd)
    return out


def write_mesh(polydata: vtk.vtkPolyData, path: str | os.PathLike, coordinates: str = "LPS") -> Path:
    """Write a mesh atomically as STL (binary), VTP or OBJ (format from the suffix).

    Parameters
    ----------
    polydata : vtk.vtkPolyData
        Mesh in LPS mm.
    path : path
        Output file ending in ``.stl``, ``.vtp`` or ``.obj``.
    coordinates : str
        ``"LPS"`` (as is) or ``"RAS"`` (converted with :func:`to_ras`, for 3D Slicer). Stated in the file: the STL
        header, or the VTP field-data string array ``coordinate_system``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_FORMATS:
        raise OutputError(f"unsupported mesh format {suffix or '(none)'} for {path}; use .stl, .vtp or .obj")
    if coordinates.upper() not in ("LPS", "RAS"):
        raise ValueError(f"coordinates must be 'LPS' or 'RAS', got {coordinates!r}")
    pd = to_ras(polydata) if coordinates.upper() == "RAS" else polydata
    with atomic_path(path) as tmp:
        if suffix == ".stl":
            w = vtk.vtkSTLWriter()
            w.SetFileTypeToBinary()
            w.SetHeader(f"SpineMorph mesh, {coordinates.upper()} mm")
        elif suffix == ".vtp":
            pd = _with_coordinate_system(pd, coordinates.upper())
            w = vtk.vtkXMLPolyDataWriter()
            w.SetDataModeToBinary()
        else:
            w = vtk.vtkOBJWriter()
        w.SetFileName(str(tmp))
        w.SetInputData(pd)
        if not w.Write():
            raise OutputError(f"cannot write mesh {path}; check the folder is writable and the disk not full")
    return path


def read_mesh(path: str | os.PathLike) -> vtk.vtkPolyData:
    """Read an STL / VTP / OBJ mesh (as stored, no coordinate conversion)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError(f"mesh file {path} does not exist")
    reader = {".stl": vtk.vtkSTLReader, ".vtp": vtk.vtkXMLPolyDataReader, ".obj": vtk.vtkOBJReader}.get(suffix)
    if reader is None:
        raise InputError(f"unsupported mesh format {suffix} for {path}; use .stl, .vtp or .obj")
    r = reader()
    r.SetFileName(str(path))
    r.Update()
    out = vtk.vtkPolyData()
    out.DeepCopy(r.GetOutput())
    return out


def mesh_points_lps(polydata: vtk.vtkPolyData) -> np.ndarray:
    """Point coordinates ``(N, 3)`` of a mesh as a numpy array."""
    pts = polydata.GetPoints()
    if pts is None:
        return np.zeros((0, 3))
    return numpy_support.vtk_to_numpy(pts.GetData()).astype(float)
