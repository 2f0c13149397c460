"""Counting L4-5 locator (FORAMEN3DLib.locator, ``locator_mode="count"``) and the inference record of
segment_volume: known answers on a synthetic spine (a stand-in network that labels the disc nearest the crop's
disc position), the pipeline wiring with the real segment_fine, and the stepping geometry on real slab masks."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from FORAMEN3DLib import fine_data as fd
from FORAMEN3DLib import locator, models3d, segment3d, train_fine
from FORAMEN3DLib.network3d import NetworkConfig, UNet3D
from FORAMEN3DLib.preprocess import CANONICAL_AXES

from spinemorph.errors import SpineMorphError
from spinemorph.volume import Volume

#: synthetic spine (LPS z, superior +): mobile discs L2-3, L3-4, L4-5, L5-S1; the sacrum below -35 mm has none
DISCS_Z = {"L2-3": 70.0, "L3-4": 35.0, "L4-5": 0.0, "L5-S1": -35.0}
#: where the stand-in network's dural sac ends (LPS z); None: it labels no sac (tests set it with monkeypatch)
SAC = {"end_z": None}


def _row_z(grid) -> np.ndarray:
    vol = grid.volume(np.zeros(grid.shape, np.uint8))
    j = np.arange(grid.shape[1], dtype=float)
    return np.array([vol.index_to_lps((80.0, jj, 72.0))[2] for jj in j])


def fake_fine_labels(grid, centre_z: float, jump: bool = False) -> np.ndarray:
    """Labels a stand-in fine network gives a crop placed on the disc position ``centre_z``: the mobile disc within
    12 mm labelled disc, the bodies above / below L4 / L5 (their centroids half-way to the next discs). ``jump``:
    centred on L5-S1 the network labels L4-5 instead (it sees the sacrum; its disc probability stays, below)."""
    lab = np.zeros(grid.shape, np.uint8)
    z = _row_z(grid)
    zs = np.array(list(DISCS_Z.values()))
    near = zs[np.abs(zs - centre_z) <= 12.0]
    if len(near) == 0:
        return lab
    zd = float(near[0])
    if jump and zd == DISCS_Z["L5-S1"]:
        zd = DISCS_Z["L4-5"]
    for lo, hi, c in ((zd + 6.0, zd + 29.0, fd.L4), (zd - 4.0, zd + 4.0, fd.DISC), (zd - 29.0, zd - 6.0, fd.L5)):
        rows = (z >= lo) & (z <= hi)
        lab[50:90, rows, 20:70] = c
    if SAC["end_z"] is not None:  # the dural sac behind the bodies, from the crop's top down to its end
        lab[60:80, z >= SAC["end_z"], 80:95] = fd.CANAL
    return lab


def fake_disc_probability(grid, thin: tuple = ()) -> np.ndarray:
    """Disc probability 0.97 on every mobile disc in the crop (0.3 on the discs named in ``thin``: degenerated),
    0.01 elsewhere (the sacrum has no disc)."""
    z = _row_z(grid)
    p = np.full(grid.shape, 0.01, np.float32)
    for name, zd in DISCS_Z.items():
        rows = np.abs(z - zd) <= 4.0
        p[50:90, rows, 20:70] = 0.3 if name in thin else 0.97
    return p


def _runner(jump=False, thin=()):
    calls = []

    def run_crop(centre):
        grid = fd.fine_crop_grid(centre)
        calls.append(float(centre[2]))
        return locator.Crop(np.asarray(centre, float), fake_fine_labels(grid, float(centre[2]), jump), grid,
                            np.ones(grid.shape, bool), fake_disc_probability(grid, thin))
    return run_crop, calls


@pytest.mark.parametrize("start,steps", [("L4-5", 3), ("L3-4", 4), ("L2-3", 5), ("L5-S1", 3)])
@pytest.mark.parametrize("jump", [False, True])
def test_count_walk_finds_l45_from_any_start(start, steps, jump):
    """Right, one or two levels high, one level low: the walk stops in the sacrum and ends on L4-5 (to within a
    voxel), also when the network moves its L4-5 label up on an L5-S1 crop (``jump``)."""
    run, calls = _runner(jump=jump)
    res = locator.count_walk(np.array([0.0, 0.0, DISCS_Z[start]]), run)
    assert res.crop is not None, res.reason
    assert abs(res.crop.centre_lps[2] - DISCS_Z["L4-5"]) < 1.5
    assert len(calls) == steps
    kinds = [c.kind for c in res.walk]
    assert "no disc" in kinds and kinds.count("disc (L5-S1)") == 1 and kinds.count("disc (L4-5)") == 1
    assert res.crop.kind == "disc (L4-5)"


def test_a_thin_l5s1_ends_the_count_a_level_high_and_no_disc_at_start_gives_up():
    """Known limitation: a disc the network barely sees (degenerated L5-S1) ends the walk one disc early. No disc
    at the start, or none above the lowest: no crop and a reason (the caller keeps the coarse answer)."""
    run, _ = _runner(thin=("L5-S1",))
    res = locator.count_walk(np.array([0.0, 0.0, DISCS_Z["L4-5"]]), run)
    assert abs(res.crop.centre_lps[2] - DISCS_Z["L3-4"]) < 1.5
    run, _ = _runner()
    res = locator.count_walk(np.array([0.0, 0.0, -80.0]), run)
    assert res.crop is None and "cannot start" in res.reason
    assert res.steps()[0]["kind"] == "no disc" and res.steps()[0]["disc_presence"] < 0.5


def _walked(z, kind, gap):
    grid = fd.fine_crop_grid((0.0, 0.0, z))
    return locator.Crop(np.array([0.0, 0.0, z]), np.zeros(grid.shape, np.uint8), grid, np.ones(grid.shape, bool),
                        kind=kind, sac_end_gap_mm=gap)


def test_choose_by_sac_end_known_answers():
    """The walk's L4-5 is the lowest walked disc whose crop's sac reaches its lower face (gap ≤ the limit): an
    S1-S2 remnant counted as a disc (count one level low) is undone; the kinds are relabelled. When no disc
    qualifies (no sac measured, or one that ends high) the count's answer stands and the reason says why. Known
    limitation (3 of the 21 training slabs): an L5-S1 crop whose predicted sac still reaches the face is taken."""
    l45, l5s1, remnant = _walked(0.0, "disc", 3.6), _walked(-35.0, "disc (L4-5)", 38.6), _walked(-70.0, "disc (L5-S1)", 60.0)
    counted = locator.CountResult(l5s1, [l45, l5s1, remnant, _walked(-105.0, "no disc", 70.0)], "4 discs walked")
    res = locator.choose_by_sac_end(counted, 30.0)
    assert res.crop is l45 and [c.kind for c in res.walk] == ["disc (L4-5)", "disc", "disc", "no disc"]
    assert "lowest of 3 walked discs" in res.reason and "ends 4 mm above" in res.reason
    # a crop one level high reaches the face too: still the lowest one that does
    up = _walked(35.0, "disc", 0.0)
    assert locator.choose_by_sac_end(locator.CountResult(None, [up, _walked(0.0, "disc", 12.0),
                                                                 _walked(-35.0, "no disc", 40.0)], "x"), 30.0).crop.centre_lps[2] == 0.0
    # no sac measured / a sac that ends high everywhere: the count's answer
    nan = [_walked(0.0, "disc (L4-5)", float("nan")), _walked(-35.0, "disc (L5-S1)", float("nan"))]
    res = locator.choose_by_sac_end(locator.CountResult(nan[0], nan, "2 discs"), 30.0)
    assert res.crop is nan[0] and [c.kind for c in res.walk] == ["disc (L4-5)", "disc (L5-S1)"]
    assert res.reason.startswith("2 discs; no walked disc's crop has a dural sac reaching its lower face")
    high = [_walked(0.0, "disc (L4-5)", 41.0), _walked(-35.0, "disc (L5-S1)", 60.0)]
    assert locator.choose_by_sac_end(locator.CountResult(high[0], high, "r"), 30.0).crop is high[0]
    # the known limitation: the L5-S1 crop's sac reaches its face as well -> one level low
    low = [_walked(0.0, "disc (L4-5)", 0.0), _walked(-35.0, "disc (L5-S1)", 17.0), _walked(-70.0, "no disc", 45.0)]
    assert locator.choose_by_sac_end(locator.CountResult(low[0], low, "r"), 30.0).crop is low[1]


def test_disc_presence_and_steps_known_answers():
    grid = fd.fine_crop_grid((0.0, 0.0, 0.0))
    p = fake_disc_probability(grid)
    assert locator.disc_presence(p, grid, (0.0, 0.0, 0.0)) == pytest.approx(0.97)
    assert locator.disc_presence(p, grid, (0.0, 0.0, -17.0)) == pytest.approx(0.01)  # mid-body: no disc
    assert locator.disc_presence(p, grid, (0.0, 0.0, 500.0)) == 0.0  # outside the crop
    fov = np.ones(grid.shape, bool)
    assert locator.disc_presence(p, grid, (0.0, 0.0, 0.0), fov) == pytest.approx(0.97)
    z = _row_z(grid)
    fov[:, z < 3.0, :] = False  # the image ends 3 mm above the disc centre: most of the window is not imaged
    assert locator.disc_presence(p, grid, (0.0, 0.0, 0.0), fov) == 0.0
    lab = fake_fine_labels(grid, 0.0)
    crop = locator.Crop(np.zeros(3), lab, grid, np.ones(grid.shape, bool), p)
    assert locator.next_disc_below(crop)[2] == pytest.approx(-35.0, abs=1.0)
    assert locator.next_disc_above(crop)[2] == pytest.approx(35.0, abs=1.0)
    # labels a level off the centre (the network moved them up): the step falls back to the previous / default step
    up = locator.Crop(np.array([0.0, 0.0, -35.0]), lab, grid, np.ones(grid.shape, bool), p)
    assert locator.next_disc_below(up)[2] == pytest.approx(-35.0 - locator.DEFAULT_STEP_MM)
    assert locator.next_disc_below(up, previous_step=31.0)[2] == pytest.approx(-66.0)


# ---------------------------------------------------------------------- through segment_volume
def _tiny_fine(tmp_path):
    net = UNet3D(NetworkConfig(in_channels=4, out_channels=5, base_channels=2, depth=1, stem_stride=2, refine_channels=2))
    train_fine.save_fine_weights(net, tmp_path / "fine.pt", {"config": "test", "infer_roi": [64, 64, 64]})
    return models3d.load_model(tmp_path / "fine.pt", "cpu")


def _spine_world(tmp_path, monkeypatch, coarse_z: float):
    """An image 0.8 mm PIR covering z -150..+150 mm; the coarse locator answers ``coarse_z``; the fine network is
    :func:`fake_fine_labels` at the crop's disc position."""
    loaded = _tiny_fine(tmp_path)
    img = Volume(np.zeros((60, 376, 200), np.float32) + 1.0, (0.8, 0.8, 0.8), (0.0, -40.0, 150.0), CANONICAL_AXES)
    img.array[20:40, :, 100:140] = 5.0
    last = {}
    real_input = segment3d.fine_crop_input

    def spy_input(image, prep, centre, shift_mm=(0.0, 0.0, 0.0)):
        last["z"] = float(np.asarray(centre)[2])
        return real_input(image, prep, centre, shift_mm)

    def fake_labels(loaded_, x, roi=None, overlap=0.25, backend="auto", precision="fp32", canal_threshold=None):
        return fake_fine_labels(fd.fine_crop_grid((0.0, 0.0, last["z"])), last["z"])

    def fake_logits(loaded_, x, roi=None, overlap=0.25, backend="auto", precision="fp32"):
        lab = fake_labels(loaded_, x)
        return (np.arange(5)[:, None, None, None] == lab[None]).astype(np.float32) * 8.0  # argmax = the labels

    def fake_softmax(logits):
        return fake_disc_probability(fd.fine_crop_grid((0.0, 0.0, last["z"])))

    centre = np.array([-24.0, 40.0, coarse_z])
    monkeypatch.setattr(segment3d, "fine_crop_input", spy_input)
    monkeypatch.setattr(segment3d, "fine_network_labels", fake_labels)
    monkeypatch.setattr(segment3d, "fine_network_logits", fake_logits)
    monkeypatch.setattr(segment3d, "disc_softmax", fake_softmax)
    monkeypatch.setattr(segment3d, "segment_preprocessed", lambda prep, *a, **k: (np.zeros((1,), np.uint8), None, {}))
    monkeypatch.setattr(segment3d, "locate_l45", lambda prep, lab: centre)
    return img, loaded


