"""Planning outputs: the sweep table (CSV), the JSON / Markdown report with the verdict per side, the 3D Slicer
markups and the points file. Part of :mod:`FORAMEN3DLib.planning`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from FORAMEN3DLib.planning_channel import reformat_planes
from FORAMEN3DLib.planning_config import REFERENCE_VALUES, PlanningConfig
from FORAMEN3DLib.planning_geometry import _r
from FORAMEN3DLib.planning_sweep import PlanResult, SideSweep
from spinemorph.atomic import atomic_write_text

# ====================================================================== tables, figures, reports
_CSV_FIELDS = [
    "side", "medial_angle_deg", "craniocaudal_angle_deg", "entry_x_mm", "entry_y_mm", "entry_z_mm", "entry_on_skin",
    "entry_midline_distance_mm", "length_mm", "clearance_mm", "l4_mm3", "disc_mm3", "l5_mm3", "bone_mm3",
    "approach_clearance_mm", "approach_bone_mm3", "dural_sac_mm3", "bone_free", "best",
]


def sweep_rows(result: PlanResult) -> list[dict]:
    """One dict per swept trajectory (all sides), with the columns of the sweep CSV."""
    rows = []
    for side, sw in result.sides.items():
        for i, m in enumerate(sw.medial_angles_deg):
            for j, c in enumerate(sw.craniocaudal_angles_deg):
                e = sw.entry_lps[i, j]
                rows.append({
                    "side": side,
                    "medial_angle_deg": round(float(m), 3),
                    "craniocaudal_angle_deg": round(float(c), 3),
                    "entry_x_mm": round(float(e[0]), 3),
                    "entry_y_mm": round(float(e[1]), 3),
                    "entry_z_mm": round(float(e[2]), 3),
                    "entry_on_skin": int(bool(sw.entry_on_skin[i, j])),
                    "entry_midline_distance_mm": round(float(sw.entry_midline_distance_mm[i, j]), 3),
                    "length_mm": round(float(sw.length_mm[i, j]), 3),
                    "clearance_mm": round(float(sw.clearance_mm[i, j]), 4),
                    "l4_mm3": round(float(sw.l4_mm3[i, j]), 3),
                    "disc_mm3": round(float(sw.disc_mm3[i, j]), 3),
                    "l5_mm3": round(float(sw.l5_mm3[i, j]), 3),
                    "bone_mm3": round(float(sw.bone_mm3[i, j]), 3),
                    "approach_clearance_mm": round(float(sw.approach_clearance_mm[i, j]), 4),
                    "approach_bone_mm3": round(float(sw.approach_bone_mm3[i, j]), 3),
                    # empty when the label map has no dural sac (label 4): not measured, not zero
                    "dural_sac_mm3": "" if sw.dural_sac_mm3 is None else round(float(sw.dural_sac_mm3[i, j]), 3),
                    "bone_free": int(bool(sw.bone_free[i, j])),
                    "best": int((i, j) == tuple(sw.best_index)),
                })
    return rows


def write_sweep_csv(result: PlanResult, path) -> Path:
    """Write the sweep table (one row per trajectory) atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(sweep_rows(result))
    return atomic_write_text(path, buf.getvalue())


