"""Trajectory planning (FORAMEN3DLib.planning / skin, ``spinemorph plan``) on exact-geometry phantoms."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from FORAMEN3DLib import planning as P
from FORAMEN3DLib.skin import body_mask, cast_to_skin, skin_surface

from spinemorph.errors import InputError
from spinemorph.volume import Volume, write_volume

# coarse sweep for speed: contains medial 90° and craniocaudal 0°
FAST = dict(medial_angles_deg=tuple(np.arange(20.0, 90.1, 10.0)), craniocaudal_angles_deg=(-20.0, -10.0, 0.0, 10.0, 20.0))
BODY_A_MM, BODY_B_MM = 140.0, 100.0  # body outline: ellipse x²/a² + y²/b² <= 1 (elliptic cylinder along z)


def _grid_volume(array, h, lo):
    return Volume(array, (h, h, h), tuple(np.asarray(lo, float) + h / 2))


def blocks_phantom(gap_mm: float, h: float = 1.0) -> Volume:
    """L4 (z > gap/2) and L5 (z < -gap/2) bone blocks filling x ±50, y -30..50, z ±30; disc in the gap.

    Voxel faces lie exactly at z = ±gap/2 (faces at integer multiples of h; gap/2 must be one), so the free corridor between the
    blocks is a slab of height ``gap_mm`` everywhere; the disc (x ±25, y < 5) fills it in front.
    """
    lo = np.array([-50.0, -30.0, -30.0])
    n = np.round(np.array([100.0, 80.0, 60.0]) / h).astype(int)
    zs, ys, xs = (lo[a] + h / 2 + h * np.arange(n[a]) for a in (2, 1, 0))
    Z, Y, X = np.meshgrid(zs, ys, xs, indexing="ij")
    assert abs(gap_mm / 2 / h - round(gap_mm / 2 / h)) < 1e-9, "gap/2 must lie on a voxel face"
    lab = np.zeros(Z.shape, np.uint8)
    lab[Z - h / 2 >= gap_mm / 2 - 1e-9] = 1
    lab[Z + h / 2 <= -gap_mm / 2 + 1e-9] = 3
    lab[(np.abs(Z) < gap_mm / 2) & (np.abs(X) < 25) & (Y < 5)] = 2
    return _grid_volume(lab, h, lo)


def body_image(h: float = 2.0, half_x: float = 160.0) -> Volume:
    lo = np.array([-half_x, -120.0, -40.0])
    n = np.round(np.array([2 * half_x, 240.0, 80.0]) / h).astype(int)
    zs, ys, xs = (lo[a] + h / 2 + h * np.arange(n[a]) for a in (2, 1, 0))
    Z, Y, X = np.meshgrid(zs, ys, xs, indexing="ij")
    inside = (X / BODY_A_MM) ** 2 + (Y / BODY_B_MM) ** 2 <= 1
    rng = np.random.default_rng(0)
    img = np.where(inside, 300.0, 10.0) + rng.normal(0, 8.0, inside.shape)
    return _grid_volume(img.astype(np.float32), h, lo)


def ellipse_exit(p, u):
    """Exit point of the ray p + t u (t > 0) from the elliptic cylinder x²/a² + y²/b² = 1."""
    a2, b2 = BODY_A_MM**2, BODY_B_MM**2
    A = u[0] ** 2 / a2 + u[1] ** 2 / b2
    B = 2 * (p[0] * u[0] / a2 + p[1] * u[1] / b2)
    C = p[0] ** 2 / a2 + p[1] ** 2 / b2 - 1
    t = (-B + math.sqrt(B * B - 4 * A * C)) / (2 * A)
    return p + t * u


def identity_frame():
    return P.AnatomicalFrame(np.zeros(3), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0]), 1.0)


# ---------------------------------------------------------------------------------------------- angles
def test_angle_conventions_on_known_vectors():
    f = identity_frame()
    t = np.zeros(3)
    cases = [  # entry - target, expected medial (from sagittal), cc, side, lateral-view angle
        ((1, 0, 0), 90.0, 0.0, "left", 0.0),
        ((-1, 0, 0), 90.0, 0.0, "right", 0.0),
        ((0, 1, 0), 0.0, 0.0, "left", 0.0),
        ((1, 1, 0), 45.0, 0.0, "left", 0.0),
        ((-1, math.sqrt(3), 0), 30.0, 0.0, "right", 0.0),
        ((1, 0, 1), 90.0, 45.0, "left", 90.0),
        ((0, 1, -1), 0.0, -45.0, "left", -45.0),
    ]
    for v, medial, cc, side, lat in cases:
        a = P.trajectory_angles(f, np.asarray(v, float), t)
        assert a["medial_angle_deg"] == pytest.approx(medial, abs=1e-9)
        assert a["medial_angle_from_coronal_deg"] == pytest.approx(90.0 - medial, abs=1e-9)
        assert a["craniocaudal_angle_deg"] == pytest.approx(cc, abs=1e-9)
        assert a["lateral_view_angle_deg"] == pytest.approx(lat, abs=1e-9)
        assert a["side"] == side
    # direction_from_angles inverts trajectory_angles in a tilted, shifted frame
    th = math.radians(15)
    g = P.AnatomicalFrame(np.array([3.0, -2, 5]), np.array([1.0, 0, 0]), np.array([0, math.cos(th), math.sin(th)]),
                          np.array([0, -math.sin(th), math.cos(th)]), 1.0)
    for side in ("left", "right"):
        for m in (0.0, 25.0, 61.0, 90.0):
            for c in (-30.0, 0.0, 10.0, 40.0):
                u = P.direction_from_angles(g, side, m, c)
                assert np.linalg.norm(u) == pytest.approx(1.0)
                a = P.trajectory_angles(g, g.origin_lps + 50 * u, g.origin_lps)
                assert a["medial_angle_deg"] == pytest.approx(m, abs=1e-7)
                assert a["craniocaudal_angle_deg"] == pytest.approx(c, abs=1e-7)
                if m > 0:
                    assert a["side"] == side
    # left entry lies at patient left (+LPS x), a caudally directed channel has its entry cranial (+z)
    u = P.direction_from_angles(f, "left", 60, 10)
    assert u[0] > 0 and u[1] > 0 and u[2] > 0


def test_frame_recovers_tilted_rotated_anatomy():
    """Symmetric blocks rotated by known angles: midline normal and disc axis found within 1°."""
    tilt, yaw = math.radians(20.0), math.radians(8.0)
    rx = np.array([[1, 0, 0], [0, math.cos(tilt), -math.sin(tilt)], [0, math.sin(tilt), math.cos(tilt)]])
    rz = np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])
    R = rz @ rx  # columns: anatomical x, y, z in LPS
    h = 1.0
    c = np.arange(-45.0, 45.0, h) + h / 2
    Z, Y, X = np.meshgrid(c, c, c, indexing="ij")
    q = np.stack([X, Y, Z], -1) @ R  # LPS -> anatomical components
    lab = np.zeros(X.shape, np.uint8)
    body = (np.abs(q[..., 0]) < 20) & (np.abs(q[..., 1] + 5) < 15)
    post = (np.abs(q[..., 0]) < 6) & (q[..., 1] > 10) & (q[..., 1] < 30)  # spinous-like posterior element
    lab[(body | post) & (q[..., 2] > 5) & (q[..., 2] < 30)] = 1
    lab[(body | post) & (q[..., 2] < -5) & (q[..., 2] > -30)] = 3
    lab[body & (np.abs(q[..., 2]) <= 5)] = 2
    f = P.anatomical_frame(_grid_volume(lab, h, (-45, -45, -45)))
    for axis, true in ((f.x_axis, R[:, 0]), (f.y_axis, R[:, 1]), (f.z_axis, R[:, 2])):
        assert math.degrees(math.acos(min(1.0, abs(float(axis @ true))))) < 1.0
    assert abs(float((f.origin_lps) @ R[:, 0])) < 0.5  # origin on the mid-sagittal plane
    assert f.symmetry_score > 0.97


# ---------------------------------------------------------------------------------------------- volumes
@pytest.mark.parametrize("direction", ["identity", "PIR"])
def test_cylinder_slab_volume_matches_exact(direction):
    """Cylinder crossing a slab obliquely: exact volume π r² t / cos φ (Cavalieri); sampling within 1.5 %."""
    h = 0.5
    n = 80
    if direction == "identity":
        dmat, sp = np.eye(3), (h, h, h)
    else:  # i -> posterior, j -> inferior, k -> right; anisotropic spacing
        dmat, sp = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float), (h, h, 2 * h)
    idx = np.indices((n, n, n // (2 if direction == "PIR" else 1)))  # i, j, k
    shape_kji = idx.shape[1:][::-1]
    vol0 = Volume(np.zeros(shape_kji, np.uint8), sp, (0, 0, 0), dmat)
    centre = vol0.index_to_lps((np.asarray(vol0.size_ijk) - 1) / 2.0)
    vol0 = Volume(vol0.array, sp, tuple(-centre), dmat)
    kji = np.indices(shape_kji).reshape(3, -1).T
    pts = vol0.index_to_lps(kji[:, ::-1].astype(float))
    thick = 6.0
    slab = (np.abs(pts[:, 2] + 0.0) < thick / 2).reshape(shape_kji)  # LPS z faces at ±3 lie on voxel faces
    lab = vol0.with_array(np.where(slab, 1, 0).astype(np.uint8))
    for phi in (0.0, 20.0, 37.0, 55.0):
        for d in (6.0, 7.5):
            u = np.array([math.sin(math.radians(phi)) * math.cos(0.4), math.sin(math.radians(phi)) * math.sin(0.4), math.cos(math.radians(phi))])
            L = 12.0 / math.cos(math.radians(phi))
            v = P.cylinder_intersection_mm3(lab, -L * u, L * u, d)[1]
            exact = math.pi * (d / 2) ** 2 * thick / math.cos(math.radians(phi))
            assert v == pytest.approx(exact, rel=0.015), (phi, d, v, exact)


def test_cylinder_ignores_labels_other_than_l4_disc_l5():
    """A slab of label 7 crossed by the cylinder gives no volume (it used to be clipped to 3 and counted as L5)."""
    h = 0.5
    lab = np.zeros((60, 40, 40), np.uint8)  # k (z), j, i
    lab[27:33] = 7  # z slab, 3 mm thick, across the cylinder
    lab[:4, :4, :4] = 1  # a little L4 far from the axis so the map is not empty
    vol = _grid_volume(lab, h, (-10.0, -10.0, -15.0))
    v = P.cylinder_intersection_mm3(vol, np.array([0.0, 0.0, -12.0]), np.array([0.0, 0.0, 12.0]), 6.0)
    assert v == {1: 0.0, 2: 0.0, 3: 0.0}
    # the same slab labelled L5 is counted (π r² t = 84.8 mm³)
    lab[27:33] = 3
    v = P.cylinder_intersection_mm3(vol.with_array(lab), np.array([0.0, 0.0, -12.0]), np.array([0.0, 0.0, 12.0]), 6.0)
    assert v[3] == pytest.approx(math.pi * 9.0 * 3.0, rel=0.02)


# ---------------------------------------------------------------------------------------------- planner
def test_wide_gap_gives_bone_free_channel_with_known_clearance():
    lab = blocks_phantom(gap_mm=10.0)
    res = P.plan(lab, image=body_image(), config=P.PlanningConfig(diameter_mm=7.5, **FAST))
    for side, s in (("left", 1), ("right", -1)):
        sw = res.sides[side]
        b = sw.best
        assert not sw.foraminoplasty_needed
        assert b.bone_mm3 == 0.0
        assert b.clearance_mm == pytest.approx((10.0 - 7.5) / 2, abs=0.02)
        assert b.max_free_diameter_mm == pytest.approx(10.0, abs=0.04)
        assert b.craniocaudal_angle_deg == pytest.approx(0.0, abs=1e-6)
        # target: posterior third of the disc (y 5 - 35/3 .. 5), ipsilateral half, mid-gap
        assert s * b.target_lps[0] == pytest.approx(12.5, abs=0.6)
        assert b.target_lps[1] == pytest.approx(5 - 35 / 6, abs=0.6)
        assert b.target_lps[2] == pytest.approx(0.0, abs=1e-6)
        assert b.disc_mm3 > 0
        # entry on the analytic skin, within a voxel of the 2 mm body image
        assert b.entry_on_skin
        u = (b.entry_lps - b.target_lps) / b.length_mm
        assert np.linalg.norm(b.entry_lps - ellipse_exit(b.target_lps, u)) < 2.0
        assert s * b.entry_lps[0] > 0
        # every channel in the plane of the gap is bone-free; tilted ones hit the blocks
        j0 = list(sw.craniocaudal_angles_deg).index(0.0)
        assert sw.bone_free[:, j0].all()
        assert not sw.bone_free[:, [0, 1, 3, 4]].any()
    # the blocks are mirror-symmetric: both sides mirror each other
    bl, br = res.sides["left"].best, res.sides["right"].best
    assert bl.entry_midline_distance_mm == pytest.approx(br.entry_midline_distance_mm, abs=1e-6)


def test_dural_sac_label_is_measured_and_never_crossed(tmp_path):
    """A label map with the dural sac (label 4, the fine 3D model's fifth class): the sac volume in every channel is
    reported, and a channel through the sac is neither bone-free nor the best one."""
    lab = blocks_phantom(gap_mm=10.0)
    a = lab.array.copy()
    h = 1.0
    zs, ys, xs = (np.asarray(lab.origin_mm)[ax] + h * np.arange(a.shape[2 - ax]) for ax in (2, 1, 0))
    Z, Y, X = np.meshgrid(zs, ys, xs, indexing="ij")
    # a slab of "sac" behind the disc in the plane of the gap: faces at |x| = 40, y = 10 and 25, |z| = 5
    a[(np.abs(X) < 40) & (Y > 10) & (Y < 25) & (np.abs(Z) < 5)] = 4
    res = P.plan(lab.with_array(a), image=body_image(), sides=("left",), config=P.PlanningConfig(diameter_mm=7.5, **FAST))
    sw = res.sides["left"]
    assert sw.dural_sac_mm3 is not None and sw.best.dural_sac_mm3 == 0.0
    j0 = list(sw.craniocaudal_angles_deg).index(0.0)
    for m in (20.0, 30.0, 40.0):  # channels in the gap plane cross the whole slab: volume = pi r^2 * 15 mm / cos(m)
        i = list(sw.medial_angles_deg).index(m)
        assert sw.dural_sac_mm3[i, j0] == pytest.approx(math.pi * 3.75**2 * 15.0 / math.cos(math.radians(m)), rel=0.03)
        assert not sw.bone_free[i, j0]  # bone-free, but through the sac: not a corridor
    assert sw.best.bone_mm3 == 0.0 and sw.best.clearance_mm == pytest.approx(1.25, abs=0.02)
    rep = P.report_dict(res)
    assert rep["sides"]["left"]["dural_sac_labelled"] is True
    assert rep["sides"]["left"]["channels_through_dural_sac"] == int((sw.dural_sac_mm3 > 0.5).sum()) >= 3
    assert "dural sac excluded" in rep["sides"]["left"]["criterion"]
    rows = P.sweep_rows(res)
    assert all(r["dural_sac_mm3"] != "" for r in rows)
    # a channel part outside the labels counts zero for every label 0..4 (regression: a 4-wide zero row broke the
    # split on the real SPIDER masks with their spinal canal as label 4)
    from FORAMEN3DLib.planning_scene import PlanningScene

    scene = PlanningScene(lab.with_array(a), 5.0)
    far = scene.channel_volumes_mm3((400.0, 0.0, 0.0), (300.0, 0.0, 0.0), 3.75, split_mm=50.0)
    assert far.shape == (2, 5) and not far.any()
    # without label 4 the column is empty (not measured), not zero
    plain = P.plan(lab, sides=("left",), config=P.PlanningConfig(**FAST))
    assert plain.sides["left"].dural_sac_mm3 is None
    assert {r["dural_sac_mm3"] for r in P.sweep_rows(plain)} == {""}
    assert P.report_dict(plain)["sides"]["left"]["channels_through_dural_sac"] is None


def test_narrow_gap_reports_foraminoplasty_and_minimal_bone():
    lab = blocks_phantom(gap_mm=6.0)
    res = P.plan(lab, image=body_image(), sides=("left",), config=P.PlanningConfig(diameter_mm=7.5, **FAST))
    sw = res.sides["left"]
    b = sw.best
    assert sw.foraminoplasty_needed and not sw.bone_free.any()
    # least bone: horizontal lateral channel in the gap plane; bone = two circular segments × path length in bone
    assert b.medial_angle_deg == pytest.approx(90.0) and b.craniocaudal_angle_deg == pytest.approx(0.0, abs=1e-9)
    r, hh = 3.75, 3.75 - 3.0
    seg = r * r * math.acos((r - hh) / r) - (r - hh) * math.sqrt(2 * r * hh - hh * hh)
    path = 50.0 - b.target_lps[0]  # blocks end at x = 50
    assert b.bone_mm3 == pytest.approx(2 * seg * path, rel=0.02)
    assert b.l4_mm3 == pytest.approx(seg * path, rel=0.03) and b.l5_mm3 == pytest.approx(seg * path, rel=0.03)
    assert b.clearance_mm == pytest.approx((6.0 - 7.5) / 2, abs=0.05)
    assert b.max_free_diameter_mm == pytest.approx(6.0, abs=0.1)
    rep = P.report_dict(res)
    assert rep["sides"]["left"]["foraminoplasty_needed"] is True
    assert "foraminoplasty needed" in rep["sides"]["left"]["verdict"]
    assert rep["sides"]["left"]["minimal_bone_mm3"] == pytest.approx(b.bone_mm3, abs=0.01)
    # approach scope: only bone before the disc (x > 25 for the lateral channel) decides and is reported
    resa = P.plan(lab, image=body_image(), sides=("left",), config=P.PlanningConfig(bone_scope="approach", **FAST))
    ba = resa.sides["left"].best
    assert resa.sides["left"].foraminoplasty_needed and ba.medial_angle_deg == pytest.approx(90.0)
    assert ba.docking_point_lps[0] == pytest.approx(25.0, abs=0.3)
    assert ba.approach_bone_mm3 == pytest.approx(2 * seg * 25.0, rel=0.03)
    assert ba.intradiscal_bone_mm3 == pytest.approx(2 * seg * (25.0 - ba.target_lps[0]), rel=0.05)
    # a 6 mm channel fits the same 6 mm gap only with zero clearance: a 6.0 mm gap and 6 mm cannula is a graze
    res6 = P.plan(lab, image=body_image(), sides=("left",), config=P.PlanningConfig(diameter_mm=6.0, **FAST))
    assert res6.sides["left"].best.clearance_mm == pytest.approx(0.0, abs=0.02)


def test_without_image_channels_have_fixed_length():
    lab = blocks_phantom(gap_mm=10.0, h=1.0)
    cfg = P.PlanningConfig(max_length_mm=120.0, medial_angles_deg=(60.0,), craniocaudal_angles_deg=(0.0,))
    res = P.plan(lab, sides=("right",), config=cfg)
    b = res.sides["right"].best
    assert b.length_mm == pytest.approx(120.0) and not b.entry_on_skin
    assert any("no image" in w for w in res.warnings)


# ---------------------------------------------------------------------------------------------- skin
def test_body_mask_and_skin_rays_match_analytic_ellipse():
    img = body_image(h=2.0)
    m = body_mask(img)
    kji = np.indices(m.array.shape).reshape(3, -1).T
    pts = img.index_to_lps(kji[:, ::-1].astype(float))
    truth = ((pts[:, 0] / BODY_A_MM) ** 2 + (pts[:, 1] / BODY_B_MM) ** 2 <= 1).reshape(m.array.shape)
    got = m.array.astype(bool)
    dice = 2 * (got & truth).sum() / (got.sum() + truth.sum())
    assert dice > 0.995
    starts = np.array([[10.0, -5.0, 0.0]] * 4 + [[-20.0, 30.0, 5.0]])
    dirs = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0.2], [-1, 0.3, 0], [0.2, 1, -0.1]], float)
    ex, length, on = cast_to_skin(m, starts, dirs)
    for e, s, d, o in zip(ex, starts, dirs, on):
        assert o
        assert np.linalg.norm(e - ellipse_exit(s, d / np.linalg.norm(d))) < 1.5  # under a voxel (2 mm)
    verts, tris = skin_surface(m)
    side = np.abs(verts[:, 2]) < 30  # lateral surface, away from the FOV ends
    rho = np.sqrt((verts[side, 0] / BODY_A_MM) ** 2 + (verts[side, 1] / BODY_B_MM) ** 2)
    assert np.all(np.abs(rho - 1) < 0.025) and len(tris) > 1000
    # field of view narrower than the body: the ray leaves the image, not the skin
    narrow = body_image(h=2.0, half_x=60.0)
    ex, length, on = cast_to_skin(body_mask(narrow), [0.0, 0.0, 0.0], [[1.0, 0.0, 0.0]])
    assert not on[0] and ex[0, 0] == pytest.approx(59.0, abs=1.0)


# ---------------------------------------------------------------------------------------------- geometry outputs
def test_channel_mesh_is_closed_outward_prism(tmp_path):
    import vtk
    a, b, d, n = np.array([10.0, 20, 5]), np.array([-3.0, 4, 1]), 7.5, 32
    pts, tris = P.channel_mesh(a, b, d, n)
    L = np.linalg.norm(b - a)
    for name in ("c.stl", "c.vtp"):
        P.write_mesh(pts, tris, tmp_path / name)
        reader = vtk.vtkSTLReader() if name.endswith("stl") else vtk.vtkXMLPolyDataReader()
        reader.SetFileName(str(tmp_path / name))
        reader.Update()
        poly = reader.GetOutput()
        assert poly.GetNumberOfCells() == 4 * n
        clean = vtk.vtkCleanPolyData()
        clean.SetInputData(poly)
        mp = vtk.vtkMassProperties()
        mp.SetInputConnection(clean.GetOutputPort())
        mp.Update()
        exact = 0.5 * n * (d / 2) ** 2 * math.sin(2 * math.pi / n) * L  # inscribed regular prism
        assert mp.GetVolume() == pytest.approx(exact, rel=1e-6)
    # outward orientation: signed volume (divergence theorem) is positive
    tri = pts[tris]
    signed = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert signed == pytest.approx(0.5 * n * (d / 2) ** 2 * math.sin(2 * math.pi / n) * L, rel=1e-6)


def test_reformat_planes_contain_the_trajectory():
    f = identity_frame()
    e, t = np.array([80.0, 60, 20]), np.array([10.0, -2, 0])
    planes = P.reformat_planes(f, e, t)
    u = (e - t) / np.linalg.norm(e - t)
    for name, pl in planes.items():
        au, av, nn = (np.asarray(pl[k]) for k in ("axis_u", "axis_v", "normal"))
        assert np.allclose([au @ au, av @ av, nn @ nn], 1, atol=1e-5) and abs(au @ av) < 1e-5
        assert np.allclose(np.cross(au, av), nn, atol=1e-5)
        assert np.allclose(pl["origin_lps"], t)
        if name != "en_face":
            assert abs(nn @ u) < 1e-5  # the channel lies in the plane
        else:
            assert abs(nn @ u) == pytest.approx(1.0, abs=1e-5)
    assert planes["sagittal_oblique"]["axis_v"][2] > 0  # in-plane cranial direction


# ---------------------------------------------------------------------------------------------- validation
def test_bad_inputs_raise_user_errors():
    with pytest.raises(InputError, match="6-8 mm"):
        P.PlanningConfig(diameter_mm=9.0)
    with pytest.raises(InputError, match="unknown target"):
        P.PlanningConfig(target="pedicle")
    lab = blocks_phantom(10.0, h=1.0)
    no_disc = lab.with_array(np.where(lab.array == 2, 0, lab.array).astype(np.uint8))
    with pytest.raises(InputError, match="lacks L4-5 disc"):
        P.plan(no_disc)
    with pytest.raises(InputError, match="unexpected labels"):
        extra = lab.array.copy()
        extra[0, 0, 0] = 7
        P.plan(lab.with_array(extra))
    with pytest.raises(InputError, match="unknown side"):
        P.plan(lab, sides=("up",), config=P.PlanningConfig(**FAST))
    # image and labels that do not overlap: the target is outside the body
    far = body_image()
    far = Volume(far.array, far.spacing_mm, (far.origin_mm[0], far.origin_mm[1], far.origin_mm[2] + 500), far.direction)
    with pytest.raises(P.TargetOutsideBodyError, match="outside the body"):
        P.plan(lab, image=far, sides=("left",), config=P.PlanningConfig(**FAST))
    assert issubclass(P.TargetOutsideBodyError, InputError)


def test_skin_fallback_is_chosen_by_exception_type(monkeypatch):
    """plan_with_skin_fallback re-plans without the image only for TargetOutsideBodyError, not by message text."""
    from FORAMEN3DLib import markup_model

    calls = []

    class Result:
        warnings = ["no image"]

    def outside(labels, image=None, sides=(), config=None, frame=None):
        calls.append(image)
        if image is not None:
            raise P.TargetOutsideBodyError("left: the target lies outside the body mask of the image")
        return Result()

    monkeypatch.setattr(P, "plan", outside)
    result = markup_model.plan_with_skin_fallback("labels", "image", "left")
    assert calls == ["image", None] and result.warnings[0].startswith("skin not found")

    def other(labels, image=None, sides=(), config=None, frame=None):
        raise InputError("body mask is empty; no skin surface to extract")  # mentions "body mask", other cause

    monkeypatch.setattr(P, "plan", other)
    with pytest.raises(InputError, match="body mask is empty"):
        markup_model.plan_with_skin_fallback("labels", "image", "left")


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_plan_writes_all_outputs(tmp_path):
    from spinemorph.app.cli import main

    img_p, lab_p, out = tmp_path / "img.nrrd", tmp_path / "lab.nrrd", tmp_path / "out"
    write_volume(body_image(), img_p)
    write_volume(blocks_phantom(10.0, h=1.0), lab_p)
    args = ["plan", str(img_p), "--labels", str(lab_p), "--out", str(out), "--side", "left",
            "--medial-angles", "30:90:15", "--craniocaudal-angles=-10,0,10", "--diameter-mm", "7"]
    assert main(args) == 0
    names = {"plan_report.json", "plan_report.md", "plan_sweep.csv", "plan_heatmap.png", "plan_points.json",
             "plan_trajectories.mrk.json", "channel_left.stl", "channel_left.vtp"}
    assert names <= {p.name for p in out.iterdir()}
    rep = json.loads((out / "plan_report.json").read_text())
    left = rep["sides"]["left"]
    assert left["foraminoplasty_needed"] is False
    assert left["best"]["clearance_mm"] == pytest.approx((10 - 7) / 2, abs=0.02)
    assert rep["config"]["diameter_mm"] == 7.0 and rep["coordinate_system"] == "LPS"
    with (out / "plan_sweep.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 * 3 and sum(int(r["best"]) for r in rows) == 1
    assert (out / "plan_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mk = json.loads((out / "plan_trajectories.mrk.json").read_text())
    assert mk["markups"][0]["coordinateSystem"] == "LPS" and len(mk["markups"][0]["controlPoints"]) == 2
    assert "bone-free" in (out / "plan_report.md").read_text()
    # existing outputs are kept without --overwrite
    assert main(args) == 1
    assert main(args + ["--overwrite"]) == 0
    # user errors: one-line messages, exit 1
    assert main(["plan", str(img_p), "--labels", str(tmp_path / "missing.nrrd"), "--out", str(out), "--overwrite"]) == 1
    assert main(["plan", str(img_p), "--labels", str(lab_p), "--out", str(out), "--overwrite", "--diameter-mm", "12"]) == 1
    with pytest.raises(SystemExit) as exc:
        main(["plan", str(img_p), "--out", str(out), "--medial-angles", "a:b"])
    assert exc.value.code == 2


# ---------------------------------------------------------------------------------------------- procedural phantom
def _phantom_labels_and_body(preset):
    from spinemorph import phantom as ph
    phm = ph.make_phantom(preset=preset)

    def grid(h, lo, hi):
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        n = np.round((hi - lo) / h).astype(int)
        return _grid_volume(np.zeros(n[::-1], np.uint8), h, lo)

    lab = phm.rasterize_labels(grid(0.8, (-60, -70, -50), (60, 80, 50)), kind="foramen")
    tissue = phm.rasterize_labels(grid(3.0, (-170, -170, -60), (170, 110, 60)), kind="tissue")
    return phm, lab, tissue.with_array((tissue.array > 0).astype(np.float32) * 100.0)


@pytest.mark.parametrize("preset, needs", [("normal", False), ("foraminal-stenosis", True)])
def test_phantom_presets(preset, needs):
    """Normal L4-5 admits a bone-free 7.5 mm channel; foraminal stenosis (4 mm disc, 5 mm width) does not."""
    phm, lab, img = _phantom_labels_and_body(preset)
    cfg = P.PlanningConfig(medial_angles_deg=tuple(np.arange(40.0, 90.1, 10.0)), craniocaudal_angles_deg=(-10.0, 0.0, 10.0))
    res = P.plan(lab, image=img, config=cfg)
    tilt = math.degrees(math.atan2(-res.frame.z_axis[1], res.frame.z_axis[2]))
    assert tilt == pytest.approx(phm.params.tilt_deg, abs=1.0)  # disc normal = canal axis of the phantom
    for sw in res.sides.values():
        assert sw.foraminoplasty_needed is needs
        b = sw.best
        assert b.entry_on_skin
        exit_true = phm.body.ray_exit_lps(b.target_lps, (b.entry_lps - b.target_lps) / b.length_mm)
        assert np.linalg.norm(b.entry_lps - exit_true) < 3.0  # one voxel of the 3 mm body raster
        if needs:
            assert b.bone_mm3 > 10 and b.max_free_diameter_mm < phm.params.disc_height_mm
        else:
            assert b.bone_mm3 == 0 and b.clearance_mm > 0
            # the channel runs inside the disc space: bone-free diameter bounded by the disc height
            assert b.max_free_diameter_mm <= phm.params.disc_height_mm + 0.8


def test_phantom_foramen_centre_lies_in_the_true_foramen():
    """The foramen-centre target falls inside the phantom's exact lateral-view foramen outline, in the pedicle column."""
    from matplotlib.path import Path as MplPath

    phm, lab, _ = _phantom_labels_and_body("normal")
    scene = P.PlanningScene(lab)
    frame = P.anatomical_frame(scene.labels)
    for side, s in (("left", 1), ("right", -1)):
        target, method = P.foramen_centre_target(scene.labels, frame, side)
        assert method == "enclosed region"
        q = phm.lps_to_canal(target)
        truth = phm.truth.foramen[side]
        assert MplPath(truth.outline_canal_yz).contains_point((q[1], q[2]))
        half = phm.params.pedicle_width_mm / 2
        assert abs(s * q[0] - phm.params.pedicle_center_x_mm) <= half + 1.0


def test_cli_plan_on_a_study_folder(tmp_path):
    """A folder laid out like `spinemorph phantom` output: SPACE image, foramen .seg.nrrd (named segments), axial_t1."""
    from spinemorph.app.cli import main
    from spinemorph.segio import write_seg_nrrd

    study = tmp_path / "study"
    study.mkdir()
    narrow = body_image(h=2.0, half_x=60.0)  # "sagittal slab": the lateral skin is outside its field of view
    write_volume(narrow, study / "sagittal_t2_space.nrrd")
    write_volume(body_image(h=2.0), study / "axial_t1.nrrd")  # reaches the skin
    lab = blocks_phantom(10.0, h=1.0)
    # stored with other label values: the planner maps segments by name
    stored = lab.with_array(np.choose(lab.array, [0, 7, 5, 9]).astype(np.uint8))
    write_seg_nrrd(stored, {7: ("L4", (1, 1, 0)), 5: ("L4-5 disc", (0, 0, 1)), 9: ("L5", (1, 0, 0))},
                   study / "sagittal_t2_space_foramen.seg.nrrd")
    out = tmp_path / "plan"
    assert main(["plan", str(study), "--out", str(out), "--side", "right", "--medial-angles", "60,90",
                 "--craniocaudal-angles=0"]) == 0
    rep = json.loads((out / "plan_report.json").read_text())
    b = rep["sides"]["right"]["best"]
    assert rep["inputs"]["labels"].endswith("sagittal_t2_space_foramen.seg.nrrd")
    assert b["clearance_mm"] == pytest.approx(1.25, abs=0.02) and b["entry_on_skin"] is True
    target = np.asarray(b["target_lps"])
    u = (np.asarray(b["entry_lps"]) - target) / b["length_mm"]
    assert np.linalg.norm(np.asarray(b["entry_lps"]) - ellipse_exit(target, u)) < 2.0
