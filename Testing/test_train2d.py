"""DuralSacSeg training, evaluation metrics and model loading (tiny data, exact known answers)."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch  # noqa: E402 - a hard dependency: a missing torch must fail, not skip
from DuralSacSegLib import models  # noqa: E402
from DuralSacSegLib.cli_train import add_evaluate_parser, add_train_parser  # noqa: E402
from DuralSacSegLib.evaluate import (  # noqa: E402
    area_agreement,
    evaluate_masks,
    run_evaluation,
    tiny_phantom_samples,
)
from DuralSacSegLib.models import load_model, prepare_slice, resize_mask, save_weights  # noqa: E402
from DuralSacSegLib.networks import build_network  # noqa: E402
from DuralSacSegLib.train import (  # noqa: E402
    BUDGET_CONFIG,
    PAPER_CONFIG,
    load_config,
    make_folds,
    run_training,
    weighted_bce_loss,
)

from spinemorph.errors import InputError, ModelError, OutputError  # noqa: E402
from spinemorph.intensity import normalize_percentile  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # Testing/conftest.py


# ----------------------------------------------------------------------------- loss
def test_weighted_bce_known_values():
    # logit 0 → p = 0.5: a positive pixel costs 20·ln 2, a negative one ln 2; mean over 4 pixels
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert float(weighted_bce_loss(logits, target, 20.0)) == pytest.approx((20 + 3) / 4 * math.log(2), rel=1e-6)
    # one positive pixel at logit x: 20·(−log σ(x)); one negative at x: −log(1 − σ(x))
    x = torch.tensor([[[[1.5]]]])
    assert float(weighted_bce_loss(x, torch.ones_like(x), 20.0)) == pytest.approx(20 * math.log(1 + math.exp(-1.5)), rel=1e-6)
    assert float(weighted_bce_loss(x, torch.zeros_like(x), 20.0)) == pytest.approx(math.log(1 + math.exp(1.5)), rel=1e-6)


# ----------------------------------------------------------------------------- metrics
def test_metrics_two_overlapping_squares():
    truth = np.zeros((1, 40, 40), bool)
    pred = np.zeros((1, 40, 40), bool)
    truth[0, 10:20, 10:20] = True  # 100 px
    pred[0, 10:20, 15:25] = True  # 100 px, 50 overlap
    summary, rows = evaluate_masks(pred, truth, [0.25])  # 0.5 mm × 0.5 mm pixels
    assert (summary["tp"], summary["fp"], summary["fn"], summary["tn"]) == (50, 50, 50, 1600 - 150)
    assert summary["precision"] == pytest.approx(0.5)
    assert summary["recall"] == pytest.approx(0.5)
    assert summary["f1"] == pytest.approx(0.5) and summary["dice"] == summary["f1"]
    assert summary["accuracy"] == pytest.approx(1500 / 1600)
    assert rows[0]["true_area_mm2"] == pytest.approx(25.0) and rows[0]["pred_area_mm2"] == pytest.approx(25.0)
    assert summary["area_mae_mm2"] == 0.0
    # prediction inside the truth: precision 1, recall 0.25, area error −18.75 mm²
    pred2 = np.zeros_like(pred)
    pred2[0, 10:15, 10:15] = True
    s2, r2 = evaluate_masks(pred2, truth, [0.25])
    assert (s2["precision"], s2["recall"]) == (1.0, 0.25)
    assert s2["f1"] == pytest.approx(2 * 25 / (2 * 25 + 75))
    assert r2[0]["area_diff_mm2"] == pytest.approx(-18.75)


def test_metrics_exact_true_area_overrides_pixels():
    truth = np.ones((1, 4, 4), bool)
    s, rows = evaluate_masks(truth, truth, [1.0], true_area_mm2=[15.0])
    assert rows[0]["true_area_mm2"] == 15.0 and rows[0]["pred_area_mm2"] == 16.0
    assert s["area_mae_mm2"] == 1.0 and s["f1"] == 1.0


def test_area_agreement_known_values():
    true = [100.0, 150.0, 200.0, 250.0]
    pred = [110.0, 150.0, 190.0, 270.0]  # differences 10, 0, −10, 20
    s = area_agreement(pred, true)
    d = np.array([10.0, 0.0, -10.0, 20.0])
    assert s["area_mae_mm2"] == pytest.approx(10.0)
    assert s["area_mse_mm2"] == pytest.approx(150.0)
    assert s["ba_mean_diff_mm2"] == pytest.approx(5.0)
    sd = float(np.std(d, ddof=1))
    assert s["ba_loa_low_mm2"] == pytest.approx(5 - 1.96 * sd) and s["ba_loa_high_mm2"] == pytest.approx(5 + 1.96 * sd)
    assert s["pearson_r"] == pytest.approx(float(np.corrcoef(pred, true)[0, 1]))
    assert area_agreement([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])["pearson_r"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- preprocessing
def test_prepare_slice_tracks_pixel_size_and_normalises():
    img = np.random.default_rng(0).normal(100, 20, (640, 512)).astype(np.float32)
    out, (sx, sy) = prepare_slice(img, (0.46875, 0.46875))
    assert out.shape == (320, 320) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    # 300 mm × 240 mm field of view padded to 300 mm square: 0.9375 mm pixels, 256 columns of data, 32 padded each side
    assert (sx, sy) == pytest.approx((0.9375, 0.9375))
    assert np.all(out[:, :32] == 0.0) and np.all(out[:, -32:] == 0.0) and out[:, 32:288].std() > 0
    square = np.random.default_rng(1).random((320, 320)).astype(np.float32)
    same, pix = prepare_slice(square, (0.5, 0.5))
    assert pix == (0.5, 0.5) and np.array_equal(same, normalize_percentile(square))  # a 320 × 320 slice passes as is


def test_resize_mask_keeps_disc_area():
    yy, xx = np.mgrid[0:640, 0:640] + 0.5
    disc = ((xx - 300) ** 2 + (yy - 330) ** 2) <= 60**2
    small = resize_mask(disc, (0.5, 0.5))
    # 0.5 mm → 1 mm pixels: area π 30² ≈ 2827 mm² kept within 1 %
    assert small.sum() * 1.0 == pytest.approx(disc.sum() * 0.25, rel=0.01)
    # a non-square mask is padded like the image: a 20 × 10 block of 1 mm pixels on a 20 mm square
    block = np.ones((20, 10), bool)
    m = resize_mask(block, (1.0, 1.0), (20, 20))
    assert m.sum() == 200 and m[:, :5].sum() == 0 and m[:, 15:].sum() == 0


# ----------------------------------------------------------------------------- folds
def test_make_folds_split_by_group():
    groups = [f"p{i // 3}" for i in range(30)]  # 10 patients × 3 slices
    folds = make_folds(groups, 5, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(30))
    for f in folds:
        assert len(f) == 6
        fold_groups = {groups[i] for i in f}
        others = {groups[i] for g in folds if g is not f for i in g}
        assert not fold_groups & others
    assert [f.tolist() for f in make_folds(groups, 5, seed=3)] == [f.tolist() for f in folds]


def test_configs_are_valid_and_paper_recipe():
    cfg = load_config(PAPER_CONFIG)
    assert cfg["loss"]["pos_weight"] == 20.0 and cfg["optimizer"]["name"] == "adam"
    assert (cfg["batch_size"], cfg["epochs"], cfg["folds"]) == (8, 20, 5)
    assert cfg["input_size"] == [320, 320] and cfg["architecture"] == "multiresunet"
    budget = load_config(BUDGET_CONFIG)
    assert budget["crop"]["size"] % 16 == 0 and budget["run_folds"] == [0]
    assert load_config(None, seed=7, architecture="unet")["seed"] == 7


# ----------------------------------------------------------------------------- training + resume
def _tiny_config(epochs: int) -> dict:
    cfg = load_config(PAPER_CONFIG)
    cfg.update(
        architecture="unet",
        epochs=epochs,
        iterations_per_epoch=1,
        batch_size=2,
        folds=2,
        run_folds=[0],
        input_size=[64, 64],
        crop={"size": 32, "negative_fraction": 0.25},
        augment={"flip_lr": True, "gamma": [0.8, 1.25]},
        device="cpu",
        num_threads=1,
    )
    return cfg


def test_train_two_iterations_then_resume(tmp_path):
    data = tiny_phantom_samples(8, seed=1)
    ext = tiny_phantom_samples(4, seed=9)
    # straight run: 2 epochs of 1 iteration
    straight = tmp_path / "straight"
    run_training(_tiny_config(2), straight, train_samples=data, external_samples=ext, progress=False)
    # a run stopped after 1 epoch (its checkpoint is what an interruption leaves), then resumed and extended to 2
    part = tmp_path / "part"
    s1 = run_training(_tiny_config(1), part, train_samples=data, external_samples=ext, progress=False)
    assert s1["folds"][0]["best_epoch"] == 1
    with pytest.raises(OutputError, match="--resume"):
        run_training(_tiny_config(2), part, train_samples=data, external_samples=ext, progress=False)
    run_training({}, part, resume=True, epochs=2, train_samples=data, external_samples=ext, progress=False)
    assert json.loads((part / "config.json").read_text())["epochs"] == 2
    for name in ("config.json", "best.pt", "folds.csv", "summary.json", "loss_curves.png"):
        assert (part / name).is_file(), name
    for name in ("state.pt", "best.pt", "history.csv", "loss_curve.png", "metrics.json", "external_slices.csv"):
        assert (part / "fold0" / name).is_file(), name
    hist_a = (straight / "fold0" / "history.csv").read_text().splitlines()
    hist_b = (part / "fold0" / "history.csv").read_text().splitlines()
    assert len(hist_b) == 3  # header + 2 epochs
    # the resumed run continues exactly where the straight run was: same losses, same final weights
    assert [r.split(",")[1:3] for r in hist_a] == [r.split(",")[1:3] for r in hist_b]
    sa = torch.load(straight / "fold0" / "state.pt", weights_only=True)["model"]
    sb = torch.load(part / "fold0" / "state.pt", weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    metrics = json.loads((part / "fold0" / "metrics.json").read_text())
    assert {"validation", "external"} <= set(metrics)
    # evaluated at the model's decision threshold (20/21 for weighted BCE, positive weight 20), not at 0.5
    assert metrics["threshold"] == pytest.approx(load_model(part / "fold0" / "best.pt")[1].threshold)
    prec = metrics["external"]["precision"]  # undefined (None) when the 2-iteration model predicts no pixel
    assert prec is None or 0.0 <= prec <= 1.0
    net, info = load_model(part / "best.pt")
    assert info.architecture == "unet" and info.config["fold"] == 0
    with pytest.raises(OutputError, match="no run"):
        run_training({}, tmp_path / "empty", resume=True, progress=False)


def test_snapshot_export_then_warm_start(tmp_path):
    """A run lost with its machine goes on from the committed fp16 snapshot (scripts/export_dsca_training.py)."""
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location(
        "export_dsca_training", pathlib.Path(__file__).resolve().parents[1] / "scripts" / "export_dsca_training.py")
    exporter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exporter)
    data = tiny_phantom_samples(8, seed=1)
    run = tmp_path / "run"
    run_training(_tiny_config(2), run, train_samples=data, progress=False)
    state = json.loads(torch.load(run / "fold0" / "state.pt", weights_only=True)["state"])
    snap = exporter.export(run, tmp_path / "snap")
    assert snap.name == "unet.pt" and (tmp_path / "snap" / "unet_history.csv").is_file()
    ckpt = models.read_weights_file(snap)
    ts = ckpt["config"]["training_state"]
    assert ts["best_epoch"] == state["best_epoch"] == ts["epoch"] and ts["epochs_reached"] == 2
    assert all(v.dtype == torch.float16 for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert [h["epoch"] for h in ts["history"]] == list(range(1, ts["epoch"] + 1))
    # warm start: the schedule continues at the snapshot's epoch with its history; best.pt starts as the snapshot
    warm = tmp_path / "warm"
    run_training(_tiny_config(3), warm, train_samples=data, progress=False, init_weights=snap)
    hist = (warm / "fold0" / "history.csv").read_text().splitlines()
    assert len(hist) == 1 + 3  # header + the snapshot's epochs + the new ones up to 3
    st = json.loads(torch.load(warm / "fold0" / "state.pt", weights_only=True)["state"])
    assert st["epoch"] == 3 and st["warm_start"]["epoch"] == ts["epoch"]
    # a warm start that is already at the end of its schedule trains nothing, and the best weights are the snapshot's
    done = tmp_path / "done"
    run_training(_tiny_config(ts["epoch"]), done, train_samples=data, progress=False, init_weights=snap)
    a = models.read_weights_file(snap)["state_dict"]
    b = models.read_weights_file(done / "best.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # wrong architecture / --resume together / a plain weights file: one clear error each
    cfg = _tiny_config(3)
    cfg["architecture"] = "attention_unet"
    with pytest.raises(InputError, match="holds a unet network"):
        run_training(cfg, tmp_path / "arch", train_samples=data, progress=False, init_weights=snap)
    assert not (tmp_path / "arch" / "config.json").exists()  # nothing half-written
    with pytest.raises(InputError, match="new run"):
        run_training({}, warm, resume=True, train_samples=data, progress=False, init_weights=snap)
    with pytest.raises(InputError, match="no training state"):
        run_training(_tiny_config(3), tmp_path / "plain", train_samples=data, progress=False,
                     init_weights=run / "fold0" / "last.pt")


# ----------------------------------------------------------------------------- model files
def _weights(tmp_path, arch="attention_unet"):
    torch.manual_seed(0)
    net = build_network(arch).eval()
    path = save_weights(tmp_path / f"{arch}.pt", net, arch, config={"seed": 0})
    return net, path


def test_weights_round_trip_fp16(tmp_path):
    net, path = _weights(tmp_path)
    assert path.stat().st_size < 16.5e6  # float16: ~2 bytes per parameter
    loaded, info = load_model(str(path), "cpu")
    assert info.architecture == "attention_unet" and info.sha256 == models.sha256_of(path)
    assert next(loaded.parameters()).dtype == torch.float32 and not loaded.training
    x = torch.rand(1, 1, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(net(x), loaded(x), atol=2e-2)


def test_load_errors(tmp_path):
    _, path = _weights(tmp_path)
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError, match="truncated"):
        load_model(truncated)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        load_model(empty)
    with pytest.raises(ModelError, match="not the requested"):
        load_model(path, architecture="multiresunet")
    # a file that says "unet" but holds Attention U-Net tensors
    ckpt = torch.load(path, weights_only=True)
    ckpt["architecture"] = "unet"
    wrong = tmp_path / "wrong.pt"
    torch.save(ckpt, wrong)
    with pytest.raises(ModelError, match="does not fit the unet network"):
        load_model(wrong)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": 1}, foreign)
    with pytest.raises(ModelError, match="not a SpineMorph"):
        load_model(foreign)
    with pytest.raises(ModelError, match="unknown model"):
        load_model("no-such-model")


def test_catalogue_sha256_checked(tmp_path, monkeypatch):
    _, path = _weights(tmp_path)
    catalog = {
        "format_version": 1,
        "default": "m",
        "models": [{"name": "m", "architecture": "attention_unet", "weights": path.name, "sha256": "0" * 64, "card": "m.md"}],
    }
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    monkeypatch.setattr(models, "MODELS_DIR", tmp_path)
    with pytest.raises(ModelError, match="corrupt"):
        load_model("m")
    catalog["models"][0]["sha256"] = models.sha256_of(path)
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    net, info = load_model("m")
    assert info.name == "m" and info.card_path == tmp_path / "m.md"
    assert models.list_models() == ["m"]
    catalog["models"][0]["weights"] = "gone.pt"
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    with pytest.raises(ModelError, match="missing"):
        load_model("m")


def test_embedded_catalogue_consistent():
    """Every catalogue entry's weights file exists, matches its SHA-256 and architecture, and is < 16 MiB."""
    entries = models.catalog_entries()
    assert entries, "catalogue is empty"
    for e in entries.values():
        path = models.MODELS_DIR / e["weights"]
        assert path.is_file(), path
        assert path.stat().st_size < 16 * 2**20
        assert models.sha256_of(path) == e["sha256"]
        assert (models.MODELS_DIR / e["card"]).is_file()
        assert (models.MODELS_DIR / e["training_config"]).is_file()
        ckpt = models.read_weights_file(path)
        assert ckpt["architecture"] == e["architecture"]
    assert models.default_model_name() in entries


