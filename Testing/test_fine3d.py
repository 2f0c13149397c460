"""Fine (0.8 mm, 5-class) FORAMEN3D model: network layout, partial-label loss, crop geometry, slab level
derivation, resumable training and the coarse-to-fine inference round trip (tiny untrained networks)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from FORAMEN3DLib import fine_backends, models3d, segment3d, train_fine
from FORAMEN3DLib import fine_data as fd
from FORAMEN3DLib.network3d import NetworkConfig, UNet3D
from FORAMEN3DLib.preprocess import CANONICAL_AXES, preprocess_volume

from spinemorph.errors import SpineMorphError
from spinemorph.volume import Volume


def test_refine_network_shapes_and_old_layout_unchanged():
    net = UNet3D(NetworkConfig(in_channels=4, out_channels=5, base_channels=4, depth=2, stem_stride=2, refine_channels=4))
    out = net(torch.zeros(1, 4, 16, 24, 32))
    assert out.shape == (1, 5, 16, 24, 32)
    old = UNet3D(NetworkConfig(base_channels=4, depth=2, stem_stride=2))
    assert not any(k.startswith(("refine", "full_res")) for k in old.state_dict())
    with pytest.raises(ValueError, match="refine_channels"):
        NetworkConfig(refine_channels=4, stem_stride=1).validate()


def test_partial_label_loss_merged_and_ignored_voxels():
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 2, 2, 2)
    p = torch.softmax(logits, 1)
    bits = torch.full((1, 2, 2, 2), fd.IGNORE, dtype=torch.uint8)
    bits[0, 0, 0, 0] = fd.MERGED_VERTEBRA
    loss = train_fine.partial_label_loss(logits, bits, dice_weight=0.0)
    expected = -math.log(float(p[0, 0, 0, 0, 0] + p[0, 1, 0, 0, 0] + p[0, 3, 0, 0, 0]))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # a definite label = ordinary cross-entropy
    bits[0, 0, 0, 0] = 1 << fd.CANAL
    loss = train_fine.partial_label_loss(logits, bits, dice_weight=0.0)
    assert float(loss) == pytest.approx(-math.log(float(p[0, 4, 0, 0, 0])), rel=1e-5)
    # everything ignored: zero loss, still differentiable
    bits[:] = fd.IGNORE
    lg = logits.clone().requires_grad_(True)
    loss = train_fine.partial_label_loss(lg, bits)
    loss.backward()
    assert loss.item() == 0.0


def test_bits_and_definite_labels_round_trip():
    lab = np.array([0, 1, 2, 3, 4], np.uint8)
    assert np.array_equal(fd.definite_labels(fd.bits_of(lab)), lab)
    assert fd.definite_labels(np.array([fd.MERGED_DISC, fd.IGNORE], np.uint8)).tolist() == [255, 255]


def test_fine_crop_grid_places_disc_at_offset():
    centre = np.array([10.0, -20.0, 30.0])
    g = fd.fine_crop_grid(centre)
    vol = g.volume(np.zeros(fd.FINE_SHAPE, np.uint8))
    mid = vol.index_to_lps((np.asarray(g.size_ijk) - 1) / 2.0)
    expected = centre + CANONICAL_AXES @ np.asarray(fd.FINE_OFFSET_MM)
    assert np.allclose(mid, expected)
    # the disc centre lies inside the crop, 30 mm anterior of its centre (offset along +i = posterior)
    ijk = vol.lps_to_index(centre)
    assert np.all(ijk >= 0) and np.all(ijk <= np.asarray(g.size_ijk) - 1)


def test_coordinate_channels():
    c = train_fine.coordinate_channels((5, 3, 9))
    assert c.shape == (3, 5, 3, 9)
    assert c[0, 0, 0, 0] == -1 and c[0, -1, 0, 0] == 1 and c[1, 0, 1, 0] == 0 and c[2, 0, 0, 4] == 0
    sub = train_fine.coordinate_channels((5, 3, 9), (1, 0, 2), (2, 3, 4))
    assert np.allclose(sub, c[:, 1:3, :, 2:6])


def _tiny_fine_weights(path, monkeypatch=None):
    net = UNet3D(NetworkConfig(in_channels=4, out_channels=5, base_channels=2, depth=1, stem_stride=2, refine_channels=2))
    train_fine.save_fine_weights(net, path, {"config": "test", "infer_roi": [64, 64, 64]})
    return path


def test_fine_weights_load_and_declare_canal(tmp_path):
    p = _tiny_fine_weights(tmp_path / "fine.pt")
    blob = torch.load(p, weights_only=True)
    assert blob["classes"] == {"1": "L4", "2": "L4-5 disc", "3": "L5", "4": "dural sac"}
    loaded = models3d.load_model(p, "cpu")
    assert segment3d.is_fine_model(loaded)


def test_segment_volume_fine_round_trip(tmp_path, monkeypatch):
    """Coarse-to-fine path: labels come back on the input grid, inside the fine crop, with the 5 classes allowed."""
    monkeypatch.setenv("SPINEMORPH_CACHE_DIR", str(tmp_path / "cache"))  # an ONNX export stays in the test's folder
    p = _tiny_fine_weights(tmp_path / "fine.pt")
    loaded = models3d.load_model(p, "cpu")
    rng = np.random.default_rng(0)
    img = Volume(rng.random((96, 200, 180)).astype(np.float32), (0.8, 0.8, 0.8), (0.0, 0.0, 0.0), CANONICAL_AXES)
    centre = img.index_to_lps((90.0, 100.0, 48.0))

    def fake_locator(image, prep, loaded_, device, progress, should_cancel, locator=None, overlap=0.25):
        raise AssertionError("not used")

    monkeypatch.setattr(segment3d, "segment_preprocessed", lambda prep, *a, **k: (np.zeros((1,), np.uint8), None, {}))
    monkeypatch.setattr(segment3d, "locate_l45", lambda prep, lab: centre)
    res = segment3d.segment_volume(img, loaded, "cpu")
    assert res.labels.shape == img.shape
    assert res.crop_labels.shape == fd.FINE_SHAPE
    assert set(np.unique(res.labels.array)) <= {0, 1, 2, 3, 4}
    # aligned 0.8 mm input: the pasted labels equal the crop labels where the crop lies inside the input
    assert preprocess_volume(img).crop.aligned
    # the crop is snapped onto input voxels: every crop voxel inside the input is an input voxel, labels equal
    cv = res.crop_labels
    ijk = img.lps_to_index(cv.index_to_lps(np.array([[0.0, 0.0, 0.0], [159.0, 143.0, 143.0]])))
    assert np.allclose(ijk, np.round(ijk), atol=1e-4)
    lo = np.round(ijk[0]).astype(int)
    sub_in = res.labels.array[max(lo[2], 0) : lo[2] + 144, max(lo[1], 0) : lo[1] + 144, max(lo[0], 0) : lo[0] + 160]
    sub_crop = cv.array[max(-lo[2], 0) :, max(-lo[1], 0) :, max(-lo[0], 0) :][: sub_in.shape[0], : sub_in.shape[1], : sub_in.shape[2]]
    assert sub_in.size > 0 and np.array_equal(sub_in, sub_crop)
    assert "locate" in res.timings_s


@pytest.mark.usefixtures("spider_root")
def test_slab_levels_counted_agree_with_full_mask(monkeypatch):
    """Counting up from the lowest vertebral body gives the same L4 / disc / L5 as patient 18's own SPACE labels."""
    from spinemorph import spider

    image, mask = spider.load_slab("18")
    full = fd.slab_labels("18", image, mask)
    assert full.identity == "full-mask"
    rows = [s for s in spider.read_manifest() if s.case != "18_t2_SPACE"]
    monkeypatch.setattr(spider, "read_manifest", lambda: rows)
    counted = fd.slab_labels("18", image, mask)
    assert counted.identity == "counted"
    a, b = fd.definite_labels(full.bits), fd.definite_labels(counted.bits)
    for c in (fd.L4, fd.DISC, fd.L5):
        inter = ((a == c) & (b == c)).sum()
        assert 2 * inter / ((a == c).sum() + (b == c).sum()) > 0.98


