"""Image volumes with their patient geometry, and reading/writing them.

:class:`Volume` is the one image type of the Slicer-free core: a numpy array indexed ``[k, j, i]`` (as
``SimpleITK.GetArrayFromImage`` returns it) plus spacing, origin and direction in LPS patient coordinates.
Reading uses SimpleITK (DICOM series, NRRD, NIfTI, MHA/MHD); every reader checks the geometry and raises
:class:`spinemorph.errors.InputError` with a one-line message for anything unusable.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from spinemorph.atomic import atomic_path
from spinemorph.errors import InputError

#: file suffixes read as single image files
IMAGE_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")

#: plausible voxel spacing range for clinical MRI, in mm
MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0


@dataclasses.dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image (or label map) with its geometry in LPS patient coordinates.

    Attributes
    ----------
    array : numpy.ndarray
        Voxel values indexed ``[k, j, i]``.
    spacing_mm : tuple of float
        Spacing along i, j, k in mm.
    origin_mm : tuple of float
        LPS position (mm) of the centre of voxel (0, 0, 0).
    direction : numpy.ndarray
        3×3 matrix; column c is the unit LPS direction of index axis c (i, j, k).
    """

    array: np.ndarray
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))

    def __post_init__(self):
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in self.spacing_mm))
        object.__setattr__(self, "origin_mm", tuple(float(o) for o in self.origin_mm))
        object.__setattr__(self, "direction", np.asarray(self.direction, dtype=float).reshape(3, 3))

    # ----------------------------------------------------------------- geometry
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def size_ijk(self) -> tuple[int, int, int]:
        """Number of voxels along i, j, k (SimpleITK ``GetSize`` order)."""
        k, j, i = self.array.shape[:3]
        return (i, j, k)

    @property
    def affine_lps(self) -> np.ndarray:
        """4×4 matrix mapping homogeneous (i, j, k, 1) to LPS mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction * np.asarray(self.spacing_mm)[None, :]
        m[:3, 3] = self.origin_mm
        return m

    def index_to_lps(self, ijk) -> np.ndarray:
        """Map continuous indices ``(..., 3)`` in (i, j, k) order to LPS points in mm."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ (self.direction * np.asarray(self.spacing_mm)[None, :]).T + np.asarray(self.origin_mm)

    def lps_to_index(self, xyz) -> np.ndarray:
        """Map LPS points ``(..., 3)`` in mm to continuous (i, j, k) indices."""
        xyz = np.asarray(xyz, dtype=float) - np.asarray(self.origin_mm)
        inv = np.linalg.inv(self.direction * np.asarray(self.spacing_mm)[None, :])
        return xyz @ inv.T

    @property
    def voxel_volume_mm3(self) -> float:
        sx, sy, sz = self.spacing_mm
        return sx * sy * sz

    def with_array(self, array: np.ndarray) -> "Volume":
        """Same geometry, other voxel values (same shape)."""
        if tuple(array.shape[:3]) != tuple(self.array.shape[:3]):
            raise ValueError(f"shape {array.shape} does not match {self.array.shape}")
        return dataclasses.replace(self, array=array)

    def axis_codes(self) -> str:
        """Three-letter orientation code of the i, j, k axes (e.g. ``'LPS'`` axial, ``'PIR'`` sagittal).

        Each letter is the LPS-named direction that index axis points *to* (SimpleITK/ITK ``DICOMOrientImageFilter``
        convention).
        """
        names = (("L", "R"), ("P", "A"), ("S", "I"))
        codes = []
        for c in range(3):
            v = self.direction[:, c]
            a = int(np.argmax(np.abs(v)))
            codes.append(names[a][0] if v[a] > 0 else names[a][1])
        return "".join(codes)

    def slice_normal(self) -> np.ndarray:
        """Unit LPS normal of the (i, j) planes, i.e. the k direction made orthogonal to i and j."""
        n = np.cross(self.direction[:, 0], self.direction[:, 1])
        return n / np.linalg.norm(n)

    # ----------------------------------------------------------------- SimpleITK
    def to_sitk(self) -> sitk.Image:
        img = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        img.SetSpacing(self.spacing_mm)
        img.SetOrigin(self.origin_mm)
        img.SetDirection(tuple(self.direction.ravel()))
        return img

    @classmethod
    def from_sitk(cls, img: sitk.Image) -> "Volume":
        if img.GetDimension() != 3:
            raise InputError(f"expected a 3D image, got {img.GetDimension()}D; export the series as one 3D volume")
        return cls(
            array=sitk.GetArrayFromImage(img),
            spacing_mm=img.GetSpacing(),
            origin_mm=img.GetOrigin(),
            direction=np.array(img.GetDirection()).reshape(3, 3),
        )


