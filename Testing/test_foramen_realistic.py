"""FORAMEN3D morphometry on the realistic foramen phantom (curved SAP, oblique pedicles, facet gap, asymmetric
sides, disc bulging under the foramen): exact truth in ``spinemorph.phantom.realistic_foramen_phantom``; QC rules
(a fallback or an implausible value never raises the clinical flag)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from FORAMEN3DLib.morphometry import PLAUSIBLE, Thresholds, measure_foramen

from spinemorph import phantom

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def measured():
    cache = {}

    def get(preset, rotation=(0.0, 0.0, 0.0)):
        key = (preset, rotation)
        if key not in cache:
            vol, truth = phantom.realistic_foramen_phantom(preset, 0.5, rotation, supersample=1)
            cache[key] = (measure_foramen(vol), truth)
        return cache[key]

    return get


@pytest.mark.parametrize("preset", ["realistic", "realistic-disc-bulge"])
def test_realistic_phantom_accuracy(measured, preset):
    """Height / width within 0.5 mm, area within 5 % of the exact truth, both (different) sides; QC ok."""
    res, truth = measured(preset)
    for side in ("left", "right"):
        r, t = res.sides[side], truth[side]
        assert abs(r.height.value - t["height_mm"]) <= 0.5, (side, r.height.value, t["height_mm"])
        assert abs(r.width.value - t["width_mm"]) <= 0.5, (side, r.width.value, t["width_mm"])
        assert abs(r.area.value - t["area_mm2"]) <= 0.05 * t["area_mm2"], (side, r.area.value, t["area_mm2"])
        assert r.qc_status == "ok" and r.view_kind == "searched offset" and not r.fallbacks, r.qc_reasons
        # the width ends on the SAP's anterior face, behind the corner (never the L5 floor)
        w = res.landmarks.frame.to_frame(r.width.points_lps)
        assert w[1, 1] > w[0, 1] + 2.0
        assert w[1, 2] > t["outline_yz"][:, 1].min() + 1.0
        # the flag follows the truth (width <= 8 mm or height <= 15 mm)
        assert r.flagged == (t["height_mm"] <= 15.0 or t["width_mm"] <= 8.0)


def test_realistic_sides_differ(measured):
    res, truth = measured("realistic")
    assert truth["left"]["height_mm"] != truth["right"]["height_mm"]
    assert abs(res.sides["left"].height.value - res.sides["right"].height.value) > 1.0


def test_disc_under_apex_does_not_shorten_height(measured):
    """The bulging disc lies under the foraminal apex: the height runs notch to notch, not a vertical chord to the
    disc (which would be about 9 mm shorter here)."""
    res, truth = measured("realistic-disc-bulge")
    for side in ("left", "right"):
        h = res.landmarks.frame.to_frame(res.sides[side].height.points_lps)
        assert h[:, 2].min() < -4.0  # the L5 notch lies below the disc (z' < -4 mm), not on its upper surface


def test_fallback_never_raises_the_flag(measured):
    """The right foramen is split by the disc touching the SAP on every slab: measured by a fallback, it is put
    under review and, although its values are below the thresholds, it is not flagged."""
    res, _ = measured("realistic-disc-contact")
    r = res.sides["right"]
    assert r.fallbacks and r.qc_status == "review" and r.view_kind in ("wide", "hull")
    assert all(m.qc == "review" for m in (r.height, r.width, r.area))
    assert r.height.value <= 15.0 or r.width.value <= 8.0  # would be flagged if trusted
    assert not r.flagged and r.height.flag == "" and r.width.flag == ""
    rows = {(x["Metric"], x["Side"]): x for x in res.to_rows("c")}
    assert rows[("foraminal_height", "right")]["QC"] == "review" and rows[("foraminal_height", "right")]["Flag"] == ""
    d = res.to_dict()["sides"]["right"]
    assert d["qc_status"] == "review" and d["fallbacks"] and not d["flagged"]


def test_implausible_value_never_raises_the_flag(measured):
    """A value outside the plausibility band is 'review' and does not flag, even when below the threshold."""
    res, _ = measured("realistic")
    # thresholds so high that every side would be flagged, and a band that excludes the measured widths
    from FORAMEN3DLib import morphometry

    old = dict(morphometry.PLAUSIBLE)
    try:
        morphometry.PLAUSIBLE["foraminal_width"] = (50.0, 60.0)
        vol, _ = phantom.realistic_foramen_phantom("realistic", 0.5, supersample=1)
        r2 = measure_foramen(vol, thresholds=Thresholds(height_mm=5.0, width_mm=40.0))
    finally:
        morphometry.PLAUSIBLE.clear()
        morphometry.PLAUSIBLE.update(old)
    for side in ("left", "right"):
        r = r2.sides[side]
        assert r.width.qc == "review" and r.width.flag == "" and not r.flagged
        assert any("outside the plausible" in why for why in r.width.qc_reasons)
    assert PLAUSIBLE["foraminal_width"] == (2.0, 15.0)


def test_truth_is_exact():
    """The analytic truth: height = roof - floor; area of a rectangle-like foramen without curve checked by hand."""
    t = phantom._realistic_truth(phantom.REALISTIC_PRESETS["realistic"]["left"], 0.0)
    assert t["height_mm"] == pytest.approx(22.0)
    sd = phantom.REALISTIC_PRESETS["realistic"]["left"]
    # area = rectangle (wall .. SAP face at floor) x height + the region between the face curve, the tip and the IAP
    # recess; check against a fine raster of the polygon
    poly = t["outline_yz"]
    from matplotlib.path import Path

    yy, zz = np.meshgrid(np.arange(-3, 20, 0.02), np.arange(-6, 19, 0.02))
    inside = Path(poly).contains_points(np.column_stack([yy.ravel(), zz.ravel()]))
    assert inside.sum() * 0.02**2 == pytest.approx(t["area_mm2"], rel=0.005)
    # width truth = distance from the L4 corner to the nearest point of the face y = W + k (z - floor)^2, found here
    # independently (bounded scalar minimisation over the face between floor and tip)
    from scipy.optimize import minimize_scalar

    c = np.asarray(phantom.REALISTIC_CORNER_YZ, float)
    zf = sd.floor_z_mm

    def dist(z):
        return float(np.hypot(sd.sap_face_y_mm + sd.k * (z - zf) ** 2 - c[0], z - c[1]))

    best = minimize_scalar(dist, bounds=(zf, sd.tip_yz[1]), method="bounded", options={"xatol": 1e-9})
    assert t["width_mm"] == pytest.approx(best.fun, abs=1e-3)
    assert t["width_mm"] < dist(zf)  # the curved face comes nearer to the corner than its foot at the floor


def test_measurement_state_carries_qc(measured):
    """The Slicer table rows (Slicer-free MeasurementState): QC column; a value under review shows no flag until
    the user edits it (then QC reads 'edited' and the flag follows the drawn points)."""
    from FORAMEN3DLib import markup_model

    from spinemorph.gui_support import lps_to_ras

    res, _ = measured("realistic-disc-contact")
    state = markup_model.MeasurementState(res)
    rows = {(r["Metric"], r["Side"]): r for r in state.rows()}
    assert set(next(iter(rows.values()))) == {"Metric", "Side", "Value", "Unit", "Flag", "QC"}
    h = rows[("foraminal_height", "right")]
    assert h["QC"] == "review" and h["Flag"] == "" and not state.values["right"]["flagged"]
    assert "QC: review" in state.summary_text()
    pts = lps_to_ras(state.points["right"]["height"])
    pts[1] = pts[0] + np.array([0.0, 0.0, 12.0])
    state.update_from_ras(state.key("right", "height"), pts)
    h = next(r for r in state.rows() if r["Metric"] == "foraminal_height" and r["Side"] == "right")
    assert h["QC"] == "edited" and h["Flag"].startswith("height <= 15 mm") and state.values["right"]["flagged"]


def test_sap_face_is_the_contour_behind_the_notch_including_its_lower_part():
    """The width ends on the SAP's anterior face: the L5 contour behind the notch (the junction of the pedicle's upper
    border and the SAP) from where it rises out of the notch up to the tip, including the lower part of the face that
    is inclined < 45° (on real masks the reader's SAP point lies there, 0.5-1.1 mm above the notch); never the
    pedicle's upper border in front of the notch. Known outline (y posterior, z superior): pedicle border falling at
    15° from (-6, 1.6) to the notch at (0, 0); behind it the SAP face rising at 30° to (5, 2.89), then at 70° up to
    the tip; L4 corner at (-1, 7). Exact nearest face point: the corner's foot on the 30° part (width 6.56 mm); a
    45° cut would drop that part and give 7.05 mm on the steep part."""
    from FORAMEN3DLib.morphometry_outline import _nearest_on_runs, _sap_face

    from spinemorph.labels import L5

    t15, t30, t70 = np.radians([15.0, 30.0, 70.0])
    d30, d70 = np.array([np.cos(t30), np.sin(t30)]), np.array([np.cos(t70), np.sin(t70)])
    border = np.array([[y, -y * np.tan(t15)] for y in np.arange(-6.0, 0.0, 0.25)])
    ramp = np.array([s * d30 for s in np.arange(0.0, 5.0 / np.cos(t30) + 1e-9, 0.25)])
    top = 5.0 / np.cos(t30) * d30
    face = np.array([top + s * d70 for s in np.arange(0.25, 10.0, 0.25)])
    yz = np.vstack([border, ramp, face])
    # outward normals (out of the foramen, into the bone)
    normal = np.vstack([
        np.repeat([[-np.sin(t15), -np.cos(t15)]], len(border), 0),
        np.repeat([[np.sin(t30), -np.cos(t30)]], len(ramp), 0),
        np.repeat([[np.sin(t70), -np.cos(t70)]], len(face), 0),
    ])
    labs = np.full(len(yz), L5)
    corner, notch = np.array([-1.0, 7.0]), np.array([0.0, 0.0])
    sap = _sap_face(yz, normal, labs, corner, notch)
    nb, nr = len(border), len(ramp)
    assert not sap[:nb].any()  # the pedicle's upper border, in front of the notch, is never SAP
    assert (sap[nb : nb + nr] == (ramp[:, 1] > 0.5)).all()  # the lower face counts once > 0.5 mm above the notch
    assert sap[nb + nr :].all()
    d, q = _nearest_on_runs(corner, yz, sap)
    truth = abs(corner[0] * d30[1] - corner[1] * d30[0])  # distance from the corner to the 30° line through the notch
    assert abs(truth - 6.56) < 0.01 and abs(d - truth) < 1e-6, (d, truth, q)
    assert np.allclose(q, (corner @ d30) * d30)  # the foot of the perpendicular, on the face's lower part
    rel = corner - top
    steep = abs(rel[0] * d70[1] - rel[1] * d70[0])
    assert steep > d + 0.4  # what a 45° cut would have measured (7.05 mm)


def test_thick_slice_input_puts_every_value_under_review():
    """A thick-slice label map (here 2 mm slices left-right, > 1.5 mm): every value, the posterior disc height too,
    is under review and none is flagged, even with thresholds every value would meet."""
    from spinemorph.volume import Volume, resample_like

    vol, _ = phantom.realistic_foramen_phantom("realistic", 0.5, supersample=1)
    sp = np.array(vol.spacing_mm, float)
    lr = int(np.argmax(np.abs(vol.direction[0, :])))  # index axis closest to LPS x (left-right)
    sp2 = sp.copy()
    sp2[lr] = 2.0
    size = np.array(vol.size_ijk)
    size2 = np.maximum(1, np.floor((size - 1) * sp / sp2).astype(int) + 1)
    target = Volume(np.zeros(tuple(size2[::-1]), np.uint8), tuple(sp2), vol.origin_mm, vol.direction)
    thick = resample_like(vol, target, "nearest")
    res = measure_foramen(thick, thresholds=Thresholds(height_mm=50.0, width_mm=50.0, posterior_disc_height_mm=50.0))
    assert res.input_reasons and "thick-slice" in res.input_reasons[0]
    for m in res.measurements:
        assert m.qc == "review" and m.flag == "", (m.metric, m.side, m.qc, m.flag)
    assert not any(res.sides[s].flagged for s in ("left", "right"))
    rows = {(x["Metric"], x["Side"]): x for x in res.to_rows("c")}
    assert rows[("posterior_disc_height", "midline")]["QC"] == "review"


def test_edited_implausible_value_never_flags(measured):
    """A point dragged to an implausible value (height 3 mm, outside 8-30 mm) is put back under review and does not
    flag; dragged to a plausible low value (12 mm) it is 'edited' and flags."""
    from FORAMEN3DLib import markup_model

    from spinemorph.gui_support import lps_to_ras

    res, _ = measured("realistic-disc-contact")
    state = markup_model.MeasurementState(res)
    assert not state.values["left"]["flagged"]
    pts = lps_to_ras(state.points["left"]["height"])
    axis = (pts[0] - pts[1]) / np.linalg.norm(pts[0] - pts[1])
    state.update_from_ras(state.key("left", "height"), np.stack([pts[1] + 3.0 * axis, pts[1]]))
    h = next(r for r in state.rows() if r["Metric"] == "foraminal_height" and r["Side"] == "left")
    assert h["Value"] == pytest.approx(3.0, abs=0.01)
    assert h["QC"] == "review" and h["Flag"] == "" and not state.values["left"]["flagged"]
    state.update_from_ras(state.key("left", "height"), np.stack([pts[1] + 12.0 * axis, pts[1]]))
    h = next(r for r in state.rows() if r["Metric"] == "foraminal_height" and r["Side"] == "left")
    assert h["QC"] == "edited" and h["Flag"].startswith("height <= 15 mm") and state.values["left"]["flagged"]