def report_dict(result: PlanResult, inputs: dict | None = None) -> dict:
    """JSON-ready report: frame, configuration, references, and per side the target, best channel and verdict."""
    cfg = result.config
    lo, hi = cfg.reference_entry_distance_mm
    sides = {}
    for side, sw in result.sides.items():
        b = sw.best
        bone = sw.bone_mm3
        valid = np.isfinite(sw.clearance_mm)
        sides[side] = {
            "target_lps": _r(sw.target_lps),
            "target_method": sw.target_method,
            "best": b.as_dict(),
            "best_grid_index": list(sw.best_index),
            "criterion": sw.criterion,
            "foraminoplasty_needed": bool(sw.foraminoplasty_needed),
            "verdict": _verdict(sw, cfg),
            "bone_free_fraction": round(float(sw.bone_free.sum() / sw.bone_free.size), 4),
            "bone_scope": sw.bone_scope,
            "minimal_bone_mm3": round(float(np.min(np.where(valid, sw.scope_bone_mm3, np.inf))), 2),
            "minimal_channel_bone_mm3": round(float(np.min(np.where(valid, bone, np.inf))), 2),
            "minimal_approach_bone_mm3": round(float(np.min(np.where(valid, sw.approach_bone_mm3, np.inf))), 2),
            "dural_sac_labelled": sw.dural_sac_mm3 is not None,
            "channels_through_dural_sac": (None if sw.dural_sac_mm3 is None
                                           else int((sw.dural_sac_mm3 > cfg.bone_tolerance_mm3).sum())),
            "entry_within_reference_band": bool(lo <= b.entry_midline_distance_mm <= hi) if b.entry_on_skin else None,
            "reformat_planes": reformat_planes(result.frame, b.entry_lps, b.target_lps),
        }
    return {
        "kind": "spinemorph transforaminal L4-5 trajectory plan",
        "coordinate_system": "LPS",
        "units": {"length": "mm", "angle": "deg", "volume": "mm3"},
        "inputs": inputs or {},
        "angle_conventions": {
            "medial_angle_deg": "axial plane, from the mid-sagittal plane (0 = straight posterior, 90 = lateral)",
            "medial_angle_from_coronal_deg": "90 - medial_angle_deg",
            "craniocaudal_angle_deg": "elevation of the channel from the axial plane; + = entry cranial to target (channel directed caudally)",
            "lateral_view_angle_deg": "angle of the channel's projection on the sagittal plane from the posterior axis",
        },
        "frame": result.frame.as_dict(),
        "config": {
            "diameter_mm": cfg.diameter_mm,
            "target": cfg.target,
            "medial_angles_deg": list(cfg.medial_angles_deg),
            "craniocaudal_angles_deg": list(cfg.craniocaudal_angles_deg),
            "bone_tolerance_mm3": cfg.bone_tolerance_mm3,
            "bone_scope": cfg.bone_scope,
            "max_length_mm": cfg.max_length_mm,
            "reference_entry_distance_mm": list(cfg.reference_entry_distance_mm),
        },
        "skin_from_image": bool(result.skin_available),
        "sides": sides,
        "references": REFERENCE_VALUES,
        "warnings": list(result.warnings),
    }


def _verdict(sw: SideSweep, cfg: PlanningConfig) -> str:
    b = sw.best
    approach = sw.bone_scope == "approach"
    scope = "from the entry to the disc" if approach else "from the entry to the target"
    where = (
        f"; of the channel's {b.bone_mm3:.1f} mm³ of bone, {b.approach_bone_mm3:.1f} mm³ lies before the disc (foraminal) "
        f"and {b.intradiscal_bone_mm3:.1f} mm³ inside the disc space (endplates)"
    )
    if sw.foraminoplasty_needed:
        least = b.approach_bone_mm3 if approach else b.bone_mm3
        l4, l5 = (b.approach_l4_mm3, b.approach_l5_mm3) if approach else (b.l4_mm3, b.l5_mm3)
        free = b.approach_max_free_diameter_mm if approach else b.max_free_diameter_mm
        return (
            f"no {cfg.diameter_mm:g} mm channel to the {sw.target_kind} target in the sweep is bone-free {scope}: "
            f"foraminoplasty needed; least bone {least:.1f} mm³ (L4 {l4:.1f}, L5 {l5:.1f}) at medial "
            f"{b.medial_angle_deg:.0f}°, craniocaudal {b.craniocaudal_angle_deg:.0f}°; largest bone-free diameter on that axis "
            f"{free:.1f} mm" + where
        )
    clr = b.approach_clearance_mm if approach else b.clearance_mm
    text = (
        f"bone-free {cfg.diameter_mm:g} mm channel {scope}: medial {b.medial_angle_deg:.0f}°, craniocaudal "
        f"{b.craniocaudal_angle_deg:.0f}°, clearance {clr:.1f} mm, entry {b.entry_midline_distance_mm:.0f} mm from the midline"
        + ("" if b.entry_on_skin else " (entry at the field-of-view edge, not on the skin)")
    )
    return text + (where if approach and b.intradiscal_bone_mm3 > 0 else "")