# ---------------------------------------------------------------------- checks
def check_geometry(vol: Volume, name: str = "image") -> None:
    """Raise :class:`InputError` if spacing or direction of ``vol`` is unusable."""
    sp = np.asarray(vol.spacing_mm)
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(f"{name} has missing or zero voxel spacing {tuple(sp)}; fix the header (PixelSpacing/SliceThickness)")
    if np.any(sp < MIN_SPACING_MM) or np.any(sp > MAX_SPACING_MM):
        raise InputError(
            f"{name} has implausible voxel spacing {tuple(np.round(sp, 4))} mm (expected {MIN_SPACING_MM}-{MAX_SPACING_MM} mm); "
            "check the header units"
        )
    d = vol.direction
    if not np.all(np.isfinite(d)) or not np.allclose(d.T @ d, np.eye(3), atol=1e-3):
        raise InputError(f"{name} has a non-orthogonal direction matrix (sheared or degenerate); resample it to an orthogonal grid")


def check_intensities(vol: Volume, name: str = "image") -> None:
    """Raise :class:`InputError` for NaN/inf voxels or a constant image."""
    a = vol.array
    if a.size == 0:
        raise InputError(f"{name} is empty (0 voxels)")
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        raise InputError(f"{name} contains NaN or infinite voxel values; repair or re-export the image")
    if np.ptp(a) == 0:
        raise InputError(f"{name} is constant (every voxel = {a.flat[0]}); it holds no image")


# ---------------------------------------------------------------------- reading
def _is_image_file(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in IMAGE_SUFFIXES)


def _read_sitk_file(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reason"
        raise InputError(f"cannot read {path}: not a readable image file ({first[:120]})") from None


def _from_image(img: sitk.Image, source: str) -> Volume:
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{source} has {img.GetNumberOfComponentsPerPixel()} components per voxel (RGB or vector image); "
            "use a grey-scale MR image"
        )
    if img.GetDimension() == 4:
        raise InputError(f"{source} is 4D (size {img.GetSize()}); pick one 3D volume (one time point / echo)")
    if img.GetDimension() == 2:
        img = sitk.JoinSeries(img)
    if img.GetDimension() != 3:
        raise InputError(f"{source} is {img.GetDimension()}D; expected a 3D volume")
    vol = Volume.from_sitk(img)
    check_geometry(vol, source)
    return vol


def list_dicom_series(folder: str | os.PathLike) -> list[dict]:
    """List the DICOM series in ``folder`` (recursively).

    Returns
    -------
    list of dict
        One dict per series: ``uid``, ``files`` (sorted by position), ``description``, ``n_files``.
    """
    folder = Path(folder)
    reader = sitk.ImageSeriesReader()
    series = []
    dirs = [folder] + sorted(p for p in folder.rglob("*") if p.is_dir())
    seen = set()
    for d in dirs:
        for uid in reader.GetGDCMSeriesIDs(str(d)) or ():
            if uid in seen:
                continue
            seen.add(uid)
            files = list(reader.GetGDCMSeriesFileNames(str(d), uid))
            desc = ""
            try:
                r = sitk.ImageFileReader()
                r.SetFileName(files[0])
                r.ReadImageInformation()
                if r.HasMetaDataKey("0008|103e"):
                    desc = r.GetMetaData("0008|103e").strip()
            except RuntimeError:
                pass
            series.append({"uid": uid, "files": files, "description": desc, "n_files": len(files)})
    return series


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None) -> Volume:
    """Read one DICOM series from ``folder`` as a :class:`Volume`.

    If the folder holds several series, ``series_uid`` must name one (the error lists them).
    """
    folder = Path(folder)
    series = list_dicom_series(folder)
    if not series:
        raise InputError(f"no DICOM series found in {folder}; point to a folder of DICOM files or an image file")
    if series_uid is None:
        if len(series) > 1:
            listing = "; ".join(f"{s['uid']} ({s['description'] or 'no description'}, {s['n_files']} files)" for s in series[:6])
            raise InputError(f"{folder} holds {len(series)} DICOM series; choose one with --series: {listing}")
        chosen = series[0]
    else:
        matches = [s for s in series if s["uid"] == series_uid]
        if not matches:
            raise InputError(f"series {series_uid} not found in {folder}")
        chosen = matches[0]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(chosen["files"])
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reason"
        raise InputError(f"cannot read DICOM series {chosen['uid']} in {folder}: {msg[:160]}") from None
    if len(chosen["files"]) > 1 and img.GetSize()[2] == 1:
        raise InputError(f"DICOM series in {folder} is multi-frame or inconsistent; export it as a single 3D series")
    return _from_image(img, f"DICOM series {folder}")