# ----------------------------------------------------------------------------- evaluation report + CLI
def test_run_evaluation_report(tmp_path):
    _, path = _weights(tmp_path, "attention_unet")
    out = tmp_path / "eval"
    s = run_evaluation(str(path), {"source": "tiny", "n": 3, "size": 64}, out, progress=False)
    for name in ("metrics.json", "metrics.csv", "slices.csv", "area_scatter.png", "bland_altman.png", "examples.png"):
        assert (out / name).is_file(), name
    assert s["n_slices"] == 3 and s["architecture"] == "attention_unet"
    again = run_evaluation(str(path), {"source": "tiny", "n": 3, "size": 64}, tmp_path / "eval2", progress=False)
    assert again["area_mae_mm2"] == s["area_mae_mm2"]  # deterministic
    with pytest.raises(OutputError, match="--overwrite"):
        run_evaluation(str(path), {"source": "tiny", "n": 3, "size": 64}, out, progress=False)
    with pytest.raises(InputError):
        run_evaluation(str(path), "no-such-data", tmp_path / "eval3", progress=False)


def test_cli_parsers():
    parser = argparse.ArgumentParser(prog="spinemorph dsca")
    sub = parser.add_subparsers(dest="cmd")
    add_train_parser(sub)
    add_evaluate_parser(sub)
    args = parser.parse_args(["train", "--out", "r", "--seed", "3", "--folds", "4", "--architecture", "unet"])
    assert (args.seed, args.folds, args.architecture, args.resume) == (3, 4, "unet", False) and callable(args.func)
    args = parser.parse_args(["evaluate", "--model", "x.pt", "--data", "phantom", "--out", "e"])
    assert args.data == "phantom" and callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "--data", "mri", "--out", "e"])


