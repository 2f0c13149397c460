"""Slicer-free helpers shared by the DuralSacSeg and FORAMEN3D Slicer modules.

Everything here is plain numpy / Python so that the logic the module widgets call is testable without 3D Slicer
(``Testing/test_slicer_glue.py``); the ``slicer_*.py`` glue files only move numbers between these helpers and MRML
nodes.

- Geometry: :func:`ijk_to_ras_matrix` / :func:`volume_from_ijk_to_ras` convert between a
  :class:`spinemorph.volume.Volume` (LPS) and Slicer's IJK-to-RAS matrix; :func:`lps_to_ras` flips points
  (the same operation converts RAS to LPS).
- Device: :func:`resolve_device` returns the device and the CPU-fallback warning text the panel shows.
- Progress / cancel: :class:`ProgressRelay` adapts a progress bar and a Cancel button to the core's
  ``progress(fraction, message)`` / ``should_cancel()`` callbacks.
- Terminology: :func:`terminology_entry` builds the serialized terminology string Slicer stores on a segment.
- Messages: :func:`user_message` turns an exception into a one-line message that says what to do.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from spinemorph.errors import SpineMorphError
from spinemorph.volume import Volume

#: diagonal matrix flipping x and y: RAS = FLIP @ LPS and LPS = FLIP @ RAS (homogeneous coordinates)
LPS_RAS_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])

#: device choices shown in the panels: value -> label
DEVICE_LABELS = {"auto": "auto", "cuda": "CUDA", "mps": "MPS", "cpu": "CPU"}

#: message of the error the core raises when the user cancels
CANCELLED = "cancelled"


# ---------------------------------------------------------------------------------------------------- geometry
def lps_to_ras(points) -> np.ndarray:
    """Flip x and y of points ``(..., 3)`` (LPS -> RAS; applied to RAS points it gives LPS)."""
    p = np.array(points, dtype=float)
    if p.shape[-1] != 3:
        raise ValueError(f"points must have 3 coordinates in the last axis, got shape {p.shape}")
    p[..., 0] *= -1.0
    p[..., 1] *= -1.0
    return p


ras_to_lps = lps_to_ras


def ijk_to_ras_matrix(volume: Volume) -> np.ndarray:
    """4×4 IJK-to-RAS matrix of ``volume`` (what ``vtkMRMLVolumeNode.SetIJKToRASMatrix`` takes)."""
    return LPS_RAS_FLIP @ volume.affine_lps


def volume_from_ijk_to_ras(array: np.ndarray, ijk_to_ras) -> Volume:
    """Build a :class:`Volume` from a voxel array indexed ``[k, j, i]`` and a 4×4 IJK-to-RAS matrix.

    Raises
    ------
    SpineMorphError
        If the matrix has a zero-length or sheared axis (not a valid image grid).
    """
    m = np.asarray(ijk_to_ras, dtype=float).reshape(4, 4)
    lps = LPS_RAS_FLIP @ m
    axes = lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise SpineMorphError("the volume has a zero voxel spacing; fix its geometry (Volumes module, Volume Information)")
    direction = axes / spacing[None, :]
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise SpineMorphError("the volume grid is sheared; resample it to an orthogonal grid (Resample Scalar/Vector/DWI Volume)")
    return Volume(array=np.asarray(array), spacing_mm=tuple(spacing), origin_mm=tuple(lps[:3, 3]), direction=direction)


# ---------------------------------------------------------------------------------------------------- device
def resolve_device(preference: str = "auto"):
    """Select the compute device for ``preference`` (``auto``, ``cuda``, ``mps``, ``cpu``).

    Returns
    -------
    device : torch.device
        The device :func:`spinemorph.device.select_device` chose.
    warning : str
        The CPU-fallback warning text (empty when there was none), for the panel's warning label.
    """
    from spinemorph.device import CPUFallbackWarning, select_device

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CPUFallbackWarning)
        device = select_device(preference)
    texts = [str(w.message) for w in caught if issubclass(w.category, CPUFallbackWarning)]
    return device, (texts[0] if texts else "")


# ---------------------------------------------------------------------------------------------------- progress
class ProgressRelay:
    """Bridge between the core's ``progress`` / ``should_cancel`` callbacks and a GUI.

    Parameters
    ----------
    on_progress : callable, optional
        ``on_progress(percent: int, message: str)``; called on every update (e.g. sets a progress bar).
    process_events : callable, optional
        Called after every update so that the GUI repaints and the Cancel button can be clicked
        (``slicer.app.processEvents`` in Slicer).
    """

    def __init__(self, on_progress: Callable[[int, str], None] | None = None, process_events: Callable[[], None] | None = None):
        self._on_progress = on_progress
        self._process_events = process_events
        self.cancel_requested = False
        self.fraction = 0.0
        self.message = ""

    def request_cancel(self) -> None:
        """Ask the running computation to stop at its next check."""
        self.cancel_requested = True

    def reset(self) -> None:
        self.cancel_requested = False
        self.fraction = 0.0
        self.message = ""

    def progress(self, fraction: float, message: str = "") -> None:
        """The core's progress callback: ``fraction`` in [0, 1] (clamped; NaN is ignored)."""
        f = float(fraction)
        if not math.isfinite(f):
            f = self.fraction
        self.fraction = min(1.0, max(0.0, f))
        self.message = str(message)
        if self._on_progress is not None:
            self._on_progress(int(round(100 * self.fraction)), self.message)
        if self._process_events is not None:
            self._process_events()

    def should_cancel(self) -> bool:
        """The core's cancel check (also lets the GUI process the Cancel click)."""
        if self._process_events is not None:
            self._process_events()
        return self.cancel_requested


