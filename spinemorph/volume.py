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

#: a gap between consecutive DICOM slice positions may differ from the median gap by this much (mm, or this fraction of
#: the slice spacing, whichever is larger) before the series counts as having missing slices / uneven spacing; both
#: are rounding allowances for positions written with limited decimals, not clinical values
SLICE_GAP_TOLERANCE_MM = 0.05
SLICE_GAP_TOLERANCE_FRACTION = 0.1

#: plausible voxel spacing range for clinical MRI, in mm
MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0

#: largest image read (voxels); a header declaring more is refused before any pixel memory is allocated
MAX_VOXELS = 2**30
#: largest plausible |origin| coordinate (mm); beyond it the header is corrupt
MAX_ORIGIN_MM = 1e6
#: smallest usable image: the two largest axes need at least this many voxels
MIN_SIZE_VOXELS = 4
#: coarsest spacing (mm) along a direction that a task resamples into its image plane (sagittal 2D -> axial, 3D model).
#: Project design choice (heuristic, not from the literature): 2.5 times the 0.8 mm grid of the foramen model; it
#: accepts 3D volumes (about 0.5-1.5 mm) and refuses 2D multi-slice series (typically 3-5 mm slices) whose slice
#: spacing would become the pixel width of the resliced planes.
MAX_RESLICE_SPACING_MM = 2.0


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

    def with_array(self, array: np.ndarray) -> Volume:
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
    def from_sitk(cls, img: sitk.Image) -> Volume:
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
    sp = np.asarray(vol.spacing_mm, dtype=float)
    shown = "(" + ", ".join(f"{float(s):.4g}" for s in sp) + ")"
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(f"{name} has missing or zero voxel spacing {shown}; fix the header (PixelSpacing/SliceThickness)")
    if np.any(sp < MIN_SPACING_MM) or np.any(sp > MAX_SPACING_MM):
        raise InputError(
            f"{name} has implausible voxel spacing {shown} mm (expected {MIN_SPACING_MM}-{MAX_SPACING_MM} mm); "
            "check the header units"
        )
    d = vol.direction
    if not np.all(np.isfinite(d)) or not np.allclose(d.T @ d, np.eye(3), atol=1e-3):
        raise InputError(f"{name} has a non-orthogonal direction matrix (sheared or degenerate); resample it to an orthogonal grid")


def check_plane_resolution(vol: Volume, normal_lps=(0.0, 0.0, 1.0), max_spacing_mm: float = MAX_RESLICE_SPACING_MM,
                           name: str = "image", plane: str = "axial") -> None:
    """Raise :class:`InputError` if resampling ``vol`` onto planes with normal ``normal_lps`` gives coarse pixels.

    An index axis that lies more than 30° away from the normal contributes to the in-plane resolution of such planes;
    its spacing must not exceed ``max_spacing_mm`` (e.g. the 4 mm slices of a sagittal 2D series resliced to axial).
    """
    n = np.asarray(normal_lps, dtype=float)
    n = n / np.linalg.norm(n)
    for c in range(3):
        along = abs(float(vol.direction[:, c] @ n))
        if along < np.cos(np.radians(30.0)) and vol.spacing_mm[c] > max_spacing_mm:
            raise InputError(
                f"{name} is a non-{plane} series with {vol.spacing_mm[c]:.3g} mm slices: on {plane} planes its pixels would be "
                f"{vol.spacing_mm[c]:.3g} mm wide; use an {plane} series or a 3D volume with at most {max_spacing_mm:g} mm spacing"
            )


def check_3d_resolution(vol: Volume, max_spacing_mm: float = MAX_RESLICE_SPACING_MM, name: str = "image",
                        task: str = "this task") -> None:
    """Raise :class:`InputError` unless ``vol`` is a true 3D volume (every spacing at most ``max_spacing_mm``)."""
    worst = max(vol.spacing_mm)
    if worst > max_spacing_mm or min(vol.size_ijk) < 2:
        raise InputError(
            f"{name} is a 2D multi-slice series ({worst:.3g} mm slices, size {vol.size_ijk}); {task} needs a 3D volume "
            f"(e.g. T2 SPACE) with at most {max_spacing_mm:g} mm spacing in every direction"
        )