# ----------------------------------------------------------------------------- real data (skipped without SPIDER)
def test_real_slab_evaluation_split_is_held_out(spider_root):
    from DuralSacSegLib.evaluate import load_dataset
    from DuralSacSegLib.train import EVAL_SPECS

    from spinemorph.spider import HELD_OUT_SLAB_PATIENTS

    planes = load_dataset(EVAL_SPECS["real-slabs"])
    assert len(planes) > 20
    assert {p.group for p in planes} <= set(HELD_OUT_SLAB_PATIENTS)
    for p in planes:
        assert p.image.shape == p.mask.shape == (320, 320) and p.pixel_mm == (0.6, 0.6)
        # the sac is kept whole on the 320 grid: its area is the mask's pixels × 0.36 mm²
        assert p.mask_area_mm2 == pytest.approx(p.mask.sum() * 0.36)
        assert p.mask.any()


def test_within_valid_region_metrics():
    """Padding outside the image data (real slab strips) is ignored by the within_valid_* metrics."""
    from DuralSacSegLib.evaluate import SliceSample, evaluate_network

    class AllPositive(torch.nn.Module):
        def forward(self, x):
            return torch.full_like(x, 10.0)

    mask = np.zeros((32, 32), np.uint8)
    mask[10:14, 12:16] = 1  # 16 px
    valid = np.zeros((32, 32), np.uint8)
    valid[:, 8:24] = 1  # 512 px strip
    sample = SliceSample(np.random.default_rng(0).random((32, 32)).astype(np.float32), mask, (0.5, 0.5), valid=valid)
    summary, rows, *_ = evaluate_network(AllPositive(), [sample], size=(32, 32))
    assert summary["precision"] == pytest.approx(16 / 1024) and summary["recall"] == 1.0
    assert summary["within_valid_precision"] == pytest.approx(16 / 512)
    assert rows[0]["pred_area_within_valid_mm2"] == pytest.approx(512 * 0.25)
    assert summary["within_valid_area_mae_mm2"] == pytest.approx((512 - 16) * 0.25)


