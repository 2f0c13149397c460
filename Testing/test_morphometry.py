"""FORAMEN3D morphometry: foraminal height / width / area, posterior disc height and flags against exact geometry.

The box phantom built here has L4, L4-5 disc and L5 made of axis-aligned boxes in an anatomical frame (x left,
y posterior, z superior), rotated and placed in LPS and rasterised with 2×2×2 supersampling on grids of any
orientation. Its foramen (lateral view, any slab through the pedicles) is the polygon

    (17, -5) -> (y_sap, -5) -> (y_sap, sap_top) -> (31, sap_top) -> (31, roof) -> (17, roof)

(y, z in mm), so height = roof + 5, width = y_sap - 17 (corner (17, 5) to the SAP front face) and
area = (y_sap - 17) * (roof + 5) + (31 - y_sap) * (roof - sap_top).

The posterior rims of the bodies at the disc (L4 posteroinferior, L5 posterosuperior, along their whole width) are
rounded with radius ``BODY_RIM_RADIUS_MM`` (r), as on real bodies, and the disc fills what the rounding removes (the
annulus attaches at the rim): the union of L4, disc and L5 (the foramen outline) is the same polygon, so height and
area stay exact. The L4 posterior wall meets the disc on the foramen outline somewhere between z = 5 (the sharp corner
of the endplate and wall lines) and z = 5 + r (the arc's tangent point, where the disc sliver ends); every SAP front
face rises at least to 5 + r, so the width from any point of that stretch of the wall y = 17 is y_sap - 17 (exact).
The 45° point of a rounded corner (the posterior disc height's corner) is the arc point nearest the sharp corner:
r (1 - 1/sqrt 2) inside it along both y and z, so the posterior disc height is 10 + 2 r (1 - 1/sqrt 2).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from FORAMEN3DLib.landmarks import build_frame
from FORAMEN3DLib.morphometry import (
    FLAG_TEXT,
    Thresholds,
    area_from_outline,
    flags_for,
    height_from_points,
    measure_foramen,
    measure_from_points,
)

from spinemorph.errors import InputError
from spinemorph.volume import Volume, resample_like

#: radius of the rounded posterior rims of the box phantom's bodies at the disc (mm; real rims: ~1.5-3 mm)
BODY_RIM_RADIUS_MM = 1.5
#: the 45° point of a rim rounded with radius r lies r (1 - 1/sqrt 2) inside the sharp corner along y and along z
RIM_45_INSET_MM = BODY_RIM_RADIUS_MM * (1.0 - 1.0 / np.sqrt(2.0))
#: exact 45° corner points (y, z) of the box phantom: L4 posteroinferior, L5 posterosuperior; posterior disc height
PDH_CORNERS_YZ = np.array([[17.0 - RIM_45_INSET_MM, 5.0 + RIM_45_INSET_MM], [17.0 - RIM_45_INSET_MM, -5.0 - RIM_45_INSET_MM]])
PDH_TRUTH_MM = 10.0 + 2.0 * RIM_45_INSET_MM


@dataclasses.dataclass
class BoxSide:
    roof_z_mm: float = 14.0  # inferior border of the L4 pedicle
    sap_front_y_mm: float = 26.0  # anterior face of the L5 SAP
    sap_top_z_mm: float = 8.0

    @property
    def height_mm(self):
        return self.roof_z_mm + 5.0

    @property
    def width_mm(self):
        # the L4 corner of the width lies on the wall y = 17 at z in [5, 5 + r], all below the SAP top (checked)
        assert self.sap_top_z_mm >= 5.0 + BODY_RIM_RADIUS_MM
        return self.sap_front_y_mm - 17.0

    @property
    def area_mm2(self):
        return (self.sap_front_y_mm - 17.0) * (self.roof_z_mm + 5.0) + (31.0 - self.sap_front_y_mm) * (
            self.roof_z_mm - self.sap_top_z_mm
        )


def _boxes(left: BoxSide, right: BoxSide):
    """(label, (x0, x1, y0, y1, z0, z1)) in the anatomical frame (mm)."""
    b = [
        (1, (-22, 22, -17, 17, 5, 32)),  # L4 body
        (2, (-22, 22, -17, 17, -5, 5)),  # disc
        (3, (-22, 22, -17, 17, -32, -5)),  # L5 body
        (1, (-18, 18, 31, 36, 14, 28)),  # L4 lamina
        (1, (-3, 3, 36, 58, 16, 26)),  # L4 spinous process
        (3, (-18, 18, 31, 36, -24, -12)),  # L5 lamina
        (3, (-3, 3, 36, 58, -22, -13)),  # L5 spinous process
    ]
    for sgn, sd in ((1, left), (-1, right)):
        x0, x1 = sorted((sgn * 10.0, sgn * 18.0))
        b += [
            (1, (x0, x1, 17, 36, sd.roof_z_mm, 28)),  # L4 pedicle (+ arch root)
            (1, (x0, x1, 31, 36, -8, 28)),  # L4 inferior articular process
            (3, (x0, x1, 17, 31, -24, -5)),  # L5 pedicle
            (3, (x0, x1, sd.sap_front_y_mm, 31, -24, sd.sap_top_z_mm)),  # L5 superior articular process
        ]
    return b


def _rotation(deg_xyz):
    ax, ay, az = np.deg2rad(deg_xyz)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _overlap_1d(edges: np.ndarray, a: float, b: float) -> np.ndarray:
    """Fraction of each cell [edges[i], edges[i+1]] inside [a, b]."""
    lo = np.clip(edges[:-1], a, b)
    hi = np.clip(edges[1:], a, b)
    return (hi - lo) / np.diff(edges)


def _rim_cut_fraction(y_edges: np.ndarray, z_edges: np.ndarray, z_plate: float, sz: float, r: float, n: int = 48):
    """Fraction of each (z, y) cell inside the corner cut of a rim rounded with radius ``r``: the square
    [17 - r, 17] x (between the endplate ``z_plate`` and ``z_plate + sz r``) less the quarter disc of radius r about
    (17 - r, z_plate + sz r); ``sz`` +1 for the L4 inferior rim (the body lies above), -1 for the L5 superior rim.
    Midpoint rule with n x n points per cell (only cells touching the square are sampled)."""
    out = np.zeros((len(z_edges) - 1, len(y_edges) - 1))
    if r <= 0:
        return out
    cy, cz = 17.0 - r, z_plate + sz * r
    z_lo, z_hi = sorted((z_plate, cz))
    jy = np.flatnonzero((y_edges[1:] > cy) & (y_edges[:-1] < 17.0))
    iz = np.flatnonzero((z_edges[1:] > z_lo) & (z_edges[:-1] < z_hi))
    t = (np.arange(n) + 0.5) / n
    for i in iz:
        zz = z_edges[i] + t * (z_edges[i + 1] - z_edges[i])
        for j in jy:
            yy = y_edges[j] + t * (y_edges[j + 1] - y_edges[j])
            Y, Z = np.meshgrid(yy, zz)
            cut = (Y >= cy) & (Y <= 17.0) & (Z >= z_lo) & (Z <= z_hi) & ((Y - cy) ** 2 + (Z - cz) ** 2 > r * r)
            out[i, j] = cut.mean()
    return out


def box_phantom(left=None, right=None, rot_deg=(0, 0, 0), center=(5.0, -3.0, 12.0), spacing=0.6, direction=None, margin=4.0):
    """Rasterise the box phantom on a grid of any orientation.

    Exact partial-volume fractions of every label are computed on a fine (0.3 mm) grid aligned with the boxes
    (separable 1D overlaps; the rounded rim cuts by 48 x 48 point sampling per cell), placed in LPS with rotation ``rot_deg`` and ``center``, linearly resampled
    (SimpleITK) onto the target grid, and each voxel gets the label of largest fraction.
    """
    left, right = left or BoxSide(), right or BoxSide()
    R = _rotation(rot_deg)
    t = np.asarray(center, float)
    boxes = _boxes(left, right)
    fine = 0.3
    lo_a = np.array([-26.0, -21.0, -36.0])
    hi_a = np.array([26.0, 62.0, 36.0])
    edges = [np.arange(lo_a[c], hi_a[c] + fine / 2, fine) for c in range(3)]
    fr = np.zeros((4, len(edges[2]) - 1, len(edges[1]) - 1, len(edges[0]) - 1), np.float32)
    for val, (x0, x1, y0, y1, z0, z1) in boxes:
        ox, oy, oz = _overlap_1d(edges[0], x0, x1), _overlap_1d(edges[1], y0, y1), _overlap_1d(edges[2], z0, z1)
        fr[val] += (oz[:, None, None] * oy[None, :, None] * ox[None, None, :]).astype(np.float32)
    # rounded posterior rims at the disc: the cut leaves the body and joins the disc (no other box of L4 / L5 reaches
    # into the cut squares, so the subtraction is exact)
    ox = _overlap_1d(edges[0], -22.0, 22.0)
    for val, z_plate, sz in ((1, 5.0, 1.0), (3, -5.0, -1.0)):
        cut = _rim_cut_fraction(edges[1], edges[2], z_plate, sz, BODY_RIM_RADIUS_MM)
        cut3 = (cut[:, :, None] * ox[None, None, :]).astype(np.float32)
        fr[val] -= cut3
        fr[2] += cut3
    fr = np.clip(fr, 0.0, 1.0)
    D = np.eye(3) if direction is None else np.asarray(direction, float)
    corners = np.array([[x, y, z] for _, bx in boxes for x in bx[:2] for y in bx[2:4] for z in bx[4:]])
    g = (corners @ R.T + t) @ D
    lo, hi = g.min(0) - margin - np.array([0.137, 0.291, 0.213]), g.max(0) + margin  # grid not aligned to the boxes
    n = np.ceil((hi - lo) / spacing).astype(int) + 1
    target = Volume(np.zeros(n[::-1], np.uint8), (spacing,) * 3, D @ lo, D)
    src_origin = R @ (lo_a + fine / 2) + t
    out = []
    for v in (1, 2, 3):
        src = Volume(fr[v], (fine,) * 3, src_origin, R)
        out.append(resample_like(src, target, "linear").array)
    stack = np.stack(out)
    lab = np.where(stack.max(0) >= 1.0 - stack.sum(0), stack.argmax(0) + 1, 0)
    return target.with_array(lab.astype(np.uint8)), R, t


#: posterior disc height on the procedural phantom (spinemorph.phantom), whose body corners are still sharp: the 45°
#: bone point of a raster-rounded sharp corner lies up to ~0.35 mm inside the bone per corner (measured: 0.15-0.70 mm
#: on its four grids). The box phantom here has rounded rims and exact 45° points: 0.5 mm.
PDH_SHARP_CORNER_TOL_MM = 0.75
PIR = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float)  # columns: i -> P, j -> I, k -> R (SPIDER SPACE)


def _check(res, side: str, truth: BoxSide, area_rel: float = 0.05):
    r = res.sides[side]
    assert abs(r.height.value - truth.height_mm) <= 0.5, (side, r.height.value, truth.height_mm)
    assert abs(r.width.value - truth.width_mm) <= 0.5, (side, r.width.value, truth.width_mm)
    assert abs(r.area.value - truth.area_mm2) <= area_rel * truth.area_mm2, (side, r.area.value, truth.area_mm2)


def _check_pdh_corners(res, R, t, tol_mm: float = 0.3):
    """The posterior disc height's corner points lie within ``tol_mm`` of the exact 45° points of the rounded rims
    (in the box frame: y, z), on the midline (|x| small)."""
    p = (np.asarray(res.posterior_disc_height.points_lps) - t) @ R
    err = np.linalg.norm(p[:, 1:] - PDH_CORNERS_YZ, axis=1)
    assert np.all(err <= tol_mm), (p, PDH_CORNERS_YZ, err)
    assert np.all(np.abs(p[:, 0]) <= 3.0), p


@pytest.fixture(scope="module")
def normal_lps():
    vol, R, t = box_phantom(right=BoxSide(sap_front_y_mm=24.0), spacing=0.4)
    return vol, R, t, measure_foramen(vol)


def test_box_phantom_axis_aligned(normal_lps):
    vol, R, t, res = normal_lps
    _check(res, "left", BoxSide())
    _check(res, "right", BoxSide(sap_front_y_mm=24.0))
    # posterior disc height: the 45° points of the rounded rims (the bone point nearest the wall / endplate
    # intersection), r (1 - 1/sqrt 2) inside the sharp corners (17, 5) and (17, -5)
    assert abs(res.posterior_disc_height.value - PDH_TRUTH_MM) <= 0.5
    _check_pdh_corners(res, R, t)
    # frame: x' = patient left, y' = posterior, z' = superior
    ax = res.landmarks.frame.axes_lps
    assert np.allclose(ax, np.eye(3), atol=0.03)


def test_points_are_on_the_anatomy(normal_lps):
    vol, R, t, res = normal_lps
    r = res.sides["left"]
    to_anat = lambda p: (np.asarray(p) - t) @ R  # noqa: E731
    h = to_anat(r.height.points_lps)
    # on a slab at the level of the left pedicle (x 10..18), at most the 2 mm entrance zone medial of it
    assert np.all((h[:, 0] >= 8.0 - 1e-6) & (h[:, 0] <= 18.0))
    assert abs(h[:, 2].max() - 14.0) <= 0.5 and abs(h[:, 2].min() + 5.0) <= 0.5
    w = to_anat(r.width.points_lps)
    corner = w[np.argmin(w[:, 1])]
    assert np.allclose(corner[1:], [17.0, 5.0], atol=0.6)
    assert abs(w[:, 1].max() - 26.0) <= 0.5
    # right side lies at negative x (patient right)
    assert np.all(to_anat(res.sides["right"].height.points_lps)[:, 0] < -7.9)


def test_measure_from_points_reproduces_and_follows_edits(normal_lps):
    vol, R, t, res = normal_lps
    r = res.sides["left"]
    axis = res.landmarks.frame.lateral_axis_lps
    m = measure_from_points(r.height.points_lps, r.width.points_lps, r.area.points_lps, axis)
    assert m["height_mm"] == pytest.approx(r.height.value, abs=1e-6)
    assert m["width_mm"] == pytest.approx(r.width.value, abs=1e-6)
    assert m["area_mm2"] == pytest.approx(r.area.value, rel=1e-6)
    assert not m["flagged"]
    # a user drags the L5 end point of the height 6 mm up along the canal axis -> height shrinks by 6 mm, flag on
    zax = res.landmarks.frame.axes_lps[:, 2]
    pts = np.array(r.height.points_lps)
    low = int(np.argmin(pts @ zax))
    pts[low] += 6.0 * zax
    m2 = measure_from_points(pts, r.width.points_lps, r.area.points_lps, axis)
    assert m2["height_mm"] == pytest.approx(r.height.value - 6.0, abs=0.01)  # the height line is ~along z
    assert m2["flagged"] and m2["flag"] == FLAG_TEXT


def test_area_from_outline_known_polygons():
    sq = np.array([[0, 0, 0], [0, 10, 0], [0, 10, 5], [0, 0, 5]], float)  # 10 × 5 in the y-z plane
    assert area_from_outline(sq) == pytest.approx(50.0)
    assert area_from_outline(sq, view_axis_lps=[1, 0, 0]) == pytest.approx(50.0)
    assert area_from_outline(sq[::-1], view_axis_lps=[1, 0, 0]) == pytest.approx(50.0)
    # tilted 30° about z: seen along x the projected area is cos(30°) × 50
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    tilted = sq @ rz.T
    assert area_from_outline(tilted) == pytest.approx(50.0)
    assert area_from_outline(tilted, view_axis_lps=[1, 0, 0]) == pytest.approx(50.0 * c)
    assert height_from_points([[0, 0, 0], [3, 4, 0]]) == pytest.approx(5.0)


def test_flags_thresholds_configurable():
    assert flags_for(15.0, 9.0)["side"] == FLAG_TEXT  # height <= 15
    assert flags_for(15.1, 8.0)["side"] == FLAG_TEXT  # width <= 8
    assert flags_for(15.1, 8.1)["side"] == ""
    t = Thresholds(height_mm=12.0, width_mm=5.0)
    assert flags_for(14.0, 7.0, t)["side"] == ""


def test_stenotic_phantom_tilted_pir_grid():
    """Foraminal stenosis (low pedicle, SAP overgrowth), lordotic tilt + rotation, SPIDER-like PIR grid."""
    left = BoxSide(roof_z_mm=9.0, sap_front_y_mm=23.0, sap_top_z_mm=6.5)
    right = BoxSide(roof_z_mm=11.0, sap_front_y_mm=22.5, sap_top_z_mm=8.0)
    vol, R, t = box_phantom(left, right, rot_deg=(14.0, -6.0, 9.0), direction=PIR, spacing=0.55)
    assert vol.axis_codes() == "PIR"
    t0 = time.perf_counter()
    res = measure_foramen(vol)
    elapsed = time.perf_counter() - t0
    # the lateral view is the union across a 2 mm slab (as a reader does on fragmented masks): with the frame
    # recovered to within a few degrees of this rotated phantom, every boundary moves up to ~0.2 mm into the foramen,
    # which on this small (104 mm²) stenotic foramen costs about 5-6 % of the area (docs/foramen_method.md, section 6)
    _check(res, "left", left, area_rel=0.065)
    _check(res, "right", right, area_rel=0.065)
    assert res.sides["left"].area.value < left.area_mm2  # the bias has a known sign
    assert res.sides["left"].flagged and res.sides["right"].flagged
    assert abs(res.posterior_disc_height.value - PDH_TRUTH_MM) <= 0.5
    _check_pdh_corners(res, R, t)
    # frame recovers the rotation: z' = R e_z, y' = R e_y
    ax = res.landmarks.frame.axes_lps
    assert np.dot(ax[:, 2], R[:, 2]) > 0.999 and np.dot(ax[:, 1], R[:, 1]) > 0.995
    assert elapsed < 20.0  # the offset search measures up to ~45 slabs per side (a few seconds on a quiet core)


def test_rim_cut_area_is_exact():
    """The rounded-rim cut of the box phantom has the analytic area r² (1 - π/4) in every (y, z) section."""
    fine = 0.3
    y_edges = np.arange(-21.0, 62.0 + fine / 2, fine)
    z_edges = np.arange(-36.0, 36.0 + fine / 2, fine)
    for z_plate, sz in ((5.0, 1.0), (-5.0, -1.0)):
        cut = _rim_cut_fraction(y_edges, z_edges, z_plate, sz, BODY_RIM_RADIUS_MM)
        area = cut.sum() * fine * fine
        assert area == pytest.approx(BODY_RIM_RADIUS_MM**2 * (1.0 - np.pi / 4.0), rel=2e-3)
    # the 45° inset: the arc point nearest the sharp corner (17, 5) lies r (1 - 1/sqrt 2) inside it along y and z
    r = BODY_RIM_RADIUS_MM
    ang = np.linspace(-np.pi / 2, 0.0, 90001)  # the quarter arc about (17 - r, 5 + r) from the endplate to the wall
    arc = np.stack([17.0 - r + r * np.cos(ang), 5.0 + r + r * np.sin(ang)], axis=1)
    nearest = arc[np.argmin(np.linalg.norm(arc - [17.0, 5.0], axis=1))]
    assert np.allclose(nearest, PDH_CORNERS_YZ[0], atol=1e-4)


@pytest.mark.parametrize(
    "rot_deg,direction,spacing",
    [((-8.0, 4.0, -12.0), PIR, 0.8), ((5.0, 10.0, -20.0), _rotation((8.0, -5.0, 20.0)), 0.5)],
)
def test_rounded_rim_45_degree_points(rot_deg, direction, spacing):
    """On rotated SPIDER-like (PIR 0.8 mm) and oblique (0.5 mm) grids: the posterior disc height within 0.5 mm of
    the exact 10 + 2 r (1 - 1/sqrt 2) and each 45° corner point within 0.3 mm of the analytic point; foramen height /
    width / area of both sides exact as without the rounding."""
    vol, R, t = box_phantom(rot_deg=rot_deg, direction=direction, spacing=spacing)
    res = measure_foramen(vol)
    assert abs(res.posterior_disc_height.value - PDH_TRUTH_MM) <= 0.5
    _check_pdh_corners(res, R, t)
    _check(res, "left", BoxSide())
    _check(res, "right", BoxSide())


def test_bad_labels_raise_one_line_errors():
    vol, _, _ = box_phantom(spacing=1.0)
    no_disc = vol.with_array(np.where(vol.array == 2, 0, vol.array).astype(np.uint8))
    with pytest.raises(InputError, match="label 2"):
        measure_foramen(no_disc)
    swapped = vol.with_array(np.choose(vol.array, [0, 3, 2, 1]).astype(np.uint8))
    with pytest.raises(InputError, match="below"):
        measure_foramen(swapped)
    empty = vol.with_array(np.zeros_like(vol.array))
    with pytest.raises(InputError, match="none of the labels"):
        build_frame(empty)


# ------------------------------------------------------------------------------------- spinemorph.phantom (exact)
def _phantom_grid(ph, spacing, direction, size_mm=(100.0, 100.0, 70.0), offset=(0.0, 0.0, 0.0)):
    """Grid around L4-5 of the phantom (extent along the grid axes i, j, k in mm)."""
    D = np.asarray(direction, float)
    c = ph.canal_to_lps(np.array([0.0, 12.0, 0.0])) + np.asarray(offset)
    n = np.array([int(s / spacing) for s in size_mm])
    return Volume(np.zeros(n[::-1], np.uint8), (spacing,) * 3, c - D @ (n * spacing / 2), D)


def _oblique():
    return _rotation((8.0, -5.0, 20.0))


PHANTOM_CASES = [
    # (preset, tilt_deg, grid direction, spacing)
    ("normal", None, PIR, 0.8),  # the SPACE acquisition: 0.8 mm sagittal PIR, lordotic tilt 15°
    ("foraminal-stenosis", None, PIR, 0.8),
    ("foraminal-stenosis", 30.0, np.eye(3), 0.5),  # strongly tilted, axial LPS grid
    ("normal", -10.0, _oblique(), 0.6),  # oblique grid
]


@pytest.mark.parametrize("preset,tilt,direction,spacing", PHANTOM_CASES)
def test_phantom_acceptance(preset, tilt, direction, spacing):
    """Height / width within 0.5 mm and area within 5 % of the phantom's exact values, both sides."""
    from spinemorph import phantom
    params = phantom.preset_params(preset) if tilt is None else phantom.preset_params(preset, tilt_deg=tilt)
    ph = phantom.make_phantom(params=params)
    labels = ph.rasterize_labels(_phantom_grid(ph, spacing, direction), kind="foramen")
    res = measure_foramen(labels)
    for side in ("left", "right"):
        truth, r = ph.truth.foramen[side], res.sides[side]
        assert abs(r.height.value - truth.height_mm) <= 0.5, (side, r.height.value, truth.height_mm)
        assert abs(r.width.value - truth.width_mm) <= 0.5, (side, r.width.value, truth.width_mm)
        assert abs(r.area.value - truth.area_mm2) <= 0.05 * truth.area_mm2, (side, r.area.value, truth.area_mm2)
        # defining points: height end points on the roof / floor levels, width from the L4 corner to the SAP face
        h = ph.lps_to_canal(r.height.points_lps)
        th = ph.lps_to_canal(truth.height_points_lps)
        assert abs(h[:, 2].max() - th[0, 2]) <= 0.5 and abs(h[:, 2].min() - th[1, 2]) <= 0.5
        w = ph.lps_to_canal(r.width.points_lps)
        tw = ph.lps_to_canal(truth.width_points_lps)
        assert np.linalg.norm(w[0, 1:] - tw[0, 1:]) <= 0.6  # corner (y', z')
        assert abs(w[1, 1] - tw[1, 1]) <= 0.5  # SAP face y'
        assert np.sign(h[0, 0]) == (1 if side == "left" else -1)
        assert r.flagged == (truth.height_mm <= 15.0 or truth.width_mm <= 8.0)
    # sharp analytic body corners, rounded by the raster: see test_box_phantom_axis_aligned
    assert abs(res.posterior_disc_height.value - ph.truth.posterior_disc_height_mm) <= PDH_SHARP_CORNER_TOL_MM


