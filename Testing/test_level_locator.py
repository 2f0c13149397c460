"""Level-naming L4-5 locator (FORAMEN3DLib.level_data / level_locator / train_levels, ``locator_mode="levels"``):
grid geometry and decision on known answers, the per-level labels of real slabs, weights files, training resume, and
the wiring through segment_volume."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from FORAMEN3DLib import level_data as ld
from FORAMEN3DLib import level_locator as ll
from FORAMEN3DLib import segment3d, train_levels
from FORAMEN3DLib.preprocess import CANONICAL_AXES

from spinemorph import spider
from spinemorph.errors import ModelError
from spinemorph.volume import Volume

needs_spider = pytest.mark.skipif(spider.spider_root() is None, reason="SPIDER data (../shared/data/spider) not present")

#: an axial LPS volume: i = x (left), j = y (posterior), k = z (superior); 1 mm voxels, 200 x 160 x 300 mm
AXIAL = Volume(np.zeros((300, 160, 200), np.float32), (1.0, 1.0, 1.0), (-100.0, -60.0, -150.0), np.eye(3))


def test_level_grid_covers_the_field_of_view_in_sagittal_planes_on_the_midline():
    grid = ld.level_grid(AXIAL, (12.0, 0.0, 0.0))
    d = np.asarray(grid.direction)
    assert np.allclose(d, CANONICAL_AXES)  # i anterior->posterior, j superior->inferior, k left->right
    assert grid.size_ijk == (80, 150, ld.N_PLANES)  # 160 mm A-P, 300 mm S-I at 2 mm
    vol = grid.volume(np.zeros(grid.size_ijk[::-1], np.uint8))
    mid = vol.index_to_lps(((80 - 1) / 2, (150 - 1) / 2, (ld.N_PLANES - 1) / 2))
    assert mid[0] == pytest.approx(12.0)  # the middle plane lies on the given left-right position
    assert mid[1] == pytest.approx(AXIAL.index_to_lps((99.5, 79.5, 149.5))[1])
    assert mid[2] == pytest.approx(AXIAL.index_to_lps((99.5, 79.5, 149.5))[2])
    first, last = vol.index_to_lps((0, 0, 0)), vol.index_to_lps((0, 0, ld.N_PLANES - 1))
    assert first[0] - last[0] == pytest.approx(2.0 * (ld.N_PLANES - 1))  # planes left -> right (x decreases)


def test_level_input_pads_zscores_and_marks_the_imaged_pixels():
    img = AXIAL.with_array(np.random.default_rng(0).normal(100, 10, AXIAL.shape).astype(np.float32))
    grid = ld.level_grid(img, (0.0, 0.0, 0.0))
    x, fov = ld.level_input(img, grid)
    assert x.shape == fov.shape == (ld.N_PLANES, 160, 96)  # 150 -> 160 rows, 80 -> 96 columns
    assert fov[:, :150, :80].all() and not fov[:, 150:].any() and not fov[:, :, 80:].any()
    assert abs(float(x[fov].mean())) < 1e-3 and float(x[fov].std()) == pytest.approx(1.0, abs=1e-3)
    assert (x[~fov] == 0).all()


def _probabilities(grid, rows: dict, shape=(160, 96)):
    """Per-plane softmax with each class in a block of rows (cols 30-50), background elsewhere."""
    p = np.zeros((grid.size_ijk[2], ld.N_CLASSES, *shape), np.float32)
    p[:, ld.BG] = 1.0
    for c, (r0, r1) in rows.items():
        p[:, :, r0:r1, 30:50] = 0.0
        p[:, c, r0:r1, 30:50] = 1.0
    return p


def test_locate_from_probabilities_known_centre_and_order_check():
    grid = ld.level_grid(AXIAL, (0.0, 0.0, 0.0))
    fov = np.ones((grid.size_ijk[2], 160, 96), bool)
    rows = {ld.L4: (60, 74), ld.DISC_L45: (75, 80), ld.L5: (81, 95), ld.DISC_L5S1: (96, 100)}
    res = ll.locate_from_probabilities(_probabilities(grid, rows), fov, grid)
    vol = grid.volume(np.zeros(grid.size_ijk[::-1], np.uint8))
    want = vol.index_to_lps((39.5, 77.0, (ld.N_PLANES - 1) / 2))
    assert np.allclose(res.centre_lps, want, atol=1e-6)
    assert res.order_ok
    assert res.level_rows_mm["L4"] == pytest.approx((66.5 - 77.0) * 2.0)
    assert res.level_rows_mm["L5"] == pytest.approx((87.5 - 77.0) * 2.0)
    # L5 named above the disc: out of order, said so (the centre is still the disc's)
    swapped = ll.locate_from_probabilities(_probabilities(grid, {ld.L5: (60, 74), ld.DISC_L45: (75, 80),
                                                                 ld.L4: (81, 95)}), fov, grid)
    assert not swapped.order_ok and "out of order" in swapped.reason
    # no disc / a speck of disc: no centre, a reason
    none = ll.locate_from_probabilities(_probabilities(grid, {ld.L4: (60, 74)}), fov, grid)
    assert none.centre_lps is None and "no L4-5 disc" in none.reason
    speck = ll.locate_from_probabilities(_probabilities(grid, {ld.DISC_L45: (75, 76)}, shape=(160, 96))[:, :, :, :],
                                         fov, grid)
    assert speck.centre_lps is not None  # 20 px x 4 mm² = 80 mm² >= the floor
    tiny = _probabilities(grid, {})
    tiny[:, :, 75, 30:33] = 0.0
    tiny[:, ld.DISC_L45, 75, 30:33] = 1.0
    small = ll.locate_from_probabilities(tiny, fov, grid)
    assert small.centre_lps is None and "too small" in small.reason


def test_weights_round_trip_and_clear_errors(tmp_path):
    torch.manual_seed(0)
    net = ll.build_network()
    ll.save_level_model(net, tmp_path / "lv.pt", {"iteration": 7})
    m = ll.load_level_model(tmp_path / "lv.pt")
    assert m.meta["iteration"] == 7
    x = np.random.default_rng(1).normal(size=(2, 64, 64)).astype(np.float32)
    with torch.inference_mode():
        want = torch.softmax(net.eval()(torch.from_numpy(x[:, None])), 1).numpy()
    got = ll.predict_planes(m, x)
    assert got.shape == (2, ld.N_CLASSES, 64, 64) and np.allclose(got.sum(1), 1.0, atol=1e-5)
    assert np.abs(got - want).max() < 2e-2  # fp16 storage
    with pytest.raises(ModelError, match="not found"):
        ll.load_level_model(tmp_path / "missing.pt")
    torch.save({"format": "other"}, tmp_path / "bad.pt")
    with pytest.raises(ModelError, match="not a level-locator weights file"):
        ll.load_level_model(tmp_path / "bad.pt")
    (tmp_path / "trunc.pt").write_bytes((tmp_path / "lv.pt").read_bytes()[:1000])
    with pytest.raises(ModelError, match="cannot read"):
        ll.load_level_model(tmp_path / "trunc.pt")


def test_augment_keeps_labels_on_the_image_and_the_sacrum_in_view():
    rng = np.random.default_rng(3)
    x = np.zeros((160, 128), np.float32)
    y = np.zeros((160, 128), np.uint8)
    for c, (r0, r1) in {ld.L4: (50, 64), ld.DISC_L45: (65, 70), ld.L5: (71, 85), ld.DISC_L5S1: (86, 90)}.items():
        y[r0:r1, 50:70] = c
        x[r0:r1, 50:70] = c
    fov = np.zeros_like(y, bool)
    fov[:150, :120] = True
    for _ in range(30):
        xa, ya, fa = train_levels.augment(rng, x, y, fov)
        assert xa.shape == x.shape and ya.dtype == np.uint8
        assert (ya[~fa] == ld.BG).all() or (ya[~fa] == ld.BG).mean() > 0.99
        assert (ya == ld.DISC_L45).any() and (ya == ld.DISC_L5S1).any()  # cuts never remove L4-5 or L5-S1


@needs_spider
def test_slab_level_labels_count_up_from_the_lowest_vertebra():
    """Real slab 61 (training patient, levels counted): L5 is the lowest body, L4 above it, the L4-5 disc between
    them at the reference disc centre of fine_data.slab_labels, the L5-S1 disc below L5, higher levels above."""
    from FORAMEN3DLib import fine_data as fd

    image, mask = spider.load_slab("61")
    y = ld.slab_level_labels("61", image, mask)
    rows = {c: np.nonzero((y == c).any(axis=(0, 2)))[0].mean() for c in range(1, ld.N_CLASSES)}
    assert rows[ld.UPPER_VERTEBRA] < rows[ld.L4] < rows[ld.DISC_L45] < rows[ld.L5] < rows[ld.DISC_L5S1]
    ref = fd.slab_labels("61", image, mask).disc_center_lps
    assert np.allclose(fd.label_center_lps(mask, y == ld.DISC_L45), ref, atol=1e-6)
    assert ((y == ld.IGNORE) <= (np.asarray(mask.array) == spider.SLAB_VERTEBRA) |
            (np.asarray(mask.array) == spider.SLAB_DISC)).all()
    s = ld.slab_planes("61")
    assert s["x"].shape[1:] == (160, 128) and s["y"].shape == s["x"].shape
    with pytest.raises(Exception, match="held out"):
        ld.slab_planes("136")


@needs_spider
def test_training_resumes_where_it_stopped(tmp_path, monkeypatch):
    """Two iterations, then two more with --resume == four in one go (same weights: generators saved)."""
    monkeypatch.setattr(train_levels, "VAL_PATIENTS", ("22",))
    real = train_levels.load_cases
    monkeypatch.setattr(train_levels, "load_cases", lambda ps, allow_held_out=False: real([p for p in ps if p in
                                                                                         ("18", "22", "61")]))
    monkeypatch.setattr(ll, "NETWORK", {**ll.NETWORK, "channels": (4, 4, 4, 4, 4, 4)})
    train_levels.train(tmp_path / "a", 4, 1, False, 2, 1)
    train_levels.train(tmp_path / "b", 2, 1, False, 2, 1)
    train_levels.train(tmp_path / "b", 4, 1, True, 2, 1)
    sa = torch.load(tmp_path / "a" / "state.pt", weights_only=False)["network"]
    sb = torch.load(tmp_path / "b" / "state.pt", weights_only=False)["network"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert (tmp_path / "a" / "best.pt").is_file() and (tmp_path / "a" / "history.csv").read_text().count("\n") == 3


def test_segment_volume_levels_mode_moves_the_crop_and_says_so(tmp_path, monkeypatch):
    """The level network's L4-5 one level below the coarse answer: the crop moves there, ``locator`` says "level
    network", a QC note gives the disagreement; no disc found: the coarse answer stays, with a QC note."""
    from test_locator import DISCS_Z, _spine_world

    img, loaded = _spine_world(tmp_path, monkeypatch, DISCS_Z["L3-4"])
    monkeypatch.setattr(ll, "get_level_model", lambda device="cpu", path=None: None)
    found = ll.LevelResult(np.array([-24.0, 40.0, DISCS_Z["L4-5"]]), "named", {"L4": -30.0, "L5": 30.0}, True)
    monkeypatch.setattr(ll, "locate_levels", lambda image, model, lr: found)
    res = segment3d.segment_volume(img, loaded, "cpu", fine_options={"locator_mode": "levels"})
    assert res.locator == "level network" and res.l45_centre_lps[2] == pytest.approx(DISCS_Z["L4-5"])
    assert res.locator_details["mode"] == "levels"
    assert res.locator_details["coarse_centre_lps"][2] == pytest.approx(DISCS_Z["L3-4"])
    assert any(re.search(r"level network put L4-5 3[4-6] mm below the coarse model's L4-5 \(about one level\)", q)
               for q in res.qc), res.qc
    monkeypatch.setattr(ll, "locate_levels", lambda image, model, lr: ll.LevelResult(None, "no disc", {}, False))
    res = segment3d.segment_volume(img, loaded, "cpu", fine_options={"locator_mode": "levels"})
    assert res.locator == "coarse model" and res.l45_centre_lps[2] == pytest.approx(DISCS_Z["L3-4"])
    assert any(q.startswith("level network: no disc") for q in res.qc)