def check_size(size_ijk, name: str = "image") -> None:
    """Raise :class:`InputError` if an image of ``size_ijk`` voxels is too small to be an image or too large to read."""
    size = [int(n) for n in size_ijk]
    if not size:
        raise InputError(f"{name} has no image dimensions in its header; the file is corrupt, export it again")
    if any(n < 1 for n in size):
        raise InputError(f"{name} is empty (size {tuple(size)}); export the image again")
    n_vox = float(np.prod(np.asarray(size, dtype=float)))
    if n_vox > MAX_VOXELS:
        raise InputError(
            f"{name} declares {' x '.join(map(str, size))} voxels ({n_vox:.3g}), more than the {MAX_VOXELS:.3g} voxel "
            "limit; the header is corrupt or the image must be cropped or downsampled first"
        )
    two_largest = sorted(size)[-2:] if len(size) >= 2 else size
    if min(two_largest) < MIN_SIZE_VOXELS:
        raise InputError(
            f"{name} is too small to be an MR image ({' x '.join(map(str, size))} voxels; at least "
            f"{MIN_SIZE_VOXELS} x {MIN_SIZE_VOXELS} in-plane needed)"
        )


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


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown reason"


def _header_spacing(path: Path) -> list[float] | None:
    """Voxel spacing written in the header of an NRRD / NIfTI / MetaImage file, [] if it declares none.

    ITK silently substitutes 1 mm for a missing, zero or NaN spacing in these formats; this reads what the file
    really says (None when the format is not one of these or the header cannot be parsed here; ITK then decides).
    """
    name = path.name.lower()
    try:
        if name.endswith((".nrrd", ".nhdr")):
            import nrrd

            hdr = nrrd.read_header(str(path))
            if "space directions" in hdr:
                dirs = [np.asarray(d, dtype=float) for d in hdr["space directions"] if d is not None]
                dirs = [d for d in dirs if d.ndim == 1 and d.size and not np.all(np.isnan(d))]
                return [float(np.linalg.norm(d)) for d in dirs]
            if "spacings" in hdr:
                return [float(x) for x in np.asarray(hdr["spacings"], dtype=float).ravel()]
            return []
        if name.endswith((".mha", ".mhd")):
            fields = _metaimage_fields(path)
            text = fields.get("elementspacing") or fields.get("elementsize")
            return [float(x) for x in text.split()] if text else []
        if name.endswith((".nii", ".nii.gz")):
            import gzip
            import struct

            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rb") as fh:
                hdr = fh.read(540)
            for endian in "<>":
                size = struct.unpack_from(endian + "i", hdr, 0)[0]
                if size == 348 and len(hdr) >= 348:
                    ndim = struct.unpack_from(endian + "h", hdr, 40)[0]
                    pixdim = struct.unpack_from(endian + "8f", hdr, 76)
                    return [float(x) for x in pixdim[1 : 1 + min(max(ndim, 1), 3)]]
                if size == 540 and len(hdr) >= 540:
                    ndim = struct.unpack_from(endian + "q", hdr, 16)[0]
                    pixdim = struct.unpack_from(endian + "8d", hdr, 104)
                    return [float(x) for x in pixdim[1 : 1 + min(max(ndim, 1), 3)]]
            return None
    except Exception:  # noqa: BLE001 - an unparsable header is left to ITK, which reports it
        return None
    return None


def _metaimage_fields(path: Path) -> dict[str, str]:
    """``key = value`` fields of a MetaImage (.mha / .mhd) header, keys lower-case, up to ``ElementDataFile``."""
    with open(path, "rb") as fh:
        head = fh.read(65536).decode("latin-1")
    fields = {}
    for line in head.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            break
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() == "elementdatafile":
            break
    return fields


#: MetaImage header fields holding numbers, and how many (in units of NDims; 2 = NDims²)
_META_NUMERIC = {"dimsize": 1, "elementspacing": 1, "elementsize": 1, "offset": 1, "origin": 1, "position": 1,
                 "centerofrotation": 1, "transformmatrix": 2, "rotation": 2, "orientation": 2}


