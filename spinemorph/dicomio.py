"""Write a :class:`~spinemorph.volume.Volume` as a real DICOM MR image series (one file per slice, pydicom).

The files are MR Image Storage objects in Explicit VR Little Endian with the full patient / study / series /
frame-of-reference / image-plane modules (ImagePositionPatient, ImageOrientationPatient, PixelSpacing,
SliceThickness, SpacingBetweenSlices), 16-bit unsigned pixels with RescaleSlope/Intercept, so SimpleITK's
ImageSeriesReader, pydicom and 3D Slicer's DICOM module read them with the same geometry. UIDs are valid UIDs
(pydicom root ``1.2.826.0.1.3680043.8.498.``) made by :func:`pydicom.uid.generate_uid` from a deterministic entropy
source (the seed and the series / instance identity), so the same seed gives byte-identical files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    PYDICOM_ROOT_UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from spinemorph import __version__
from spinemorph.atomic import atomic_path
from spinemorph.errors import InputError, OutputError
from spinemorph.volume import Volume

#: fixed study date/time of phantom series (keeps files deterministic)
STUDY_DATE, STUDY_TIME = "20240101", "090000"


def deterministic_uid(*parts) -> str:
    """A valid DICOM UID that depends only on ``parts`` (strings/numbers).

    :func:`pydicom.uid.generate_uid` with pydicom's root prefix and ``parts`` as entropy sources (SHA-512 of them; a
    ``None`` prefix would ignore the entropy and draw a random UUID).
    """
    return generate_uid(prefix=PYDICOM_ROOT_UID, entropy_srcs=["spinemorph"] + [str(p) for p in parts])


@dataclasses.dataclass
class DicomStudy:
    """Patient and study attributes shared by the series of one (phantom) study."""

    seed: int = 0
    patient_name: str = "SpineMorph^Phantom"
    patient_id: str = ""
    patient_sex: str = "O"
    patient_birth_date: str = ""
    study_description: str = "SpineMorph lumbar phantom"
    study_id: str = "1"
    accession_number: str = ""
    study_uid: str = ""
    frame_of_reference_uid: str = ""
    study_date: str = STUDY_DATE
    study_time: str = STUDY_TIME

    def __post_init__(self):
        if not self.patient_id:
            self.patient_id = f"SPINEMORPH-PHANTOM-{self.seed}"
        if not self.study_uid:
            self.study_uid = deterministic_uid("study", self.seed, self.patient_id)
        if not self.frame_of_reference_uid:
            self.frame_of_reference_uid = deterministic_uid("frame-of-reference", self.seed, self.patient_id)


def _ds(v: float) -> str:
    return format_number_as_ds(float(v)) if float(v) != 0 else "0"


def _quantize(array: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Stored uint16 values, slope, intercept with value = stored * slope + intercept."""
    a = np.asarray(array)
    if a.size == 0:
        raise InputError("cannot write an empty volume as DICOM")
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        raise InputError("volume has NaN or infinite values; cannot write DICOM")
    lo, hi = float(a.min()), float(a.max())
    is_int = np.issubdtype(a.dtype, np.integer) or np.array_equal(a, np.round(a))
    if is_int and lo >= 0 and hi <= 65535:
        return a.astype(np.uint16), 1.0, 0.0
    if is_int and hi - lo <= 65535:
        intercept = float(format_number_as_ds(lo))
        return np.round(a - intercept).astype(np.uint16), 1.0, intercept
    slope = float(format_number_as_ds((hi - lo) / 65000.0)) if hi > lo else 1.0
    intercept = float(format_number_as_ds(lo))
    stored = np.clip(np.round((a.astype(np.float64) - intercept) / slope), 0, 65535).astype(np.uint16)
    return stored, slope, intercept