def test_level_input_filters_only_the_midline_band_with_the_same_result():
    """``level_input`` smooths only the part of the image around the planes: the same values as smoothing the whole
    volume (an oblique, anisotropic axial volume; the grid off the field-of-view centre)."""
    from scipy.spatial.transform import Rotation

    from spinemorph.intensity import zscore
    from spinemorph.volume import resample_to_grid

    rot = Rotation.from_euler("xyz", [8, -5, 12], degrees=True).as_matrix()
    arr = np.random.default_rng(2).normal(100, 10, (90, 120, 110)).astype(np.float32)
    img = Volume(arr, (0.9, 0.7, 1.6), (-40.0, -50.0, -70.0), rot)
    grid = ld.level_grid(img, img.index_to_lps((70.0, 60.0, 45.0)))
    x, fov = ld.level_input(img, grid)
    whole = resample_to_grid(ld._smoothed(img), grid.spacing_mm, grid.size_ijk, grid.origin_mm, grid.direction,
                             "linear").array
    f = resample_to_grid(img.with_array(np.ones(img.shape, np.uint8)), grid.spacing_mm, grid.size_ijk,
                         grid.origin_mm, grid.direction, "nearest").array.astype(bool)
    ref = zscore(whole, f)
    ref[~f] = 0.0
    assert np.array_equal(ld.pad_planes(f), fov)
    assert np.abs(ld.pad_planes(ref) - x).max() < 1e-4