@pytest.mark.usefixtures("spider_root")
def test_held_out_patients_are_refused():
    from spinemorph import spider
    from spinemorph.errors import SpineMorphError

    with pytest.raises(SpineMorphError, match="held.out"):
        fd.slab_sample(spider.HELD_OUT_PATIENTS[0], 0)
    with pytest.raises(SpineMorphError, match="held-out"):
        fd.synthetic_sample(spider.HELD_OUT_MASK_CASES[0], 0)


def test_config_rejects_held_out_validation_patients(tmp_path):
    from spinemorph.errors import InputError

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"val_patients": ["98"]}))
    with pytest.raises(InputError, match="held-out"):
        train_fine.load_fine_config(cfg)


def test_shipped_fine_config_is_valid():
    cfg = train_fine.load_fine_config(models3d.MODELS_DIR / "configs" / "foramen3d_fine.json")
    assert cfg["network"]["out_channels"] == 5


def test_morphometry_and_meshes_unchanged_by_a_canal_class():
    """A label map carrying the fine model's dural-sac class (4) measures exactly like the same map without it, and
    the default meshes are still the three bone / disc structures (downstream keeps working with the extra class)."""
    from FORAMEN3DLib.meshes import structure_meshes
    from FORAMEN3DLib.morphometry import measure_foramen

    from spinemorph import acquisition, phantom

    ph = phantom.make_phantom(seed=3, vary=False)
    acq = acquisition.acquire_space_t2(ph, seed=3)
    fo = acq.labels["foramen"]
    lab5 = np.asarray(fo.array, np.uint8).copy()
    lab5[(np.asarray(acq.labels["dural_sac"].array) > 0) & (lab5 == 0)] = 4
    assert (lab5 == 4).sum() > 1000
    r4 = measure_foramen(fo)
    r5 = measure_foramen(fo.with_array(lab5))
    for side in ("left", "right"):
        for m in ("height", "width", "area"):
            assert getattr(r5.sides[side], m).value == getattr(r4.sides[side], m).value
    assert set(structure_meshes(fo.with_array(lab5))) == {"L4", "L4-5 disc", "L5"}