def test_segment_volume_count_mode_records_locator_and_disagreement(tmp_path, monkeypatch):
    """Coarse answer one level high: the count moves the crop to L4-5 (the walk's crop, not run again), says so in a
    QC note, and records the walk;
    the default mode keeps the coarse centre; a hand-placed point wins over both; a bad mode is one error."""
    img, loaded = _spine_world(tmp_path, monkeypatch, DISCS_Z["L3-4"])
    res = segment3d.segment_volume(img, loaded, "cpu", fine_options={"locator_mode": "count"})
    assert res.locator == "disc count"
    assert abs(res.l45_centre_lps[2] - DISCS_Z["L4-5"]) < 1.5
    det = res.locator_details
    assert det["mode"] == "count"
    assert [w["kind"] for w in det["walk"]] == ["disc", "disc (L4-5)", "disc (L5-S1)", "no disc"]
    assert det["coarse_centre_lps"][2] == pytest.approx(DISCS_Z["L3-4"])
    assert any(re.search(r"disc count put L4-5 3[4-6] mm below the coarse model's L4-5 \(about one level\)", q)
               for q in res.qc), res.qc
    assert set(np.unique(res.labels.array)) <= {0, 1, 2, 3}
    coarse = segment3d.segment_volume(img, loaded, "cpu", fine_options={"locator_mode": "coarse"})
    assert coarse.locator == "coarse model" and coarse.locator_details is None
    assert coarse.l45_centre_lps[2] == pytest.approx(DISCS_Z["L3-4"], abs=1e-3)
    manual = segment3d.segment_volume(img, loaded, "cpu", l45_point=(-24.0, 40.0, 0.0),
                                      fine_options={"locator_mode": "count"})
    assert manual.locator == "manual point" and manual.locator_details is None
    with pytest.raises(SpineMorphError, match="locator_mode"):
        segment3d.segment_volume(img, loaded, "cpu", fine_options={"locator_mode": "sacrum"})