def write_dicom_series(
    volume: Volume,
    out_dir: str | os.PathLike,
    *,
    study: DicomStudy | None = None,
    series_description: str = "SpineMorph volume",
    series_number: int = 1,
    series_key: str | None = None,
    mr: dict | None = None,
    overwrite: bool = False,
    file_prefix: str = "IM",
) -> list[Path]:
    """Write ``volume`` as a DICOM MR series (one file per k-slice) into ``out_dir``.

    Parameters
    ----------
    volume : Volume
        Image ([k, j, i]); i is the DICOM row direction (columns), j the column direction (rows). Slices should
        be right-handed (k ≈ i × j), as readers re-sort slices along i × j.
    out_dir : path
        Folder for the files ``<file_prefix>00001.dcm`` … (created).
    study : DicomStudy, optional
        Patient/study identity and shared UIDs (default: ``DicomStudy(seed=0)``).
    series_description, series_number : str, int
        Series attributes. ``series_key`` (default: description + number) seeds the series/instance UIDs.
    mr : dict, optional
        MR acquisition attributes (keyword → value), e.g. ``{"RepetitionTime": 500, "EchoTime": 10,
        "ScanningSequence": "SE", "MRAcquisitionType": "2D"}``; added to every file.
    overwrite : bool
        Replace existing files of the same names; otherwise an existing file raises :class:`OutputError`.

    Returns
    -------
    list of Path
        The written files in slice (k) order.
    """
    study = study or DicomStudy()
    arr = np.asarray(volume.array)
    if arr.ndim != 3:
        raise InputError(f"DICOM series needs a 3D volume, got shape {arr.shape}")
    nk, nj, ni = arr.shape
    stored, slope, intercept = _quantize(arr)
    out = Path(out_dir)
    names = [f"{file_prefix}{k + 1:05d}.dcm" for k in range(nk)]
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder")
    if not overwrite:
        for n in names:
            if (out / n).exists():
                raise OutputError(f"{out / n} already exists; pass --overwrite to replace it or choose another --out folder")
    key = series_key or f"{series_description}#{series_number}"
    series_uid = deterministic_uid("series", study.seed, study.study_uid, key)
    d = volume.direction
    sp = np.asarray(volume.spacing_mm, float)
    row_dir, col_dir = d[:, 0], d[:, 1]
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    slice_gap = float(abs(np.dot(d[:, 2] * sp[2], normal))) if nk > 1 else float(sp[2])
    thickness = float(mr.get("SliceThickness", sp[2])) if mr else float(sp[2])
    lo, hi = float(arr.min()), float(arr.max())
    # all files are written into a hidden staging folder inside ``out`` and moved into place only when every slice
    # has been written, so an error at slice k leaves no partial series (and, with overwrite, the old files intact)
    created_out = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{file_prefix}.partial-", dir=out))
    except OSError as exc:
        raise OutputError(f"cannot create the DICOM folder {out}: {exc.strerror or exc}") from None
    moved: list[Path] = []
    try:
        _write_slices(volume, stored, staging, names, study, series_uid, series_description, series_number, mr,
                      slope, intercept, lo, hi, thickness, slice_gap)
        for n in names:
            os.replace(staging / n, out / n)
            moved.append(out / n)
    except BaseException as exc:
        if not overwrite:  # files moved so far are new (existing names were refused above): take them back out
            for path in moved:
                with contextlib.suppress(OSError):
                    path.unlink()
        shutil.rmtree(staging, ignore_errors=True)
        if created_out:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if empty
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write the DICOM series into {out}: {exc.strerror or exc}") from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / n for n in names]