def test_warm_start_continues_from_exported_weights(tmp_path):
    """A machine without the run folder continues from the committed fp16 weights at their recorded iteration."""
    from spinemorph.errors import InputError

    cfg = NetworkConfig(in_channels=4, out_channels=5, base_channels=2, depth=1, stem_stride=2, refine_channels=2)
    src = UNet3D(cfg)
    p = tmp_path / "fine.pt"
    train_fine.save_fine_weights(src, p, {"config": "test", "iteration": 7})
    dst = UNet3D(cfg)
    assert train_fine._warm_start(dst, p, {"max_iterations": 100}) == 7
    for (name, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        if a.is_floating_point():
            assert torch.equal(a.half().float(), b), name  # fp16 export loaded exactly
    with pytest.raises(InputError, match="max_iterations"):
        train_fine._warm_start(UNet3D(cfg), p, {"max_iterations": 7})
    other = UNet3D(NetworkConfig(in_channels=4, out_channels=5, base_channels=4, depth=1, stem_stride=2, refine_channels=2))
    with pytest.raises(InputError, match="different network"):
        train_fine._warm_start(other, p, {"max_iterations": 100})


def test_sac_end_gap_and_level_step_known_answers():
    lab = np.zeros(fd.FINE_SHAPE, np.uint8)
    fov = np.ones(fd.FINE_SHAPE, bool)
    assert math.isnan(segment3d.sac_end_gap_mm(lab, fov))
    lab[60:80, 10:110, 100:120] = fd.CANAL  # sac rows 10..109 of 144
    assert segment3d.sac_end_gap_mm(lab, fov) == pytest.approx((143 - 109) * 0.8)
    fov[:, 120:, :] = False  # the image ends at row 119: the gap is measured to the last imaged row
    assert segment3d.sac_end_gap_mm(lab, fov) == pytest.approx((119 - 109) * 0.8)
    lab[60:80, 110:144, 100:120] = fd.CANAL
    assert segment3d.sac_end_gap_mm(lab, np.ones(fd.FINE_SHAPE, bool)) == 0.0


def _sac_world(tmp_path, monkeypatch, sac_end_z):
    """A 0.8 mm image whose bright column (the "dural sac") ends at LPS z = ``sac_end_z``; the network is replaced by
    a threshold that labels the bright voxels as canal and fixed rows as L4 / L5, the locator by a fixed L4-5 centre
    at z = 0."""
    p = _tiny_fine_weights(tmp_path / "fine.pt")
    loaded = models3d.load_model(p, "cpu")
    arr = np.zeros((96, 400, 200), np.float32)  # k, j, i on CANONICAL_AXES (PIR): j inferior, z = -0.8 j + origin
    origin = (0.0, 0.0, 160.0)
    img = Volume(arr, (0.8, 0.8, 0.8), origin, CANONICAL_AXES)
    j_end = int(round((origin[2] - sac_end_z) / 0.8))
    arr[40:56, :j_end, 120:140] = 1.0
    centre = img.index_to_lps((100.0, 200.0, 48.0))
    assert abs(centre[2]) < 1e-6

    def fake_net(loaded_, x, roi=None, overlap=0.25, backend="auto", precision="fp32", canal_threshold=None):
        out = np.zeros(x.shape, np.uint8)
        out[x > 1.0] = fd.CANAL
        out[40:100, 20:40, 20:80] = fd.L4
        out[40:100, 60:80, 20:80] = fd.L5
        return out

    monkeypatch.setattr(segment3d, "fine_network_labels", fake_net)
    monkeypatch.setattr(segment3d, "segment_preprocessed", lambda prep, *a, **k: (np.zeros((1,), np.uint8), None, {}))
    monkeypatch.setattr(segment3d, "locate_l45", lambda prep, lab: centre)
    return img, loaded


#: the coarse model's answer alone (these tests are about the crop on the coarse answer, not the level network)
COARSE = {"locator_mode": "coarse"}


def test_level_check_notes_a_sac_that_ends_high_and_changes_no_label(tmp_path, monkeypatch):
    """The sac ends 40 mm above the crop's lower face (as when the crop sits one level low): a QC note, the crop and
    labels stay; 25 mm (within what correct crops of training patients show) or a sac reaching the face: no note."""
    lower_face_z = -(fd.FINE_OFFSET_MM[1] + 0.8 * (fd.FINE_SHAPE[1] - 1) / 2)  # disc at z = 0, j runs inferior
    img, loaded = _sac_world(tmp_path, monkeypatch, lower_face_z + 40.0)
    res = segment3d.segment_volume(img, loaded, "cpu", fine_options=COARSE)
    assert len(res.qc) == 1 and "L5-S1" in res.qc[0]
    gap = float(__import__("re").search(r"ends (\d+) mm above", res.qc[0]).group(1))
    assert abs(gap - 40.0) <= 2.5  # the crop is snapped onto the 0.8 mm voxels (≤ 1 voxel) + the last sac row
    off = segment3d.segment_volume(img, loaded, "cpu", fine_options={**COARSE, "level_check": False})
    assert off.qc == () and np.array_equal(off.labels.array, res.labels.array)
    assert off.crop_labels.origin_mm == res.crop_labels.origin_mm
    for end in (lower_face_z + 25.0, lower_face_z - 20.0):
        img2, loaded2 = _sac_world(tmp_path, monkeypatch, end)
        assert segment3d.segment_volume(img2, loaded2, "cpu", fine_options=COARSE).qc == ()


def test_onnx_backend_same_labels_and_cached_export(tmp_path, monkeypatch):
    """ONNX Runtime windows give the torch labels; the export is written once to the cache folder and reused."""
    from spinemorph.onnx_export import onnx_available

    if not onnx_available():
        pytest.skip("onnx / onnxruntime not installed (optional)")
    monkeypatch.setenv("SPINEMORPH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(fine_backends, "_SESSIONS", {})
    loaded = models3d.load_model(_tiny_fine_weights(tmp_path / "fine.pt"), "cpu")
    x = np.random.default_rng(0).normal(size=(72, 72, 80)).astype(np.float32)
    ref = segment3d.fine_network_labels(loaded, x, (64, 64, 64), 0.25, "torch")
    got = segment3d.fine_network_labels(loaded, x, (64, 64, 64), 0.25, "onnx")
    assert (got != ref).mean() < 1e-3
    files = list((tmp_path / "cache" / "onnx").glob("*_64x64x64_*.onnx"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    fine_backends._SESSIONS.clear()
    assert np.array_equal(segment3d.fine_network_labels(loaded, x, (64, 64, 64), 0.25, "onnx"), got)
    assert files[0].stat().st_mtime_ns == stamp  # loaded from the cache, not exported again


def test_openvino_backend_same_labels_cached_ir_and_bf16(tmp_path, monkeypatch):
    """OpenVINO windows (the CPU default) give the torch labels at fp32; the IR is converted once into the cache
    folder and reused; bf16 changes few labels and the record says which arithmetic ran; a wrong input shape and a
    broken IR each give one clear error."""
    from spinemorph.errors import ModelError
    from spinemorph.openvino_runtime import OpenVinoPredictor, cpu_has_bf16, openvino_available

    if not openvino_available():
        pytest.skip("openvino not installed")
    monkeypatch.setenv("SPINEMORPH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(fine_backends, "_SESSIONS", {})
    assert fine_backends.resolve_fine_backend("cpu", "auto", "fp32") == "openvino"
    assert fine_backends.resolve_fine_backend("cpu", "auto", "bf16") == "openvino"
    with pytest.raises(ValueError, match="backend must be"):
        fine_backends.resolve_fine_backend("cpu", "tensorrt")
    with pytest.raises(ValueError, match="fp32 only"):  # never a silent fp32 run when bf16 was asked for
        fine_backends.resolve_fine_backend("cpu", "onnx", "bf16")
    loaded = models3d.load_model(_tiny_fine_weights(tmp_path / "fine.pt"), "cpu")
    x = np.random.default_rng(0).normal(size=(72, 72, 80)).astype(np.float32)
    ref_logits = segment3d.fine_network_logits(loaded, x, (64, 64, 64), 0.25, "torch")
    got_logits = segment3d.fine_network_logits(loaded, x, (64, 64, 64), 0.25, "openvino")
    assert np.abs(got_logits - ref_logits).max() < 1e-2
    got = segment3d.decide_fine_labels(got_logits)
    assert (got != segment3d.decide_fine_labels(ref_logits)).mean() < 1e-3
    files = list((tmp_path / "cache" / "openvino").glob("*_64x64x64_*.xml"))
    assert len(files) == 1 and files[0].with_suffix(".bin").is_file()
    stamp = files[0].stat().st_mtime_ns
    fine_backends._SESSIONS.clear()
    assert np.array_equal(segment3d.fine_network_labels(loaded, x, (64, 64, 64), 0.25, "openvino"), got)
    assert files[0].stat().st_mtime_ns == stamp  # read from the cache, not converted again
    rec = fine_backends.inference_record("cpu", "openvino", "fp32")
    assert rec["backend"] == "openvino" and rec["precision"] == "fp32"
    bf = segment3d.fine_network_labels(loaded, x, (64, 64, 64), 0.25, "openvino", "bf16")
    assert (bf != got).mean() < 0.02
    assert fine_backends.inference_record("cpu", "openvino", "bf16")["precision"] == ("bf16" if cpu_has_bf16() else "fp32")
    # a cache folder that cannot be created: converted into a temporary folder, the same labels
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    monkeypatch.setenv("SPINEMORPH_CACHE_DIR", str(blocker))
    fine_backends._SESSIONS.clear()
    assert np.array_equal(segment3d.fine_network_labels(loaded, x, (64, 64, 64), 0.25, "openvino"), got)
    # asked for by name without the package: one clear error
    import spinemorph.openvino_runtime as ovr

    fine_backends._SESSIONS.clear()
    monkeypatch.setattr(ovr, "openvino_available", lambda: False)
    with pytest.raises(ModelError, match="needs the package openvino"):
        segment3d.fine_network_labels(loaded, x, (64, 64, 64), 0.25, "openvino")
    monkeypatch.undo()
    pred = OpenVinoPredictor(files[0], threads=1)
    with pytest.raises(ModelError, match="takes inputs of shape"):
        pred(np.zeros((1, 4, 32, 64, 64), np.float32))
    files[0].write_text("not an IR")
    with pytest.raises(ModelError, match="OpenVINO cannot load"):
        OpenVinoPredictor(files[0])


def test_canal_threshold_decision_known_answers():
    """Class 4 only where its softmax probability reaches the threshold; a weak sac voxel takes the best other class
    (here L5 = 3); argmax when None."""
    lg = np.zeros((5, 1, 1, 4), np.float32)
    lg[:, 0, 0, 0] = [0, 0, 0, 0, 5]  # strong sac: p4 = e^5 / (e^5 + 4) = 0.974
    lg[:, 0, 0, 1] = [0, 0, 0, 1.0, 1.2]  # weak sac: argmax 4, p4 = e^1.2 / (3 + e + e^1.2) = 0.367; next best L5
    lg[:, 0, 0, 2] = [0, 0, 3, 0, 0]  # disc
    lg[:, 0, 0, 3] = [2.0, 0, 0, 0, 1.9]  # background wins the argmax anyway
    p4 = np.exp(lg[4, 0, 0]) / np.exp(lg[:, 0, 0]).sum(0)
    assert p4[0] == pytest.approx(0.9738, abs=1e-3) and p4[1] == pytest.approx(0.3673, abs=1e-3)
    assert segment3d.decide_fine_labels(lg, None)[0, 0].tolist() == [4, 4, 2, 0]
    assert segment3d.decide_fine_labels(lg, 0.3)[0, 0].tolist() == [4, 4, 2, 0]
    assert segment3d.decide_fine_labels(lg, 0.5)[0, 0].tolist() == [4, 3, 2, 0]
    # above p4 of the strong voxel: it becomes background (logits of classes 0-3 tie at 0: the first wins)
    assert segment3d.decide_fine_labels(lg, 0.98)[0, 0].tolist() == [0, 3, 2, 0]
    for bad in (0.0, 1.0, -0.2, "x"):
        with pytest.raises(SpineMorphError, match="canal_threshold"):
            segment3d.decide_fine_labels(lg, bad)


def test_canal_threshold_is_read_from_the_catalogue_and_used(tmp_path, monkeypatch):
    """A catalogue entry's ``canal_threshold`` reaches the loaded model and the fine network's decision; a weights
    file given by path has no setting (argmax); fine_options can override it."""
    p = _tiny_fine_weights(tmp_path / "fine.pt")
    cat = tmp_path / "catalog.json"
    entry = models3d.install_model(p, "tiny-fine", catalog=cat)
    models3d.update_entry("tiny-fine", {"canal_threshold": 0.7}, catalog=cat)
    loaded = models3d.load_model("tiny-fine", "cpu", catalog=cat)
    assert loaded.settings == {"canal_threshold": 0.7} and segment3d.model_canal_threshold(loaded) == 0.7
    assert entry["sha256"] == loaded.sha256
    # re-installing the same weights keeps the setting
    models3d.install_model(p, "tiny-fine", catalog=cat)
    assert models3d.load_model("tiny-fine", "cpu", catalog=cat).settings["canal_threshold"] == 0.7
    assert segment3d.model_canal_threshold(models3d.load_model(p, "cpu")) is None
    img, _ = _sac_world(tmp_path, monkeypatch, -100.0)
    seen = []
    fake = segment3d.fine_network_labels

    def spy(loaded_, x, roi=None, overlap=0.25, backend="auto", precision="fp32", canal_threshold=None):
        seen.append(canal_threshold)
        return fake(loaded_, x, roi, overlap, backend, precision)

    monkeypatch.setattr(segment3d, "fine_network_labels", spy)
    res = segment3d.segment_volume(img, loaded, "cpu")
    assert seen == [0.7] and res.canal_threshold == 0.7 and res.locator == "coarse model"
    res = segment3d.segment_volume(img, loaded, "cpu", fine_options={"canal_threshold": None})
    assert seen[-1] is None and res.canal_threshold is None


def test_hand_placed_l45_point_centres_the_crop_and_skips_the_locator(tmp_path, monkeypatch):
    """``l45_point`` (LPS mm) replaces the coarse locator: the crop's centre is the point + the crop offset (to
    within the 0.8 mm snapping), the locator never runs, the result says "manual point"; a point outside the image
    is one clear error; a single-pass model refuses the point."""
    from spinemorph.errors import InputError

    img, loaded = _sac_world(tmp_path, monkeypatch, -100.0)

    def no_locator(*a, **k):
        raise AssertionError("the coarse locator must not run with a hand-placed point")

    monkeypatch.setattr(segment3d, "segment_preprocessed", no_locator)
    point = np.asarray(img.index_to_lps((110.0, 180.0, 40.0)))
    res = segment3d.segment_volume(img, loaded, "cpu", l45_point=tuple(point))
    assert res.locator == "manual point"
    assert np.allclose(res.l45_centre_lps, point, atol=1e-3)
    cv = res.crop_labels
    mid = cv.index_to_lps((np.asarray(cv.size_ijk) - 1) / 2.0)
    expected = point + np.asarray(cv.direction).reshape(3, 3) @ np.asarray(fd.FINE_OFFSET_MM)
    assert np.all(np.abs(mid - expected) <= 0.4 + 1e-6)  # snapped onto the input's 0.8 mm voxels
    outside = img.index_to_lps((110.0, 180.0, 200.0))  # k = 200 > 95: beyond the image
    with pytest.raises(InputError, match="outside the image") as exc:
        segment3d.segment_volume(img, loaded, "cpu", l45_point=tuple(outside))
    assert "\n" not in str(exc.value)
    with pytest.raises(InputError, match="three"):
        segment3d.segment_volume(img, loaded, "cpu", l45_point=(1.0, 2.0))
    coarse = models3d.LoadedModel("coarse", loaded.network, 2, {}, loaded.path, "", loaded.device)
    with pytest.raises(InputError, match="one pass"):
        segment3d.segment_volume(img, coarse, "cpu", l45_point=tuple(point))
    with pytest.raises(InputError, match="locator 'count'.*one pass"):  # never silently ignored
        segment3d.segment_volume(img, coarse, "cpu", fine_options={"locator_mode": "count"})


def test_segment_cli_l45_point_ras_and_json(tmp_path, monkeypatch):
    """``foramen segment --l45-point X,Y,Z [--ras]``: RAS is converted to LPS; segmentation.json records the locator."""
    from FORAMEN3DLib import cli_seg

    from spinemorph.volume import write_volume

    got = {}

    def fake_segment(vol, model="default", device="auto", l45_point=None, fine_options=None, **k):
        got["point"], got["fine"] = l45_point, fine_options
        return segment3d.SegmentationResult(vol.with_array(np.zeros(vol.shape, np.uint8)), vol, {"total": 0.1}, "m",
                                            "cpu", (), "manual point" if l45_point else "coarse model",
                                            tuple(l45_point) if l45_point else (0.0, 0.0, 0.0), None,
                                            inference={"backend": "onnxruntime", "threads": 2, "precision": "fp32",
                                                       "device": "cpu"})

    monkeypatch.setattr(segment3d, "segment_volume", fake_segment)
    img = Volume(np.zeros((8, 9, 10), np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    write_volume(img, tmp_path / "img.nrrd")
    assert cli_seg.main(["segment", str(tmp_path / "img.nrrd"), "--out", str(tmp_path / "o"),
                         "--l45-point", "1.5,-2,3", "--ras"]) == 0
    assert got["point"] == (-1.5, 2.0, 3.0)
    doc = json.loads((tmp_path / "o" / "segmentation.json").read_text())
    assert doc["locator"] == "manual point" and doc["l45_point_given"]["coordinates"] == "RAS"
    assert doc["l45_centre_lps"] == [-1.5, 2.0, 3.0] and got["fine"] is None
    assert doc["inference"] == {"backend": "onnxruntime", "threads": 2, "precision": "fp32", "device": "cpu"}
    assert cli_seg.main(["segment", str(tmp_path / "img.nrrd"), "--out", str(tmp_path / "o3"), "--locator", "count"]) == 0
    assert got["fine"] == {"locator_mode": "count"} and got["point"] is None
    with pytest.raises(SystemExit):
        cli_seg.main(["segment", str(tmp_path / "img.nrrd"), "--out", str(tmp_path / "o2"), "--l45-point", "1,2"])


def test_dsca3d_calibrate_refuses_held_out_patients(capsys):
    """scripts/dsca3d_calibrate.py chooses on validation patients only: a held-out test patient is refused before
    anything runs."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("dsca3d_calibrate", root / "scripts" / "dsca3d_calibrate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--patients", "191,136", "--out", "unused.json"]) == 1
    assert "held-out test patients 136" in capsys.readouterr().err
    cfg = json.loads(mod.FINE_CONFIG.read_text())
    assert set(cfg["val_patients"]) == {"191", "241", "22", "146"}


def test_evaluate_fine_roi_option_is_checked(tmp_path, capsys):
    """`evaluate_fine --roi` takes three window sizes (array order); anything else is one clear error, nothing written."""
    from FORAMEN3DLib import evaluate_fine

    assert evaluate_fine.main(["--model", "foramen3d-fine-cpu", "--out", str(tmp_path / "o"), "--roi", "96,96"]) == 1
    assert "--roi needs three sizes" in capsys.readouterr().err
    assert evaluate_fine.main(["--model", "foramen3d-fine-cpu", "--out", str(tmp_path / "o"), "--roi", "144,144,160"]) == 1
    assert "multiple of 32" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _arch_crop():
    """A 20×30×40 crop (k, j, i): canal at i 10-14 (rows j 5-24), vertebra voxels in front of it (body, i 2-8) and
    behind it (arch, i 16-30), background elsewhere."""
    from FORAMEN3DLib import fine_data as fd

    lab = np.zeros((20, 30, 40), np.uint8)
    lab[8:12, 5:25, 10:15] = fd.CANAL
    lab[4:16, 0:12, 2:9] = fd.L4
    lab[4:16, 0:12, 16:31] = fd.L4
    lab[4:16, 16:30, 2:9] = fd.L5
    lab[4:16, 16:30, 16:31] = fd.L5
    return lab


def test_arch_region_and_arch_centred_patches():
    """behind_canal_wall: rows without canal take the nearest row's wall; arch_voxels are exactly the vertebra voxels
    behind it (also for merged slab labels); with arch_p = 1 every patch is centred on one of them."""
    from FORAMEN3DLib import fine_data as fd
    from FORAMEN3DLib.train_fine import _patch

    lab = _arch_crop()
    region = fd.behind_canal_wall(lab == fd.CANAL)
    assert region[:, :, 10:].all() and not region[:, :, :10].any()  # rows 0-4 and 25-29 take the wall of rows 5 / 24
    bits = fd.bits_of(lab)
    arch = np.zeros(lab.size, bool)
    arch[fd.arch_voxels(bits)] = True
    assert np.array_equal(arch.reshape(lab.shape), ((lab == fd.L4) | (lab == fd.L5)) & region)
    merged = np.where((lab == fd.L4) | (lab == fd.L5), fd.MERGED_VERTEBRA, bits).astype(np.uint8)
    assert np.array_equal(fd.arch_voxels(merged), fd.arch_voxels(bits))
    assert len(fd.arch_voxels(np.where(lab == fd.CANAL, 1, bits).astype(np.uint8))) == 0  # no canal: no arch
    rng = np.random.default_rng(0)
    x = np.zeros(lab.shape, np.float32)
    for _ in range(20):
        _, bp, lo = _patch(rng, x, bits, (8, 8, 8), 0.0, arch_p=1.0)
        centre = fd.definite_labels(bp)[4, 4, 4]
        k, j, i = (np.asarray(lo) + 4)
        assert centre in (fd.L4, fd.L5) and i >= 16 and region[k, j, i]  # (clipping in j keeps it on the arch)


def test_arch_dice_agrees_with_the_evaluation_metric():
    from FORAMEN3DLib import fine_data as fd
    from FORAMEN3DLib.evaluate_fine import _arch_dice
    from FORAMEN3DLib.train_fine import arch_dice_on_definite

    lab = _arch_crop()
    pred = lab.copy()
    pred[4:16, 0:12, 24:31] = 0  # half of the L4 arch missed
    known = np.ones(lab.shape, bool)
    d = arch_dice_on_definite(fd.bits_of(lab), pred)
    assert d == pytest.approx(_arch_dice(lab, pred, known)) and 0.7 < d < 0.95
    assert arch_dice_on_definite(fd.bits_of(lab), lab) == 1.0
    assert np.isnan(arch_dice_on_definite(fd.bits_of(np.where(lab == fd.CANAL, 0, lab)), pred))