def test_segment_volume_count_agrees_without_note(tmp_path, monkeypatch):
    img, loaded = _spine_world(tmp_path, monkeypatch, DISCS_Z["L4-5"])
    res = segment3d.segment_volume(img, loaded, "cpu", fine_options={"locator_mode": "count"})
    assert res.locator == "disc count" and not any(q.startswith("levels:") for q in res.qc)
    assert abs(res.l45_centre_lps[2]) < 1.5


def test_segment_volume_count_undoes_a_remnant_disc_by_the_sac_end(tmp_path, monkeypatch):
    """A disc-like S1-S2 remnant below L5-S1 and a dural sac ending 50 mm below L4-5 (above the sacrum's crop
    faces): the count alone walks one disc too far (L5-S1); the sac end brings the crop back to L4-5, whose sac
    reaches its lower face; the walk records each crop's sac end; no level note (count and coarse agree)."""
    monkeypatch.setitem(DISCS_Z, "S1-S2", -70.0)
    monkeypatch.setitem(SAC, "end_z", -50.0)
    img, loaded = _spine_world(tmp_path, monkeypatch, DISCS_Z["L4-5"])
    res = segment3d.segment_volume(img, loaded, "cpu", fine_options={"locator_mode": "count"})
    det = res.locator_details
    assert [w["kind"] for w in det["walk"]] == ["disc (L4-5)", "disc", "disc", "no disc"]
    gaps = [w["sac_end_gap_mm"] for w in det["walk"]]
    assert gaps[0] == pytest.approx(3.6, abs=1.0) and gaps[1] == pytest.approx(38.6, abs=1.0) and gaps[2] > 60.0
    assert res.locator == "disc count" and abs(res.l45_centre_lps[2]) < 1.5
    assert "sac reaches its lower face" in det["reason"]
    assert not any(q.startswith(("levels:", "level check:")) for q in res.qc), res.qc
    assert set(np.unique(res.labels.array)) == {0, 1, 2, 3, 4}


