"""MR acquisitions of the procedural phantom, and the whole phantom study on disk (:func:`make_study`).

Two acquisitions of the same anatomy (:mod:`spinemorph.phantom`):

- **axial T1** (spin echo, TR ≈ 550 ms / TE ≈ 10 ms): 320×320 pixels of 0.6875 mm, 4 mm slices covering L4-L5
  (``mode="cover"``) or a block through the L4-5 disc (``mode="disc"``), optionally gantry-tilted parallel to the
  disc; partial volume by slice-profile averaging (4 sub-planes per slice by default);
- **sagittal 3D T2 SPACE** (TR ≈ 1500 ms / TE ≈ 125 ms): 0.8 mm isotropic, 320×320 (S-I × A-P), 64 slices
  covering both foramina; partial volume by 2×2×2 sub-voxel sampling.

Whole study (:func:`make_study`, all formats, defaults): measured 11-14 s on the development machine (2 cores shared
by ~9 busy processes); 7.6 s with the SPACE sub-sampling off (``space={"supersample": 1}``).

Signal model: every tissue label gets a T1 / T2-weighted signal (CSF dark on T1 and bright on T2, fat bright on
both, disc nucleus bright on T2, marrow intermediate, cortex / ligaments dark), sub-voxel samples are averaged
(partial volume), multiplied by a smooth bias field (posterior surface coil + random low-order polynomial) and
corrupted by Rician noise (magnitude of complex Gaussian noise). Everything random comes from
``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from spinemorph import __version__
from spinemorph.atomic import atomic_write_text, prepare_output_dir
from spinemorph.dicomio import DicomStudy, write_dicom_series
from spinemorph.errors import InputError, OutputError
from spinemorph.labels import COLORS, FORAMEN_LABELS
from spinemorph.phantom import (
    ANNULUS,
    CAUDA,
    CORTEX,
    CSF,
    EPI_FAT,
    LIGAMENT,
    MARROW,
    MUSCLE,
    NERVE,
    NUCLEUS,
    PSOAS,
    SKIN,
    SOFT,
    SUBCUT_FAT,
    TISSUE_COLORS,
    TISSUE_LABELS,
    Phantom,
    PhantomParams,
    make_phantom,
)
from spinemorph.segio import write_labelmap_nifti, write_seg_nrrd
from spinemorph.volume import Volume, write_volume

#: T1-weighted spin-echo signal per tissue label (arbitrary units, 1000 ≈ brightest)
T1_SIGNAL = {
    0: 0.0, SKIN: 500.0, SUBCUT_FAT: 950.0, MUSCLE: 330.0, PSOAS: 330.0, SOFT: 420.0, CORTEX: 40.0, MARROW: 600.0,
    ANNULUS: 220.0, NUCLEUS: 300.0, CSF: 130.0, EPI_FAT: 900.0, LIGAMENT: 90.0, NERVE: 380.0, CAUDA: 360.0,
}
#: T2-weighted (3D TSE / SPACE) signal per tissue label
T2_SIGNAL = {
    0: 0.0, SKIN: 300.0, SUBCUT_FAT: 650.0, MUSCLE: 170.0, PSOAS: 170.0, SOFT: 350.0, CORTEX: 30.0, MARROW: 380.0,
    ANNULUS: 150.0, NUCLEUS: 800.0, CSF: 1000.0, EPI_FAT: 600.0, LIGAMENT: 70.0, NERVE: 280.0, CAUDA: 260.0,
}
CONTRASTS = {"T1": T1_SIGNAL, "T2": T2_SIGNAL}

#: DICOM MR attributes of the two acquisitions
AXIAL_T1_MR = {
    "ScanningSequence": "SE", "SequenceVariant": "SK", "MRAcquisitionType": "2D", "SequenceName": "*tse2d1_3",
    "RepetitionTime": 550.0, "EchoTime": 10.0, "EchoTrainLength": 3, "FlipAngle": 150.0,
}
SPACE_T2_MR = {
    "ScanningSequence": "SE", "SequenceVariant": "SK\\SP", "MRAcquisitionType": "3D", "SequenceName": "*spc1_125",
    "RepetitionTime": 1500.0, "EchoTime": 125.0, "EchoTrainLength": 74, "FlipAngle": 120.0,
}

FORMATS = ("dicom", "nrrd", "nifti")
AXIAL, SPACE = "axial_t1", "sagittal_t2_space"


@dataclasses.dataclass
class Acquisition:
    """One simulated series: image, label maps on its grid, DICOM attributes, per-slice truth (axial)."""

    name: str
    image: Volume
    labels: dict[str, Volume]
    series_description: str
    series_number: int
    mr: dict
    slice_table: list[dict] | None = None

    def geometry(self) -> dict:
        im = self.image
        return {
            "size_ijk": list(im.size_ijk),
            "spacing_mm": list(im.spacing_mm),
            "origin_mm": [round(v, 6) for v in im.origin_mm],
            "direction": np.round(im.direction, 12).tolist(),
            "axis_codes": im.axis_codes(),
            "series_description": self.series_description,
            "series_number": self.series_number,
            "mr": self.mr,
        }


# ----------------------------------------------------------------------------------------------------- signal
def bias_field(grid: Volume, phantom: Phantom, amplitude: float = 0.25, seed: int = 0) -> np.ndarray:
    """Smooth multiplicative field [k, j, i] (float32, mean ≈ 1): posterior coil gradient + random quadratic."""
    rng = np.random.default_rng([int(seed), 7])
    ni, nj, nk = grid.size_ijk
    # canal-frame coordinates / 150 mm as an affine function of (i, j, k), evaluated by broadcasting
    A = phantom.R.T @ (grid.direction * np.asarray(grid.spacing_mm)[None, :]) / 150.0
    b = phantom.R.T @ (np.asarray(grid.origin_mm) - phantom.origin) / 150.0
    i = np.arange(ni, dtype=np.float32)[None, None, :]
    j = np.arange(nj, dtype=np.float32)[None, :, None]
    k = np.arange(nk, dtype=np.float32)[:, None, None]
    x, y, z = (np.float32(A[r, 0]) * i + np.float32(A[r, 1]) * j + np.float32(A[r, 2]) * k + np.float32(b[r]) for r in range(3))
    terms = [x, y, z, x * x, y * y, z * z, x * y, y * z, x * z]
    coef = rng.normal(0.0, 0.35, len(terms)).astype(np.float32)
    log_b = np.float32(0.9) * y + sum(cf * t for cf, t in zip(coef, terms))
    log_b = np.broadcast_to(log_b, (nk, nj, ni))
    log_b = log_b - np.float32(log_b.mean())
    return np.exp(np.float32(amplitude) * np.clip(log_b, -3, 3)).astype(np.float32)


def synthesize(
    phantom: Phantom,
    grid: Volume,
    contrast: str = "T1",
    supersample=(1, 1, 1),
    noise_fraction: float = 0.03,
    bias_amplitude: float = 0.25,
    seed: int = 0,
) -> Volume:
    """MR image (uint16) of ``phantom`` on ``grid``.

    Parameters
    ----------
    contrast : {"T1", "T2"}
        Signal table (:data:`T1_SIGNAL`, :data:`T2_SIGNAL`).
    supersample : int or (si, sj, sk)
        Sub-voxel samples averaged per voxel (partial volume; (1, 1, 4) = slice-profile averaging of 4 planes).
    noise_fraction : float
        Rician noise σ as a fraction of 1000 (the brightest tissue); 0 = no noise.
    bias_amplitude : float
        Strength of the smooth bias field (0 = none).
    seed : int
        Seeds the bias field and the noise.
    """
    if contrast not in CONTRASTS:
        raise InputError(f"unknown contrast {contrast!r}; use T1 or T2")
    table = CONTRASTS[contrast]
    lut = np.zeros(256, np.float32)
    for k, v in table.items():
        lut[k] = v
    fine = phantom.rasterize_fine(grid, "tissue", supersample)
    img = lut[fine].reshape(fine.shape[:3] + (-1,)).mean(-1, dtype=np.float32)
    del fine
    if bias_amplitude:
        img *= bias_field(grid, phantom, bias_amplitude, seed)
    if noise_fraction > 0:
        rng = np.random.default_rng([int(seed), 11])
        sigma = np.float32(noise_fraction * 1000.0)
        n1 = rng.standard_normal(img.shape, dtype=np.float32)
        n2 = rng.standard_normal(img.shape, dtype=np.float32)
        img = np.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2)
    out = np.clip(np.round(img), 0, 65535).astype(np.uint16)
    return grid.with_array(out)


# ----------------------------------------------------------------------------------------------------- acquisitions
def acquire_axial_t1(
    phantom: Phantom,
    *,
    mode: str = "cover",
    gantry_tilt: bool = False,
    slice_thickness_mm: float = 4.0,
    pixel_mm: float = 0.6875,
    size: int = 320,
    n_slices: int | None = None,
    supersample=(1, 1, 4),
    noise_fraction: float = 0.03,
    bias_amplitude: float = 0.25,
    seed: int | None = None,
    disc: str = "L4-5",
) -> Acquisition:
    """Axial T1 stack of ``phantom`` (see :meth:`Phantom.axial_grid`) with its dural-sac and tissue label maps.

    Label maps are sampled on the central plane of each slice (the plane of the exact per-slice truth).
    """
    seed = phantom.seed if seed is None else int(seed)
    grid = phantom.axial_grid(mode=mode, slice_thickness_mm=slice_thickness_mm, pixel_mm=pixel_mm, size=size,
                              n_slices=n_slices, gantry_tilt=gantry_tilt, disc=disc)
    image = synthesize(phantom, grid, "T1", supersample, noise_fraction, bias_amplitude, seed)
    labels = {kind: phantom.rasterize_labels(grid, kind) for kind in ("dural_sac", "tissue")}
    desc = "T1 TSE axial" + (" tilted" if gantry_tilt else "") + (f" {disc}" if mode == "disc" else " L4-L5")
    mr = dict(AXIAL_T1_MR, SliceThickness=float(slice_thickness_mm))
    return Acquisition(AXIAL, image, labels, desc, 3, mr, phantom.truth.slice_table(grid))


def acquire_space_t2(
    phantom: Phantom,
    *,
    n_slices: int = 64,
    size: tuple[int, int] = (320, 320),
    spacing_mm: float = 0.8,
    supersample=(2, 2, 2),
    noise_fraction: float = 0.03,
    bias_amplitude: float = 0.25,
    seed: int | None = None,
) -> Acquisition:
    """Sagittal 3D T2 SPACE of ``phantom`` (see :meth:`Phantom.space_grid`) with foramen, dural-sac and tissue maps."""
    seed = phantom.seed if seed is None else int(seed)
    grid = phantom.space_grid(n_slices=n_slices, size=size, spacing_mm=spacing_mm)
    image = synthesize(phantom, grid, "T2", supersample, noise_fraction, bias_amplitude, seed + 1)
    labels = {kind: phantom.rasterize_labels(grid, kind) for kind in ("foramen", "dural_sac", "tissue")}
    return Acquisition(SPACE, image, labels, "t2_spc_sag_iso 0.8mm", 5, dict(SPACE_T2_MR))


# ----------------------------------------------------------------------------------------------------- study
def _segments(kind: str) -> dict:
    if kind == "foramen":
        return {v: (n, COLORS[n]) for v, n in FORAMEN_LABELS.items()}
    if kind == "dural_sac":
        return {1: ("dural sac", COLORS["dural sac"])}
    return {v: (n, TISSUE_COLORS[v]) for v, n in TISSUE_LABELS.items() if v}


def parse_formats(formats) -> tuple[str, ...]:
    """Normalise ``"dicom,nrrd"`` or a sequence to a tuple of known formats (raises :class:`InputError`)."""
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    out = tuple(dict.fromkeys(str(f).lower() for f in formats))
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise InputError(f"unknown output format(s) {', '.join(bad) or '(none)'}; choose from {', '.join(FORMATS)}")
    return out


def study_file_names(formats) -> dict[str, str]:
    """Relative paths written by :func:`make_study` for ``formats`` (key → path; DICOM entries are folders)."""
    formats = parse_formats(formats)
    names = {"truth": "truth.json", "axial_truth_csv": f"{AXIAL}_slices.csv"}
    for acq, kinds in ((AXIAL, ("dural_sac", "tissue")), (SPACE, ("foramen", "dural_sac", "tissue"))):
        if "dicom" in formats:
            names[f"{acq}_dicom"] = f"dicom/{acq}"
        if "nrrd" in formats:
            names[f"{acq}_nrrd"] = f"{acq}.nrrd"
            for kind in kinds:
                names[f"{acq}_{kind}_seg"] = f"{acq}_{kind}.seg.nrrd"
        if "nifti" in formats:
            names[f"{acq}_nifti"] = f"{acq}.nii.gz"
            for kind in kinds:
                names[f"{acq}_{kind}_nifti"] = f"{acq}_{kind}.nii.gz"
    return names


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def make_study(
    out_dir: str | os.PathLike,
    seed: int = 0,
    params: PhantomParams | None = None,
    formats=("dicom", "nrrd", "nifti"),
    *,
    preset: str = "normal",
    vary: bool = False,
    overwrite: bool = False,
    axial: dict | None = None,
    space: dict | None = None,
) -> dict:
    """Simulate the phantom study and write it to ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Output folder (created).
    seed : int
        Seeds noise / bias field (and the anatomy with ``vary=True``); same seed → byte-identical files.
    params : PhantomParams, optional
        Anatomy; default ``preset_params(preset)`` (``preset`` is then only recorded in truth.json).
    formats : str or sequence
        Any of ``dicom`` (``dicom/<series>/IM*.dcm``), ``nrrd`` (images ``.nrrd`` + label maps ``.seg.nrrd``),
        ``nifti`` (``.nii.gz`` images and label maps). ``truth.json`` and the axial per-slice CSV are always written.
    overwrite : bool
        Replace existing outputs; otherwise any existing output raises :class:`OutputError`.
    axial, space : dict, optional
        Keyword arguments for :func:`acquire_axial_t1` / :func:`acquire_space_t2`.

    Returns
    -------
    dict
        ``out_dir``, ``files`` (key → Path; DICOM entries are folders), ``dicom_files`` (series → list of Path),
        ``truth`` (the dict written to truth.json), ``phantom``, ``acquisitions``, ``seconds``.
    """
    t0 = time.perf_counter()
    formats = parse_formats(formats)
    names = study_file_names(formats)
    out = Path(out_dir)
    if not overwrite and out.is_dir():
        for rel in names.values():
            p = out / rel
            if p.is_file() or (p.is_dir() and any(p.iterdir())):
                raise OutputError(f"{p} already exists; pass --overwrite to replace it or choose another --out folder")
    out = prepare_output_dir(out, overwrite=True)
    phantom = make_phantom(params, seed=seed, preset=preset, vary=vary)
    acqs = {AXIAL: acquire_axial_t1(phantom, **(axial or {})), SPACE: acquire_space_t2(phantom, **(space or {}))}
    study = DicomStudy(seed=int(seed))
    files: dict[str, Path] = {}
    dicom_files: dict[str, list[Path]] = {}
    for name, acq in acqs.items():
        if "dicom" in formats:
            d = out / names[f"{name}_dicom"]
            if d.is_dir():  # overwrite: drop stale slices of an earlier, longer series
                for f in d.glob("IM*.dcm"):
                    f.unlink()
            dicom_files[name] = write_dicom_series(acq.image, d, study=study, series_description=acq.series_description,
                                                   series_number=acq.series_number, series_key=name, mr=acq.mr,
                                                   overwrite=True)
            files[f"{name}_dicom"] = d
        if "nrrd" in formats:
            files[f"{name}_nrrd"] = write_volume(acq.image, out / names[f"{name}_nrrd"])
            for kind, lab in acq.labels.items():
                files[f"{name}_{kind}_seg"] = write_seg_nrrd(lab, _segments(kind), out / names[f"{name}_{kind}_seg"])
        if "nifti" in formats:
            files[f"{name}_nifti"] = write_volume(acq.image, out / names[f"{name}_nifti"])
            for kind, lab in acq.labels.items():
                files[f"{name}_{kind}_nifti"] = write_labelmap_nifti(lab, out / names[f"{name}_{kind}_nifti"])
    table = acqs[AXIAL].slice_table
    files["axial_truth_csv"] = atomic_write_text(out / names["axial_truth_csv"], _csv_text(table))
    truth = {
        "generator": "spinemorph.acquisition.make_study",
        "version": __version__,
        "seed": int(seed),
        "preset": preset,
        "custom_params": params is not None,
        "params": phantom.params.to_dict(),
        "truth": phantom.truth.to_dict(),
        "axial_slices": table,
        "acquisitions": {name: acq.geometry() for name, acq in acqs.items()},
        "labels": {
            "foramen": {str(k): v for k, v in FORAMEN_LABELS.items()},
            "dural_sac": {"1": "dural sac"},
            "tissue": {str(k): v for k, v in TISSUE_LABELS.items()},
        },
        "contrast": {"T1": {TISSUE_LABELS[k]: v for k, v in T1_SIGNAL.items()}, "T2": {TISSUE_LABELS[k]: v for k, v in T2_SIGNAL.items()}},
        "dicom": {"patient_id": study.patient_id, "study_uid": study.study_uid, "frame_of_reference_uid": study.frame_of_reference_uid},
        "files": {k: v for k, v in names.items()},
        "coordinates": "LPS mm (x patient left, y posterior, z superior); canal frame described in spinemorph.phantom",
    }
    files["truth"] = atomic_write_text(out / names["truth"], json.dumps(truth, indent=1) + "\n")
    return {
        "out_dir": out,
        "files": files,
        "dicom_files": dicom_files,
        "truth": truth,
        "phantom": phantom,
        "acquisitions": acqs,
        "seconds": time.perf_counter() - t0,
    }


def remove_study(out_dir: str | os.PathLike, formats=FORMATS) -> None:
    """Delete the files :func:`make_study` writes in ``out_dir`` (nothing else)."""
    out = Path(out_dir)
    for rel in study_file_names(formats).values():
        p = out / rel
        if p.is_dir():
            shutil.rmtree(p)
        elif p.is_file():
            p.unlink()
