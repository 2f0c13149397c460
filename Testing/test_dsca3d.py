"""DSCA perpendicular to the canal centreline from a 3D canal mask (DuralSacSegLib.dsca3d).

Known answers: a straight cylinder of radius r tilted by θ (perpendicular area πr², axial area πr²/cos θ), the
phantom's exact dural sac area on the measured planes, and a real SPIDER 3D T2 SPACE canal mask (skipped when the
data are absent).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from DuralSacSegLib import dsca as dsca2d
from DuralSacSegLib.dsca3d import (
    FLAG_FOV,
    Dsca3dTable,
    choose_dsca_path,
    compute_dsca3d_table,
    dsca3d_from_labels,
    fit_centreline,
    write_plane_overlay,
)

from spinemorph.errors import InputError
from spinemorph.labels import CANAL
from spinemorph.phantom import make_phantom
from spinemorph.volume import Volume


def _cylinder(r_mm: float, theta_deg: float, sp: float = 0.5, side_mm: float = 40.0, r2_mm: float | None = None) -> Volume:
    """Binary cylinder along (0, -sin θ, cos θ) through the volume centre (elliptic when ``r2_mm``: semi-axis along x)."""
    n = int(side_mm / sp)
    ax = np.array([0.0, -math.sin(math.radians(theta_deg)), math.cos(math.radians(theta_deg))])
    kk, jj, ii = np.meshgrid(*(np.arange(n),) * 3, indexing="ij")
    P = np.stack([ii, jj, kk], -1) * sp - (n - 1) / 2 * sp
    d = P - (P @ ax)[..., None] * ax
    if r2_mm is None:
        inside = np.linalg.norm(d, axis=-1) <= r_mm
    else:  # ellipse: semi-axis r2 along x, r along the in-plane direction orthogonal to x
        e2 = np.cross(ax, [1.0, 0.0, 0.0])
        inside = (d[..., 0] / r2_mm) ** 2 + ((d @ e2) / r_mm) ** 2 <= 1.0
    return Volume(inside.astype(np.uint8), (sp,) * 3, (-(n - 1) / 2 * sp,) * 3, np.eye(3))


FAST = dict(step_mm=2.0, window_mm=30.0, pixel_mm=0.25)


@pytest.mark.parametrize("theta", [0.0, 25.0])
def test_tilted_cylinder_perpendicular_and_axial_area(theta):
    r = 6.0
    t = compute_dsca3d_table(_cylinder(r, theta), **FAST)
    assert isinstance(t, Dsca3dTable) and t.span == "whole canal"
    inner = [row for row in t.rows if not row.qc_flags]
    assert len(inner) >= 10
    area = np.array([row.area_mm2 for row in inner])
    axial = np.array([row.axial_area_mm2 for row in inner])
    exact = math.pi * r * r
    # tolerance: the voxelised boundary (0.5 mm voxels) moves each point of the 37.7 mm perimeter by up to a quarter
    # voxel with alternating sign; 2 % (2.3 mm²) ≈ 0.12 × perimeter × voxel bounds the net area error of one plane
    assert np.all(np.abs(area - exact) <= 0.02 * exact), (area.min(), area.max(), exact)
    assert np.all(np.abs(axial - exact / math.cos(math.radians(theta))) <= 0.02 * exact / math.cos(math.radians(theta)))
    # the planes are perpendicular to the cylinder axis; the corrected area is the plane area; tilt vs LPS z = θ
    ax = np.array([0.0, -math.sin(math.radians(theta)), math.cos(math.radians(theta))])
    for row in inner:
        assert abs(float(np.dot(row.normal_lps, ax))) > math.cos(math.radians(0.5))
        assert row.corrected_area_mm2 == row.area_mm2 and row.tilt_deg == 0.0
        assert abs(row.axial_tilt_deg - theta) < 0.5
        assert row.stenosis == "no stenosis" or area.mean() < 100  # πr² = 113 mm² ≥ 100 mm²: no stenosis
        assert abs(row.lr_diameter_mm - 2 * r) <= 0.6 and abs(row.ap_diameter_mm - 2 * r) <= 0.6


def test_ellipse_categories_and_columns(tmp_path):
    # semi-axes 5 (AP) × 4 (LR) mm: πab = 62.8 mm² < 75 → "absolute stenosis" (Bolender/Schönström), same scheme as 2D
    t = compute_dsca3d_table(_cylinder(5.0, 10.0, r2_mm=4.0), **FAST)
    inner = [row for row in t.rows if not row.qc_flags]
    assert inner and all(row.stenosis == "absolute stenosis" for row in inner)
    assert all(abs(row.area_mm2 - math.pi * 20) < 2.0 for row in inner)
    assert all(abs(row.lr_diameter_mm - 8.0) <= 0.6 and abs(row.ap_diameter_mm - 10.0) <= 0.6 for row in inner)
    # a field of view narrower than the sac (a central sagittal slab, |x| <= 2 mm): every section is cut there,
    # flagged and not graded, and its area is the part inside the field of view only
    full = _cylinder(5.0, 10.0, r2_mm=4.0)
    n = full.array.shape[2]
    keep = slice(n // 2 - 4, n // 2 + 4)  # 8 voxels of 0.5 mm
    slab = Volume(full.array[:, :, keep].copy(), full.spacing_mm, full.index_to_lps((n // 2 - 4, 0, 0)), full.direction)
    ts = compute_dsca3d_table(slab, **FAST)
    assert ts.rows and all(FLAG_FOV in row.qc_flags and not row.graded for row in ts.rows)
    assert all(row.stenosis_note.startswith("not graded") and "edge of the imaged volume" in row.stenosis_note
               for row in ts.rows)
    assert all(row.area_mm2 < math.pi * 20 - 5 for row in ts.rows)
    assert any("planes" in line for line in ts.qc_summary_lines())
    csv_text = t.to_csv(tmp_path / "t.csv")
    header = csv_text.splitlines()[0].split(",")
    assert header[: len(dsca2d.SLICE_COLUMNS)] == [c for c, _ in dsca2d.SLICE_COLUMNS]
    assert {"normal_x", "normal_y", "normal_z", "axial_area_mm2"} <= set(header)
    d = t.to_dict()
    assert d["span"] == "whole canal" and d["stenosis_scheme"]["name"] == "bolender1985"
    assert len(d["slices"]) == len(t.rows) and "normal_x" in d["slices"][0]


def test_phantom_exact_area_on_planes():
    """The perpendicular areas match the phantom's exact dural-sac area on the very same planes.

    Tolerance: the phantom's sac (16 × 12 mm ellipse, perimeter ≈ 44 mm) is rasterised on 0.8 mm voxels; each boundary
    point of the voxel mask lies within half a voxel of the true outline with alternating sign; the bound 0.15 ×
    perimeter × voxel ≈ 5.3 mm² (3 % of 150 mm²) per plane and 1.5 mm² for the mean over planes (the sign alternation
    cancels along the plane and between planes).
    """
    ph = make_phantom(preset="normal")
    grid = ph.space_grid(n_slices=40, size=(100, 180))
    mask = ph.rasterize_labels(grid, kind="dural_sac")
    t = compute_dsca3d_table(mask, step_mm=4.0, window_mm=30.0, pixel_mm=0.25)
    errs = []
    for row in t.rows:
        if row.qc_flags:
            continue
        # the exact area needs a plane containing the left-right axis; the fitted normal has no x component here
        assert abs(row.normal_lps[0]) < 1e-6
        errs.append(row.area_mm2 - ph.truth.dsca_plane_mm2(row.centre_lps, row.normal_lps))
        # and it is the plane perpendicular to the canal axis, within 2° away from the grid's ends
    errs = np.array(errs)
    assert len(errs) >= 15
    assert np.all(np.abs(errs) <= 5.3), errs
    assert abs(errs.mean()) <= 1.5
    mid = [row for row in t.rows if abs(ph.truth.canal_s_on_plane(row.centre_lps, row.normal_lps)) < 40]
    for row in mid:
        ang = math.degrees(math.acos(min(1.0, abs(float(np.dot(row.normal_lps, ph.truth.canal_axis_lps))))))
        assert ang < 2.0


def test_levels_restrict_to_l3_s1():
    """A label map with vertebrae and discs limits the planes to L3-S1 and names each plane's level."""
    vol = _cylinder(6.0, 0.0, sp=1.0, side_mm=60.0)
    lab = np.zeros(vol.array.shape, np.int16)
    z = np.arange(lab.shape[0]) - (lab.shape[0] - 1) / 2  # mm, voxel 1 mm
    # generic SPIDER labels: 1 = L5 ... 4 = L2, 201 = L5-S1, 202 = L4-5, 203 = L3-4; bodies anterior of the canal
    bands = [(-30, -27, 201), (-27, -17, 1), (-17, -14, 202), (-14, -4, 2), (-4, -1, 203), (-1, 9, 3), (9, 12, 204),
             (12, 30, 4)]
    for z0, z1, value in bands:
        sel = (z >= z0) & (z < z1)
        lab[sel, 4:24, 15:45] = value  # rows j = 4..23: y from -26 to -7 mm, anterior of the canal (y ∈ [-6, 6])
    levels = Volume(lab, vol.spacing_mm, vol.origin_mm, vol.direction)
    t = compute_dsca3d_table(vol, level_map=levels, step_mm=1.0, window_mm=30.0, pixel_mm=0.5)
    assert t.span == "L3-S1"
    names = [row.level for row in t.rows]
    assert set(names) <= {"L3", "L3-4", "L4", "L4-5", "L5", "L5-S1"} and "L2" not in names
    zs = [row.centre_lps[2] for row in t.rows]
    assert min(zs) < -26 and 8 < max(zs) < 10.5  # from the L5-S1 disc to the top of L3
    assert {lv.level for lv in t.levels} == {"L3-4", "L4-5", "L5-S1"}
    whole = compute_dsca3d_table(vol, level_map=levels, span="whole", step_mm=1.0, window_mm=30.0, pixel_mm=0.5)
    assert len(whole.rows) > len(t.rows) and whole.span == "whole canal"


