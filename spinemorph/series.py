"""Find and classify the series of a lumbar MRI study: which one feeds DSCA, which one the foramen model.

The DSCA method wants an axial stack (slices roughly perpendicular to the spine, T1 or T2); the foramen method wants a 3D
T2 SPACE or any near-isotropic 3D T2 volume. Classification uses the geometry (slice normal, spacing) and the series
description; every decision carries a human-readable reason that the study report prints.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from spinemorph.errors import InputError
from spinemorph.volume import IMAGE_SUFFIXES, Volume, list_dicom_series, read_volume

#: slice normal within this angle of the S-I axis counts as "axial" (gantry tilt towards a disc is allowed); the same
#: tolerance as ``DuralSacSegLib.segment.AXIAL_TOLERANCE_DEG``, so a series chosen as the axial stack is used as acquired
AXIAL_MAX_TILT_DEG = 30.0
# The thresholds below are project design choices (heuristics, not from the literature) for telling a 3D volume
# usable by the foramen model (which runs on a 0.8 mm isotropic grid, FORAMEN3DLib.preprocess.CANONICAL_SPACING_MM)
# from 2D multi-slice series:
#: largest/smallest spacing ratio of a "near-isotropic" 3D volume (e.g. 0.8 x 0.8 x 1.2 mm passes, 0.5 x 0.5 x 1 mm
#: does not)
ISOTROPY_MAX_RATIO = 1.6
#: coarsest spacing (mm) of a 3D volume usable for the foramen model: about 1.6 times its 0.8 mm grid, so no axis is
#: upsampled more than ~1.6-fold
ISO_MAX_SPACING_MM = 1.3
#: fewest slices of a usable series: an axial stack needs a few slices for a DSCA curve; a 3D volume with fewer than
#: 40 slices (32 mm at 0.8 mm) is taken for a thin slab rather than a lumbar 3D acquisition
MIN_SLICES_AXIAL = 3
MIN_SLICES_3D = 40


@dataclasses.dataclass
class SeriesCandidate:
    """One image series found in the input."""

    source: str  # path of the file or DICOM folder
    series_uid: str | None
    description: str
    size_ijk: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    direction: tuple[float, ...]
    orientation: str  # "axial", "sagittal", "coronal", "oblique"
    tilt_from_axial_deg: float
    is_3d_isotropic: bool
    weighting: str  # "T1", "T2", "unknown" from the description

    def label(self) -> str:
        sx, sy, sz = self.spacing_mm
        name = self.description or Path(self.source).name
        return (
            f"{name} ({self.orientation}, {self.size_ijk[0]}×{self.size_ijk[1]}×{self.size_ijk[2]}, "
            f"{sx:.2f}×{sy:.2f}×{sz:.2f} mm, {self.weighting})"
        )

    def read(self) -> Volume:
        return read_volume(self.source, self.series_uid)


@dataclasses.dataclass
class SeriesSelection:
    """Which series is used for what, and why; what was skipped."""

    dsca: SeriesCandidate | None
    dsca_reason: str
    foramen: SeriesCandidate | None
    foramen_reason: str
    skipped: list[tuple[str, str]]  # (series label, reason)


def _weighting(description: str) -> str:
    d = description.upper()
    if "T1" in d:
        return "T1"
    if "T2" in d or "SPACE" in d or "CUBE" in d or "VISTA" in d:
        return "T2"
    return "unknown"


def _classify(direction: np.ndarray, spacing, size) -> tuple[str, float, bool]:
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    normal = np.cross(d[:, 0], d[:, 1])
    normal /= np.linalg.norm(normal)
    tilt = float(np.degrees(np.arccos(min(1.0, abs(normal[2])))))
    axis = int(np.argmax(np.abs(normal)))
    orientation = {0: "sagittal", 1: "coronal", 2: "axial"}[axis]
    if np.max(np.abs(normal)) < np.cos(np.radians(AXIAL_MAX_TILT_DEG)) and orientation != "axial":
        orientation = "oblique"
    elif orientation == "axial" and tilt > AXIAL_MAX_TILT_DEG:
        orientation = "oblique"
    sp = np.asarray(spacing, dtype=float)
    iso = (
        sp.max() / sp.min() <= ISOTROPY_MAX_RATIO
        and sp.max() <= ISO_MAX_SPACING_MM
        and int(min(size)) >= MIN_SLICES_3D
    )
    return orientation, tilt, bool(iso)


def _candidate_from_file(path: Path) -> SeriesCandidate:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(f"cannot read {path}: not a readable image file") from None
    if reader.GetDimension() != 3:
        raise InputError(f"{path} is {reader.GetDimension()}D; expected a 3D volume")
    size, spacing, direction = reader.GetSize(), reader.GetSpacing(), reader.GetDirection()
    orientation, tilt, iso = _classify(direction, spacing, size)
    desc = path.name
    return SeriesCandidate(str(path), None, desc, tuple(size), tuple(spacing), tuple(direction), orientation, tilt, iso, _weighting(desc))


def _candidates_from_dicom(folder: Path) -> list[SeriesCandidate]:
    out = []
    for s in list_dicom_series(folder):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(s["files"])
        try:
            img = reader.Execute()
        except RuntimeError as exc:
            raise InputError(f"cannot read DICOM series {s['uid']} in {folder}: {str(exc).strip().splitlines()[-1][:120]}") from None
        if img.GetDimension() != 3:
            continue
        size, spacing, direction = img.GetSize(), img.GetSpacing(), img.GetDirection()
        orientation, tilt, iso = _classify(direction, spacing, size)
        out.append(
            SeriesCandidate(
                str(Path(s["files"][0]).parent), s["uid"], s["description"], tuple(size), tuple(spacing),
                tuple(direction), orientation, tilt, iso, _weighting(s["description"]),
            )
        )
    return out


#: reason recorded for image files in a searched folder that are taken for label maps (not image series)
LABEL_MAP_REASON = "looks like a label map (file name contains 'label' or '.seg.'), not an image series"


def looks_like_label_map(path: str | os.PathLike) -> bool:
    """True for file names containing ``label`` or ``.seg.`` (label maps / segmentations, not images)."""
    name = Path(path).name.lower()
    return "label" in name or ".seg." in name


def discover(inputs: list[str | os.PathLike], skipped: list[tuple[str, str]] | None = None) -> list[SeriesCandidate]:
    """All image series in ``inputs`` (DICOM folders, searched recursively, and image files).

    Image files inside a searched folder whose names look like label maps (:func:`looks_like_label_map`) are not
    candidates; each is appended to ``skipped`` as ``(path, reason)`` when a list is given, for
    :func:`select_series` to report. Image files named explicitly in ``inputs`` are always candidates.
    """
    cands: list[SeriesCandidate] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise InputError(f"input {p} does not exist")
        if p.is_dir():
            files = [f for f in sorted(p.rglob("*")) if f.is_file() and any(f.name.lower().endswith(s) for s in IMAGE_SUFFIXES)]
            found = _candidates_from_dicom(p)
            found += [_candidate_from_file(f) for f in files if not looks_like_label_map(f)]
            if skipped is not None:
                skipped += [(str(f), LABEL_MAP_REASON) for f in files if looks_like_label_map(f)]
            if not found:
                raise InputError(f"no image series found in {p}; give a DICOM folder or image files")
            cands += found
        else:
            cands.append(_candidate_from_file(p))
    return cands


def select_series(cands: list[SeriesCandidate], skipped: list[tuple[str, str]] | None = None) -> SeriesSelection:
    """Choose the DSCA series (axial stack, T1 preferred as in the source method, else T2) and the foramen series
    (near-isotropic 3D, T2 preferred).

    ``skipped``: entries already excluded by :func:`discover` (label maps), listed first in
    :attr:`SeriesSelection.skipped`.
    """
    skipped = list(skipped or [])
    axial = [c for c in cands if c.orientation == "axial" and c.size_ijk[2] >= MIN_SLICES_AXIAL and not c.is_3d_isotropic]
    iso = [c for c in cands if c.is_3d_isotropic]
    rank_w = {"T1": 0, "T2": 1, "unknown": 2}
    dsca = min(axial, key=lambda c: (rank_w[c.weighting], c.tilt_from_axial_deg), default=None)
    if dsca is not None:
        dsca_reason = f"axial stack ({dsca.weighting}, slice normal {dsca.tilt_from_axial_deg:.0f}° from S-I)"
    elif iso:
        dsca = min(iso, key=lambda c: {"T2": 0, "T1": 1, "unknown": 2}[c.weighting])
        dsca_reason = "no axial stack: the 3D volume is resliced to axial planes"
    else:
        dsca_reason = "no axial stack and no 3D volume found: DSCA skipped"
    rank_t2 = {"T2": 0, "unknown": 1, "T1": 2}
    foramen = min(iso, key=lambda c: (rank_t2[c.weighting], max(c.spacing_mm)), default=None)
    foramen_reason = (
        f"near-isotropic 3D volume ({foramen.weighting}, max spacing {max(foramen.spacing_mm):.2f} mm)"
        if foramen
        else "no near-isotropic 3D volume (3D T2 SPACE) found: foramen segmentation and planning skipped"
    )
    for c in cands:
        if c is dsca or c is foramen:
            continue
        if c.orientation == "oblique":
            why = "oblique slices, neither axial stack nor 3D volume"
        elif c.orientation in ("sagittal", "coronal") and not c.is_3d_isotropic:
            why = f"{c.orientation} 2D multi-slice series (slices {max(c.spacing_mm):.1f} mm): not usable for either method"
        else:
            why = "another series of the same kind was preferred"
        skipped.append((c.label(), why))
    return SeriesSelection(dsca, dsca_reason, foramen, foramen_reason, skipped)
