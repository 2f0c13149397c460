"""DSCA table (DuralSacSegLib.dsca) and stenosis categories (DuralSacSegLib.stenosis) on masks of exact geometry."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from DuralSacSegLib import dsca, stenosis
from DuralSacSegLib.dsca import compute_dsca_table, label_centroids_lps, parse_levels

from spinemorph.errors import InputError
from spinemorph.volume import Volume


def rotation_x(deg: float) -> np.ndarray:
    t = math.radians(deg)
    c, s = math.cos(t), math.sin(t)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=float)


def grid_points(vol: Volume) -> np.ndarray:
    """LPS coordinates (k, j, i, 3) of every voxel centre."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in vol.shape], indexing="ij")
    return vol.index_to_lps(np.stack([i, j, k], axis=-1).astype(float))


def elliptic_cylinder(vol: Volume, a: float, b: float, axis=(0.0, 0.0, 1.0), centre=(0.0, 0.0, 0.0)) -> Volume:
    """Rasterise (voxel centres) an elliptic cylinder: semi-axis ``a`` along the in-plane "LR" direction (x made
    perpendicular to the axis), ``b`` along the third direction; any axis direction."""
    t = np.asarray(axis, float) / np.linalg.norm(axis)
    e1 = np.array([1.0, 0.0, 0.0]) - t[0] * t
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(t, e1)
    p = grid_points(vol) - np.asarray(centre)
    u, v = p @ e1, p @ e2
    return vol.with_array(((u / a) ** 2 + (v / b) ** 2 <= 1.0).astype(np.uint8))


def empty_volume(shape, spacing, origin=(0.0, 0.0, 0.0), direction=None) -> Volume:
    return Volume(np.zeros(shape, np.uint8), spacing, origin, np.eye(3) if direction is None else direction)


def centred_origin(shape, spacing, direction=None) -> tuple:
    """Origin that puts the grid centre at LPS (0, 0, 0)."""
    d = np.eye(3) if direction is None else direction
    nk, nj, ni = shape
    half = np.array([(ni - 1) / 2, (nj - 1) / 2, (nk - 1) / 2]) * np.asarray(spacing)
    return tuple(-(d @ half))


# ---------------------------------------------------------------------------- areas of exact shapes
@pytest.mark.parametrize("spacing", [(0.3, 0.3), (0.5, 0.5), (0.6875, 0.6875), (1.0, 1.0), (0.4, 0.8)])
def test_ellipse_area_matches_pi_ab_on_several_pixel_sizes(spacing):
    a, b = 9.0, 6.5
    sx, sy = spacing
    shape = (3, int(40 / sy), int(40 / sx))
    sp = (sx, sy, 3.0)
    rng = np.random.default_rng(7)
    for _ in range(3):
        centre = (rng.uniform(-1, 1), rng.uniform(-1, 1), 0.0)
        vol = empty_volume(shape, sp, centred_origin(shape, sp))
        table = compute_dsca_table(elliptic_cylinder(vol, a, b, centre=centre))
        exact = math.pi * a * b
        perimeter = math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))  # Ramanujan
        for r in table.rows:
            err = abs(r.area_mm2 - exact)
            # partial-volume error of a pixel-centre raster: a fraction of the boundary band perimeter × pixel
            assert err <= 0.25 * perimeter * max(sx, sy), (spacing, r.area_mm2, exact)
            assert err / exact < 0.02
            assert r.area_mm2 == pytest.approx(np.count_nonzero(elliptic_cylinder(vol, a, b, centre=centre).array[r.slice_index]) * sx * sy)
            assert r.n_components == 1 and r.qc_flags == ()