def test_inference_record_says_what_ran(tmp_path, monkeypatch):
    """``SegmentationResult.inference``: the backend actually used, threads, precision."""
    assert segment3d.inference_record("cpu", "onnx", "bf16")["precision"] == "fp32"
    rec = segment3d.inference_record("cpu", "torch", "bf16")
    assert rec == {"backend": "torch", "threads": torch.get_num_threads(), "precision": "bf16 autocast", "device": "cpu"}
    assert segment3d.resolve_fine_backend("cuda", "auto", "fp32") == "torch"
    from spinemorph.openvino_runtime import openvino_available

    assert segment3d.resolve_fine_backend("cpu", "auto", "bf16") == ("openvino" if openvino_available() else "torch")
    img, loaded = _spine_world(tmp_path, monkeypatch, DISCS_Z["L4-5"])
    res = segment3d.segment_volume(img, loaded, "cpu", fine_options={"backend": "torch"})
    assert res.inference["backend"] == "torch" and res.inference["threads"] == torch.get_num_threads()
    auto = segment3d.segment_volume(img, loaded, "cpu")
    from spinemorph.onnx_export import onnx_available

    expected = "openvino" if openvino_available() else ("onnxruntime" if onnx_available() else "torch")
    assert auto.inference["backend"] == expected and auto.inference["precision"] == "fp32"