def test_decision_threshold_rules(tmp_path):
    """Derived from the loss unless chosen explicitly; legacy files storing 0.5 count as 'not chosen'."""
    from DuralSacSegLib.models import decision_threshold, load_model

    loss = {"config": {"loss": {"name": "weighted_bce", "pos_weight": 20.0}}}
    assert decision_threshold({**loss, "threshold": None}) == pytest.approx(20 / 21)
    assert decision_threshold({**loss, "threshold": 0.5}) == pytest.approx(20 / 21)  # legacy embedded files
    assert decision_threshold({**loss, "threshold": 0.5, "threshold_explicit": True}) == 0.5
    assert decision_threshold({**loss, "threshold": 0.7}) == 0.7
    assert decision_threshold({"config": {"loss": {"name": "dice"}}}) == 0.5
    net = build_network("unet")
    cfg = {"loss": {"name": "weighted_bce", "pos_weight": 20.0}}
    _, info = load_model(save_weights(tmp_path / "a.pt", net, "unet", config=cfg), "cpu")
    assert info.threshold == pytest.approx(20 / 21)
    _, info = load_model(save_weights(tmp_path / "b.pt", net, "unet", config=cfg, threshold=0.5), "cpu")
    assert info.threshold == 0.5


def _write_case(folder, name, n=5, size=48, sagittal=False):
    from spinemorph.volume import Volume, write_volume

    rr, cc = np.mgrid[0:size, 0:size]
    mask = np.zeros((n, size, size), np.uint8)
    for k in range(n):
        mask[k][(rr - 24) ** 2 + (cc - 22) ** 2 <= 8**2] = 1
    direction = np.eye(3)
    if sagittal:  # the same voxels on a sagittal grid (i -> P, j -> S... here only the orientation matters)
        direction = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    img = Volume(np.where(mask > 0, 900.0, 150.0).astype(np.float32), (0.7, 0.7, 3.0), (0, 0, 0), direction)
    write_volume(img, folder / f"{name}_image.nrrd")
    write_volume(img.with_array(mask), folder / f"{name}_mask.nii.gz")