def _check_metaimage_header(path: Path) -> None:
    """Validate a MetaImage header before ITK parses it (MetaIO crashes the process on e.g. ``NDims = 99999999``)."""
    try:
        fields = _metaimage_fields(path)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    bad = f"{path} has a corrupt MetaImage header"
    try:
        ndims = int(fields.get("ndims", ""))
    except ValueError:
        what = f"NDims {fields['ndims'][:20]!r}" if "ndims" in fields else "no NDims"
        raise InputError(f"{bad} ({what}); export the image again") from None
    if not 1 <= ndims <= 4:
        raise InputError(f"{path} is {ndims}D; expected a 3D volume")
    for key, power in _META_NUMERIC.items():
        if key not in fields:
            continue
        try:
            values = [float(v) for v in fields[key].split()]
        except ValueError:
            raise InputError(f"{bad} ({key} {fields[key][:40]!r} is not a list of numbers); export the image again") from None
        if len(values) != ndims**power or not all(np.isfinite(values)):
            raise InputError(f"{bad} ({key} needs {ndims**power} finite numbers, got {fields[key][:60]!r}); export the image again")
        if key == "dimsize" and (any(v < 1 or v != int(v) for v in values)):
            raise InputError(f"{bad} (DimSize {fields[key][:40]!r}); export the image again")
    if "dimsize" not in fields:
        raise InputError(f"{bad} (no DimSize); export the image again")
    channels = fields.get("elementnumberofchannels", "1")
    if not channels.isdigit() or not 1 <= int(channels) <= 16:
        raise InputError(f"{bad} (ElementNumberOfChannels {channels[:20]!r}); export the image again")
    header_size = fields.get("headersize")
    if header_size is not None and not header_size.lstrip("-").isdigit():
        raise InputError(f"{bad} (HeaderSize {header_size[:20]!r}); export the image again")


