#!/usr/bin/env python
"""3D DSCA on the real T2 SPACE slabs: per-plane area of a predicted canal against the slab masks (issue 15).

    # the network's canal predictions, one file per patient: DIR/<patient>.nrrd|.nii.gz|.mha (any grid, LPS geometry)
    scripts/dsca3d_slabs.py --pred-dir DIR --out runs/dsca3d_slabs/model_x
    # a fine 3D model's predictions (python -m FORAMEN3DLib.evaluate_fine --slabs --pred-dir DIR writes them and the
    # region each model segmented, DIR/region/<patient>.nrrd): score only the planes inside that region
    scripts/dsca3d_slabs.py --pred-dir DIR --region-dir DIR/region --out runs/dsca3d_slabs/fine
    # reference "predictions" written from the slab masks themselves (sanity and sensitivity checks)
    scripts/dsca3d_slabs.py --write-reference DIR/truth
    scripts/dsca3d_slabs.py --write-reference DIR/eroded --degrade erode
    # the figure of docs/dsca3d.md (a real SPIDER 3D T2 SPACE canal mask)
    scripts/dsca3d_slabs.py --figure docs/figures/dsca3d_98.png
    # phantom exactness + the four SPIDER 3D T2 SPACE canal masks (numbers of docs/dsca3d.md)
    scripts/dsca3d_slabs.py --validate-masks runs/dsca3d_validate.json

What is compared (``DuralSacSegLib.dsca3d``):

- Planes: perpendicular to the centreline of the **slab mask's** canal (class 150), every ``--step-mm`` (1 mm) along
  it; the prediction is measured on the very same planes (``compute_dsca3d_table(..., centreline=...)``), so the
  comparison is of areas only, not of two centrelines.
- Inside the imaged slab only: the prediction is resampled (nearest neighbour) onto the slab's grid, so both masks
  exist only on the 13-26 sagittal slices (12-23 mm left-right) of the slab. On most planes the sac is wider than
  the slab. Two scores:

  * ``complete`` planes: the slab mask's cross-section does not reach the slab's faces (no ``cut_by_field_of_view``
    flag on the reference plane: no section pixel within 0.5 mm of the part of the plane outside the slab), i.e. the
    whole dural sac section lies inside the slab's left-right range: the areas there are true DSCA;
  * ``in-slab`` (all planes with canal in either mask): the area of the section **inside the slab** (clipped at the
    slab's faces), the same convention as the 2D real-slab evaluation (``DuralSacSegLib.calibration``).

  The issue's criterion (per-plane area MAE ≤ 15 mm²) is reported on both; ``complete`` is the DSCA proper, ``in-slab``
  covers every plane.
- Patients: the held-out slab patients (``spinemorph.spider.HELD_OUT_SLAB_PATIENTS``) by default, never trained on;
  ``--patients all`` or a comma list otherwise.
- Prediction label: ``--pred-label`` (default 4 = ``spinemorph.labels.CANAL``, the 5th class of the fine 3D model).
- ``--region-dir``: a model that segments only a crop (the fine 3D model: 115 mm superior-inferior around the located
  L4-5 disc, about L3-4 to S1) says nothing about the canal outside it. With ``DIR/<patient>.nrrd`` masks of the
  segmented region, only planes whose centre lies inside the region (1 mm eroded) are scored.

Writes ``OUT/dsca3d_slabs.json`` (summary + per patient) and ``OUT/planes.csv`` (every plane, both areas).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

VOLUME_SUFFIXES = (".nrrd", ".nii.gz", ".nii", ".mha", ".mhd")


def _patients(arg: str) -> list[str]:
    from spinemorph import spider

    if arg == "held-out":
        return spider.held_out_slab_patients()
    if arg == "all":
        return spider.list_slab_patients()
    return [p.strip() for p in arg.split(",") if p.strip()]


def _truth(patient: str):
    from spinemorph import spider

    _, mask = spider.load_slab(patient)
    return mask.with_array((np.asarray(mask.array) == spider.SLAB_CANAL).astype(np.uint8))


def _find_pred(pred_dir: Path, patient: str) -> Path | None:
    for p in sorted(pred_dir.iterdir()):
        name = p.name
        stem = next((name[: -len(s)] for s in VOLUME_SUFFIXES if name.endswith(s)), None)
        if stem is not None and (stem == patient or stem.startswith(f"{patient}_")):
            return p
    return None


def write_reference(out_dir: Path, patients: list[str], degrade: str, label: int, overwrite: bool) -> None:
    """Write the slab masks' canal as "prediction" files (label ``label``), optionally degraded."""
    from scipy import ndimage

    from spinemorph.errors import OutputError
    from spinemorph.volume import write_volume

    out_dir.mkdir(parents=True, exist_ok=True)
    for p in patients:
        t = _truth(p)
        a = np.asarray(t.array) > 0
        if degrade == "erode":  # one voxel, 6-connected, in 3D (0.47 mm in-plane, 0.9 mm left-right)
            a = ndimage.binary_erosion(a, structure=ndimage.generate_binary_structure(3, 1), border_value=1)
        elif degrade == "dilate":
            a = ndimage.binary_dilation(a, structure=ndimage.generate_binary_structure(3, 1))
        path = out_dir / f"{p}.nrrd"
        if path.exists() and not overwrite:
            raise OutputError(f"{path} exists; pass --overwrite to replace it")
        write_volume(t.with_array(a.astype(np.uint8) * np.uint8(label)), path)
        print(f"wrote {path} ({degrade or 'truth'})")