# ------------------------------------------------------------------------------------------- real SPIDER masks
@pytest.mark.parametrize("case", ["18", "50", "98", "65"])
def test_spider_space_masks_plausible(spider_root, case):
    """Every side of the real SPACE masks: a value outside the plausibility band is under review and never flagged;
    a flagged side has all its values ok."""
    from FORAMEN3DLib.morphometry import PLAUSIBLE

    from spinemorph import spider

    name = f"{case}_t2_SPACE"
    labels = spider.remap_labels(spider.load_mask(name), name, target="foramen")
    res = measure_foramen(labels)
    for side in ("left", "right"):
        r = res.sides[side]
        for m in (r.height, r.width, r.area):
            lo, hi = PLAUSIBLE[m.metric]
            if not lo <= m.value <= hi:
                assert m.qc == "review" and m.flag == "", (case, side, m.metric, m.value)
            if m.qc == "review":
                assert m.flag == ""
        if r.flagged:
            assert (r.height.flag and r.height.qc == "ok") or (r.width.flag and r.width.qc == "ok")
        assert 10.0 <= r.height.value <= 30.0, (case, side, r.height.value)
        assert 4.0 <= r.width.value <= 16.0, (case, side, r.width.value)
        assert 100.0 <= r.area.value <= 320.0, (case, side, r.area.value)
    assert 1.0 <= res.posterior_disc_height.value <= 16.0
    # the frame: z' points superior, y' posterior in patient coordinates
    ax = res.landmarks.frame.axes_lps
    assert ax[2, 2] > 0.8 and ax[1, 1] > 0.8 and ax[0, 0] > 0.8


