"""Canal-centred crop inference (DuralSacSegLib.roi) against exact answers.

A pixel-wise "network" (probability = a function of the pixel value alone) has no context, so cropping must give
exactly the whole-slice result inside each window; the geometry of the stacks is known exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from DuralSacSegLib.roi import (
    RoiReport,
    canal_centre_px,
    canal_reaches_inner_edge,
    interpolate_centres,
    locate_slices,
    predict_stack,
    validate_crop_px,
    window_origin,
)

from spinemorph.errors import InputError, SpineMorphError

S = 320


def disc(size: int, centre, radius: float) -> np.ndarray:
    rr, cc = np.mgrid[0:size, 0:size]
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius**2


def moving_canal_stack(n: int = 12, band: bool = True) -> tuple[np.ndarray, list]:
    """Bright disc (r = 14 px) drifting 3 px per slice to the right, plus a thin bright band near the bottom edge."""
    stack = np.zeros((n, S, S), np.float32)
    centres = []
    for k in range(n):
        c = (170.0, 120.0 + 3 * k)
        stack[k][disc(S, c, 14)] = 1.0
        if band:
            stack[k, 290:294, 40:280] = 1.0  # 960 px: larger than the disc (≈ 613 px) but thin
        centres.append(c)
    return stack, centres


class Pixelwise:
    """probability = pixel value; records the input sizes it was called with."""

    def __init__(self):
        self.sizes = []

    def __call__(self, batch):
        assert batch.dtype == np.float32 and batch.ndim == 4 and batch.shape[1] == 1
        self.sizes += [batch.shape[-1]] * batch.shape[0]
        return batch.copy()


def test_canal_centre_prefers_the_thick_blob_over_a_larger_thin_band():
    stack, centres = moving_canal_stack(1)
    c = canal_centre_px(stack[0], 0.5)
    assert c == pytest.approx(centres[0], abs=1e-9)  # symmetric disc: centroid = centre
    assert canal_centre_px(np.zeros((S, S)), 0.5) is None


def test_window_origin_centres_and_stays_inside():
    assert window_origin((160.0, 160.0), 128, S) == (96, 96)  # centre pixel 159.5 ± 0.5 of a 128 window
    assert window_origin((3.0, 318.0), 128, S) == (0, S - 128)
    assert window_origin((-50.0, 1e6), 128, S) == (0, S - 128)


def test_stray_centres_are_dropped():
    from DuralSacSegLib.roi import drop_stray_centres

    c = {0: (100.0, 100.0), 8: (104.0, 101.0), 16: (200.0, 40.0), 24: (110.0, 103.0), 32: (112.0, 104.0)}
    assert sorted(drop_stray_centres(c, 32.0)) == [0, 8, 24, 32]
    assert drop_stray_centres({0: (0.0, 0.0), 5: (300.0, 300.0)}, 32.0) == {0: (0.0, 0.0), 5: (300.0, 300.0)}
    # the ends are judged by the three nearest centres
    assert sorted(drop_stray_centres({0: (250.0, 250.0), 8: (100.0, 100.0), 16: (102.0, 100.0)}, 32.0)) == [8, 16]


def test_long_stacks_locate_more_slices():
    stack = np.zeros((40, S, S), np.float32)
    for k in range(40):
        stack[k][disc(S, (160.0, 100.0 + 2 * k), 12)] = 1.0
    _, rep = predict_stack(Pixelwise(), stack, 0.5)
    assert len(rep.located) == 5 and rep.rerun_whole == []


def test_locate_and_interpolate():
    assert locate_slices(list(range(20)), 3) == [3, 10, 16]
    assert locate_slices([5], 3) == [5]
    assert locate_slices([], 3) == []
    c = interpolate_centres({2: (10.0, 20.0), 6: (30.0, 60.0)}, [0, 4, 9])
    assert c == {0: (10.0, 20.0), 4: (20.0, 40.0), 9: (30.0, 60.0)}


@pytest.mark.parametrize("bad", [0, -16, 100, 336, 1.5, "128", True])
def test_crop_size_is_checked(bad):
    with pytest.raises(InputError, match="crop size"):
        validate_crop_px(bad, S)
    assert validate_crop_px(None, S) is None and validate_crop_px(128, S) == 128


def test_crop_equals_whole_inside_the_windows_and_drops_the_far_band():
    stack, centres = moving_canal_stack(12)
    net = Pixelwise()
    whole, rep_w = predict_stack(net, stack, 0.5, crop_px=None)
    assert np.array_equal(whole, stack) and rep_w.crop_px is None and net.sizes == [S] * 12
    net = Pixelwise()
    prob, rep = predict_stack(net, stack, 0.5, crop_px=128, batch_size=5)
    assert rep.located == [2, 6, 10] and rep.rerun_whole == [] and rep.unused_located == []
    assert sorted(rep.cropped) == [k for k in range(12) if k not in (2, 6, 10)]
    assert sorted(net.sizes) == [128] * 9 + [S] * 3  # 3 whole slices to locate, 9 windows
    assert rep.n_network_pixels == 3 * S * S + 9 * 128 * 128
    for k in range(12):
        r, c = rep.windows_px[k]
        # the canal centre moves linearly: interpolated windows are centred on it exactly; beyond the first / last
        # located slice (2, 10) the window stays where it was located
        assert (r, c) == window_origin(centres[min(max(k, 2), 10)], 128, S)
        inside = np.zeros((S, S), bool)
        inside[r: r + 128, c: c + 128] = True
        assert np.array_equal(prob[k][inside], stack[k][inside])
        assert not prob[k][~inside].any()
        # the disc is whole, the band (rows 290-293) lies outside every window
        assert prob[k].sum() == pytest.approx(disc(S, centres[k], 14).sum())
    d = rep.to_dict()
    assert d["crop_px"] == 128 and d["rerun_whole_slices"] == [] and len(d["cropped_slices"]) == 9


def test_a_canal_outside_its_window_is_run_again_whole():
    stack, centres = moving_canal_stack(12, band=False)
    # slice 4 jumps 70 px down: its interpolated window (centred near row 170) cuts the canal
    stack[4] = 0.0
    stack[4][disc(S, (240.0, 132.0), 14)] = 1.0
    net = Pixelwise()
    prob, rep = predict_stack(net, stack, 0.5, crop_px=128)
    assert rep.rerun_whole == [4]
    assert net.sizes.count(S) == 4  # 3 located + 1 re-run
    r, c = rep.windows_px[4]
    assert (r, c) == window_origin((240.0, 132.0), 128, S)  # re-centred on the canal found there
    assert prob[4].sum() == pytest.approx(disc(S, (240.0, 132.0), 14).sum())


def test_no_canal_on_located_slices_runs_everything_whole():
    stack = np.zeros((8, S, S), np.float32)
    stack[0][disc(S, (100, 100), 10)] = 1.0  # only on a slice that is not located
    net = Pixelwise()
    prob, rep = predict_stack(net, stack, 0.5, crop_px=128)
    assert rep.crop_px is None and net.sizes == [S] * 8
    assert rep.unused_located == rep.located and rep.to_dict()["located_without_usable_centre"] == rep.located
    assert np.array_equal(prob, stack)


def test_short_stacks_and_todo():
    stack, _ = moving_canal_stack(4)
    net = Pixelwise()
    prob, rep = predict_stack(net, stack, 0.5, crop_px=128)  # 4 slices <= n_locate + 1: whole
    assert rep.crop_px is None and np.array_equal(prob, stack)
    stack, _ = moving_canal_stack(10)
    net = Pixelwise()
    prob, rep = predict_stack(net, stack, 0.5, crop_px=128, todo=[1, 2, 3, 4, 5, 6, 7])
    assert len(net.sizes) == 7 and not prob[0].any() and not prob[8:].any()


def test_progress_cancel_and_bad_predictors():
    stack, _ = moving_canal_stack(10)
    seen = []
    predict_stack(Pixelwise(), stack, 0.5, progress=lambda f, m: seen.append(f))
    assert seen and seen[-1] == pytest.approx(1.0) and all(0 <= f <= 1 for f in seen)
    assert all(b >= a for a, b in zip(seen, seen[1:], strict=False))

    def cancel():
        raise SpineMorphError("cancelled")

    with pytest.raises(SpineMorphError, match="cancelled"):
        predict_stack(Pixelwise(), stack, 0.5, check_cancel=cancel)
    with pytest.raises(SpineMorphError, match="returned shape"):
        predict_stack(lambda b: b[:, :, :10], stack, 0.5)
    with pytest.raises(SpineMorphError, match="NaN"):
        predict_stack(lambda b: b * np.nan, stack, 0.5)
    with pytest.raises(InputError, match="stack"):
        predict_stack(Pixelwise(), stack[0], 0.5)


def test_report_counts_the_work():
    rep = RoiReport(crop_px=128, located=[1, 2], cropped=[0, 3, 4], rerun_whole=[4])
    assert rep.n_network_pixels == 3 * S * S + 3 * 128 * 128
    assert rep.to_dict()["cropped_slices"] == [0, 3]
    assert canal_reaches_inner_edge(np.zeros((128, 128)), (10, 10), S, 8) is False
    m = np.zeros((128, 128), bool)
    m[0:20, 50:70] = True
    assert canal_reaches_inner_edge(m, (10, 10), S, 8)  # top edge is inside the grid
    assert not canal_reaches_inner_edge(m, (0, 10), S, 8)  # top edge is the grid's edge


def test_segment_volume_uses_windows_only_when_asked_for_an_injected_predictor():
    from DuralSacSegLib.segment import segment_volume

    from spinemorph.volume import Volume

    n, sp = 10, 0.6
    rr, cc = np.mgrid[0:80, 0:80]
    arr = np.zeros((n, 80, 80), np.float32)
    for k in range(n):
        arr[k][((rr - 40) * sp) ** 2 + ((cc - 38 - k) * sp) ** 2 <= 4.0**2] = 100.0
    image = Volume(arr, (sp, sp, 4.0), (0.0, 0.0, 0.0), np.eye(3))
    whole = segment_volume(image, predictor=Pixelwise())
    assert whole.roi.crop_px is None  # injected predictors get whole 320 x 320 slices unless asked
    net = Pixelwise()
    cropped = segment_volume(image, predictor=net, crop_px=128)
    assert cropped.roi.crop_px == 128 and 128 in net.sizes and cropped.roi.rerun_whole == []
    assert np.array_equal(cropped.mask.array, whole.mask.array)
    assert cropped.info()["inference"]["crop_px"] == 128
    np.testing.assert_allclose(cropped.table.areas_mm2(), whole.table.areas_mm2())
    with pytest.raises(InputError, match="crop size"):
        segment_volume(image, predictor=Pixelwise(), crop_px=100)


@pytest.mark.parametrize("bad", ["100", "-16", "336"])
def test_cli_rejects_a_bad_crop_size_before_any_work(tmp_path, capsys, bad):
    from spinemorph.app import cli
    from spinemorph.volume import Volume, write_volume

    src = write_volume(Volume(np.zeros((4, 32, 32), np.float32), (0.7, 0.7, 4.0), (0, 0, 0), np.eye(3)),
                       tmp_path / "axial.nrrd")
    out = tmp_path / "out"
    assert cli.main(["dsca", "segment", str(src), "--out", str(out), "--crop-px", bad]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "crop size" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_inference_slices_are_padded_like_the_training_slices():
    """A non-square slice is padded with its own minimum, as models.prepare_slice pads the training slices."""
    from DuralSacSegLib.models import prepare_slice
    from DuralSacSegLib.segment import network_stack

    from spinemorph.volume import Volume

    rng = np.random.default_rng(0)
    arr = (300.0 + 50.0 * rng.random((3, 160, 320))).astype(np.float32)  # 160 rows x 320 columns, minimum ~300
    arr[:, 60:100, 140:180] = 1000.0
    ns = network_stack(Volume(arr, (0.5, 0.5, 4.0), (0.0, 0.0, 0.0), np.eye(3)))
    net = ns.normalized()
    assert ns.coverage[0, 80:240].all() and not ns.coverage[0, :70].any()
    pad = ns.network_image.array[0][~ns.coverage[0]]
    assert np.allclose(pad, arr[0].min(), atol=1e-3)
    ref, pix = prepare_slice(arr[0], (0.5, 0.5))
    assert pix == pytest.approx((0.5, 0.5))
    assert np.abs(net[0] - ref).max() < 1e-3


def test_overwrite_removes_outputs_of_an_earlier_run(tmp_path):
    from DuralSacSegLib.segment import segment_volume, write_outputs

    from spinemorph.volume import Volume

    rr, cc = np.mgrid[0:64, 0:64]
    arr = np.zeros((6, 64, 64), np.float32)
    for k in range(6):
        arr[k][(rr - 32) ** 2 + (cc - 30 - k) ** 2 <= (5 + k) ** 2] = 100.0
    res = segment_volume(Volume(arr, (0.7, 0.7, 4.0), (0, 0, 0), np.eye(3)), predictor=Pixelwise(), keep_probability=True)
    first = write_outputs(res, tmp_path, n_overlays=4)
    assert "probability_nifti" in first and (tmp_path / "overlay_4.png").is_file()
    res.probability = None
    second = write_outputs(res, tmp_path, overwrite=True, n_overlays=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in second.values())
    assert not (tmp_path / "overlay_3.png").exists() and not (tmp_path / "dural_sac_probability.nii.gz").exists()


def test_embedded_default_model_segments_a_phantom_series():
    """The catalogue's default model through the default (windowed) path, against the phantom's exact dural-sac labels.

    Floor 0.75: the held-out phantom runs of scripts/roi_agreement.py measured Dice 0.78-0.92 per stack (pooled 0.874)
    with the budget MultiResUNet, the default until the real-image U-Net (issue 16) was embedded.
    """
    from DuralSacSegLib import models
    from DuralSacSegLib.segment import segment_volume

    from spinemorph.acquisition import acquire_axial_t1
    from spinemorph.phantom import make_phantom

    acq = acquire_axial_t1(make_phantom(seed=21, vary=True), n_slices=12, seed=21)
    res = segment_volume(acq.image, device="cpu")
    default = models.read_catalog()["default"]
    entry = next(e for e in models.read_catalog()["models"] if e["name"] == default)
    threshold = (entry.get("decision") or {}).get("threshold", 20 / 21)
    assert res.model_name == default and res.roi.crop_px == 128 and res.threshold == pytest.approx(threshold)
    truth = np.asarray(acq.labels["dural_sac"].array) > 0
    pred = np.asarray(res.mask.array) > 0
    dice = 2.0 * (truth & pred).sum() / (truth.sum() + pred.sum())
    assert dice > 0.75, dice