@pytest.mark.parametrize("tilt_deg", [0.0, 15.0, 30.0])
@pytest.mark.parametrize("plane", ["ap", "lr"])
def test_tilted_cylinder_raw_and_angle_corrected_area(tilt_deg, plane):
    a, b = 8.0, 6.0
    t = math.radians(tilt_deg)
    axis = (0.0, math.sin(t), math.cos(t)) if plane == "ap" else (math.sin(t), 0.0, math.cos(t))
    shape, sp = (24, 120, 120), (0.4, 0.4, 2.0)
    vol = elliptic_cylinder(empty_volume(shape, sp, centred_origin(shape, sp)), a, b, axis=axis)
    table = compute_dsca_table(vol)
    inner = [r for r in table.rows if 2 <= r.slice_index < shape[0] - 2]
    raw = np.mean([r.area_mm2 for r in inner])
    corrected = np.mean([r.corrected_area_mm2 for r in inner])
    exact = math.pi * a * b
    assert raw == pytest.approx(exact / math.cos(t), rel=0.02)
    assert corrected == pytest.approx(exact, rel=0.02)
    for r in inner:
        assert r.tilt_deg == pytest.approx(tilt_deg, abs=1.0)
        assert r.corrected_area_mm2 == pytest.approx(r.area_mm2 * math.cos(math.radians(r.tilt_deg)), rel=1e-9)
    assert table.centreline["n_slices"] == shape[0]


def test_gantry_tilted_stack_vertical_canal():
    """Slices tilted 20° about LR (gantry tilt), canal along S-I: axial area πab/cos20°, corrected πab."""
    a, b = 7.0, 5.0
    d = rotation_x(20.0)
    shape, sp = (20, 100, 100), (0.4, 0.4, 2.5)
    vol = elliptic_cylinder(empty_volume(shape, sp, centred_origin(shape, sp, d), d), a, b)
    table = compute_dsca_table(vol)
    assert np.allclose(table.slice_normal_lps, d[:, 2])
    inner = table.rows[2:-2]
    exact = math.pi * a * b
    assert np.mean([r.area_mm2 for r in inner]) == pytest.approx(exact / math.cos(math.radians(20)), rel=0.02)
    assert np.mean([r.corrected_area_mm2 for r in inner]) == pytest.approx(exact, rel=0.02)
    # positions along the slice normal are spaced by the slice spacing
    pos = np.array([r.position_mm for r in table.rows])
    assert np.allclose(np.diff(pos), 2.5)
    assert table.slice_spacing_mm == pytest.approx(2.5)


def test_curved_canal_centreline_fit():
    """A canal whose centre moves as y = c·z² (lordosis-like): tilt(z) = atan(2cz); the polynomial fit follows it."""
    c = 0.01
    shape, sp = (31, 160, 100), (0.5, 0.5, 1.5)
    vol = empty_volume(shape, sp, centred_origin(shape, sp))
    p = grid_points(vol)
    z = p[..., 2]
    y0 = c * z**2
    r_perp = 6.0
    # circular perpendicular section of radius r_perp: axial cut is an ellipse with semi-axes r, r/cos(tilt)
    cos_t = 1 / np.sqrt(1 + (2 * c * z) ** 2)
    inside = (p[..., 0] / r_perp) ** 2 + ((p[..., 1] - y0) * cos_t / r_perp) ** 2 <= 1
    table = compute_dsca_table(vol.with_array(inside.astype(np.uint8)))
    exact = math.pi * r_perp**2
    for r in table.rows[3:-3]:
        zk = r.position_mm
        assert r.tilt_deg == pytest.approx(math.degrees(math.atan(abs(2 * c * zk))), abs=1.5)
        assert r.corrected_area_mm2 == pytest.approx(exact, rel=0.03)


# ---------------------------------------------------------------------------- diameters
@pytest.mark.parametrize("spacing", [(0.5, 0.5), (0.3, 0.6)])
def test_ap_lr_diameters_of_an_ellipse(spacing):
    a_lr, b_ap = 12.0, 8.0
    sx, sy = spacing
    shape, sp = (2, int(50 / sy), int(50 / sx)), (sx, sy, 3.0)
    vol = elliptic_cylinder(empty_volume(shape, sp, centred_origin(shape, sp)), a_lr, b_ap)
    r = compute_dsca_table(vol).rows[0]
    assert abs(r.lr_diameter_mm - 2 * a_lr) <= sx
    assert abs(r.ap_diameter_mm - 2 * b_ap) <= sy