def test_levels_mode_rescues_an_image_where_the_coarse_model_finds_nothing(tmp_path, monkeypatch):
    """The coarse model finds no L4-5 in its window: the level network (planes on the field of view's left-right
    centre) places the crop, with a QC note; when it names none either, one error; the coarse mode keeps its error."""
    from test_locator import DISCS_Z, _spine_world

    from spinemorph.errors import SpineMorphError

    img, loaded = _spine_world(tmp_path, monkeypatch, DISCS_Z["L3-4"])

    def nothing(prep, lab):
        raise SpineMorphError("the locator found no L4-5 level in this image")

    monkeypatch.setattr(segment3d, "locate_l45", nothing)
    monkeypatch.setattr(ll, "get_level_model", lambda device="cpu", path=None: None)
    seen = {}

    def found(image, model, lr):
        seen["lr"] = np.asarray(lr, float)
        return ll.LevelResult(np.array([-24.0, 40.0, DISCS_Z["L4-5"]]), "named", {"L4": -30.0, "L5": 30.0}, True)

    monkeypatch.setattr(ll, "locate_levels", found)
    res = segment3d.segment_volume(img, loaded, "cpu")
    assert res.locator == "level network" and res.l45_centre_lps[2] == pytest.approx(DISCS_Z["L4-5"])
    assert res.locator_details["coarse_centre_lps"] is None
    assert np.allclose(seen["lr"], img.index_to_lps((np.asarray(img.size_ijk, float) - 1) / 2.0))
    assert any("coarse model found no L4-5 in its window" in q for q in res.qc)
    monkeypatch.setattr(ll, "locate_levels", lambda image, model, lr: ll.LevelResult(None, "no disc named", {}, False))
    with pytest.raises(SpineMorphError, match="no L4-5 level found.*no disc named"):
        segment3d.segment_volume(img, loaded, "cpu")
    with pytest.raises(SpineMorphError, match="the locator found no L4-5 level"):
        segment3d.segment_volume(img, loaded, "cpu", fine_options={"locator_mode": "coarse"})