def _region_mask(region_dir: Path | None, patient: str, truth):
    """The segmented region of ``patient`` on the slab grid (bool, eroded by one voxel), or None."""
    from scipy import ndimage

    from spinemorph.errors import InputError
    from spinemorph.volume import read_volume, resample_like

    if region_dir is None:
        return None
    path = _find_pred(region_dir, patient)
    if path is None:
        raise InputError(f"no region file for patient {patient} in {region_dir}")
    reg = resample_like(read_volume(path), truth, interpolator="nearest")
    return ndimage.binary_erosion(np.asarray(reg.array) > 0, border_value=0)


def reference_planes(patient: str, step_mm: float = 1.0, pixel_mm: float = 0.25):
    """``(truth canal Volume, centreline, reference table)`` of a slab patient: the planes every prediction of that
    patient is measured on."""
    from DuralSacSegLib.dsca3d import compute_dsca3d_table, fit_centreline

    truth = _truth(patient)
    cl = fit_centreline(truth)
    return truth, cl, compute_dsca3d_table(truth, centreline=cl, step_mm=step_mm, pixel_mm=pixel_mm, span="whole")


def score_prediction(patient: str, truth, cl, tt, pred, region=None, step_mm: float = 1.0,
                     pixel_mm: float = 0.25) -> list[dict]:
    """Per-plane rows of a canal prediction (0/1 Volume, any grid) on the reference planes ``tt`` of ``truth``
    (:func:`reference_planes`); ``region`` (bool, slab grid): only planes centred inside it are scored."""
    from DuralSacSegLib.dsca3d import FLAG_FOV, compute_dsca3d_table

    from spinemorph.volume import resample_like

    same = pred.shape == truth.shape and np.allclose(pred.spacing_mm, truth.spacing_mm, atol=1e-4) and np.allclose(
        pred.origin_mm, truth.origin_mm, atol=1e-3) and np.allclose(pred.direction, truth.direction, atol=1e-4)
    if not same:  # restrict to the imaged slab: the prediction on the slab's own grid
        pred = resample_like(pred, truth, interpolator="nearest")
    if np.any(np.asarray(pred.array)):
        tp = compute_dsca3d_table(pred, centreline=cl, step_mm=step_mm, pixel_mm=pixel_mm, span="whole")
        prow = tp.rows
    else:
        prow = [None] * len(tt.rows)
    rows = []
    for rt, rp in zip(tt.rows, prow):
        a_t, a_p = rt.area_mm2, (rp.area_mm2 if rp is not None else 0.0)
        if a_t <= 0 and a_p <= 0:
            continue
        if region is not None:
            idx = np.round(truth.lps_to_index(np.asarray(rt.centre_lps))).astype(int)[::-1]  # k, j, i
            if np.any(idx < 0) or np.any(idx >= np.asarray(region.shape)) or not region[tuple(idx)]:
                continue
        rows.append({"patient": patient, "plane": rt.slice_index, "arc_mm": rt.position_mm,
                     "centre_x_mm": rt.centre_lps[0], "centre_y_mm": rt.centre_lps[1], "centre_z_mm": rt.centre_lps[2],
                     "normal_x": rt.normal_lps[0], "normal_y": rt.normal_lps[1], "normal_z": rt.normal_lps[2],
                     "truth_area_mm2": a_t, "pred_area_mm2": a_p, "error_mm2": a_p - a_t,
                     "complete": bool(a_t > 0 and FLAG_FOV not in rt.qc_flags),
                     "truth_flags": ";".join(rt.qc_flags), "pred_flags": ";".join(rp.qc_flags) if rp else "empty"})
    return rows