def test_diameters_follow_anatomy_not_array_axes():
    """Columns run posterior, rows run left (transposed axial grid): LR still = 2a, AP still = 2b."""
    d = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # i→P, j→L, k→I
    assert np.isclose(np.linalg.det(d), 1.0)
    shape, sp = (2, 100, 100), (0.5, 0.5, 3.0)
    vol = elliptic_cylinder(empty_volume(shape, sp, centred_origin(shape, sp, d), d), 12.0, 8.0)
    r = compute_dsca_table(vol).rows[0]
    assert abs(r.lr_diameter_mm - 24.0) <= 0.5
    assert abs(r.ap_diameter_mm - 16.0) <= 0.5
    assert r.area_mm2 == pytest.approx(math.pi * 96, rel=0.02)


# ---------------------------------------------------------------------------- QC flags
def _disk(shape2d, ci, cj, radius_px):
    jj, ii = np.mgrid[: shape2d[0], : shape2d[1]]
    return (ii - ci) ** 2 + (jj - cj) ** 2 <= radius_px**2


def test_components_and_qc_flags():
    nk, nj, ni = 7, 80, 80
    a = np.zeros((nk, nj, ni), np.uint8)
    for k in range(nk):
        a[k][_disk((nj, ni), 40, 40, 12)] = 1
    a[1] = 0  # empty
    a[2][_disk((nj, ni), 70, 10, 4)] = 1  # second blob
    a[3] = 0
    a[3][_disk((nj, ni), 3, 40, 12)] = 1  # cut by the left border
    a[4] = 0
    ring = _disk((nj, ni), 40, 40, 14) & ~_disk((nj, ni), 40, 40, 10)
    ring[:, 40:] = False  # half ring (crescent)
    a[4][ring] = 1
    a[5] = 0
    a[5][_disk((nj, ni), 40, 40, 20)] = 1  # large jump vs neighbours
    vol = Volume(a, (0.5, 0.5, 3.0))
    table = compute_dsca_table(vol)
    rows = table.rows
    assert rows[0].qc_flags == ()
    assert rows[1].qc_flags == (dsca.FLAG_EMPTY,) and rows[1].area_mm2 == 0 and rows[1].stenosis == ""
    assert math.isnan(rows[1].corrected_area_mm2) and math.isnan(rows[1].solidity) and rows[1].n_components == 0
    assert rows[2].n_components == 2 and dsca.FLAG_MULTIPLE in rows[2].qc_flags
    assert rows[2].area_mm2 == pytest.approx(np.count_nonzero(a[2]) * 0.25)
    # diameters come from the largest component only
    assert rows[2].lr_diameter_mm == pytest.approx(rows[0].lr_diameter_mm)
    assert dsca.FLAG_BORDER in rows[3].qc_flags
    assert rows[4].solidity < dsca.DEFAULT_LOW_SOLIDITY and dsca.FLAG_LOW_SOLIDITY in rows[4].qc_flags
    assert rows[0].solidity > 0.9
    assert dsca.FLAG_JUMP in rows[5].qc_flags
    assert dsca.FLAG_JUMP in rows[6].qc_flags  # its only neighbour is the outlier: both sides of a jump are flagged
    assert dsca.FLAG_JUMP not in rows[0].qc_flags
    assert len(table.nonempty_rows()) == nk - 1
    assert [r.slice_index for r in table.smallest(2)] == sorted(
        [r.slice_index for r in table.nonempty_rows()], key=lambda k: (rows[k].area_mm2, k)
    )[:2]


def test_label_option_and_mean_intensity():
    a = np.zeros((2, 30, 30), np.uint8)
    a[:, 5:15, 5:15] = 1
    a[:, 20:25, 20:25] = 2
    img = np.zeros((2, 30, 30), np.float32)
    img[a == 1] = 7.0
    mask = Volume(a, (1.0, 1.0, 2.0))
    t_all = compute_dsca_table(mask)
    t_1 = compute_dsca_table(mask, mask.with_array(img), label=1)
    assert t_all.rows[0].area_mm2 == 125 and t_all.rows[0].n_components == 2
    assert t_1.rows[0].area_mm2 == 100 and t_1.rows[0].n_components == 1
    assert t_1.rows[0].mean_intensity == pytest.approx(7.0)
    with pytest.raises(InputError, match="different grids"):
        compute_dsca_table(mask, Volume(img, (1.0, 1.0, 3.0)))


