"""The 3D path of ``spinemorph dsca segment``: DSCA perpendicular to the canal centreline of a 3D canal mask.

``dsca segment --path {auto,2d,3d}`` chooses between the 2D network on axial slices (:mod:`DuralSacSegLib.segment`)
and this path (:mod:`DuralSacSegLib.dsca3d` on a 3D canal mask). The canal mask comes from

- the input itself when it is a **label map with a canal** (values within {0, 1, 2, 3, 4}: the 5-class foramen
  labels with :data:`spinemorph.labels.CANAL`; or a SPIDER mask with label 100): no network runs;
- else the canal class of a **3D FORAMEN3D model** (``--model-3d``, default the catalogue's default), usable only
  when the model has a canal class (output channels > ``CANAL``). The FORAMEN3D catalogue has no "usable for DSCA"
  marker: "has a canal class" is the condition (an entry's optional ``"dsca": false`` is honoured).

:func:`decide_path` says which path runs and why; :func:`run_3d` measures; :func:`write_outputs_3d` writes the same
file names as the 2D path. FORAMEN3DLib is imported lazily (inside functions) so the 2D path never needs it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from spinemorph.errors import InputError
from spinemorph.volume import Volume

PATHS = ("auto", "2d", "3d")


@dataclasses.dataclass
class CanalSource:
    """Where the 3D path takes its canal from: a label map (``model`` None) or a 3D model."""

    kind: str  # "label map" | "model"
    canal_label: int
    description: str
    model: str | None = None
    level_names: dict | None = None


def label_map_canal(vol: Volume) -> CanalSource | None:
    """A :class:`CanalSource` when ``vol`` is a label map with a canal (5-class foramen labels or SPIDER 100)."""
    from spinemorph.labelmaps import SPIDER_CANAL, distinct_values
    from spinemorph.labels import CANAL

    vals = distinct_values(vol)
    if vals is None:
        return None
    present = {int(v) for v in vals} - {0}
    if CANAL in present and present <= {1, 2, 3, CANAL}:
        from DuralSacSegLib.dsca3d import FORAMEN_LEVEL_NAMES

        return CanalSource("label map", CANAL, f"label map with the canal class {CANAL} (5-class foramen labels)",
                           level_names=dict(FORAMEN_LEVEL_NAMES))
    if SPIDER_CANAL in present:
        names, scheme = _spider_level_names(present)
        return CanalSource("label map", SPIDER_CANAL,
                           f"SPIDER label map with the canal label {SPIDER_CANAL}{' (' + scheme + ')' if scheme else ''}",
                           level_names=names)
    return None


def _spider_level_names(present: set[int]) -> tuple[dict[int, str] | None, str]:
    """Level names of a SPIDER mask's vertebra / disc values, in either numbering scheme
    (:func:`spinemorph.labelmaps.detect_scheme`: A = L5 is 1, B = L5 is 24); ``(None, "")`` when neither fits."""
    from spinemorph.errors import SpineMorphError
    from spinemorph.labelmaps import detect_scheme
    from spinemorph.spider import generic_level_name

    try:
        scheme = detect_scheme(present)
    except SpineMorphError:
        return None, ""
    names: dict[int, str] = {}
    for v in present:
        if 1 <= v <= 30:  # vertebra: generic number counted from L5 = 1 upwards
            g = v if scheme.l5 == 1 else scheme.l5 + 1 - v
        elif 200 < v < 231:  # disc below vertebra v - 200
            g = 200 + (v - 200 if scheme.l5 == 1 else scheme.l5 + 1 - (v - 200))
        else:
            continue
        if g > 0 and g != 200:
            name = generic_level_name(g)
            names[v] = name[:-5] if name.endswith(" disc") else name
    return names, f"levels from {scheme.name}"


def model_canal_status(model: str | os.PathLike | None) -> tuple[str, bool, str]:
    """``(model name, usable, why)`` for a FORAMEN3D model name / file: usable = it has a canal class.

    Reads the catalogue entry's ``network.out_channels`` (a weights file: its own ``network`` entry) without building
    the network. Raises :class:`~spinemorph.errors.ModelError` for an unknown name or an unreadable file.
    """
    from FORAMEN3DLib import models3d

    from spinemorph.labels import CANAL

    name, path, _ = models3d.resolve_model(model or "default")
    entry = next((e for e in models3d.list_models() if e.get("name") == name), None)
    if entry is not None and isinstance(entry.get("network"), dict):
        out_ch = int(entry["network"].get("out_channels", 0))
        if entry.get("dsca") is False:
            return name, False, f"3D model {name} is marked not usable for DSCA in the catalogue"
    else:
        out_ch = int(dict(models3d.read_weights(Path(path))["network"]).get("out_channels", 0))
    if out_ch > CANAL:
        return name, True, f"3D model {name} has a canal class ({out_ch} classes)"
    return name, False, f"3D model {name} has no dural sac / canal class ({out_ch} classes: background, L4, disc, L5)"


def decide_path(image: Volume, requested: str = "auto", model_3d: str | None = None) -> tuple[str, str, CanalSource | None]:
    """``(path "2d" | "3d", reason, canal source for 3d)``. Raises :class:`InputError` (one line) when ``3d`` is
    requested but neither the input nor the 3D model has a canal class."""
    from spinemorph.errors import ModelError

    if requested not in PATHS:
        raise InputError(f"--path must be one of {', '.join(PATHS)}, got {requested!r}")
    if requested == "2d":
        return "2d", "requested with --path 2d: 2D network on axial slices", None
    src = label_map_canal(image)
    if src is not None:
        from spinemorph.volume import MAX_RESLICE_SPACING_MM

        sp = max(image.spacing_mm)
        thick = (f"; caution: {sp:.1f} mm slices, the section outline is coarse across them (validated on 3D masks "
                 "only)" if sp > MAX_RESLICE_SPACING_MM else "")
        return ("3d", f"input is a {src.description}: DSCA on planes perpendicular to its canal centreline "
                f"(no network){thick}", src)
    from DuralSacSegLib.dsca3d import choose_dsca_path

    if requested == "auto":  # axial or thick-slice input: 2d whatever the 3D model (no model look-up)
        path, reason = choose_dsca_path(image, True)
        if path == "2d":
            return "2d", reason, None
    try:
        name, usable, why = model_canal_status(model_3d)
    except ModelError as exc:
        if requested == "3d":
            raise InputError(f"--path 3d needs a 3D model with a canal class: {exc}") from None
        name, usable, why = None, False, f"no usable 3D model ({exc})"
    if requested == "3d":
        if not usable:
            raise InputError(f"--path 3d needs a 3D model with a dural sac / canal class: {why}; "
                             "use --path 2d or give --model-3d NAME|FILE of a model with a canal class")
        from spinemorph.labels import CANAL

        return "3d", f"requested with --path 3d; {why}", CanalSource("model", CANAL, why, model=name)
    path, reason = choose_dsca_path(image, usable)
    if path == "3d":
        from spinemorph.labels import CANAL

        return "3d", f"{reason}; {why}", CanalSource("model", CANAL, why, model=name)
    return "2d", (reason if usable else f"{reason} ({why})"), None


@dataclasses.dataclass
class Segmentation3dResult:
    """Output of :func:`run_3d`: canal mask (0/1 on the input grid), labels, table and provenance."""

    mask: Volume
    labels: Volume
    image: Volume | None
    table: object  # Dsca3dTable
    source: CanalSource
    reason: str
    model_name: str
    device: str
    timings_s: dict
    segmentation_qc: tuple = ()
    #: how the 3D model placed its crop and decided the canal (fine models: ``locator``, ``l45_centre_lps``,
    #: ``canal_threshold`` of :class:`FORAMEN3DLib.segment3d.SegmentationResult`); empty for a label map
    model_settings: dict = dataclasses.field(default_factory=dict)

    def info(self) -> dict:
        return {
            "path": "3d",
            "path_reason": self.reason,
            "canal_source": self.source.kind,
            "canal_label": self.source.canal_label,
            "model": self.model_name,
            "device": self.device,
            "input_size_ijk": list(self.labels.size_ijk),
            "input_spacing_mm": list(self.labels.spacing_mm),
            "input_axis_codes": self.labels.axis_codes(),
            "timings_s": {k: round(float(v), 4) for k, v in self.timings_s.items()},
            "segmentation_qc": list(self.segmentation_qc),
            **({"model_settings": self.model_settings} if self.model_settings else {}),
        }


def run_3d(vol: Volume, source: CanalSource, reason: str, *, device: str = "auto", scheme=None,
           progress=None) -> Segmentation3dResult:
    """Canal labels (the input label map, or the 3D model's segmentation of the image) → 3D DSCA table."""
    from DuralSacSegLib.dsca3d import compute_dsca3d_table

    t0 = time.perf_counter()
    timings = {}
    seg_qc: tuple = ()
    settings: dict = {}
    if source.kind == "label map":
        labels, image, model_name, dev = vol, None, "none (input label map)", "cpu"
    else:
        from FORAMEN3DLib.segment3d import segment_volume

        seg = segment_volume(vol, model=source.model or "default", device=device, progress=progress)
        labels, image, model_name, dev = seg.labels, vol, seg.model_name, seg.device
        seg_qc = tuple(getattr(seg, "qc", ()))
        if getattr(seg, "locator", ""):
            cen = seg.l45_centre_lps
            settings = {"locator": seg.locator, "l45_centre_lps": list(cen) if cen is not None else None,
                        "canal_threshold": seg.canal_threshold, "inference": getattr(seg, "inference", None)}
        timings["segment_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    kwargs = {} if scheme is None else {"scheme": scheme}
    lab = np.asarray(labels.array)
    if np.issubdtype(lab.dtype, np.floating):
        labels = labels.with_array(np.round(lab).astype(np.int32))
    table = compute_dsca3d_table(labels, label=source.canal_label, level_map=labels, level_names=source.level_names,
                                 **kwargs)
    timings["table_s"] = time.perf_counter() - t1
    timings["total_s"] = time.perf_counter() - t0
    mask = labels.with_array((np.asarray(labels.array) == source.canal_label).astype(np.uint8))
    return Segmentation3dResult(mask, labels, image, table, source, reason, model_name, dev, timings, seg_qc, settings)


def write_outputs_3d(result: Segmentation3dResult, out_dir, overwrite: bool = False, n_overlays: int = 4) -> dict:
    """Write the 2D path's file names (``dural_sac.seg.nrrd``, ``dural_sac.nii.gz``, ``dsca.csv``, ``dsca.json``,
    ``dsca_levels.csv``, ``overlay_N.png`` = plane cross-sections, smallest area first)."""
    from DuralSacSegLib.dsca3d import write_plane_overlay
    from DuralSacSegLib.segment import (
        LEVELS_CSV,
        MASK_NIFTI,
        SEG_NRRD,
        TABLE_CSV,
        TABLE_JSON,
        _write_seg_nrrd,
        expected_outputs,
        overlay_names,
    )
    from spinemorph.atomic import atomic_write_text, prepare_output_dir
    from spinemorph.volume import write_volume

    table = result.table
    smallest = table.smallest(n_overlays)
    names = expected_outputs(bool(table.levels), False, len(smallest))
    out = prepare_output_dir(out_dir, overwrite, names)
    if overwrite:
        stale = set(expected_outputs(True, True, 0)) | {f.name for f in out.glob("overlay_*.png")}
        for name in sorted(stale - set(names)):
            (out / name).unlink(missing_ok=True)
    paths: dict[str, Path] = {"seg_nrrd": out / SEG_NRRD}
    _write_seg_nrrd(result.mask, paths["seg_nrrd"])
    paths["mask_nifti"] = write_volume(result.mask, out / MASK_NIFTI)
    paths["table_csv"] = out / TABLE_CSV
    table.to_csv(paths["table_csv"])
    if table.levels:
        paths["levels_csv"] = out / LEVELS_CSV
        table.levels_to_csv(paths["levels_csv"])
    doc = {"segmentation": result.info(), **table.to_dict()}
    paths["table_json"] = atomic_write_text(out / TABLE_JSON, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    for i, row in enumerate(smallest):
        p = out / overlay_names(len(smallest))[i]
        write_plane_overlay(result.labels, row, p, label=result.source.canal_label, image=result.image)
        paths[f"overlay_{i + 1}"] = p
    return paths