def evaluate(pred_dir: Path, patients: list[str], label: int, step_mm: float, pixel_mm: float,
             region_dir: Path | None = None) -> tuple[dict, list[dict]]:
    from spinemorph.errors import InputError
    from spinemorph.volume import read_volume

    per_patient, planes = {}, []
    for p in patients:
        path = _find_pred(pred_dir, p)
        if path is None:
            raise InputError(f"no prediction for patient {p} in {pred_dir} (expected {p}.nrrd / .nii.gz / .mha)")
        pred = read_volume(path)
        pa = np.asarray(pred.array)
        if not np.any(pa == label):
            raise InputError(f"prediction {path} has no voxel with the canal label {label}; set --pred-label")
        pred = pred.with_array((pa == label).astype(np.uint8))
        t0 = time.time()
        truth, cl, tt = reference_planes(p, step_mm, pixel_mm)
        region = _region_mask(region_dir, p, truth)
        rows = score_prediction(p, truth, cl, tt, pred, region, step_mm, pixel_mm)
        planes += rows
        per_patient[p] = _scores(rows) | {"prediction": str(path), "seconds": round(time.time() - t0, 1),
                                          "centreline_length_mm": round(cl.length_mm, 1)}
        s = per_patient[p]
        print(f"patient {p:>4}: {s['n_planes']:3d} planes, {s['n_complete']:3d} complete | in-slab MAE "
              f"{s['mae_in_slab_mm2']:.2f} mm² | complete MAE {s['mae_complete_mm2']:.2f} mm² "
              f"(truth median {s['truth_median_complete_mm2']:.0f} mm²)")
    return {"per_patient": per_patient, "pooled": _scores(planes)}, planes


def _scores(rows: list[dict]) -> dict:
    def stats(sel):
        e = np.array([r["error_mm2"] for r in sel], dtype=float)
        t = np.array([r["truth_area_mm2"] for r in sel], dtype=float)
        if e.size == 0:
            return math.nan, math.nan, math.nan, math.nan
        return float(np.abs(e).mean()), float(e.mean()), float(np.abs(e).max()), float(np.median(t))

    comp = [r for r in rows if r["complete"]]
    mae_all, bias_all, max_all, med_all = stats(rows)
    mae_c, bias_c, max_c, med_c = stats(comp)
    return {"n_planes": len(rows), "n_complete": len(comp),
            "mae_in_slab_mm2": mae_all, "bias_in_slab_mm2": bias_all, "max_abs_in_slab_mm2": max_all,
            "truth_median_in_slab_mm2": med_all,
            "mae_complete_mm2": mae_c, "bias_complete_mm2": bias_c, "max_abs_complete_mm2": max_c,
            "truth_median_complete_mm2": med_c}