# ------------------------------------------------------------------------------------------------ command line
def test_cli_measure_label_map_and_image(tmp_path, monkeypatch):
    import json

    from spinemorph.app.cli import main
    from spinemorph.volume import write_volume

    vol, _, _ = box_phantom(spacing=0.7)
    path = tmp_path / "case7.nrrd"
    write_volume(vol, path)
    out = tmp_path / "out"
    assert main(["foramen", "measure", str(path), "--out", str(out)]) == 0
    doc = json.loads((out / "measurements.json").read_text())
    assert doc["coordinate_system"] == "LPS" and doc["case"] == "case7"
    heights = [m for m in doc["measurements"] if m["metric"] == "foraminal_height"]
    assert len(heights) == 2 and all(len(m["points_lps"]) == 2 for m in heights)
    assert abs(heights[0]["value"] - 19.0) <= 0.5
    rows = (out / "measurements.csv").read_text().splitlines()
    assert rows[0] == "Case,Metric,Side,Value,Unit,Flag,QC" and len(rows) == 8
    for name in ("report.png", "meshes/L4.stl", "meshes/L4-5_disc.vtp", "meshes/L5.stl"):
        assert (out / name).stat().st_size > 1000
    assert 0.95 < doc["meshes"]["L4"]["volume_ratio"] < 1.02
    assert main(["foramen", "measure", str(path), "--out", str(out)]) == 1  # no --overwrite
    # a float image with --labels-only is refused with a one-line error
    img = vol.with_array(vol.array.astype(np.float32) * 37.5 + 3.3)
    ipath = tmp_path / "image.nrrd"
    write_volume(img, ipath)
    assert main(["foramen", "measure", str(ipath), "--out", str(tmp_path / "o2"), "--labels-only"]) == 1
    # an image goes through FORAMEN3DLib.segment3d.segment_volume (stubbed here with the known labels)
    import FORAMEN3DLib.segment3d as seg3d

    class _Seg:
        labels = vol

    calls = []
    monkeypatch.setattr(seg3d, "segment_volume", lambda image, model="default", device="auto": calls.append((model, device)) or _Seg())
    assert main(["foramen", "measure", str(ipath), "--out", str(tmp_path / "o3"), "--device", "cpu", "--no-meshes"]) == 0
    assert calls == [("default", "cpu")]
    assert (tmp_path / "o3" / "labels.nrrd").is_file()
    # a segmentation that cannot be measured (no L5): a one-line error and no file at all (not even labels.nrrd)
    class _NoL5:
        labels = vol.with_array(np.where(vol.array == 3, 0, vol.array).astype(np.uint8))

    monkeypatch.setattr(seg3d, "segment_volume", lambda image, model="default", device="auto": _NoL5())
    o4 = tmp_path / "o4"
    assert main(["foramen", "measure", str(ipath), "--out", str(o4), "--device", "cpu"]) == 1
    assert not o4.exists() or not any(o4.rglob("*"))