def test_single_slice_has_no_centreline():
    a = np.zeros((1, 40, 40), np.uint8)
    a[0][_disk((40, 40), 20, 20, 8)] = 1
    r = compute_dsca_table(Volume(a, (0.5, 0.5, 4.0))).rows[0]
    assert r.area_mm2 > 0 and math.isnan(r.corrected_area_mm2) and math.isnan(r.tilt_deg)


# ---------------------------------------------------------------------------- levels
def test_levels_nearest_slice_and_outside():
    shape, sp = (10, 60, 60), (0.5, 0.5, 4.0)
    vol = elliptic_cylinder(empty_volume(shape, sp, centred_origin(shape, sp)), 6.0, 5.0)
    # slice k is at z = (k - 4.5) * 4
    table = compute_dsca_table(vol, levels={"L4-5": 1.5, "L3-4": [3.0, -2.0, 9.9], "far": 100.0})
    by = {lv.level: lv for lv in table.levels}
    assert by["L4-5"].slice_index == 5 and by["L4-5"].distance_mm == pytest.approx(0.5)
    assert by["L3-4"].slice_index == 7 and by["L3-4"].level_position_mm == pytest.approx(9.9)
    assert by["L4-5"].area_mm2 == table.rows[5].area_mm2
    assert by["far"].slice_index == -1 and by["far"].qc_flags == (dsca.FLAG_OUTSIDE,)
    assert table.rows[5].level == "L4-5" and table.rows[7].level == "L3-4"
    with pytest.raises(InputError, match="level"):
        compute_dsca_table(vol, levels={"bad": [1, 2]})


def test_label_centroids_lps():
    lab = np.zeros((10, 20, 20), np.uint8)
    lab[2:4, 5:9, 10:14] = 2
    vol = Volume(lab, (0.5, 0.5, 2.0), (10.0, 20.0, 30.0))
    c = label_centroids_lps(vol, {2: "L4-5", 3: "L5-S1"})
    assert list(c) == ["L4-5"]
    assert np.allclose(c["L4-5"], (10 + 11.5 * 0.5, 20 + 6.5 * 0.5, 30 + 2.5 * 2.0))


def test_parse_levels(tmp_path):
    assert parse_levels(None) is None
    assert parse_levels('{"L4-5": 12.5}') == {"L4-5": 12.5}
    f = tmp_path / "levels.json"
    f.write_text(json.dumps({"L4-5": [1, 2, 3]}))
    assert parse_levels(str(f)) == {"L4-5": [1, 2, 3]}
    for bad in ("{not json", "[1, 2]", '{"L4-5": "x"}', '{"L4-5": [1, 2]}'):
        with pytest.raises(InputError):
            parse_levels(bad)


