"""Tests of spinemorph.synth (SynthSeg-style synthesis), spinemorph.samples (phantom source) and `spinemorph synth`.

The label maps are exact-geometry phantoms built here (boxes and a cylindrical canal of known radius), so areas and
volumes have closed-form answers. SPIDER-based samples are tested in test_spider.py.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from spinemorph import synth
from spinemorph.errors import InputError
from spinemorph.volume import Volume, read_volume, write_volume

CANAL_R_MM = 7.0
CANAL_Y_MM = 30.0
TISSUES = {1: "bone", 2: "bone", 202: "disc", 100: "csf", 50: "fat", 60: "muscle"}


def _label_map(spacing=(1.0, 1.0, 1.0), extent=(90.0, 120.0, 120.0), with_soft=True) -> Volume:
    """LPS label map: L5 (1) and L4 (2) boxes, L4-5 disc (202), canal cylinder along z (100), fat (50) and muscle (60)
    slabs behind the canal. ``extent`` = (x, y, z) mm, centred on 0 (y centred on 20)."""
    sp = np.asarray(spacing, float)
    n = np.round(np.asarray(extent) / sp).astype(int)
    origin = -sp * (n - 1) / 2 + np.array([0.0, 20.0, 0.0])
    x = origin[0] + sp[0] * np.arange(n[0])
    y = origin[1] + sp[1] * np.arange(n[1])
    z = origin[2] + sp[2] * np.arange(n[2])
    Z, Y, X = np.meshgrid(z, y, x, indexing="ij")
    lab = np.zeros(Z.shape, np.int16)
    body = (np.abs(X) <= 20) & (np.abs(Y) <= 15)
    lab[body & (Z > -40) & (Z <= -5)] = 1
    lab[body & (Z > -5) & (Z < 5)] = 202
    lab[body & (Z >= 5) & (Z < 40)] = 2
    lab[(X**2 + (Y - CANAL_Y_MM) ** 2 <= CANAL_R_MM**2) & (np.abs(Z) < 50)] = 100
    if with_soft:
        lab[(np.abs(X) <= 25) & (Y > 40) & (Y <= 52) & (np.abs(Z) < 45)] = 50
        lab[(np.abs(X) <= 25) & (Y > 52) & (Y <= 64) & (np.abs(Z) < 45)] = 60
    return Volume(lab, tuple(sp), tuple(origin), np.eye(3))


@pytest.fixture(scope="module")
def labels() -> Volume:
    return _label_map()


@pytest.fixture(scope="module")
def source(labels) -> synth.LabelSource:
    return synth.prepare_labels(labels, TISSUES, fine_spacing_mm=None, margin_mm=100.0)


# ----------------------------------------------------------------------------- preparation
def test_prepare_splits_disc_and_bone_but_keeps_labels(labels, source):
    assert "nucleus" in source.code_tissue and "cortex" in source.code_tissue
    prepared = source.labels()
    # the sub-structure codes map back to their parent labels: the label map is unchanged
    np.testing.assert_array_equal(prepared.array, labels.array)
    nucleus = source.code_label[[i for i, t in enumerate(source.code_tissue) if t == "nucleus"]]
    assert set(nucleus.tolist()) == {202}


def test_prepare_rejects_bad_label_maps(labels):
    with pytest.raises(InputError, match="non-integer"):
        synth.prepare_labels(labels.with_array(labels.array + 0.5))
    with pytest.raises(InputError, match="empty"):
        synth.prepare_labels(labels.with_array(np.zeros_like(labels.array)))
    with pytest.raises(InputError, match="negative"):
        synth.prepare_labels(labels.with_array(-labels.array))
    with pytest.raises(InputError, match="contrast"):
        synth.synthesize(synth.prepare_labels(labels), 0, contrast="pd")


# ----------------------------------------------------------------------------- determinism / labels
def test_deterministic_per_seed(source):
    grid = synth.iso_grid(source.codes, 1.0, "PIR", center_lps=(0, 20, 0), crop_shape=(40, 64, 64))
    a = synth.synthesize(source, 7, grid, "random")
    b = synth.synthesize(source, 7, grid, "random")
    c = synth.synthesize(source, 8, grid, "random")
    assert a.image.array.dtype == np.float32
    assert a.image.array.tobytes() == b.image.array.tobytes()
    assert a.labels.array.tobytes() == b.labels.array.tobytes()
    assert a.image.array.tobytes() != c.image.array.tobytes()
    assert 0.0 <= a.image.array.min() and a.image.array.max() <= 1.0


@pytest.mark.parametrize("contrast", ["t1", "t2", "random"])
def test_intensity_randomisation_leaves_labels_unchanged(labels, source, contrast):
    grid = synth.grid_like(labels)
    for seed in (0, 1):
        res = synth.synthesize(source, seed, grid, contrast, synth.SynthOptions.intensity_only())
        np.testing.assert_array_equal(res.labels.array, labels.array)
        assert res.labels.spacing_mm == labels.spacing_mm and res.labels.origin_mm == labels.origin_mm


def test_deformation_keeps_label_volumes_within_bound(labels, source):
    grid = synth.grid_like(labels)
    vox = labels.voxel_volume_mm3
    for seed in range(4):
        res = synth.synthesize(source, seed, grid, "t2")
        det = res.params["affine_det"]
        assert 0.7 < det < 1.35
        assert set(np.unique(res.labels.array)) <= set(np.unique(labels.array))
        for lab in (1, 2, 202, 100):
            v_in = (labels.array == lab).sum() * vox
            v_out = (res.labels.array == lab).sum() * vox
            # the transform maps output points to input points: volumes scale by 1/det(A); elastic part ±12 %
            assert v_out * det / v_in == pytest.approx(1.0, abs=0.12), (seed, lab)


def test_contrast_modes_follow_documented_ordering(labels, source):
    grid = synth.grid_like(labels)
    arr = labels.array
    for seed in range(6):
        t1 = synth.synthesize(source, seed, grid, "t1", synth.SynthOptions.intensity_only()).image.array
        t2 = synth.synthesize(source, seed, grid, "t2", synth.SynthOptions.intensity_only()).image.array
        assert t1[arr == 100].mean() < t1[arr == 50].mean()  # CSF darker than fat on T1
        assert t1[arr == 100].mean() < t1[arr == 202].mean()  # and darker than disc
        assert t2[arr == 100].mean() > t2[arr == 60].mean()  # CSF brighter than muscle on T2
        assert t2[arr == 100].mean() > t2[arr == 1].mean()  # and than bone


def test_background_is_split_into_blobs(labels, source):
    res = synth.synthesize(source, 3, synth.grid_like(labels), "t1", synth.SynthOptions.intensity_only())
    bg = res.image.array[labels.array == 0]
    # several tissue classes: the background histogram is far wider than the within-label noise
    assert np.percentile(bg, 90) - np.percentile(bg, 10) > 0.15


# ----------------------------------------------------------------------------- grids / reslicing
def test_axial_reslice_tracks_pixel_size_and_tilt(source):
    true_area = math.pi * CANAL_R_MM**2
    for pixel, tilt_deg in ((0.5, 0.0), (0.7, 0.0), (0.5, 20.0)):
        t = math.radians(tilt_deg)
        normal = (0.0, -math.sin(t), math.cos(t))
        grid = synth.axial_grid((0.0, CANAL_Y_MM, 20.0), (128, 128), pixel, normal)
        res = synth.synthesize(source, 1, grid, "t1", synth.SynthOptions.intensity_only(), slice_thickness_mm=4.0)
        assert res.image.shape == (1, 128, 128)
        assert res.image.spacing_mm[:2] == (pixel, pixel)
        np.testing.assert_allclose(res.image.direction[:, 2], np.array(normal) / np.linalg.norm(normal), atol=1e-9)
        area = (res.labels.array[0] == 100).sum() * pixel**2
        assert area == pytest.approx(true_area / math.cos(t), rel=0.04), (pixel, tilt_deg, area)


def test_axial_grid_orientation_and_thick_slices():
    g = synth.axial_grid((1.0, 2.0, 3.0), (10, 20), 0.5, (0, 0, 1))
    np.testing.assert_allclose(g.direction, np.eye(3))  # i -> left, j -> posterior, k -> superior
    np.testing.assert_allclose(g.center_lps, (1.0, 2.0, 3.0))
    assert g.shape == (1, 10, 20)
    work, n_sub = synth.thick_slice_grid(g, 4.0)
    assert n_sub % 2 == 1 and n_sub >= 3
    assert work.spacing_mm[2] * n_sub == pytest.approx(4.0)
    np.testing.assert_allclose(work.index_to_lps((0, 0, n_sub // 2)), g.index_to_lps((0, 0, 0)), atol=1e-9)


def test_iso_grid_is_pir_and_08mm(labels):
    g = synth.iso_grid(labels, 0.8, "PIR")
    assert g.spacing_mm == (0.8, 0.8, 0.8)
    assert synth.grid_like(g.volume(np.zeros(g.shape, np.uint8))).direction.tolist() == synth.ORIENTATIONS["PIR"].tolist()
    assert g.volume(np.zeros(g.shape, np.uint8)).axis_codes() == "PIR"
    # covers the label map's extent
    assert g.size_ijk[0] * 0.8 == pytest.approx(120.0, abs=1.7)  # i = A-P extent (y)
    res = synth.synthesize_volume(labels, 0, "t2", "iso0.8", tissue_classes=TISSUES,
                                  options=synth.SynthOptions.intensity_only())
    assert res.image.spacing_mm == (0.8, 0.8, 0.8)
    v_in = (labels.array == 100).sum() * labels.voxel_volume_mm3
    v_out = (res.labels.array == 100).sum() * 0.8**3
    assert v_out == pytest.approx(v_in, rel=0.05)


def test_thick_sagittal_labels_are_smoothly_upsampled():
    """A canal sampled on 4 mm sagittal slices: after shape-based upsampling its axial outline is not a staircase of
    4 mm steps (more distinct row widths, higher Dice with the true circle than nearest-neighbour lookup) and its
    area stays close to the truth (measured: Dice 0.93 vs 0.89, area 156 vs 152 mm²)."""
    coarse = _label_map(spacing=(4.0, 0.8, 0.8), extent=(72.0, 100.0, 100.0), with_soft=False)
    pixel = 0.4
    grid = synth.axial_grid((0.0, CANAL_Y_MM, 20.0), (64, 64), pixel, (0, 0, 1))
    pts = grid.index_to_lps(np.stack(np.meshgrid(np.arange(64), np.arange(64), [0], indexing="xy"), -1).reshape(-1, 3))
    truth = ((pts[:, 0] ** 2 + (pts[:, 1] - CANAL_Y_MM) ** 2) <= CANAL_R_MM**2).reshape(64, 64)
    widths, dice = {}, {}
    for name, fine in (("smooth", 0.8), ("nearest", None)):
        src = synth.prepare_labels(coarse, fine_spacing_mm=fine)
        lab = synth.synthesize(src, 0, grid, "t1", synth.SynthOptions.intensity_only()).labels.array[0] == 100
        dice[name] = 2 * (lab & truth).sum() / (lab.sum() + truth.sum())
        widths[name] = {int(w) for w in lab.sum(axis=1) if w}
        assert lab.sum() * pixel**2 == pytest.approx(math.pi * CANAL_R_MM**2, rel=0.12)
    assert len(widths["smooth"]) > len(widths["nearest"])
    assert dice["smooth"] > dice["nearest"] + 0.02 and dice["smooth"] > 0.9


# ----------------------------------------------------------------------------- phantom-source samples
def test_dsca_phantom_samples_exact_area_and_determinism():
    from spinemorph import samples

    got = list(samples.dsca_samples(3, 11, sources=("phantom",), crop=96))
    again = list(samples.dsca_samples(1, 11, sources=("phantom",), crop=96, start=2))
    assert again[0].image.tobytes() == got[2].image.tobytes()
    for s in got:
        assert s.image.shape == (96, 96) and s.image.dtype == np.float32
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
        assert set(np.unique(s.mask)) <= {0, 1}
        assert s.pixel_mm[0] == s.pixel_mm[1]
        assert samples.FOV_MM[0] / 320 <= s.pixel_mm[0] <= samples.FOV_MM[1] / 320
        # mask area (pixels × tracked pixel size) vs the phantom's analytic plane area
        assert s.area_mm2 == pytest.approx(s.true_area_mm2, rel=0.05)


def test_foramen_phantom_samples():
    from spinemorph import samples
    from spinemorph.labels import DISC_L45, L4, L5

    s = next(iter(samples.foramen_samples(1, 2, sources=("phantom",), crop_shape=(48, 96, 96))))
    assert s.image.shape == (48, 96, 96) and s.labels.shape == (48, 96, 96)
    assert s.spacing_mm == (0.8, 0.8, 0.8)
    assert abs(float(s.image.mean())) < 1e-3 and float(s.image.std()) == pytest.approx(1.0, abs=1e-3)
    assert set(np.unique(s.labels)) == {0, L4, DISC_L45, L5}
    z = {lab: s.grid.index_to_lps(np.argwhere(s.labels == lab).mean(0)[::-1])[2] for lab in (L4, DISC_L45, L5)}
    assert z[L4] > z[DISC_L45] > z[L5]  # L4 above the disc above L5 (LPS z = superior)


def test_phantom_tissue_classes_cover_the_phantom_labels():
    from spinemorph import phantom

    classes = synth.phantom_tissue_classes()
    assert set(classes) == set(phantom.TISSUE_LABELS)
    assert classes[0] == "air" and classes[phantom.CSF] == "csf" and classes[phantom.NUCLEUS] == "nucleus"
    assert set(classes.values()) <= set(synth.TISSUES) | {"blobs"}


def test_samples_reject_unknown_source():
    from spinemorph import samples

    with pytest.raises(InputError, match="source"):
        next(iter(samples.dsca_samples(1, 0, sources=("mri",))))


# ----------------------------------------------------------------------------- command line
def test_cli_synth(tmp_path):
    from spinemorph.app.cli import main

    lab = _label_map(spacing=(2.0, 2.0, 2.0))
    path = write_volume(lab, tmp_path / "labels.nrrd")
    out = tmp_path / "out"
    assert main(["synth", str(path), "--out", str(out), "--n", "2", "--seed", "4", "--contrast", "t2"]) == 0
    img = read_volume(out / "synth_001_image.nrrd")
    seg = read_volume(out / "synth_001_labels.nrrd")
    assert img.shape == lab.shape and img.spacing_mm == lab.spacing_mm
    assert set(np.unique(seg.array)) <= set(np.unique(lab.array))
    assert (out / "synth_params.json").is_file()
    # existing outputs are kept without --overwrite; bad input is a one-line error
    assert main(["synth", str(path), "--out", str(out), "--n", "2"]) == 1
    assert main(["synth", str(path), "--out", str(out), "--n", "1", "--overwrite", "--reslice", "axial"]) == 0
    assert read_volume(out / "synth_000_image.nrrd").spacing_mm[2] == pytest.approx(4.0)
    assert main(["synth", str(tmp_path / "missing.nrrd"), "--out", str(out)]) == 1
    image_like = lab.with_array(lab.array.astype(np.float32) + 0.25)
    bad = write_volume(image_like, tmp_path / "image.nrrd")
    assert main(["synth", str(bad), "--out", str(tmp_path / "o2")]) == 1
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--out", str(out)])
    assert exc.value.code == 2


@pytest.mark.parametrize("bad", [(1, 4), (3, 7), (5, 4), (2.0, 3)])
def test_bg_classes_are_validated(bad):
    """bg_classes above 6 would overlap the air / fat / nerve codes, below 2 crash: one clear InputError."""
    with pytest.raises(InputError, match="bg_classes"):
        synth.SynthOptions(bg_classes=bad)
    assert synth.SynthOptions(bg_classes=(2, 6)).bg_classes == (2, 6)


def test_large_label_values_keep_their_value():
    """Known answer: a label above 32767 must not wrap (it did with int16)."""
    a = np.zeros((12, 12, 12), np.int32)
    a[3:9, 3:9, 3:9] = 40000
    a[5:7, 5:7, 5:7] = 300
    src = synth.prepare_labels(Volume(a, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)), {40000: "bone", 300: "disc"},
                               fine_spacing_mm=None, margin_mm=2.0, nucleus=False, cortex_mm=0.0)
    assert set(np.unique(src.labels().array).tolist()) == {0, 300, 40000}


def test_dsca_sample_below_min_area_flag():
    from spinemorph.samples import MIN_SAC_AREA_MM2, DscaSample

    def sample(n_px):
        mask = np.zeros((16, 16), np.uint8)
        mask.flat[:n_px] = 1
        return DscaSample(np.zeros((16, 16), np.float32), mask, (1.0, 1.0), "phantom", "p", "t1", np.zeros(3),
                          np.array([0.0, 0.0, 1.0]), 4.0)

    assert MIN_SAC_AREA_MM2 == 20.0
    assert sample(19).below_min_area and not sample(20).below_min_area


# ---------------------------------------------------------------------------- DSCA synthesis style v2 (issue 16)
def test_epidural_fat_option_off_by_default_and_intensity_only(source):
    grid = synth.axial_grid(source.codes.index_to_lps((np.asarray(source.codes.size_ijk) - 1) / 2), (64, 64), 1.0)
    base = synth.synthesize(source, 5, grid, "t2", synth.SynthOptions.intensity_only(), slice_thickness_mm=3.0)
    # p_epidural_fat = 0 draws nothing: the default stream (the shipped training images, the 3D samples) is unchanged
    same = synth.synthesize(source, 5, grid, "t2",
                            dataclasses.replace(synth.SynthOptions.intensity_only(), epidural_fat_mm=(7.0, 9.0)),
                            slice_thickness_mm=3.0)
    assert np.array_equal(base.image.array, same.image.array) and "epidural_fat_mm" not in base.params
    fat = synth.synthesize(source, 5, grid, "t2",
                           dataclasses.replace(synth.SynthOptions.intensity_only(), p_epidural_fat=1.0),
                           slice_thickness_mm=3.0)
    assert np.array_equal(fat.labels.array, base.labels.array)  # labels unchanged (intensity only)
    assert 1.0 <= fat.params["epidural_fat_mm"] <= 4.0 and not np.array_equal(fat.image.array, base.image.array)


def test_dsca_samples_style_v2_and_default_unchanged():
    from spinemorph import samples as sm

    a = next(sm.dsca_samples(1, 3, sources=("phantom",), crop=64))
    b = next(sm.dsca_samples(1, 3, sources=("phantom",), crop=64, style="v1"))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert sm.DSCA_V2_OPTIONS.p_epidural_fat > 0 and sm.DSCA_V2_OPTIONS.p_roots > synth.SynthOptions().p_roots
    with pytest.raises(InputError, match="style"):
        next(sm.dsca_samples(1, 3, sources=("phantom",), style="v9"))