def test_bad_inputs():
    vol = _cylinder(6.0, 0.0, sp=1.0, side_mm=30.0)
    with pytest.raises(InputError, match="no label 7"):
        compute_dsca3d_table(vol, label=7)
    with pytest.raises(InputError, match="too short"):
        blob = np.zeros(vol.array.shape, np.uint8)
        blob[14:17, 14:17, 14:17] = 1  # 3 mm: fewer than 5 bands of 2 mm
        fit_centreline(vol.with_array(blob))
    with pytest.raises(InputError, match="span"):
        compute_dsca3d_table(vol, span="L1")
    with pytest.raises(InputError, match="L3-S1"):
        compute_dsca3d_table(vol, span="L3-S1", **FAST)
    with pytest.raises(InputError, match="step_mm"):
        compute_dsca3d_table(vol, step_mm=0)


def test_real_spider_space_canal(spider_data_root=None):
    """Real 3D T2 SPACE canal mask (SPIDER 98): a smooth centreline, plausible areas, axial ≥ perpendicular."""
    from spinemorph import spider

    if spider.spider_root() is None:
        pytest.skip("SPIDER data absent (../shared/data/spider); real-anatomy check skipped")
    m = spider.load_mask("98_t2_SPACE")
    gen = spider.remap_labels(m, "98_t2_SPACE", "generic")
    t = compute_dsca3d_table(m, label=100, level_map=gen, step_mm=5.0, window_mm=50.0, pixel_mm=0.4)
    assert t.span == "L3-S1"
    graded = [row for row in t.rows if row.graded]
    assert len(graded) >= 0.7 * len(t.rows)
    areas = np.array([row.area_mm2 for row in graded])
    assert 40 < np.median(areas) < 300  # lumbar dural sac: ~ 100-200 mm² in adults
    ratio = np.array([row.axial_area_mm2 / row.area_mm2 for row in graded])
    assert np.median(ratio) >= 0.98  # an oblique (axial) cut of a tube is never much smaller than the perpendicular one
    assert {"L3-4", "L4-5", "L5-S1"} <= {lv.level for lv in t.levels}