def _write_slices(volume: Volume, stored, folder: Path, names: list[str], study: DicomStudy, series_uid: str,
                  series_description: str, series_number: int, mr: dict | None, slope: float, intercept: float,
                  lo: float, hi: float, thickness: float, slice_gap: float) -> None:
    """Write one MR Image Storage file per k-slice of ``volume`` into ``folder`` (see :func:`write_dicom_series`)."""
    nk, nj, ni = np.asarray(volume.array).shape
    d = volume.direction
    sp = np.asarray(volume.spacing_mm, float)
    row_dir, col_dir = d[:, 0], d[:, 1]
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    for k in range(nk):
        sop_uid = deterministic_uid("instance", study.seed, series_uid, k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = f"SPINEMORPH_{__version__}"[:16]
        ds = Dataset()
        ds.file_meta = meta
        ds.preamble = b"\0" * 128
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study.study_date
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = study.study_time
        ds.AccessionNumber = study.accession_number
        ds.Modality = "MR"
        ds.Manufacturer = "SpineMorph"
        ds.ManufacturerModelName = "procedural lumbar phantom"
        ds.SoftwareVersions = __version__
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = study.study_description
        ds.SeriesDescription = series_description
        ds.PatientName = study.patient_name
        ds.PatientID = study.patient_id
        ds.PatientBirthDate = study.patient_birth_date
        ds.PatientSex = study.patient_sex
        ds.BodyPartExamined = "LSPINE"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study.study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = study.study_id
        ds.SeriesNumber = int(series_number)
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        ds.FrameOfReferenceUID = study.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ipp = np.asarray(volume.origin_mm, float) + d[:, 2] * sp[2] * k
        ds.ImagePositionPatient = [_ds(v) for v in ipp]
        ds.ImageOrientationPatient = [_ds(round(float(v), 10)) for v in (*row_dir, *col_dir)]
        ds.SliceLocation = _ds(round(float(np.dot(ipp, normal)), 6))
        ds.PixelSpacing = [_ds(sp[1]), _ds(sp[0])]
        ds.SliceThickness = _ds(thickness)
        ds.SpacingBetweenSlices = _ds(slice_gap)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = nj
        ds.Columns = ni
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleSlope = _ds(slope)
        ds.RescaleType = "US"
        ds.WindowCenter = _ds(round((lo + hi) / 2, 3))
        ds.WindowWidth = _ds(round(max(hi - lo, 1.0), 3))
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.MagneticFieldStrength = "1.5"
        ds.ImagedNucleus = "1H"
        ds.ImagingFrequency = "63.87"
        for name, value in (mr or {}).items():
            if name == "SliceThickness":
                continue
            setattr(ds, name, _ds(value) if isinstance(value, float) else value)
        ds.PixelData = np.ascontiguousarray(stored[k]).astype("<u2").tobytes()
        with atomic_path(folder / names[k]) as tmp:
            save_dataset(ds, tmp)


#: major version of the installed pydicom (Slicer 5.10 ships pydicom 2.4.4, Slicer 5.12 pydicom 3.0.x)
PYDICOM_MAJOR = int(pydicom.__version__.split(".")[0])


def save_dataset(ds: Dataset, path) -> None:
    """Write ``ds`` as a DICOM Part 10 file (preamble, file meta, explicit VR little endian) with pydicom 2.4 or 3.x.

    pydicom 3 takes ``enforce_file_format=True`` and the encoding from the file meta's transfer syntax; pydicom 2.4
    has neither that argument nor the inference: it needs ``write_like_original=False`` and the encoding set on the
    dataset (``is_little_endian`` / ``is_implicit_VR``, deprecated in 3.x, so set only for 2.x).
    """
    if PYDICOM_MAJOR >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.is_little_endian = True
        ds.is_implicit_VR = False
        ds.save_as(path, write_like_original=False)


def read_dicom_headers(folder: str | os.PathLike) -> list[Dataset]:
    """pydicom datasets (without pixel data) of the ``*.dcm`` files in ``folder``, sorted by InstanceNumber."""
    files = sorted(Path(folder).glob("*.dcm"))
    if not files:
        raise InputError(f"no .dcm files in {folder}")
    dss = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in files]
    return sorted(dss, key=lambda ds: int(ds.InstanceNumber))