def _json_clean(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _json_clean(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_json_clean(v) for v in o]
    return o


def draw_figure(path: Path, case: str = "98_t2_SPACE") -> None:
    """Sagittal view of a real SPIDER canal mask with the centreline, some planes and their cross-sections."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from DuralSacSegLib.dsca3d import _PlaneSampler, compute_dsca3d_table, plane_axes

    from spinemorph import spider
    from spinemorph.atomic import atomic_path

    m = spider.load_mask(case)
    gen = spider.remap_labels(m, case, "generic")
    t = compute_dsca3d_table(m, label=spider.CANAL_LABEL, level_map=gen, span="whole")
    a = np.asarray(m.array)
    canal = a == spider.CANAL_LABEL
    # the volume is PIR (i -> posterior, j -> inferior, k -> right): sagittal slab = maximum projection over k near the
    # midline (the canal's own k range), shown in LPS (y, z) mm
    kk = np.nonzero(canal.any(axis=(1, 2)))[0]
    ks = slice(int(kk.min()), int(kk.max()) + 1)
    canal_proj = canal[ks].any(axis=0)
    bone_proj = ((gen.array > 0) & (gen.array < 100))[int(np.median(kk))]
    disc_proj = ((gen.array > 200) & (gen.array < 300))[int(np.median(kk))]
    nj, ni = canal_proj.shape
    sx, sy, _ = m.spacing_mm
    y0, z0 = m.origin_mm[1], m.origin_mm[2]
    extent = (y0 - 0.5 * sx, y0 + (ni - 0.5) * sx, z0 - (nj - 0.5) * sy, z0 + 0.5 * sy)
    fig = plt.figure(figsize=(13, 8))
    ax = fig.add_axes([0.03, 0.06, 0.33, 0.88])
    rgb = np.ones((nj, ni, 3))
    rgb[bone_proj] = (0.85, 0.8, 0.6)
    rgb[disc_proj] = (0.55, 0.75, 0.95)
    rgb[canal_proj] = (0.95, 0.85, 0.2)
    ax.imshow(rgb, extent=extent, origin="upper")
    cen = np.array([r.centre_lps for r in t.rows])
    ax.plot(cen[:, 1], cen[:, 2], "r-", lw=1.2, label="centreline")
    show = [r for r in t.rows if r.level in ("L3", "L3-4", "L4", "L4-5", "L5", "L5-S1")][::12]
    for r in show:
        u, v, n = plane_axes(r.normal_lps)
        c = np.array(r.centre_lps)
        e = np.array([c - 15 * v, c + 15 * v])
        ax.plot(e[:, 1], e[:, 2], "b-", lw=1)
        ax.text(e[1, 1] + 1, e[1, 2], f"{r.slice_index}", fontsize=7, color="b")
    lo, hi = cen[:, 2].min() - 10, cen[:, 2].max() + 10
    ax.set_ylim(lo, hi)
    ax.set_xlim(cen[:, 1].min() - 45, cen[:, 1].max() + 30)
    ax.set_xlabel("LPS y (mm, anterior → posterior)")
    ax.set_ylabel("LPS z (mm, superior ↑)")
    ax.set_title(f"SPIDER {case}: canal (yellow), centreline, planes", fontsize=9)
    ax.legend(loc="lower left", fontsize=7)
    sampler = _PlaneSampler(m, canal, canal, margin_mm=32.0)
    for idx, r in enumerate(show[:8]):
        axc = fig.add_axes([0.39 + (idx % 4) * 0.15, 0.55 - (idx // 4) * 0.45, 0.14, 0.36])
        u, v, n = plane_axes(r.normal_lps)
        sec = sampler.sample(np.array(r.centre_lps), u, v, n, 161, 0.25)
        axc.imshow(sec, cmap="gray", vmin=0, vmax=1, extent=(-20, 20, 20, -20))
        axc.contour(np.linspace(-20, 20, 161), np.linspace(-20, 20, 161), sec, levels=[0.5], colors="r", linewidths=0.8)
        axc.set_title(f"plane {r.slice_index} ({r.level})\nperp {r.area_mm2:.0f} mm², axial {r.axial_area_mm2:.0f} mm²",
                      fontsize=8)
        axc.set_xlabel("u (mm, → left)", fontsize=7)
        axc.set_ylabel("v (mm, → posterior)", fontsize=7)
        axc.tick_params(labelsize=6)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    print(f"wrote {path}")


def validate_masks(step_mm: float = 1.0) -> dict:
    """Phantom exactness and real SPIDER 3D T2 SPACE canal masks (numbers of docs/dsca3d.md).

    Phantom (``normal``, ``central-stenosis``; dural sac label map on the 0.8 mm SPACE grid): perpendicular area vs the
    exact area on the very same plane (``PhantomTruth.dsca_plane_mm2``), and vs the exact area perpendicular to the
    true canal axis at the plane's canal arc length. SPIDER (18, 50, 65, 98; canal label 100, levels from the
    "generic" labels, span L3-S1): perpendicular vs axial area on the same centre point, and vs the 2D table
    (``compute_dsca_table``) of the mask resliced to axial 1 mm planes: its axial area and its cos θ-corrected area.
    """
    from DuralSacSegLib.dsca import compute_dsca_table
    from DuralSacSegLib.dsca3d import compute_dsca3d_table

    from spinemorph import spider
    from spinemorph.phantom import make_phantom
    from spinemorph.volume import resample_to_grid

    out: dict = {"phantom": {}, "spider": {}}
    for preset in ("normal", "central-stenosis"):
        ph = make_phantom(preset=preset)
        mask = ph.rasterize_labels(ph.space_grid(), kind="dural_sac")
        t = compute_dsca3d_table(mask, step_mm=step_mm)
        e_plane, e_axis, angles = [], [], []
        for r in t.rows:
            if r.qc_flags:
                continue
            s = ph.truth.canal_s_on_plane(r.centre_lps, ph.truth.canal_axis_lps)
            if abs(s) > 60:  # L3-S1 of the phantom (about ±60 mm around L4-5); the grid cuts the canal farther out
                continue
            e_plane.append(r.area_mm2 - ph.truth.dsca_plane_mm2(r.centre_lps, r.normal_lps))
            e_axis.append(r.area_mm2 - ph.truth.dsca_perpendicular_mm2(s))
            angles.append(math.degrees(math.acos(min(1.0, abs(float(np.dot(r.normal_lps, ph.truth.canal_axis_lps)))))))
        e_plane, e_axis = np.array(e_plane), np.array(e_axis)
        res = {"n_planes": len(e_plane), "same_plane_mae_mm2": float(np.abs(e_plane).mean()),
               "same_plane_bias_mm2": float(e_plane.mean()), "same_plane_max_mm2": float(np.abs(e_plane).max()),
               "true_axis_mae_mm2": float(np.abs(e_axis).mean()), "true_axis_max_mm2": float(np.abs(e_axis).max()),
               "normal_vs_true_axis_max_deg": float(max(angles))}
        out["phantom"][preset] = res
        print(f"phantom {preset}: {res['n_planes']} planes (|s| <= 60 mm) | same plane: MAE {res['same_plane_mae_mm2']:.2f} "
              f"bias {res['same_plane_bias_mm2']:+.2f} max {res['same_plane_max_mm2']:.2f} mm² | vs perpendicular to the "
              f"true axis: MAE {res['true_axis_mae_mm2']:.2f} max {res['true_axis_max_mm2']:.2f} mm² | normal within "
              f"{res['normal_vs_true_axis_max_deg']:.2f}° of the axis")
    for case in ("18_t2_SPACE", "50_t2_SPACE", "65_t2_SPACE", "98_t2_SPACE"):
        m = spider.load_mask(case)
        canal = m.with_array((np.asarray(m.array) == spider.CANAL_LABEL).astype(np.float32))
        gen = spider.remap_labels(m, case, "generic")
        t = compute_dsca3d_table(canal, level_map=gen, step_mm=step_mm)
        perp = np.array([r.area_mm2 for r in t.rows])
        axial = np.array([r.axial_area_mm2 for r in t.rows])
        tilt = np.array([r.axial_tilt_deg for r in t.rows])
        # the 2D table on the mask resliced to axial 1 mm planes, 0.25 mm pixels, over the same z range
        zc = np.array([r.centre_lps[2] for r in t.rows])
        cen = np.array([r.centre_lps for r in t.rows])
        lo = np.array([cen[:, 0].min() - 25, cen[:, 1].min() - 25, zc.min()])
        hi = np.array([cen[:, 0].max() + 25, cen[:, 1].max() + 25, zc.max()])
        size = np.ceil((hi - lo) / np.array([0.25, 0.25, 1.0])).astype(int) + 1
        ax_vol = resample_to_grid(canal, (0.25, 0.25, 1.0), size, lo, np.eye(3), interpolator="linear")
        t2 = compute_dsca_table(ax_vol.with_array((np.asarray(ax_vol.array) >= 0.5).astype(np.uint8)))
        z2 = np.array([r.centre_lps[2] for r in t2.rows])
        idx = np.array([int(np.argmin(np.abs(zc - z))) for z in z2])
        good = [i for i, r in enumerate(t2.rows) if r.area_mm2 > 0 and abs(zc[idx[i]] - z2[i]) <= 0.5 * step_mm]
        a2 = np.array([t2.rows[i].area_mm2 for i in good])
        c2 = np.array([t2.rows[i].corrected_area_mm2 for i in good])
        p3 = perp[idx[good]]
        x3 = axial[idx[good]]
        res = {"span": t.span, "n_planes": len(t.rows), "length_mm": len(t.rows) * step_mm,
               "perp_median_mm2": float(np.median(perp)), "perp_min_mm2": float(perp.min()),
               "axial_median_mm2": float(np.median(axial)), "axial_over_perp_median": float(np.median(axial / perp)),
               "inv_cos_tilt_median": float(np.median(1 / np.cos(np.radians(tilt)))), "tilt_median_deg": float(np.median(tilt)),
               "levels": {lv.level: round(lv.area_mm2, 1) for lv in t.levels},
               "n_graded": len(t.graded_rows()), "qc_counts": t.qc_counts(),
               "vs_2d_table_n": len(good), "axial_vs_2d_axial_mae_mm2": float(np.abs(x3 - a2).mean()),
               "perp_vs_2d_corrected_mae_mm2": float(np.abs(p3 - c2).mean()),
               "perp_vs_2d_corrected_bias_mm2": float((c2 - p3).mean()),
               "2d_centreline_degree": t2.centreline.get("degree")}
        out["spider"][case] = res
        print(f"SPIDER {case}: {t.span}, {res['n_planes']} planes | perpendicular median {res['perp_median_mm2']:.0f} "
              f"(min {res['perp_min_mm2']:.0f}) mm², axial median {res['axial_median_mm2']:.0f} mm², axial/perp median "
              f"{res['axial_over_perp_median']:.3f} (1/cos tilt median {res['inv_cos_tilt_median']:.3f}, tilt "
              f"{res['tilt_median_deg']:.1f}°) | levels {res['levels']} | graded {res['n_graded']}, QC {res['qc_counts']}")
        print(f"    vs the 2D table on the axial reslice ({res['vs_2d_table_n']} slices): axial MAE "
              f"{res['axial_vs_2d_axial_mae_mm2']:.2f} mm²; 2D cos-corrected vs perpendicular: MAE "
              f"{res['perp_vs_2d_corrected_mae_mm2']:.2f} mm² (2D − 3D bias {res['perp_vs_2d_corrected_bias_mm2']:+.2f})")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pred-dir", type=Path, help="folder with one canal prediction per patient (<patient>.nrrd ...)")
    ap.add_argument("--out", type=Path, help="output folder for --pred-dir (dsca3d_slabs.json, planes.csv)")
    ap.add_argument("--patients", default="held-out", help="'held-out' (default), 'all' or a comma list of ids")
    ap.add_argument("--pred-label", type=int, default=None, help="canal label of the prediction (default 4)")
    ap.add_argument("--region-dir", type=Path, default=None,
                    help="masks of the region each prediction covers (<patient>.nrrd); planes outside are not scored")
    ap.add_argument("--step-mm", type=float, default=1.0, help="plane spacing along the centreline (mm)")
    ap.add_argument("--pixel-mm", type=float, default=0.25, help="cross-section pixel size (mm)")
    ap.add_argument("--write-reference", type=Path, help="write the slab masks' canal as prediction files to this folder")
    ap.add_argument("--degrade", choices=("erode", "dilate"), default=None, help="with --write-reference: degrade by one voxel")
    ap.add_argument("--figure", type=Path, help="draw the real-mask figure of docs/dsca3d.md to this PNG")
    ap.add_argument("--validate-masks", type=Path, metavar="JSON",
                    help="phantom exactness and SPIDER 3D T2 SPACE masks: print and write the numbers to JSON")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    from spinemorph.errors import SpineMorphError
    from spinemorph.labels import CANAL

    label = CANAL if args.pred_label is None else args.pred_label
    if not (args.pred_dir or args.write_reference or args.figure or args.validate_masks):
        ap.error("give --pred-dir, --write-reference, --figure or --validate-masks")
    if args.pred_dir and not args.out:
        ap.error("--pred-dir needs --out")
    try:
        from spinemorph import spider
        from spinemorph.atomic import atomic_write_text

        if spider.spider_root() is None:
            raise SpineMorphError("SPIDER data not found (../shared/data/spider or $SPINEMORPH_SPIDER)")
        patients = _patients(args.patients)
        if args.figure:
            draw_figure(args.figure)
        if args.validate_masks:
            if args.validate_masks.exists() and not args.overwrite:
                raise SpineMorphError(f"{args.validate_masks} exists; pass --overwrite to replace it")
            res = validate_masks(args.step_mm)
            args.validate_masks.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.validate_masks, json.dumps(_json_clean(res), indent=2) + "\n")
            print(f"wrote {args.validate_masks}")
        if args.write_reference:
            write_reference(args.write_reference, patients, args.degrade or "", label, args.overwrite)
        if args.pred_dir:
            if not args.pred_dir.is_dir():
                raise SpineMorphError(f"--pred-dir {args.pred_dir} is not a folder")
            out_json = args.out / "dsca3d_slabs.json"
            if out_json.exists() and not args.overwrite:
                raise SpineMorphError(f"{out_json} exists; pass --overwrite to replace it")
            summary, planes = evaluate(args.pred_dir, patients, label, args.step_mm, args.pixel_mm, args.region_dir)
            pooled = summary["pooled"]
            print(f"pooled: {pooled['n_planes']} planes ({pooled['n_complete']} complete) | in-slab MAE "
                  f"{pooled['mae_in_slab_mm2']:.2f} mm² (bias {pooled['bias_in_slab_mm2']:+.2f}) | complete MAE "
                  f"{pooled['mae_complete_mm2']:.2f} mm² (bias {pooled['bias_complete_mm2']:+.2f}) | criterion ≤ 15 mm²")
            args.out.mkdir(parents=True, exist_ok=True)
            doc = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                   "pred_dir": str(args.pred_dir), "region_dir": str(args.region_dir) if args.region_dir else None, "pred_label": label, "patients": patients,
                   "step_mm": args.step_mm, "pixel_mm": args.pixel_mm,
                   "definitions": {"complete": "reference section does not reach the slab's faces (true DSCA)",
                                   "in_slab": "section area inside the imaged slab, clipped at its faces"},
                   "criterion_mm2": 15.0} | summary
            atomic_write_text(out_json, json.dumps(_json_clean(doc), indent=2) + "\n")
            buf = io.StringIO()
            if planes:
                w = csv.DictWriter(buf, fieldnames=list(planes[0]), lineterminator="\n")
                w.writeheader()
                w.writerows(planes)
            atomic_write_text(args.out / "planes.csv", buf.getvalue())
            print(f"wrote {out_json} and {args.out / 'planes.csv'}")
    except SpineMorphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