def read_volume(path: str | os.PathLike, series_uid: str | None = None) -> Volume:
    """Read an image from a DICOM folder or an NRRD / NIfTI / MHA / MHD file.

    Raises
    ------
    InputError
        Missing path, unreadable file, RGB / 4D image, unusable geometry.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"input {p} does not exist")
    if p.is_dir():
        if not any(p.iterdir()):
            raise InputError(f"input folder {p} is empty")
        return read_dicom_series(p, series_uid)
    if _is_image_file(p):
        return _from_image(_read_sitk_file(p), str(p))
    # a single DICOM file: read its whole series from the folder
    if p.suffix.lower() in (".dcm", ".ima", "") :
        return read_dicom_series(p.parent, series_uid)
    raise InputError(f"{p}: unsupported file type; use a DICOM folder or .nrrd/.nii/.nii.gz/.mha/.mhd")


def write_volume(vol: Volume, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``vol`` atomically to ``path`` (format from the suffix: .nrrd, .nii.gz, .mha, ...)."""
    path = Path(path)
    img = vol.to_sitk()
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), compress)
    return path


# ---------------------------------------------------------------------- resampling
def resample_to_grid(
    vol: Volume,
    spacing_mm,
    size_ijk,
    origin_mm,
    direction,
    interpolator: str = "linear",
    default_value: float = 0.0,
) -> Volume:
    """Resample ``vol`` onto another grid (SimpleITK ``Resample``).

    ``interpolator``: ``"linear"``, ``"bspline"`` or ``"nearest"`` (use nearest for label maps).
    """
    interp = {
        "linear": sitk.sitkLinear,
        "bspline": sitk.sitkBSpline,
        "nearest": sitk.sitkNearestNeighbor,
        "label_gaussian": sitk.sitkLabelGaussian,
    }[interpolator]
    ref = sitk.Image([int(s) for s in size_ijk], sitk.sitkUInt8)
    ref.SetSpacing(tuple(float(s) for s in spacing_mm))
    ref.SetOrigin(tuple(float(o) for o in origin_mm))
    ref.SetDirection(tuple(np.asarray(direction, dtype=float).ravel()))
    src = vol.to_sitk()
    if interpolator != "nearest" and src.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        src = sitk.Cast(src, sitk.sitkFloat32)
    out = sitk.Resample(src, ref, sitk.Transform(), interp, float(default_value), src.GetPixelID())
    return Volume.from_sitk(out)


def resample_like(vol: Volume, reference: Volume, interpolator: str = "linear", default_value: float = 0.0) -> Volume:
    """Resample ``vol`` onto the grid of ``reference``."""
    return resample_to_grid(
        vol, reference.spacing_mm, reference.size_ijk, reference.origin_mm, reference.direction, interpolator, default_value
    )


def resample_isotropic(vol: Volume, spacing_mm: float, interpolator: str = "linear") -> Volume:
    """Resample ``vol`` to isotropic ``spacing_mm`` keeping its orientation and physical extent."""
    sp = np.asarray(vol.spacing_mm)
    size = np.asarray(vol.size_ijk)
    new_size = np.maximum(1, np.round(size * sp / spacing_mm)).astype(int)
    # keep the physical centre of the first voxel's corner: shift origin by half-voxel difference
    first_corner = np.asarray(vol.origin_mm) - vol.direction @ (sp / 2)
    new_origin = first_corner + vol.direction @ (np.full(3, spacing_mm) / 2)
    return resample_to_grid(vol, (spacing_mm,) * 3, new_size, new_origin, vol.direction, interpolator)