def test_folder_data_source_for_your_own_cases(tmp_path, capsys):
    from DuralSacSegLib.evaluate import folder_samples, load_dataset

    _write_case(tmp_path, "P01_axial")
    _write_case(tmp_path, "P01_repeat")
    _write_case(tmp_path, "P02_axial", n=3)
    samples = folder_samples(tmp_path)
    assert len(samples) == 13 and sorted({s.group for s in samples}) == ["P01", "P02"]
    assert samples[0].pixel_mm == pytest.approx((0.7, 0.7)) and samples[0].image.shape == (48, 48)
    assert samples[0].mask.sum() == int(((np.mgrid[0:48, 0:48][0] - 24) ** 2 + (np.mgrid[0:48, 0:48][1] - 22) ** 2 <= 64).sum())
    assert len(load_dataset({"source": "folder", "path": str(tmp_path)})) == 13
    # a sagittal case is resliced to axial planes
    sag = tmp_path / "sag"
    sag.mkdir()
    _write_case(sag, "S01_sag", sagittal=True)
    planes = folder_samples(sag)
    assert planes and all(p.mask.shape == planes[0].mask.shape for p in planes) and sum(p.mask.sum() for p in planes) > 0
    # problems are named
    (tmp_path / "P03_image.nrrd").write_bytes((tmp_path / "P02_axial_image.nrrd").read_bytes())
    with pytest.raises(InputError, match="no <case>_mask file for P03_image.nrrd"):
        folder_samples(tmp_path)
    with pytest.raises(InputError, match="holds no"):
        folder_samples(_empty(tmp_path))
    # the CLI takes a folder for --data (evaluate) and refuses --data-dir with --resume (train)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    add_evaluate_parser(sub)
    add_train_parser(sub)
    args = parser.parse_args(["evaluate", "--data", str(sag), "--out", str(tmp_path / "e")])
    assert args.data == {"source": "folder", "path": str(sag.resolve())}
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "--data", str(tmp_path / "nowhere"), "--out", "x"])
    capsys.readouterr()
    args = parser.parse_args(["train", "--out", str(tmp_path / "run"), "--resume", "--data-dir", str(sag)])
    with pytest.raises(InputError, match="--data-dir"):
        args.func(args)


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir(exist_ok=True)
    return d


def test_run_summary_reports_metrics_inside_the_imaged_strip(tmp_path):
    """Samples with an imaged strip (real slab planes) get the fold table's ``*_within_strip_*`` metrics (the
    whole-plane ones count what the network does in the padding, where it was never trained)."""
    import dataclasses

    data = tiny_phantom_samples(8, seed=1)
    ext = []
    for s in tiny_phantom_samples(2, seed=9):
        valid = np.zeros(s.mask.shape, np.uint8)
        valid[:, s.mask.shape[1] // 4 : 3 * s.mask.shape[1] // 4] = 1
        ext.append(dataclasses.replace(s, valid=valid))
    summary = run_training(_tiny_config(1), tmp_path / "run", train_samples=data, external_samples=ext, progress=False)
    row = summary["folds"][0]
    assert "external_within_strip_f1" in row and "external_within_strip_area_mae_mm2" in row
    assert not any(k.startswith("validation_within_strip") for k in row)  # phantom validation planes: no strip
    assert "external_within_strip_f1" in (tmp_path / "run" / "folds.csv").read_text().splitlines()[0]