def test_cli_measure_report_failure_leaves_no_output(tmp_path, monkeypatch):
    """The report PNG is drawn before any file is written: if drawing fails, no labels / meshes / measurements stay."""
    import FORAMEN3DLib.report3d as report3d
    import FORAMEN3DLib.segment3d as seg3d

    from spinemorph.app.cli import main
    from spinemorph.errors import SpineMorphError
    from spinemorph.volume import write_volume

    vol, _, _ = box_phantom(spacing=0.7)
    img = vol.with_array(vol.array.astype(np.float32) * 37.5 + 3.3)
    ipath = tmp_path / "image.nrrd"
    write_volume(img, ipath)

    class _Seg:
        labels = vol

    def broken_draw(*args, **kwargs):
        raise SpineMorphError("drawing failed")

    monkeypatch.setattr(seg3d, "segment_volume", lambda image, model="default", device="auto": _Seg())
    monkeypatch.setattr(report3d, "_draw_report", broken_draw)
    out = tmp_path / "out"
    assert main(["foramen", "measure", str(ipath), "--out", str(out), "--device", "cpu"]) == 1
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


# ------------------------------------------------------------------------------ one side without a posterior arch
def _without_arch(vol, R, t, sides=("left",), label=3):
    """The box phantom with the posterior elements of ``label`` removed on ``sides`` (anatomical x > 8 mm on the left,
    < -8 mm on the right, behind the body y > 17 mm): that side has no pedicle."""
    k, j, i = np.indices(vol.array.shape)
    anat = (vol.index_to_lps(np.stack([i, j, k], -1)) - t) @ R
    cut = np.zeros(vol.array.shape, bool)
    for side in sides:
        lateral = anat[..., 0] > 8.0 if side == "left" else anat[..., 0] < -8.0
        cut |= lateral & (anat[..., 1] > 17.0)
    return vol.with_array(np.where(cut & (vol.array == label), 0, vol.array).astype(np.uint8))