def report_markdown(report: dict) -> str:
    """Human-readable Markdown version of :func:`report_dict`."""
    cfg = report["config"]
    lines = [
        "# Transforaminal L4-5 trajectory plan",
        "",
        f"Channel diameter {cfg['diameter_mm']:g} mm, target: {cfg['target']}. Coordinates LPS (mm).",
        "",
        "Angle conventions: medial angle in the axial plane from the mid-sagittal plane (0° straight posterior, 90° lateral); "
        "craniocaudal angle from the axial plane, positive = entry cranial to the target (instrument directed caudally).",
        "",
        f"Bone scope of the decision: {cfg.get('bone_scope', 'channel')} (channel = entry to target; approach = entry to the disc surface).",
        "",
        "| side | verdict | medial (°) | craniocaudal (°) | entry from midline (mm) | length (mm) | clearance (mm) | L4 (mm³) | disc (mm³) | L5 (mm³) | bone before disc (mm³) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for side, s in report["sides"].items():
        b = s["best"]
        v = "foraminoplasty needed" if s["foraminoplasty_needed"] else "bone-free"
        lines.append(
            f"| {side} | {v} | {b['medial_angle_deg']:.1f} | {b['craniocaudal_angle_deg']:.1f} | "
            f"{b['entry_midline_distance_mm']:.1f}{'' if b['entry_on_skin'] else ' (FOV edge)'} | {b['length_mm']:.1f} | "
            f"{b['clearance_mm']:.2f} | {b['intersection_mm3']['L4']:.1f} | {b['intersection_mm3']['L4-5 disc']:.1f} | "
            f"{b['intersection_mm3']['L5']:.1f} | {b['approach']['bone_mm3']:.1f} |"
        )
    lines.append("")
    for side, s in report["sides"].items():
        b = s["best"]
        lines += [
            f"## {side}",
            "",
            f"- {s['verdict']}.",
            f"- Target {s['target_lps']} ({s['target_method']}); entry {b['entry_lps']}.",
            f"- Best-channel criterion: {s['criterion']}; bone-free fraction of the sweep {s['bone_free_fraction']:.2f}.",
            f"- Largest bone-free diameter along this axis: {b['max_free_diameter_mm']:.2f} mm.",
        ]
        if s["entry_within_reference_band"] is not None:
            lo, hi = cfg["reference_entry_distance_mm"]
            inside = "within" if s["entry_within_reference_band"] else "outside"
            lines.append(f"- Entry distance {b['entry_midline_distance_mm']:.0f} mm is {inside} the reference {lo:g}-{hi:g} mm (Kambin).")
        lines.append("")
    lines += ["## References", ""]
    for key, ref in report["references"].items():
        lines.append(f"- **{key}** ({ref['certainty']}): {ref['source']}.")
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    lines += ["", "Planning aid only; not a medical device. Check every trajectory on the images."]
    return "\n".join(lines) + "\n"


def markups_json(result: PlanResult) -> dict:
    """3D Slicer markups (``.mrk.json``) with one line (entry → target) per side, LPS coordinates."""
    markups = []
    for side, sw in result.sides.items():
        b = sw.best
        markups.append({
            "type": "Line",
            "coordinateSystem": "LPS",
            "coordinateUnits": "mm",
            "name": f"trajectory-{side}",
            "controlPoints": [
                {"id": "1", "label": f"entry-{side}", "position": _r(b.entry_lps)},
                {"id": "2", "label": f"target-{side}", "position": _r(b.target_lps)},
            ],
        })
    return {
        "@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#",
        "markups": markups,
    }


def points_dict(result: PlanResult) -> dict:
    """Entry/target points, midline frame and reformat planes of the best channel per side (JSON-ready)."""
    return {
        "coordinate_system": "LPS",
        "units": "mm",
        "frame": result.frame.as_dict(),
        "sides": {
            side: {
                "entry_lps": _r(sw.best.entry_lps),
                "target_lps": _r(sw.best.target_lps),
                "entry_on_skin": bool(sw.best.entry_on_skin),
                "diameter_mm": sw.best.diameter_mm,
                "reformat_planes": reformat_planes(result.frame, sw.best.entry_lps, sw.best.target_lps),
            }
            for side, sw in result.sides.items()
        },
    }


def dumps(obj) -> str:
    """JSON text (2-space indent) for report/points dicts."""
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