@needs_spider
def test_locate_levels_does_not_depend_on_how_the_voxels_are_stored():
    """The same real slab (61, a training patient) stored in another axis order and with a flipped axis (as an
    axial-ordered acquisition would be): the same L4-5 centre with the embedded weights (the grid is built on the
    exact re-orientation)."""
    m = ll.get_level_model()
    image, _ = spider.load_slab("61")
    img = image.with_array(image.array.astype(np.float32))
    c = img.index_to_lps((np.asarray(img.size_ijk, float) - 1) / 2)
    arr = np.flip(np.transpose(img.array, (2, 0, 1)), axis=2)  # array (old i, old k, old j reversed)
    d, sp = np.asarray(img.direction, float), np.asarray(img.spacing_mm, float)
    other = Volume(np.ascontiguousarray(arr), (sp[1], sp[2], sp[0]),
                   tuple(img.index_to_lps((0.0, img.size_ijk[1] - 1.0, 0.0))),
                   np.stack([-d[:, 1], d[:, 2], d[:, 0]], axis=1))
    probe = img.index_to_lps((10.0, 20.0, 3.0))
    i, j, k = np.round(other.lps_to_index(probe)).astype(int)
    assert other.array[k, j, i] == img.array[3, 20, 10]  # the same voxel at the same place
    a, b = ll.locate_levels(img, m, c), ll.locate_levels(other, m, c)
    assert a.centre_lps is not None and np.linalg.norm(a.centre_lps - b.centre_lps) < 0.05


@needs_spider
def test_level_network_names_a_merged_training_slab_and_agrees_with_the_counted_levels():
    """Training data only: slab 7 (levels not derivable from its mask) gets L4 / L4-5 disc / L5 from the level network,
    the disc between the bodies; on validation patient 22 (levels counted from the mask) every voxel the rule names
    has the counted identity; a training sample of slab 7 uses the names only when the level model is given."""
    from FORAMEN3DLib import fine_data as fd

    model = ll.get_level_model()
    image, mask = spider.load_slab("7")
    assert fd.slab_labels("7", image, mask).identity == "merged"
    named = ll.slab_labels_from_levels(image, mask, model)
    assert named is not None and named.identity == "level-network"
    b = named.bits
    rows = {c: np.nonzero(b == (1 << c))[1].mean() for c in (fd.L4, fd.DISC, fd.L5)}
    assert rows[fd.L4] < rows[fd.DISC] < rows[fd.L5]  # rows run superior -> inferior
    img22, mask22 = spider.load_slab("22")
    counted = fd.slab_labels("22", img22, mask22)
    assert counted.identity == "counted"
    by_net = ll.slab_labels_from_levels(img22, mask22, model)
    for c in (fd.L4, fd.DISC, fd.L5):
        sel = by_net.bits == (1 << c)
        assert sel.sum() > 1000 and np.array_equal(counted.bits[sel], by_net.bits[sel])
    assert fd.slab_sample("7", 0, 0.0)["meta"]["identity"] == "merged"
    named_by = lambda im, m: ll.slab_labels_from_levels(im, m, model)  # noqa: E731 - as train_fine passes it
    assert fd.slab_sample("7", 0, 0.0, name_levels=named_by)["meta"]["identity"] == "level-network"