def test_one_side_without_arch_still_measures_the_other(tmp_path):
    """A side whose L5 pedicle is missing is reported "not measured" with the reason, never flagged; the other side
    keeps its exact values (a surgeon still gets the side that can be read). Neither side → one error naming both."""
    import json

    from FORAMEN3DLib.markup_model import MeasurementState, lateral_view_plane
    from FORAMEN3DLib.morphometry import MIN_ARCH_BALANCE, NOT_MEASURED

    from spinemorph.app.cli import main
    from spinemorph.errors import SpineMorphError
    from spinemorph.volume import write_volume

    right = BoxSide(sap_front_y_mm=24.0)
    vol, R, t = box_phantom(right=right, spacing=0.7)
    res = measure_foramen(_without_arch(vol, R, t))
    left = res.sides["left"]
    assert not left.measured and left.qc_status == NOT_MEASURED and not left.flagged
    assert "left" in left.qc_reasons[0] and "L5" in left.qc_reasons[0]
    assert all(np.isnan(m.value) and m.qc == NOT_MEASURED and not m.flag for m in (left.height, left.width, left.area))
    assert res.sides["right"].measured
    _check(res, "right", right)
    # the other side is measured but under review: the missing arch makes the posterior elements asymmetric, which
    # rotates the canal frame on real masks (Landmarks.arch_balance; the box phantom's frame happens to stay put)
    assert res.landmarks.arch_balance["L5"] < MIN_ARCH_BALANCE <= res.landmarks.arch_balance["L4"]
    assert res.sides["right"].qc_status == "review" and not res.sides["right"].flagged
    assert any("asymmetric posterior elements: L5" in why for why in res.sides["right"].qc_reasons)
    assert abs(res.posterior_disc_height.value - PDH_TRUTH_MM) <= 0.75
    rows = {(r["Metric"], r["Side"]): r for r in res.to_rows("c")}
    assert rows[("foraminal_height", "left")]["Value"] == "" and rows[("foraminal_height", "left")]["QC"] == NOT_MEASURED
    doc = res.to_dict()
    assert doc["sides"]["left"]["qc_status"] == NOT_MEASURED and doc["sides"]["left"]["slab_center_x_mm"] is None
    json.dumps(doc)  # no NaN / array left in the document
    # the Slicer-free panel logic: no markups / lateral view for the unmeasured side, its table rows say why
    state = MeasurementState(res)
    assert {s.side for s in state.markup_specs()} == {"right"}
    assert {r["QC"] for r in state.rows() if r["Side"] == "left"} == {NOT_MEASURED}
    assert "left: not measured" in state.summary_text()
    with pytest.raises(SpineMorphError, match="not measured"):
        state.update_from_ras("left_height", np.zeros((2, 3)))
    with pytest.raises(SpineMorphError, match="not measured"):
        lateral_view_plane(state, "left")
    # the command: exit 0, the CSV / JSON / report written, the console names the side and the reason
    path = tmp_path / "one_side.nrrd"
    write_volume(_without_arch(vol, R, t), path)
    out = tmp_path / "out"
    assert main(["foramen", "measure", str(path), "--out", str(out), "--no-meshes"]) == 0
    csv_rows = (out / "measurements.csv").read_text().splitlines()
    assert any(r.startswith("one_side,foraminal_width,left,,mm,,not measured") for r in csv_rows), csv_rows
    assert (out / "report.png").stat().st_size > 1000
    # the left half of L5 missing altogether: the pedicle search itself finds nothing there (Landmarks.side_errors)
    k, j, i = np.indices(vol.array.shape)
    half = ((vol.index_to_lps(np.stack([i, j, k], -1)) - t) @ R)[..., 0] > 0.5
    res = measure_foramen(vol.with_array(np.where(half & (vol.array == 3), 0, vol.array).astype(np.uint8)))
    assert set(res.landmarks.side_errors) == {"left"} and "no posterior arch found behind the L5 body" in res.landmarks.side_errors["left"]
    assert not res.sides["left"].measured and res.sides["left"].qc_reasons[0] == res.landmarks.side_errors["left"]
    _check(res, "right", right)
    # neither side: one error that names both sides
    with pytest.raises(InputError, match="left.*right"):
        measure_foramen(_without_arch(vol, R, t, sides=("left", "right")))