# ---------------------------------------------------------------------- real slab masks (geometry only)
@pytest.mark.usefixtures("spider_root")
@pytest.mark.parametrize("patient", ["5", "129"])
def test_step_down_reaches_the_next_disc_on_real_masks(patient):
    """On real training slabs, stepping from the reference L4-5 through the reference L5 lands within 10 mm of the
    L5-S1 disc (the walk's geometry; the labels are the slab mask's, no network)."""
    from spinemorph import spider
    from spinemorph.volume import resample_to_grid

    image, mask = spider.load_slab(patient)
    lab = fd.slab_labels(patient, image, mask)
    assert lab.identity == "counted"
    truth = fd.definite_labels(lab.bits)
    truth = np.where(truth == 255, 0, truth).astype(np.uint8)
    grid = fd.fine_crop_grid(lab.disc_center_lps)
    on_grid = resample_to_grid(image.with_array(truth), grid.spacing_mm, grid.size_ijk, grid.origin_mm,
                               grid.direction, "nearest").array
    crop = locator.Crop(np.asarray(lab.disc_center_lps), on_grid, grid, np.ones(grid.shape, bool))
    dlab, dids, _ = fd._components_by_height(np.asarray(mask.array) == spider.SLAB_DISC,
                                             int(200 / np.prod(mask.spacing_mm)))
    l5s1 = fd.label_center_lps(mask, dlab == dids[0])
    step = locator.next_disc_below(crop)
    assert np.linalg.norm(step - l5s1) < 10.0


@pytest.mark.usefixtures("spider_root")
def test_locator_study_reports_each_walked_crop_against_the_reference(monkeypatch):
    """``evaluate_fine.locator_study`` with a count model: every walked crop gets its superior-inferior offset from
    the reference L4-5 disc and its level (0 / +1 / +2 for crops 0, 35 and 70 mm below it), next to its sac end; the
    coarse and final answers are scored the same way (real slab 5; the segmentation is a stand-in)."""
    import types

    from FORAMEN3DLib import evaluate_fine
    from FORAMEN3DLib.preprocess import preprocess_volume

    from spinemorph import spider

    image, mask = spider.load_slab("5")
    ref = np.asarray(fd.slab_labels("5", image, mask).disc_center_lps, float)
    down = preprocess_volume(image.with_array(image.array.astype(np.float32))).crop.direction[:, 1]  # superior -> inferior
    walk = [{"centre_lps": list(ref + off * down), "disc_presence": 0.99, "kind": kind, "sac_end_gap_mm": gap}
            for off, kind, gap in ((0.0, "disc (L4-5)", 0.0), (35.0, "disc", 38.0), (70.0, "no disc", None))]

    def fake_segment_volume(img, model, device, fine_options=None, **kw):
        assert fine_options == {"locator_mode": "count"}
        return types.SimpleNamespace(l45_centre_lps=tuple(ref), locator="disc count", qc=(), locator_details={
            "walk": walk, "reason": "stand-in", "coarse_centre_lps": list(ref - 35.0 * down)})

    monkeypatch.setattr(segment3d, "segment_volume", fake_segment_volume)
    (row,) = evaluate_fine.locator_study(["5"], count_model=object())
    assert row["level"] == -1 and row["disc_offset_mm"] == pytest.approx(-35.0, abs=0.01)
    assert row["count_level"] == 0 and abs(row["count_offset_mm"]) < 0.01
    assert [(w["level"], w["offset_mm"], w["sac_end_gap_mm"]) for w in row["walk_steps"]] == [
        (0, 0.0, 0.0), (1, 35.0, 38.0), (2, 70.0, None)]