def test_foramen_labels_span_extended_to_l3_s1(tmp_path):
    """The fine 3D model's label map (1 L4, 2 L4-5, 3 L5, 4 canal): planes named L4/L4-5/L5, span extended to L3-S1."""
    vol = _cylinder(6.0, 0.0, sp=1.0, side_mm=80.0)
    lab = np.where(vol.array > 0, CANAL, 0).astype(np.uint8)
    z = np.arange(lab.shape[0]) - (lab.shape[0] - 1) / 2
    for z0, z1, value in [(-20, -10, 3), (-10, -6, 2), (-6, 4, 1)]:  # L5 10 mm, disc 4 mm, L4 10 mm
        lab[(z >= z0) & (z < z1), 14:34, 25:55] = value  # anterior of the canal
    labels = vol.with_array(lab)
    t = dsca3d_from_labels(labels, step_mm=1.0, window_mm=30.0, pixel_mm=0.5)
    assert t.span.startswith("L3-S1 (") and "estimated" in t.span
    zs = np.array([row.centre_lps[2] for row in t.rows])
    # L4 top at z = 4: + L4 (10 mm) + a disc (4 mm) -> about 18; L5 bottom at -20: - a disc (4 mm) -> about -24
    assert 16 <= zs.max() <= 20 and -26 <= zs.min() <= -22
    assert {"L4", "L4-5", "L5", ""} >= {row.level for row in t.rows}
    assert [lv.level for lv in t.levels] == ["L4-5"]
    write_plane_overlay(labels, t.rows[len(t.rows) // 2], tmp_path / "overlay_1.png", label=CANAL)
    assert (tmp_path / "overlay_1.png").stat().st_size > 1000


def test_choose_dsca_path():
    ph = make_phantom(preset="normal")
    sag = ph.space_grid(n_slices=8, size=(16, 16))
    ax = ph.axial_grid(n_slices=3, mode="disc", size=16)
    assert choose_dsca_path(sag, True)[0] == "3d"
    path, why = choose_dsca_path(sag, False)
    assert path == "2d" and "no 3D model" in why
    path, why = choose_dsca_path(ax, True)
    assert path == "2d" and "not a 3D volume" in why  # 4 mm slices
    iso_axial = Volume(np.zeros((8, 8, 8), np.uint8), (0.8, 0.8, 0.8))
    assert choose_dsca_path(iso_axial, True) == ("2d", "axial series: the 2D network measures its slices directly")


def test_phantom_3d_model_labels_levels_and_stenosis():
    """The 3D path on the phantom's label map (1 L4, 2 L4-5, 3 L5 + canal 4): planes named as the phantom's exact
    levels, L3 reached by the estimated extension, the stenotic L4-5 graded from the perpendicular area."""
    ph = make_phantom(preset="central-stenosis")
    g = ph.space_grid(n_slices=40, size=(100, 180))
    fo = ph.rasterize_labels(g, kind="foramen").array
    sac = ph.rasterize_labels(g, kind="dural_sac").array
    t = dsca3d_from_labels(g.with_array(np.where(sac > 0, CANAL, fo).astype(np.uint8)), step_mm=2.0, window_mm=40.0)
    assert t.span.startswith("L3-S1") and "estimated" in t.span
    s = np.array([ph.truth.canal_s_on_plane(r.centre_lps, ph.truth.canal_axis_lps) for r in t.rows])
    named = [(r.level, ph.level_at(si)) for r, si in zip(t.rows, s) if r.level]
    assert sum(a == b for a, b in named) >= 0.9 * len(named)
    assert abs(s.max() - ph.levels["L3"][1]) <= 4.0  # top of L3 (estimated from the L4 and disc heights)
    (lv,) = t.levels
    row = t.rows[lv.slice_index]
    assert lv.level == "L4-5" and lv.area_mm2 == row.area_mm2 and row.level == "L4-5"
    exact = ph.truth.dsca_plane_mm2(row.centre_lps, row.normal_lps)
    # 10 mm²: the mid-disc plane lies on the steep flank of the indentation (≈ 15 mm² per mm along the canal)
    assert abs(row.area_mm2 - exact) <= 10.0
    smallest = t.smallest_graded(1)[0]
    assert smallest.level == "L4-5" and smallest.stenosis == "absolute stenosis"


def test_slab_script_region_restricts_the_scored_planes(tmp_path):
    """scripts/dsca3d_slabs.py: the slab mask as "prediction" scores 0 mm² on every plane; with a region mask (the
    part a fine 3D model segmented, here the upper half of the slab's rows) only planes centred inside it count."""
    import importlib.util
    import json as _json

    from spinemorph import spider
    from spinemorph.volume import write_volume

    if spider.spider_root() is None:
        pytest.skip("SPIDER data absent (../shared/data/spider); real-slab check skipped")
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("dsca3d_slabs", root / "scripts" / "dsca3d_slabs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--write-reference", str(tmp_path / "pred"), "--patients", "11"]) == 0
    _, mask = spider.load_slab("11")
    region = np.zeros(mask.shape, np.uint8)
    region[:, : mask.shape[1] // 2] = 1
    (tmp_path / "region").mkdir()
    write_volume(mask.with_array(region), tmp_path / "region" / "11.nrrd")
    args = ["--pred-dir", str(tmp_path / "pred"), "--patients", "11", "--step-mm", "2"]
    assert mod.main([*args, "--out", str(tmp_path / "all")]) == 0
    assert mod.main([*args, "--region-dir", str(tmp_path / "region"), "--out", str(tmp_path / "half")]) == 0
    full = _json.loads((tmp_path / "all" / "dsca3d_slabs.json").read_text())["pooled"]
    half = _json.loads((tmp_path / "half" / "dsca3d_slabs.json").read_text())["pooled"]
    assert full["mae_in_slab_mm2"] == 0.0 and half["mae_in_slab_mm2"] == 0.0
    assert 0 < half["n_planes"] < full["n_planes"]
    z_half = [float(r["centre_z_mm"]) for r in __import__("csv").DictReader(open(tmp_path / "half" / "planes.csv"))]
    z_cut = mask.index_to_lps((0, mask.shape[1] // 2, 0))[2]
    assert min(z_half) > z_cut - 1.0  # rows run superior -> inferior: the upper half lies above the cut