# ---------------------------------------------------------------------------- export
def test_csv_json_columns_roundtrip(tmp_path):
    shape, sp = (6, 60, 60), (0.5, 0.5, 3.0)
    a = elliptic_cylinder(empty_volume(shape, sp, centred_origin(shape, sp)), 6.0, 4.0).array.copy()
    a[0] = 0
    vol = Volume(a, sp, centred_origin(shape, sp))
    table = compute_dsca_table(vol, levels={"mid": 0.0})
    text = table.to_csv(tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text() == text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 6 and list(rows[0]) == [c for c, _ in dsca.SLICE_COLUMNS]
    assert rows[0]["area_mm2"] == "0.0" and rows[0]["corrected_area_mm2"] == "" and rows[0]["qc_flags"] == "empty"
    assert float(rows[3]["area_mm2"]) == pytest.approx(table.rows[3].area_mm2)
    doc = json.loads(table.to_json(tmp_path / "t.json"))
    assert doc["slices"][0]["corrected_area_mm2"] is None and doc["slices"][0]["qc_flags"] == ["empty"]
    assert any("Bolender" in c for c in doc["stenosis_scheme"]["citations"])
    assert doc["levels"][0]["level"] == "mid"
    cols = table.as_columns()
    assert set(cols) == {c for c, _ in dsca.SLICE_COLUMNS} and all(len(v) == 6 for v in cols.values())
    lv = list(csv.DictReader(io.StringIO(table.levels_to_csv())))
    assert lv[0]["level"] == "mid" and int(lv[0]["slice_index"]) in (2, 3)


# ---------------------------------------------------------------------------- stenosis categories
def test_default_stenosis_boundaries():
    s = stenosis.DEFAULT_SCHEME
    assert s.classify(74.999) == "absolute stenosis"
    assert s.classify(75.0) == "relative stenosis"
    assert s.classify(99.999) == "relative stenosis"
    assert s.classify(100.0) == "no stenosis"
    assert s.classify(0.0) == s.classify(float("nan")) == s.classify(None) == stenosis.NOT_APPLICABLE
    assert stenosis.classify_dsca(50.0) == "absolute stenosis"


def test_other_schemes_and_custom():
    assert stenosis.classify_dsca(69.99, "steurer2011") == "stenosis"
    assert stenosis.classify_dsca(70.0, "steurer2011") == "no stenosis"
    assert stenosis.classify_dsca(99.0, "hamanishi1994") == "stenosis"
    assert stenosis.classify_dsca(100.0, "hamanishi1994") == "no stenosis"
    for sch in stenosis.SCHEMES.values():
        assert sch.citations and all(len(c) > 40 for c in sch.citations)
    custom = stenosis.make_scheme({"moderate": 80, "severe": 50})
    assert [c.label for c in custom.criteria] == ["severe", "moderate"]
    assert custom.classify(49) == "severe" and custom.classify(50) == "moderate" and custom.classify(80) == "no stenosis"
    with pytest.raises(InputError):
        stenosis.get_scheme("nonsense")
    with pytest.raises(InputError):
        stenosis.make_scheme({"a": 50, "b": 50})
    with pytest.raises(InputError):
        stenosis.make_scheme({"a": -1})


def test_table_uses_scheme_and_area_basis():
    # one slice of exactly 80 mm² (axial) tilted so that the corrected area is below 75 mm²
    a = np.zeros((1, 20, 20), np.uint8)
    a[0, 2:10, 2:12] = 1  # 80 px of 1 mm², away from the border (a mask touching it is not graded)
    vol = Volume(a, (1.0, 1.0, 2.0))
    assert compute_dsca_table(vol).rows[0].stenosis == "relative stenosis"
    assert compute_dsca_table(vol, scheme="steurer2011").rows[0].stenosis == "no stenosis"
    custom = stenosis.make_scheme({"narrow": 90})
    assert compute_dsca_table(vol, scheme=custom).rows[0].stenosis == "narrow"
    with pytest.raises(InputError):
        compute_dsca_table(vol, stenosis_area="oblique")


# ---------------------------------------------------------------------------- the procedural phantom (exact truth)
@pytest.mark.parametrize("preset", ["normal", "central-stenosis"])
@pytest.mark.parametrize("gantry_tilt", [False, True])
def test_phantom_axial_stack_against_exact_dsca(preset, gantry_tilt):
    """Clinical axial grid (0.6875 mm pixels, 4 mm slices) of the rasterised phantom sac vs its analytic areas."""
    from skimage.measure import perimeter

    from spinemorph.phantom import make_phantom

    ph = make_phantom(preset=preset, seed=0)
    grid = ph.axial_grid(mode="cover", slice_thickness_mm=4.0, gantry_tilt=gantry_tilt)
    mask = ph.rasterize_labels(grid, kind="dural_sac")
    truth = ph.truth.slice_table(grid)
    l45 = ph.truth.canal_point_lps(0.0)
    table = compute_dsca_table(mask, levels={"L4-5": l45})
    px = grid.spacing_mm[0]
    n_cyl = 0
    for r, t in zip(table.rows, truth):
        assert r.position_mm == pytest.approx(t["position_mm"], abs=1e-6)
        # axial DSCA: pixel-centre raster error bounded by half a pixel along the outline
        bound = 0.5 * px * perimeter(mask.array[r.slice_index] > 0) * px
        assert abs(r.area_mm2 - t["dsca_axial_mm2"]) <= bound, (r.slice_index, r.area_mm2, t["dsca_axial_mm2"], bound)
        assert r.tilt_deg == pytest.approx(t["angle_to_canal_deg"], abs=2.5)
        cos_true = math.cos(math.radians(t["angle_to_canal_deg"]))
        assert r.corrected_area_mm2 == pytest.approx(r.area_mm2 * cos_true, rel=0.015)
        # away from the indentations the sac is a cylinder: area × cos θ is its exact perpendicular area
        unindented = ph.truth.sac_area_unindented_mm2
        if abs(t["dsca_perpendicular_mm2"] - unindented) < 1e-6 and abs(t["dsca_axial_mm2"] * cos_true - unindented) < 1e-6:
            n_cyl += 1
            assert r.corrected_area_mm2 == pytest.approx(t["dsca_perpendicular_mm2"], rel=0.02)
    assert n_cyl >= len(truth) // 2
    (lv,) = table.levels
    assert lv.slice_index >= 0 and lv.distance_mm <= grid.spacing_mm[2] / 2 + 1e-6
    exact_at_disc = truth[lv.slice_index]["dsca_axial_mm2"]
    if preset == "normal":
        assert lv.stenosis == "no stenosis" and exact_at_disc > 100
    else:
        assert exact_at_disc < 100 and lv.stenosis in ("relative stenosis", "absolute stenosis")
        assert min(table.areas_mm2()[table.areas_mm2() > 0]) < 100


def test_phantom_fine_grid_converges_to_exact_areas():
    """On 0.1 mm pixels the raster areas of the stenotic sac are within 1 % of the analytic axial areas."""
    from spinemorph.phantom import make_phantom

    ph = make_phantom(preset="central-stenosis", seed=0)
    grid = ph.axial_grid(mode="cover", slice_thickness_mm=4.0, pixel_mm=0.1, size=600, center_y_mm=5.0)
    table = compute_dsca_table(ph.rasterize_labels(grid, kind="dural_sac"))
    truth = ph.truth.slice_table(grid)
    for r, t in zip(table.rows, truth):
        assert dsca.FLAG_BORDER not in r.qc_flags
        assert r.area_mm2 == pytest.approx(t["dsca_axial_mm2"], rel=0.01)


# ---------------------------------------------------------------------------- real SPIDER masks
@pytest.mark.parametrize("case", ["18_t2_SPACE", "65_t2_SPACE"])
def test_real_spider_canal_masks_give_plausible_dsca(spider_root, case):
    """Manual canal masks of real 3D T2 SPACE series (PIR sagittal → resliced; LPS axial → as acquired):
    physiological DSCA ranges, the L4-5 disc centroid maps onto a slice, corrected ≤ axial area."""
    from DuralSacSegLib.segment import recompute_table

    from spinemorph import spider

    series = spider.get_series(case)
    labels = spider.load_mask(case)
    canal = labels.with_array((labels.array == series.canal_label).astype(np.uint8))
    levels = label_centroids_lps(labels, {series.l4l5_disc: "L4-5"})
    table = recompute_table(canal, levels=levels)
    areas = np.array([r.area_mm2 for r in table.nonempty_rows()])
    assert len(areas) > 100
    assert 100.0 < np.median(areas) < 350.0  # adult lumbar dural sac, 120-180 mm² typical at the discs
    (lv,) = table.levels
    assert lv.slice_index >= 0 and lv.distance_mm < 1.0
    assert 30.0 < lv.area_mm2 < 400.0 and 8.0 < lv.lr_diameter_mm < 30.0 and 5.0 < lv.ap_diameter_mm < 25.0
    corr = table.corrected_areas_mm2()
    ok = np.isfinite(corr)
    assert np.all(corr[ok] <= table.areas_mm2()[ok] + 1e-9)