def is_cancelled(exc: BaseException) -> bool:
    """True if ``exc`` is the core's "cancelled" error."""
    return isinstance(exc, SpineMorphError) and str(exc).strip().lower().startswith(CANCELLED)


def user_message(exc: BaseException) -> str:
    """One-line message for the user about ``exc`` that says what to do."""
    if is_cancelled(exc):
        return "Cancelled by the user; nothing was changed."
    if isinstance(exc, SpineMorphError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "Out of memory; crop the volume (Crop Volume module) or choose the CPU device and close other programs."
    if isinstance(exc, (ImportError, ModuleNotFoundError)):
        name = getattr(exc, "name", None) or str(exc)
        return f"Python package {name} is missing; click Apply again to install the dependencies, then restart Slicer."
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"Unexpected error ({type(exc).__name__}: {text}); see the Python console for details and report it."


# ---------------------------------------------------------------------------------------------------- sample data
def sample_study(out_dir, seed: int = 0) -> dict:
    """The synthetic lumbar study used as Slicer sample data, generated locally (no download) and cached.

    Calls :func:`spinemorph.acquisition.make_study` (NRRD images + ``.seg.nrrd`` label maps + ``truth.json``) the first
    time; later calls reuse the files in ``out_dir``.

    Returns
    -------
    dict
        ``axial_t1`` / ``space_t2`` (image paths), ``axial_dural_sac_seg``, ``space_foramen_seg``,
        ``space_dural_sac_seg`` (label map paths), ``truth_path`` and ``truth`` (the parsed ``truth.json``).
    """
    import json
    from pathlib import Path

    from spinemorph.acquisition import AXIAL, SPACE, make_study, study_file_names

    out = Path(out_dir)
    names = study_file_names(("nrrd",))
    paths = {key: out / rel for key, rel in names.items()}
    if not all(p.is_file() for p in paths.values()):
        make_study(out, seed=int(seed), formats=("nrrd",), overwrite=True)
    return {
        "axial_t1": str(paths[f"{AXIAL}_nrrd"]),
        "space_t2": str(paths[f"{SPACE}_nrrd"]),
        "axial_dural_sac_seg": str(paths[f"{AXIAL}_dural_sac_seg"]),
        "space_foramen_seg": str(paths[f"{SPACE}_foramen_seg"]),
        "space_dural_sac_seg": str(paths[f"{SPACE}_dural_sac_seg"]),
        "truth_path": str(paths["truth"]),
        "truth": json.loads(paths["truth"].read_text(encoding="utf-8")),
    }


# ---------------------------------------------------------------------------------------------------- terminology
@dataclass(frozen=True)
class Code:
    """A coded concept (DICOM style): ``scheme`` (e.g. ``SCT``), ``value``, ``meaning``."""

    scheme: str
    value: str
    meaning: str

    def serialized(self) -> str:
        return f"{self.scheme}^{self.value}^{self.meaning}"


EMPTY_CODE = Code("", "", "")
ANATOMICAL_STRUCTURE = Code("SCT", "123037004", "Anatomical Structure")
SEGMENTATION_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


def terminology_entry(
    type_code: Code,
    category: Code = ANATOMICAL_STRUCTURE,
    modifier: Code = EMPTY_CODE,
    region: Code = EMPTY_CODE,
    region_modifier: Code = EMPTY_CODE,
    context: str = SEGMENTATION_CONTEXT,
    region_context: str = ANATOMIC_CONTEXT,
) -> str:
    """Serialized terminology entry for ``vtkSegment.SetTerminology``.

    Format (Slicer ``vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry``):
    ``context~category~type~modifier~regionContext~region~regionModifier`` where each code is
    ``scheme^value^meaning``.
    """
    return "~".join(
        [context, category.serialized(), type_code.serialized(), modifier.serialized(), region_context,
         region.serialized(), region_modifier.serialized()]
    )


#: context name of the extension's own terminology file ``DuralSacSeg/Resources/SpineMorph.term.json`` (loaded by the
#: Slicer glue, ``DuralSacSegLib/slicer_terminology.py``). Slicer's bundled lists lack L4, L5 and the disc; the file holds
#: SNOMED CT types under "Anatomical Structure" (SCT 123037004): L4 vertebra 11994002 and L5 vertebra 49668003 (the codes
#: of Slicer's TotalSegmentator mapping), Dura mater 18545000 (as in Slicer's DICOM master list, cid 7153; SNOMED has no
#: "dural sac" concept in those lists) and Intervertebral disc 360499006 (UNCERTAIN: taken from third-party mappings,
#: not from a DICOM / Slicer list; the L4-5 level is in the segment name, not the code).
SPINEMORPH_TERMINOLOGY_CONTEXT = "Segmentation category and type - SpineMorph"


def terminology_in_context(entry: str, context: str) -> str:
    """The serialized entry ``entry`` with its category/type context replaced by ``context`` (same codes)."""
    parts = entry.split("~")
    if len(parts) != 7:
        raise ValueError(f"terminology entry must have 7 '~'-separated fields, got {len(parts)}")
    return "~".join([context, *parts[1:]])


def terminology_file_types(document: dict) -> dict[tuple[str, str], set[tuple[str, str]]]:
    """``{(category scheme, value): {(type scheme, value), ...}}`` of a parsed ``.term.json`` document."""
    out: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for category in document["SegmentationCodes"]["Category"]:
        key = (category["CodingSchemeDesignator"], category["CodeValue"])
        out.setdefault(key, set()).update((t["CodingSchemeDesignator"], t["CodeValue"]) for t in category.get("Type", []))
    return out


def parse_terminology_entry(entry: str) -> dict:
    """Inverse of :func:`terminology_entry` (for tests and display): dict of the seven fields."""
    parts = entry.split("~")
    if len(parts) != 7:
        raise ValueError(f"terminology entry must have 7 '~'-separated fields, got {len(parts)}")

    def code(s: str) -> Code:
        f = s.split("^")
        if len(f) != 3:
            raise ValueError(f"code {s!r} must be scheme^value^meaning")
        return Code(*f)

    return {
        "context": parts[0], "category": code(parts[1]), "type": code(parts[2]), "modifier": code(parts[3]),
        "region_context": parts[4], "region": code(parts[5]), "region_modifier": code(parts[6]),
    }
