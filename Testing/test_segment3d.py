"""FORAMEN3D segmentation core: 3D U-Net shapes, preprocessing and its inverse, post-processing, metrics,
weights loading, and end-to-end segmentation."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from FORAMEN3DLib import models3d, preprocess, segment3d
from FORAMEN3DLib.evaluate3d import confusion_counts, structure_metrics
from FORAMEN3DLib.network3d import NetworkConfig, UNet3D, build_network, padded_shape

from spinemorph.errors import InputError, ModelError, SpineMorphError
from spinemorph.volume import Volume

torch.set_num_threads(1)
PIR = preprocess.CANONICAL_AXES


def dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2 * (a & b).sum() / (a.sum() + b.sum())


# ---------------------------------------------------------------------- network
@pytest.mark.parametrize(
    "cfg, shape",
    [
        (dict(base_channels=4, depth=4, stem_stride=1), (16, 32, 48)),
        (dict(base_channels=4, depth=4, stem_stride=2), (32, 32, 64)),
        (dict(base_channels=4, depth=2, stem_stride=1, norm="batch"), (8, 12, 16)),
    ],
)
def test_unet_output_shape_and_channels(cfg, shape):
    net = UNet3D(**cfg).eval()
    with torch.inference_mode():
        y = net(torch.randn(2, 1, *shape))
    assert y.shape == (2, 4, *shape)


def test_unet_uses_trilinear_upsampling_only():
    net = UNet3D(base_channels=4, depth=3, stem_stride=2)
    ups = [m for m in net.modules() if isinstance(m, torch.nn.Upsample)]
    assert ups and all(m.mode == "trilinear" for m in ups)
    assert not any(isinstance(m, torch.nn.ConvTranspose3d) for m in net.modules())


def test_unet_rejects_indivisible_input():
    net = UNet3D(base_channels=2, depth=4)
    with pytest.raises(ValueError, match="multiples of 16"):
        net(torch.zeros(1, 1, 16, 16, 20))


def test_padding_arithmetic_of_the_full_input():
    assert preprocess.CROP_ROWS == (70, 250) and preprocess.CROP_COLS == (60, 240)
    assert preprocess.CROP_SHAPE == (128, 180, 180)
    assert padded_shape(preprocess.CROP_SHAPE, 16) == preprocess.PADDED_SHAPE == (128, 192, 192)
    assert preprocess.PAD_BEFORE == (0, 6, 6)
    # four 2x poolings of the paper network, and the strided coarse model on the 2x pooled input
    assert all(s % NetworkConfig(depth=4).size_divisor == 0 for s in preprocess.PADDED_SHAPE)
    assert all((s // 2) % NetworkConfig(depth=4, stem_stride=2).size_divisor == 0 for s in preprocess.PADDED_SHAPE)
    x = np.arange(np.prod(preprocess.CROP_SHAPE), dtype=np.float32).reshape(preprocess.CROP_SHAPE)
    p = preprocess.pad_crop(x)
    assert p.shape == (128, 192, 192) and p[:, :6].sum() == 0 and p[:, -6:].sum() == 0
    np.testing.assert_array_equal(preprocess.unpad(p), x)


# ---------------------------------------------------------------------- preprocessing
def _directions():
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            d = np.zeros((3, 3))
            for c in range(3):
                d[perm[c], c] = signs[c]
            out.append(d)
    return out


@pytest.mark.parametrize("direction", _directions()[::5])
def test_reorientation_is_exact_and_keeps_physical_points(direction):
    arr = np.random.default_rng(0).permutation(4 * 5 * 6).reshape(4, 5, 6).astype(np.int32)  # every value unique
    vol = Volume(arr, (0.5, 0.7, 1.1), (3.0, -2.0, 7.0), direction)
    reo = preprocess.Reorientation.for_direction(direction)
    re = reo.apply(vol)
    assert re.axis_codes() == "PIR"
    np.testing.assert_allclose(re.direction, PIR, atol=1e-12)
    np.testing.assert_array_equal(reo.invert_array(re.array), arr)
    # the voxel holding a value has the same LPS position in both layouts
    for value_idx in [(0, 0, 0), (3, 4, 5), (1, 2, 3)]:
        k, j, i = value_idx
        p_orig = vol.index_to_lps((i, j, k))
        kk, jj, ii = np.argwhere(re.array == arr[k, j, i])[0]
        np.testing.assert_allclose(re.index_to_lps((ii, jj, kk)), p_orig, atol=1e-9)


def test_canonical_input_crop_and_exact_inverse():
    """0.8 mm PIR 320x320 input: the crop is rows 70-249, cols 60-239, 128 centred slices; inverse exact."""
    nk = 100
    lab = np.zeros((nk, 320, 320), np.uint8)
    lab[20:80, 100:150, 80:200] = 1
    lab[30:70, 150:160, 90:190] = 2
    lab[20:80, 160:220, 80:200] = 3
    img = lab.astype(np.float32) * 100 + np.random.default_rng(1).normal(0, 5, lab.shape).astype(np.float32)
    vol = Volume(img, (0.8,) * 3, (10.0, 20.0, 30.0), PIR)
    prep = preprocess.preprocess_volume(vol)
    assert prep.crop.aligned and prep.crop.start_index == (60, 70, (nk - 128) // 2)
    assert prep.array.shape == (128, 192, 192) and prep.array.dtype == np.float32
    crop_lab = prep.labels_to_crop(vol.with_array(lab))
    k0 = -((nk - 128) // 2)
    inner = preprocess.unpad(crop_lab)
    np.testing.assert_array_equal(inner[k0 : k0 + nk], lab[:, 70:250, 60:240])
    assert inner[:k0].sum() == 0 and inner[k0 + nk :].sum() == 0
    np.testing.assert_array_equal(prep.labels_to_input(crop_lab), lab)
    # crop origin = physical position of canonical voxel (60, 70, k0')
    np.testing.assert_allclose(prep.crop.origin_mm, vol.index_to_lps((60, 70, (nk - 128) // 2)), atol=1e-9)
    # z-score inside the field of view, zero outside
    z = preprocess.unpad(prep.array)
    fov = prep.fov_mask
    assert abs(z[fov].mean()) < 1e-4 and abs(z[fov].std() - 1) < 1e-3 and np.all(z[~fov] == 0)


def test_aligned_odd_sized_axial_input_round_trip():
    """0.8 mm but 257x301 in-plane, 90 slices, stored axially (LPS): exact indexing path after re-orientation."""
    shape = (90, 301, 257)  # k (S), j (P), i (L)
    rng = np.random.default_rng(2)
    lab = np.zeros(shape, np.uint8)
    lab[20:60, 100:200, 90:170] = rng.integers(1, 4)
    lab[40:45, 120:130, 100:110] = 2
    vol = Volume(rng.normal(size=shape).astype(np.float32), (0.8, 0.8, 0.8), (-100.0, -120.0, -40.0), np.eye(3))
    prep = preprocess.preprocess_volume(vol)
    assert prep.crop.aligned
    back = prep.labels_to_input(prep.labels_to_crop(vol.with_array(lab)))
    # every label voxel inside the crop window comes back exactly; the window holds all of them here
    np.testing.assert_array_equal(back, lab)


def test_resampled_input_geometry_is_exact():
    """Non-0.8 mm LPS input: a linear intensity ramp is reproduced exactly on the crop grid (trilinear resampling
    is exact for linear functions), a label box keeps its physical volume and centroid, and the inverse mapping
    recovers the labels."""
    shape = (150, 260, 300)
    vol0 = Volume(np.zeros(shape, np.float32), (0.5, 0.6, 1.0), (-75.0, -80.0, -100.0), np.eye(3))
    k, j, i = np.indices(shape, sparse=True)
    x = vol0.origin_mm[0] + 0.5 * i
    y = vol0.origin_mm[1] + 0.6 * j
    z = vol0.origin_mm[2] + 1.0 * k
    ramp = (0.3 * x + 0.5 * y - 0.2 * z + 100).astype(np.float32)
    vol = vol0.with_array(np.broadcast_to(ramp, shape).copy())
    prep = preprocess.preprocess_volume(vol)
    assert not prep.crop.aligned
    raw = preprocess.to_crop_grid(vol, prep.crop, prep.reorientation)
    cg = prep.crop.volume(raw)
    kk, jj, ii = np.indices(raw.shape)
    p = cg.index_to_lps(np.stack([ii, jj, kk], -1))
    expect = 0.3 * p[..., 0] + 0.5 * p[..., 1] - 0.2 * p[..., 2] + 100
    # inside the field of view, half a voxel away from its border
    inside = np.all((p > np.array([-75, -80, -100]) + 1) & (p < np.array([74.5, 75.4, 49]) - 1), axis=-1)
    assert inside.mean() > 0.5
    assert np.abs(raw[inside] - expect[inside]).max() < 1e-3
    # label box 60 x 30 x 40 mm centred at (0, 0, 0): volume and centroid on the 0.8 mm crop
    box = ((np.abs(x) < 30) & (np.abs(y) < 15) & (np.abs(z) < 20)).astype(np.uint8)
    box = np.broadcast_to(box, shape).copy()
    crop_lab = preprocess.unpad(prep.labels_to_crop(vol.with_array(box)))
    vol_mm3 = (crop_lab == 1).sum() * 0.8**3
    assert abs(vol_mm3 - 60 * 30 * 40) / (60 * 30 * 40) < 0.03
    cen = cg.index_to_lps(np.argwhere(crop_lab == 1).mean(0)[::-1])
    np.testing.assert_allclose(cen, [0, 0, 0], atol=0.5)
    back = prep.labels_to_input(preprocess.pad_crop(crop_lab))
    assert dice(back == 1, box == 1) > 0.98
    onehot = np.stack([(preprocess.pad_crop(crop_lab) == c) for c in range(4)]).astype(np.float32)
    back2 = prep.probabilities_to_input(onehot)
    assert dice(back2 == 1, box == 1) > 0.98


def test_preprocess_rejects_bad_inputs():
    vol = Volume(np.full((20, 20, 20), np.nan, np.float32), (1, 1, 1))
    with pytest.raises(InputError):
        preprocess.preprocess_volume(vol)
    tiny = Volume(np.random.default_rng(0).normal(size=(4, 4, 4)).astype(np.float32), (0.8, 0.8, 0.8))
    with pytest.raises(InputError, match="crop window"):
        preprocess.preprocess_volume(tiny)


# ---------------------------------------------------------------------- post-processing and metrics
def test_postprocess_largest_component_and_holes():
    lab = np.zeros((30, 30, 30), np.uint8)
    lab[2:12, 2:12, 2:12] = 1
    lab[6:8, 6:8, 6:8] = 0  # hole in L4
    lab[20:23, 20:23, 20:23] = 1  # stray island of L4
    lab[14:18, 2:12, 2:12] = 3
    lab[15:17, 5:7, 5:7] = 2  # disc voxels enclosed by L5: stay disc (a filled hole never overwrites)
    out = segment3d.postprocess_labels(lab)
    assert out[7, 7, 7] == 1 and out[21, 21, 21] == 0
    assert (out == 1).sum() == 1000
    assert (out == 2).sum() == 8 and (out == 3).sum() == (lab == 3).sum()


def test_metrics_on_known_masks():
    truth = np.zeros((20, 20, 20), np.uint8)
    pred = np.zeros_like(truth)
    truth[0:10, 0:10, 0:10] = 1
    pred[2:12, 0:10, 0:10] = 1  # shifted by 2: TP 800, FP 200, FN 200
    truth[15:20, 15:20, 15:20] = 2
    pred[15:20, 15:20, 15:20] = 2
    pred[0:1, 19:20, 19:20] = 2  # one false positive disc voxel
    m = structure_metrics(truth, pred)
    assert m["L4"]["tp"] == 800 and m["L4"]["fp"] == 200 and m["L4"]["fn"] == 200
    assert m["L4"]["dsc"] == pytest.approx(0.8) and m["L4"]["precision"] == pytest.approx(0.8)
    assert m["L4-5 disc"]["recall"] == 1.0 and m["L4-5 disc"]["precision"] == pytest.approx(125 / 126)
    assert np.isnan(m["L5"]["dsc"]) and np.isnan(m["L5"]["precision"])
    c = confusion_counts(truth, pred)
    assert c.sum() == truth.size and c[1, 1] == 800 and c[0, 2] == 1


# ---------------------------------------------------------------------- weights
@pytest.fixture()
def tiny_weights(tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = build_network(dict(base_channels=4, depth=2, stem_stride=1))
    path = tmp_path / "tiny.pt"
    models3d.save_weights(net, path, input_downsample=4, meta={"seed": 0})
    return path, net


def test_weights_round_trip_fp16(tiny_weights):
    path, net = tiny_weights
    loaded = models3d.load_model(path, "cpu")
    assert loaded.input_downsample == 4 and loaded.meta["seed"] == 0
    x = torch.randn(1, 1, 8, 12, 12)
    with torch.inference_mode():
        np.testing.assert_allclose(loaded.network(x).numpy(), net.eval()(x).numpy(), atol=2e-2)


def test_weights_loading_errors(tmp_path, tiny_weights):
    path, _ = tiny_weights
    with pytest.raises(ModelError, match="does not exist"):
        models3d.load_model(tmp_path / "missing.pt")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        models3d.load_model(empty)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError, match="truncated"):
        models3d.load_model(trunc)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ModelError, match="not a FORAMEN3D weights file"):
        models3d.load_model(other)
    blob = torch.load(path, weights_only=True)
    blob["network"] = dict(blob["network"], base_channels=8)  # declares another architecture
    wrong = tmp_path / "wrong.pt"
    torch.save(blob, wrong)
    with pytest.raises(ModelError, match="do not fit"):
        models3d.load_model(wrong)
    with pytest.raises(ModelError, match="unknown model"):
        models3d.load_model("no-such-model")
    # catalogue entry with a wrong checksum
    cat = tmp_path / "catalog.json"
    (tmp_path / "m.pt").write_bytes(path.read_bytes())
    cat.write_text(json.dumps({"default": "m", "models": [{"name": "m", "file": "m.pt", "sha256": "0" * 64}]}))
    with pytest.raises(ModelError, match="corrupted"):
        models3d.load_model("default", catalog=cat)
    entry = models3d.install_model(path, "m", catalog=cat)
    assert models3d.load_model("m", catalog=cat).sha256 == entry["sha256"]


def test_embedded_weights_are_small_and_catalogued():
    cat = models3d.read_catalog()
    assert cat["models"], "the embedded FORAMEN3D weights are missing from the catalogue"
    for e in cat["models"]:
        p = models3d.MODELS_DIR / e["file"]
        assert p.stat().st_size < 16 * 2**20
        assert models3d.sha256_file(p) == e["sha256"]
        assert (models3d.MODELS_DIR / e["card"]).is_file()


# ---------------------------------------------------------------------- end to end
def _block_case():
    from FORAMEN3DLib.train3d import generate_cases

    return next(generate_cases("blocks", 1, 3))


def test_segment_volume_end_to_end_progress_and_cancel(tiny_weights):
    path, _ = tiny_weights
    _, image, _ = _block_case()
    seen = []
    res = segment3d.segment_volume(image, str(path), "cpu", progress=lambda f, m: seen.append(f))
    assert res.labels.shape == image.shape and res.labels.array.dtype == np.uint8
    assert set(np.unique(res.labels.array)) <= {0, 1, 2, 3}
    assert res.crop_labels.shape == preprocess.CROP_SHAPE
    assert seen[0] == 0.0 and seen[-1] == 1.0 and all(b >= a for a, b in zip(seen, seen[1:]))
    assert {"preprocess", "inference", "postprocess", "inverse", "total"} <= set(res.timings_s)
    polls = []

    def cancel():
        polls.append(1)
        return len(polls) > 4  # during the network's forward pass

    with pytest.raises(SpineMorphError, match="cancelled"):
        segment3d.segment_volume(image, str(path), "cpu", should_cancel=cancel)


def test_default_model_segments_a_phantom():
    """Embedded weights on an unseen phantom anatomy imaged by the sagittal T2 SPACE simulation."""
    assert models3d.read_catalog()["models"], "the embedded FORAMEN3D weights are missing from the catalogue"
    from spinemorph import acquisition, phantom

    ph = phantom.make_phantom(seed=4321, vary=True)
    acq = acquisition.acquire_space_t2(ph, seed=4321)
    image = acq.image.with_array(acq.image.array.astype(np.float32))
    res = segment3d.segment_volume(image, "default", "cpu")
    truth = acq.labels["foramen"].array
    m = structure_metrics(truth, res.labels.array)
    # measured with the shipped weights: DSC 0.86-0.91 per structure; 0.7 checks that each structure is found
    for name in ("L4", "L4-5 disc", "L5"):
        assert m[name]["dsc"] > 0.7, (name, m[name])


def test_install_model_keeps_the_dsca_marker_of_the_same_weights(tmp_path):
    """Re-exporting the same weights keeps the catalogue's DSCA marker; other weights under that name are marked
    not validated for DSCA (``dsca: false``), whatever the old entry said."""
    from FORAMEN3DLib.network3d import NetworkConfig, UNet3D

    cat = tmp_path / "catalog.json"
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    cfg = NetworkConfig(in_channels=1, out_channels=5, base_channels=2, depth=1)
    torch.manual_seed(0)
    models3d.save_weights(UNet3D(cfg), a)
    models3d.save_weights(UNet3D(cfg), b)
    models3d.install_model(a, "m", catalog=cat)
    doc = json.loads(cat.read_text())
    assert "dsca" not in doc["models"][0]
    doc["models"][0].update({"dsca": True, "dsca_note": "validated"})
    cat.write_text(json.dumps(doc))
    entry = models3d.install_model(a, "m", catalog=cat)
    assert entry["dsca"] is True and entry["dsca_note"] == "validated"
    assert json.loads(cat.read_text())["models"][0]["dsca"] is True
    entry = models3d.install_model(b, "m", catalog=cat)
    assert entry["dsca"] is False and "not yet validated" in entry["dsca_note"]
    assert [e["name"] for e in json.loads(cat.read_text())["models"]] == ["m"]
