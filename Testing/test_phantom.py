"""Procedural phantom: exact analytic truth vs rasters, foramen truth, determinism, acquisitions, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from spinemorph.acquisition import acquire_axial_t1, synthesize
from spinemorph.app import cli
from spinemorph.errors import InputError
from spinemorph.phantom import (
    CAUDA,
    CSF,
    EPI_FAT,
    NUCLEUS,
    PRESETS,
    TISSUE_LABELS,
    PhantomParams,
    make_phantom,
    preset_params,
)
from spinemorph.volume import Volume


def _plane_grid(centre, direction, pix, half=13.0) -> Volume:
    """One-slice grid of ``pix`` mm pixels centred on ``centre`` with in-plane axes direction[:, 0], direction[:, 1]."""
    n = int(round(2 * half / pix))
    direction = np.asarray(direction, float)
    origin = np.asarray(centre, float) - direction @ np.array([(n - 1) / 2 * pix, (n - 1) / 2 * pix, 0.0])
    return Volume(np.zeros((1, n, n), np.uint8), (pix, pix, 1.0), tuple(origin), direction)


def _axial_error(ph, z, pix, offset):
    t = ph.truth
    s = t.canal_s_on_plane((0.0, 0.0, z), (0.0, 0.0, 1.0))
    c = np.array([offset[0] * pix, t.canal_point_lps(s)[1] + offset[1] * pix, z])
    area = ph.rasterize_labels(_plane_grid(c, np.eye(3), pix), "dural_sac").array.sum() * pix * pix
    return area - t.dsca_axial_mm2(z)


def _perp_error(ph, s, pix, offset):
    c = ph.truth.canal_point_lps(s) + ph.R @ np.array([offset[0] * pix, offset[1] * pix, 0.0])
    area = ph.rasterize_labels(_plane_grid(c, ph.R, pix), "dural_sac").array.sum() * pix * pix
    return area - ph.truth.dsca_perpendicular_mm2(s)


OFFSETS = [(0.13, 0.41), (0.37, 0.05), (0.71, 0.66), (0.52, 0.29)]


# ------------------------------------------------------------------------------------------- exact DSCA
def test_dsca_closed_form_normal():
    p = PhantomParams()
    ph = make_phantom(p)
    ab = math.pi * p.sac_width_mm * p.sac_depth_mm / 4
    for z in (-20.0, 0.0, 13.0):
        assert ph.truth.dsca_axial_mm2(z) == pytest.approx(ab / math.cos(math.radians(p.tilt_deg)), rel=1e-12)
        assert ph.truth.dsca_perpendicular_mm2(z) == pytest.approx(ab, rel=1e-12)
    flat = make_phantom(p.replace(tilt_deg=0.0))
    assert flat.truth.dsca_axial_mm2(2.0) == pytest.approx(ab, rel=1e-12)


def test_dsca_axial_raster_converges_normal():
    ph = make_phantom(preset="normal")
    e = {pix: np.mean([abs(_axial_error(ph, z, pix, o)) for z, o in zip((-9.0, -2.0, 4.0, 11.0), OFFSETS)]) for pix in (0.5, 0.25)}
    assert e[0.25] < e[0.5]
    assert e[0.25] < 0.005 * ph.truth.dsca_axial_mm2(0.0)


@pytest.mark.parametrize("preset", ["central-stenosis", "normal"])
def test_dsca_perpendicular_raster_converges(preset):
    ph = make_phantom(preset=preset)
    ss = (-1.0, 0.5, 2.0, 3.5)
    e = {pix: np.mean([abs(_perp_error(ph, s, pix, o)) for s, o in zip(ss, OFFSETS)]) for pix in (0.2, 0.05)}
    assert e[0.05] < e[0.2]
    assert e[0.05] < 0.6  # mm², against ≈ 70-150 mm² areas


def test_dsca_stenosis_axial_raster_fine():
    """Indented (trefoil) sac on oblique axial planes: a 0.025 mm raster matches the closed form to < 0.5 mm²."""
    ph = make_phantom(preset="central-stenosis")
    for z, o in zip((-1.0, 0.0, 3.0), OFFSETS):
        assert abs(_axial_error(ph, z, 0.025, o)) < 0.5
    # the indentation really is there (relative stenosis < 100 mm² at the disc) and vanishes away from the disc
    t = ph.truth
    assert t.dsca_perpendicular_mm2(0.0) < 100.0
    assert t.dsca_perpendicular_mm2(20.0) == pytest.approx(t.sac_area_unindented_mm2, rel=1e-12)
    assert t.dsca_axial_mm2(0.0) > t.dsca_perpendicular_mm2(0.0)


def test_dsca_plane_rejects_planes_without_lr_axis():
    ph = make_phantom()
    with pytest.raises(ValueError):
        ph.truth.dsca_plane_mm2((0, 0, 0), (0.3, 0.0, 1.0))
    with pytest.raises(ValueError):
        ph.truth.dsca_plane_mm2((0, 0, 0), ph.R[:, 1])  # plane parallel to the canal


# ------------------------------------------------------------------------------------------- foramen truth
def test_foramen_presets_thresholds():
    normal = make_phantom(preset="normal").truth
    sten = make_phantom(preset="foraminal-stenosis").truth
    for side in ("left", "right"):
        assert normal.foramen[side].height_mm > 15 and normal.foramen[side].width_mm > 8
        # the presets' analytic truth (README quotes these values)
        assert (normal.foramen[side].height_mm, normal.foramen[side].width_mm) == pytest.approx((21.0, 9.0))
        assert normal.foramen[side].area_mm2 == pytest.approx(201.0)
        assert (sten.foramen[side].height_mm, sten.foramen[side].width_mm) == pytest.approx((14.0, 5.0))
        assert sten.foramen[side].area_mm2 == pytest.approx(74.2876, abs=1e-3)
        assert sten.foramen[side].height_mm <= 15 and sten.foramen[side].width_mm <= 8
        assert sten.foramen[side].area_mm2 < normal.foramen[side].area_mm2
    assert normal.posterior_disc_height_mm == pytest.approx(10.0)
    assert sten.posterior_disc_height_mm == pytest.approx(4.0)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_foramen_points_and_outline_match_geometry(preset):
    ph = make_phantom(preset=preset)
    for side, sign in (("left", 1), ("right", -1)):
        f = ph.truth.foramen[side]
        hp, wp = f.height_points_lps, f.width_points_lps
        assert np.linalg.norm(hp[0] - hp[1]) == pytest.approx(f.height_mm, abs=1e-9)
        assert np.linalg.norm(wp[0] - wp[1]) == pytest.approx(f.width_mm, abs=1e-9)
        assert np.sign(hp[0, 0]) == sign and np.sign(f.outline_lps[:, 0]).min() == sign
        up, down = ph.canal_to_lps(np.array([0, 0, 0.05])) - ph.origin, ph.canal_to_lps(np.array([0, 0, -0.05])) - ph.origin
        # just above the upper height point: L4 pedicle; just below: inside the foramen (background)
        assert ph.label_points(hp[0] + up, "foramen") == 1 and ph.label_points(hp[0] + down, "foramen") == 0
        assert ph.label_points(hp[1] + down, "foramen") == 3 and ph.label_points(hp[1] + up, "foramen") == 0
        post, ant = (ph.canal_to_lps(np.array([0, v, 0.0])) - ph.origin for v in (0.05, -0.05))
        assert ph.label_points(wp[1] + post, "foramen") == 3 and ph.label_points(wp[1] + ant, "foramen") == 0
        assert ph.label_points(wp[0] + ant + up, "foramen") == 1
        # shoelace area of the outline = exact area (the bulge arc is sampled: tiny chord error)
        yz = f.outline_canal_yz
        shoelace = 0.5 * abs(np.dot(yz[:, 0], np.roll(yz[:, 1], -1)) - np.dot(yz[:, 1], np.roll(yz[:, 0], -1)))
        assert shoelace == pytest.approx(f.area_mm2, rel=2e-3)


@pytest.mark.parametrize("preset", ["normal", "central-stenosis"])
def test_foramen_area_vs_lateral_raster(preset):
    """Raster the lateral view (0.1 mm) at the pedicle plane: the outline encloses only background, with the exact area."""
    ph = make_phantom(preset=preset)
    f = ph.truth.foramen["left"]
    pix = 0.1
    d = np.column_stack([ph.R[:, 1], -ph.R[:, 2], ph.R[:, 0]])  # i → y' (posterior), j → −z', k → x'
    centre = ph.canal_to_lps(np.array([f.plane_x_mm, 6.0, 3.0]))
    grid = _plane_grid(centre, d, pix, half=16.0)
    lab = ph.rasterize_labels(grid, "foramen").array[0]
    nj, ni = lab.shape
    jj, ii = np.mgrid[0:nj, 0:ni]
    pts = grid.index_to_lps(np.stack([ii.ravel(), jj.ravel(), np.zeros(ii.size)], -1))
    yz = ph.lps_to_canal(pts)[:, 1:]
    inside = MplPath(f.outline_canal_yz).contains_points(yz).reshape(lab.shape)
    assert inside.sum() * pix * pix == pytest.approx(f.area_mm2, rel=0.01)
    assert (lab[inside] == 0).mean() > 0.995
    # the ring just outside the outline is bone/disc (closed foramen except its lateral opening)
    from scipy import ndimage

    ring = ndimage.binary_dilation(inside, iterations=3) & ~inside
    assert (lab[ring] > 0).mean() > 0.97


# ------------------------------------------------------------------------------------------- labels, grids
def test_rasterize_kinds_on_oblique_grid():
    ph = make_phantom()
    rot = np.array([[0.8, -0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]) @ ph.R
    grid = Volume(np.zeros((20, 48, 40), np.uint8), (1.3, 1.1, 1.7), tuple(ph.origin - rot @ [26, 26, 17]), rot)
    tis = ph.rasterize_labels(grid, "tissue")
    fo = ph.rasterize_labels(grid, "foramen", supersample=2)
    sac = ph.rasterize_labels(grid, "dural_sac")
    assert tis.array.shape == (20, 48, 40) and tis.array.dtype == np.uint8
    assert set(np.unique(fo.array)) <= {0, 1, 2, 3} and {1, 2, 3} <= set(np.unique(fo.array))
    assert set(np.unique(tis.array)) <= set(TISSUE_LABELS)
    assert np.array_equal(sac.array == 1, np.isin(tis.array, [CSF, CAUDA]))  # painted last: same region in both maps
    assert (tis.array == CAUDA).any()
    with pytest.raises(InputError):
        ph.rasterize_labels(grid, "bones")


def test_grids_geometry():
    ph = make_phantom()
    sp = ph.space_grid()
    assert sp.size_ijk == (320, 320, 64) and sp.spacing_mm == (0.8, 0.8, 0.8) and sp.axis_codes() == "PIR"
    ax = ph.axial_grid()
    assert ax.size_ijk[:2] == (320, 320) and ax.spacing_mm[:2] == (0.6875, 0.6875) and ax.axis_codes() == "LPS"
    tilted = ph.axial_grid(mode="disc", gantry_tilt=True)
    rows = ph.truth.slice_table(tilted)
    assert len(rows) == 5 and rows[2]["level"] == "L4-5"
    for r in rows:  # slices perpendicular to the canal: axial area = perpendicular area
        assert r["dsca_axial_mm2"] == pytest.approx(r["dsca_perpendicular_mm2"], rel=1e-9)
        assert r["angle_to_canal_deg"] == pytest.approx(0.0, abs=1e-6)
    l34 = ph.truth.slice_table(ph.axial_grid(mode="disc", disc="L3-4", n_slices=3, slice_thickness_mm=6.0, gantry_tilt=True))
    assert [r["level"] for r in l34] == ["L4", "L3-4", "L3"]
    with pytest.raises(InputError):
        ph.axial_grid(mode="disc", disc="L4")
    cover = ph.truth.slice_table(ax)
    assert {"L4", "L4-5", "L5"} <= {r["level"] for r in cover}
    assert np.all(np.diff([r["position_mm"] for r in cover]) == pytest.approx(4.0))


def test_body_outline_ray():
    ph = make_phantom()
    p = ph.params
    start = ph.truth.canal_point_lps(0.0)
    hit = ph.body.ray_exit_lps(start, ph.R[:, 1])  # straight posterior in the canal frame
    assert ph.lps_to_canal(hit)[1] == pytest.approx(p.body_center_y_mm + p.body_depth_mm / 2, abs=1e-9)
    assert ph.body.contains(start) and not ph.body.contains(hit + ph.R[:, 1])
    assert ph.body.skin_points_lps(0.0, 12).shape == (12, 3)


# ------------------------------------------------------------------------------------------- params
def test_params_validation_and_presets():
    with pytest.raises(InputError):
        preset_params("nope")
    with pytest.raises(InputError):
        PhantomParams().replace(foo_mm=1.0)
    with pytest.raises(InputError):
        make_phantom(PhantomParams(sap_tip_above_disc_mm=30.0))
    with pytest.raises(InputError):
        make_phantom(PhantomParams(disc_height_mm=-1.0))
    with pytest.raises(InputError):
        make_phantom(PhantomParams(upper_foraminal_width_mm=20.0))
    for name in PRESETS:
        preset_params(name).validate()


def test_determinism_per_seed():
    a, b, c = make_phantom(seed=7, vary=True), make_phantom(seed=7, vary=True), make_phantom(seed=8, vary=True)
    assert a.params == b.params and a.params != c.params
    grid = a.space_grid(n_slices=12, size=(80, 80), spacing_mm=2.0)
    la, lb = a.rasterize_labels(grid, "tissue"), b.rasterize_labels(grid, "tissue")
    assert la.array.tobytes() == lb.array.tobytes()
    ia = synthesize(a, grid, "T2", supersample=2, seed=7)
    ib = synthesize(b, grid, "T2", supersample=2, seed=7)
    ic = synthesize(a, grid, "T2", supersample=2, seed=8)
    assert ia.array.tobytes() == ib.array.tobytes()
    assert ia.array.tobytes() != ic.array.tobytes()
    assert a.truth.to_dict() == b.truth.to_dict()


# ------------------------------------------------------------------------------------------- contrast
def test_contrasts_t1_t2():
    ph = make_phantom()
    grid = ph.space_grid(n_slices=20, size=(128, 128), spacing_mm=1.0)
    tis = ph.rasterize_labels(grid, "tissue").array
    t1 = synthesize(ph, grid, "T1", noise_fraction=0.02, seed=1).array.astype(float)
    t2 = synthesize(ph, grid, "T2", noise_fraction=0.02, seed=1).array.astype(float)

    def mean(img, lab):
        return img[tis == lab].mean()

    assert mean(t1, CSF) < 0.3 * mean(t1, EPI_FAT)  # CSF dark, fat bright on T1
    assert mean(t2, CSF) > mean(t2, EPI_FAT) > 0  # CSF bright on T2, fat bright too
    assert mean(t2, NUCLEUS) > 2 * mean(t1, NUCLEUS) * mean(t2, EPI_FAT) / mean(t1, EPI_FAT) * 0.5


def test_axial_acquisition_truth_table():
    ph = make_phantom(preset="central-stenosis")
    acq = acquire_axial_t1(ph, size=128, pixel_mm=0.6875, supersample=(1, 1, 2))
    assert acq.image.array.dtype == np.uint16 and acq.image.shape[1:] == (128, 128)
    for row, sl in zip(acq.slice_table, acq.labels["dural_sac"].array):
        px = sl.sum() * 0.6875**2
        assert px == pytest.approx(row["dsca_axial_mm2"], abs=0.08 * row["dsca_axial_mm2"] + 4)


# ------------------------------------------------------------------------------------------- CLI
def test_cli_writes_study_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "study"
    rc = cli.main(["phantom", "--out", str(out), "--format", "nrrd", "--seed", "1", "--preset", "foraminal-stenosis"])
    assert rc == 0
    for name in ("truth.json", "axial_t1_slices.csv", "axial_t1.nrrd", "sagittal_t2_space.nrrd",
                 "sagittal_t2_space_foramen.seg.nrrd", "axial_t1_dural_sac.seg.nrrd", "sagittal_t2_space_tissue.seg.nrrd"):
        assert (out / name).is_file(), name
    assert not (out / "dicom").exists()
    truth = json.loads((out / "truth.json").read_text())
    assert truth["truth"]["foramen"]["left"]["height_mm"] == pytest.approx(14.0)
    assert truth["params"]["disc_height_mm"] == pytest.approx(4.0)
    capsys.readouterr()
    rc = cli.main(["phantom", "--out", str(out), "--format", "nrrd"])
    assert rc == 1
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["phantom", "--out", str(out), "--param", "nonsense=1"]) == 1
    assert cli.main(["phantom", "--out", str(out), "--format", "png"]) == 1


def test_vary_params_warns_when_no_draw_is_valid(monkeypatch):
    """Giving up after the last invalid draw is not silent: a UserWarning says that the anatomy was not varied."""
    import warnings

    from spinemorph import phantom as ph_mod

    base = ph_mod.preset_params("normal")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ph_mod.vary_params(base, 3) != base  # a normal draw: varied, no warning

    def always_invalid(self):
        raise InputError("invalid on purpose")

    monkeypatch.setattr(ph_mod.PhantomParams, "validate", always_invalid)
    with pytest.warns(UserWarning, match="NOT varied"):
        assert ph_mod.vary_params(base, 3) == base