def _read_sitk_file(path: Path) -> sitk.Image:
    """Read an image file with SimpleITK, checking its header (size, spacing, direction) before the pixels."""
    if path.name.lower().endswith((".mha", ".mhd")):
        _check_metaimage_header(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(_describe_read_error(path, exc)) from None
    spacing = _header_spacing(path)
    if spacing is not None:
        if not spacing:
            raise InputError(f"{path} has no voxel spacing in its header; re-export it with its pixel spacing and slice thickness")
        if not all(np.isfinite(spacing)) or any(s <= 0 for s in spacing):
            shown = "(" + ", ".join(f"{s:.4g}" for s in spacing) + ")"
            raise InputError(f"{path} has missing or zero voxel spacing {shown}; fix the header (pixel spacing / slice thickness)")
    _check_header(reader, str(path))
    _check_data_size(path, reader)
    _check_gzip_size(path, reader)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputError(_describe_read_error(path, exc)) from None
    except MemoryError:
        raise InputError(f"{path} is too large to load into memory; crop or downsample it first") from None


def _check_header(reader, source: str) -> None:
    """Dimension, pixel type, size and geometry from the header, checked before any pixel is read (ITK can hang or
    allocate gigabytes on a corrupt header)."""
    dim = reader.GetDimension()
    size = reader.GetSize()
    if dim == 4:
        raise InputError(f"{source} is 4D (size {size}); pick one 3D volume (one time point / echo)")
    if dim not in (2, 3):
        raise InputError(f"{source} is {dim}D; expected a 3D volume")
    if reader.GetNumberOfComponents() != 1:
        raise InputError(
            f"{source} has {reader.GetNumberOfComponents()} components per voxel (RGB or vector image); use a grey-scale MR image"
        )
    check_size(size, source)
    origin = np.asarray(reader.GetOrigin(), dtype=float)
    if not np.all(np.isfinite(origin)) or np.any(np.abs(origin) > MAX_ORIGIN_MM):
        raise InputError(f"{source} has an invalid origin {tuple(float(o) for o in origin)} in its header; fix or re-export it")
    d = np.asarray(reader.GetDirection(), dtype=float).reshape(dim, dim)
    if not np.all(np.isfinite(d)) or np.any(np.abs(d) > 1.001) or not np.allclose(d.T @ d, np.eye(dim), atol=1e-3):
        raise InputError(f"{source} has a non-orthogonal direction matrix (sheared or degenerate); resample it to an orthogonal grid")
    sp = np.asarray(reader.GetSpacing(), dtype=float)
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(f"{source} has missing or zero voxel spacing; fix the header (pixel spacing / slice thickness)")


def _check_gzip_size(path: Path, reader) -> None:
    """A gzip-compressed file (.nii.gz, gzip NRRD) records its uncompressed size in its last 4 bytes: refuse one
    that cannot hold the declared voxels (truncated or corrupt) before allocating memory for them."""
    name = path.name.lower()
    try:
        if name.endswith(".nii.gz"):
            overhead = 348
        elif name.endswith(".nrrd"):
            import nrrd

            hdr = nrrd.read_header(str(path))
            if str(hdr.get("encoding", "")).lower() not in ("gzip", "gz") or "data file" in hdr or "datafile" in hdr:
                return
            overhead = 0
        else:
            return
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            isize = int.from_bytes(fh.read(4), "little")
        itemsize = sitk.GetArrayViewFromImage(sitk.Image([1, 1], reader.GetPixelID())).itemsize
    except Exception:  # noqa: BLE001 - cannot tell: ITK decides
        return
    n_bytes = int(np.prod(np.asarray(reader.GetSize(), dtype=np.int64))) * reader.GetNumberOfComponents() * itemsize
    if n_bytes + overhead < 2**32 and isize < n_bytes + overhead:
        raise InputError(
            f"{path} is truncated or corrupt: it decompresses to {isize} bytes, fewer than the {n_bytes} bytes of voxels "
            "its header declares; copy or export the image again"
        )


def _uncompressed_attached(path: Path) -> bool:
    """True for single files whose voxel data follow the header uncompressed (size known from the header)."""
    name = path.name.lower()
    try:
        if name.endswith(".nii"):
            return True
        if name.endswith(".nrrd"):
            import nrrd

            hdr = nrrd.read_header(str(path))
            return str(hdr.get("encoding", "")).lower() == "raw" and "data file" not in hdr and "datafile" not in hdr
        if name.endswith(".mha"):
            with open(path, "rb") as fh:
                head = fh.read(65536).decode("latin-1").lower()
            return "elementdatafile = local" in head and "compresseddata = true" not in head
    except Exception:  # noqa: BLE001 - unknown: let ITK decide
        return False
    return False


def _check_data_size(path: Path, reader: sitk.ImageFileReader) -> None:
    """Refuse an uncompressed file shorter than the voxel data its header declares (truncated copy), before
    allocating memory for it."""
    if not _uncompressed_attached(path):
        return
    try:
        itemsize = sitk.GetArrayViewFromImage(sitk.Image([1, 1], reader.GetPixelID())).itemsize
    except RuntimeError:
        return
    n_bytes = float(np.prod(np.asarray(reader.GetSize(), dtype=float))) * reader.GetNumberOfComponents() * itemsize
    have = path.stat().st_size
    if have < n_bytes:
        raise InputError(
            f"{path} is truncated: its header declares {n_bytes:.0f} bytes of voxel data but the file holds {have}; "
            "copy or export the image again"
        )


def _describe_read_error(path: Path, exc: Exception) -> str:
    text = str(exc)
    low = text.lower()
    if "orthonormal" in low:
        return f"{path} has a non-orthogonal direction matrix (sheared or degenerate); resample it to an orthogonal grid"
    if "spacing" in low and ("refusing" in low or "invalid" in low or "zero" in low):
        return f"{path} has missing or zero voxel spacing; fix the header (pixel spacing / slice thickness)"
    if "allocate" in low:
        return f"{path} is too large to load into memory; crop or downsample it first"
    return f"cannot read {path}: the file is corrupt, truncated or not a supported image ({_first_line(exc)[:120]}); re-export it"


def _from_image(img: sitk.Image, source: str) -> Volume:
    if img.GetDimension() < 2 or img.GetDimension() > 4:
        raise InputError(f"{source} is {img.GetDimension()}D; expected a 3D volume")
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
    check_size(img.GetSize(), source)
    vol = Volume.from_sitk(img)
    check_geometry(vol, source)
    return vol


#: SOP classes / modalities of image objects: such a file without Rows / Columns is corrupt, not a non-image object
_IMAGE_SOP_PREFIXES = ("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.7",
                       "1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.20")
_IMAGE_MODALITIES = ("MR", "CT", "PT", "NM", "OT")


def _dicom_candidate(path: Path) -> bool | None:
    """True: DICOM Part 10 file (``DICM`` at byte 128); False: maybe DICOM without preamble; None: not DICOM."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return None
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    if path.suffix.lower() in (".dcm", ".ima") or head[:2] in (b"\x08\x00", b"\x02\x00"):
        return False
    return None


_UNCOMPRESSED_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")


def _pixel_bytes(ds) -> int:
    """Bytes of uncompressed pixel data a DICOM header declares (0 when compressed or unknown)."""
    try:
        syntax = str(ds.file_meta.TransferSyntaxUID) if "TransferSyntaxUID" in getattr(ds, "file_meta", {}) else "1.2.840.10008.1.2"
        if syntax not in _UNCOMPRESSED_SYNTAXES:
            return 0
        n = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.get("NumberOfFrames", 1) or 1)
        return n * max(1, int(ds.get("BitsAllocated", 8) or 8) // 8)
    except (TypeError, ValueError, AttributeError):
        return 0


def _scan_dicom(folder: Path) -> tuple[list[dict], list[Path]]:
    """Series of ``folder`` (recursively) from the file headers read with pydicom, and the corrupt files.

    pydicom reads at most the file, whatever its element lengths say; GDCM's directory scanner allocated gigabytes
    (and got the process killed) on a 1.6 kB file with a corrupt length field, so it is not used for scanning.
    """
    import logging
    import warnings

    import pydicom

    # corrupt files make pydicom log and warn per element: the caller reports them in one line instead
    plog = logging.getLogger("pydicom")
    level = plog.level
    plog.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _scan_dicom_quiet(folder, pydicom)
    finally:
        plog.setLevel(level)


def _scan_dicom_quiet(folder: Path, pydicom) -> tuple[list[dict], list[Path]]:
    groups: dict[str, list] = {}
    descriptions: dict[str, str] = {}
    bad: list[Path] = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        kind = _dicom_candidate(p)
        if kind is None:
            continue
        try:  # pydicom decodes values lazily: every access below may raise on a corrupt element
            ds = pydicom.dcmread(str(p), stop_before_pixels=True, force=not kind)
            rows, cols = ds.get("Rows"), ds.get("Columns")
            uid = str(ds.get("SeriesInstanceUID", "") or "")
            modality = str(ds.get("Modality", "") or "")
            sop = str(ds.get("SOPClassUID", "") or "")
            if rows is not None and cols is not None and uid:
                ipp = [float(v) for v in (ds.get("ImagePositionPatient") or [])]
                iop = [float(v) for v in (ds.get("ImageOrientationPatient") or [])]
                inst = int(ds.get("InstanceNumber", 0) or 0)
                n_bytes = _pixel_bytes(ds)
                description = str(ds.get("SeriesDescription", "") or "").strip()
        except Exception:  # noqa: BLE001 - any parse failure means a corrupt file
            bad.append(p)
            continue
        if rows is None or cols is None or not uid:
            if kind and (modality in _IMAGE_MODALITIES or sop.startswith(_IMAGE_SOP_PREFIXES)):
                bad.append(p)  # an image object that lost its pixel description: corrupt
            continue  # a non-image object (structured report, presentation state, DICOMDIR ...)
        if n_bytes > p.stat().st_size:
            bad.append(p)  # uncompressed pixels that do not fit in the file: truncated
            continue
        groups.setdefault(uid, []).append((p, ipp, iop, inst))
        descriptions.setdefault(uid, description)
    series = []
    for uid, items in groups.items():
        first_iop = items[0][2]
        if all(len(it[1]) == 3 and len(it[2]) == 6 for it in items) and np.all(np.isfinite(first_iop)):
            normal = np.cross(first_iop[:3], first_iop[3:])
            items.sort(key=lambda it: (float(np.dot(it[1], normal)) if np.all(np.isfinite(it[1])) else 0.0, it[3], it[0].name))
        else:
            items.sort(key=lambda it: (it[3], it[0].name))
        files = [str(it[0]) for it in items]
        series.append({"uid": uid, "files": files, "description": descriptions[uid], "n_files": len(files)})
    series.sort(key=lambda d: (d["description"], d["uid"]))
    return series, bad


def list_dicom_series(folder: str | os.PathLike) -> list[dict]:
    """List the DICOM image series in ``folder`` (recursively; headers read with pydicom).

    Returns
    -------
    list of dict
        One dict per series: ``uid``, ``files`` (sorted by position along the slice normal), ``description``,
        ``n_files``.
    """
    return _scan_dicom(Path(folder))[0]


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None) -> Volume:
    """Read one DICOM series from ``folder`` as a :class:`Volume`.

    If the folder holds several series, ``series_uid`` must name one (the error lists them).
    """
    folder = Path(folder)
    series, bad = _scan_dicom(folder)
    if bad and (series_uid is None or not series):
        raise InputError(
            f"{len(bad)} DICOM file(s) in {folder} cannot be read (e.g. {bad[0].name}: truncated or corrupt); "
            "copy the series again or remove the broken files"
        )
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
    _check_dicom_header(chosen["files"][0], folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(chosen["files"])
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        msg = _first_line(exc)
        raise InputError(
            f"cannot read DICOM series {chosen['uid']} in {folder}: a file is corrupt or truncated ({msg[:160]}); "
            "export the series again"
        ) from None
    except MemoryError:
        raise InputError(f"DICOM series in {folder} is too large to load into memory") from None
    if len(chosen["files"]) > 1 and img.GetSize()[2] == 1:
        raise InputError(f"DICOM series in {folder} is multi-frame or inconsistent; export it as a single 3D series")
    # ITK always records "ITK_non_uniform_sampling_deviation" (as a double SimpleITK cannot print), so the spacing
    # uniformity is checked here from the per-slice ImagePositionPatient values.
    dev = _slice_spacing_deviation_mm(reader, len(chosen["files"]))
    if dev is not None and dev > max(SLICE_GAP_TOLERANCE_MM, SLICE_GAP_TOLERANCE_FRACTION * img.GetSpacing()[2]):
        raise InputError(
            f"DICOM series in {folder} has missing slices or uneven slice spacing (deviation {dev:.3g} mm); "
            "check that the series is complete (no truncated or deleted files)"
        )
    return _from_image(img, f"DICOM series {folder}")


def _slice_spacing_deviation_mm(reader, n_files: int) -> float | None:
    """Largest deviation (mm) of the gaps between consecutive slice positions from their median, or None."""
    if n_files < 3:
        return None
    try:
        pos = np.array([[float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")] for i in range(n_files)])
    except (RuntimeError, ValueError, IndexError):
        return None
    gaps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    return float(np.max(np.abs(gaps - np.median(gaps))))


def _check_dicom_header(first_file: str, folder: Path) -> None:
    """Refuse multi-frame files and series without pixel spacing before reading the pixels."""
    r = sitk.ImageFileReader()
    r.SetFileName(first_file)
    try:
        r.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"cannot read DICOM file {first_file}: corrupt or truncated ({_first_line(exc)[:120]})") from None
    frames = r.GetMetaData("0028|0008").strip() if r.HasMetaDataKey("0028|0008") else "1"
    try:
        n_frames = int(float(frames or "1"))
    except ValueError:
        n_frames = 1
    if n_frames > 1:
        raise InputError(
            f"{folder} holds a multi-frame (enhanced) DICOM file with {n_frames} frames; export the series as classic "
            "single-frame DICOM (one file per slice) or as NRRD/NIfTI"
        )
    if r.GetDimension() > 3 or (r.GetDimension() == 3 and r.GetSize()[2] > 1):
        raise InputError(f"{folder} holds a multi-frame or 4D DICOM file; export it as classic single-frame DICOM")
    if not any(r.HasMetaDataKey(k) for k in ("0028|0030", "0018|1164")):
        raise InputError(
            f"DICOM series in {folder} has no PixelSpacing (0028,0030); the voxel spacing is missing, re-export the series"
        )
    check_size(r.GetSize(), f"DICOM series {folder}")


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
    interps = {"linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline, "nearest": sitk.sitkNearestNeighbor}
    if interpolator not in interps:
        raise ValueError(f"unknown interpolator {interpolator!r}; use one of {', '.join(interps)}")
    interp = interps[interpolator]
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

