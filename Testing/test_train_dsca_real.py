"""DSCA training with real slab planes: loss-weight mask, source mix, fixed validation split, mid-epoch resume,
bf16 option, calibration and default-model selection (tiny data, known answers)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from DuralSacSegLib import calibration as cal  # noqa: E402
from DuralSacSegLib import train as train_mod  # noqa: E402
from DuralSacSegLib.evaluate import tiny_phantom_samples  # noqa: E402
from DuralSacSegLib.train import (  # noqa: E402
    PAPER_CONFIG,
    BatchSampler,
    load_config,
    run_training,
    validate_config,
    weighted_bce_loss,
)

from spinemorph.errors import InputError  # noqa: E402


def test_weighted_bce_with_loss_weight_mask():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 8, 8, generator=g)
    target = (torch.rand(2, 1, 8, 8, generator=g) > 0.7).float()
    w = torch.zeros(2, 1, 8, 8)
    w[:, :, :, 2:5] = 1  # a strip
    full = weighted_bce_loss(logits, target, 20.0)
    assert float(weighted_bce_loss(logits, target, 20.0, torch.ones_like(w))) == pytest.approx(float(full), rel=1e-6)
    masked = weighted_bce_loss(logits, target, 20.0, w)
    # = the mean over the strip pixels only
    strip = weighted_bce_loss(logits[..., 2:5], target[..., 2:5], 20.0)
    assert float(masked) == pytest.approx(float(strip), rel=1e-6)
    # what lies outside the strip does not matter
    logits2 = logits.clone()
    logits2[..., :2] = 50.0
    assert float(weighted_bce_loss(logits2, target, 20.0, w)) == pytest.approx(float(masked), rel=1e-6)


def test_batch_sampler_mix_and_aligned_weights():
    n, size = 20, 32
    images = np.random.default_rng(0).random((n, size, size)).astype(np.float16)
    masks = np.zeros((n, size, size), np.uint8)
    masks[:, 10:20, 10:20] = 1
    valid = np.zeros((n, size, size), np.uint8)
    valid[:, :, 12:18] = 1
    ids = np.array([0] * 15 + [1] * 5)
    cfg = {"batch_size": 4, "crop": {"size": 16, "negative_fraction": 0.0}, "augment": {"flip_lr": True}}
    # identify each slice by a marker value
    for i in range(n):
        images[i, 0, 0] = i
    s = BatchSampler(images, masks, cfg, np.random.default_rng(1), valid=valid, source_ids=ids, mix=[0.2, 0.8])
    drawn = []
    for _ in range(200):
        img, msk, wgt = s._draw()
        assert img.shape == msk.shape == wgt.shape == (16, 16)
        assert set(np.unique(wgt)) <= {0, 1}
        drawn.append(img)
    x, y, w = s.next_batch(with_weight=True)
    assert x.shape == y.shape == w.shape == (4, 1, 16, 16)
    # single-source default: weights all ones
    s1 = BatchSampler(images, masks, cfg, np.random.default_rng(1))
    assert s1.next_batch(with_weight=True)[2].min() == 1.0
    # the mix: source 1 (5 slices) is drawn ~80 % of the time
    s2 = BatchSampler(images, masks, {"batch_size": 1, "crop": None, "augment": {}}, np.random.default_rng(2),
                      source_ids=ids, mix=[0.2, 0.8])
    picks = [int(s2._draw()[0][0, 0]) for _ in range(500)]
    share = np.mean([p >= 15 for p in picks])
    assert 0.72 < share < 0.88


def _cfg(epochs, iters, **kw):
    cfg = load_config(PAPER_CONFIG)
    cfg.update(architecture="unet", epochs=epochs, iterations_per_epoch=iters, batch_size=2, folds=2, run_folds=[0],
               input_size=[64, 64], crop={"size": 32, "negative_fraction": 0.25}, augment={"flip_lr": True},
               device="cpu", num_threads=1, checkpoint_minutes=0)
    cfg["validation"] = {"max_slices": None, "batch_size": 4, "select": "dice"}
    cfg.update(kw)
    return cfg


def _strip_samples(n, seed):
    out = []
    for s in tiny_phantom_samples(n, seed=seed):
        v = np.zeros_like(s.mask)
        v[:, 20:44] = 1
        out.append(dataclasses.replace(s, valid=v))
    return out


def test_mid_epoch_checkpoint_resume_equals_straight_run(tmp_path, monkeypatch):
    data = tiny_phantom_samples(6, seed=1) + _strip_samples(4, seed=3)
    val = _strip_samples(3, seed=5)
    monkeypatch.setattr(train_mod, "load_dataset", lambda spec, purpose="": val)
    cfg = _cfg(1, 4)
    cfg["data"] = dict(cfg["data"], validation={"source": "tiny"}, external=None)
    straight = tmp_path / "straight"
    run_training(cfg, straight, train_samples=data, progress=False)
    # interrupted after 2 iterations; the state is saved within the epoch (checkpoint_minutes ~ 0 = after every batch)
    cfg_b = dict(cfg, checkpoint_minutes=1e-9)
    calls = {"n": 0}
    real_next = BatchSampler.next_batch

    def crashing(self, with_weight=False):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_next(self, with_weight)

    part = tmp_path / "part"
    monkeypatch.setattr(BatchSampler, "next_batch", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg_b, part, train_samples=data, progress=False)
    saved = torch.load(part / "fold0" / "state.pt", weights_only=True)
    assert json.loads(saved["partial"])["iteration"] == 2
    monkeypatch.setattr(BatchSampler, "next_batch", real_next)
    run_training({}, part, resume=True, train_samples=data, progress=False)
    assert "resumed at iteration 2/4" in (part / "train.log").read_text()
    sa = torch.load(straight / "fold0" / "state.pt", weights_only=True)["model"]
    sb = torch.load(part / "fold0" / "state.pt", weights_only=True)["model"]
    assert all(torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6) for k in sa)
    hist = (part / "fold0" / "history.csv").read_text().splitlines()
    assert hist[0].split(",")[:4] == ["epoch", "train_loss", "val_loss", "seconds"] and "val_dice" in hist[0]
    summary = json.loads((part / "summary.json").read_text())
    assert summary["folds"][0]["n_val_slices"] == 3  # the fixed validation split, not a fold of the training data


def test_bf16_option_trains_and_bad_settings_refused(tmp_path):
    data = tiny_phantom_samples(6, seed=1)
    cfg = _cfg(1, 1, precision="bf16")
    cfg["validation"]["select"] = "loss"
    s = run_training(cfg, tmp_path / "bf16", train_samples=data, external_samples=[], progress=False)
    assert s["folds"][0]["best_epoch"] == 1
    for bad in ({"precision": "fp8"}, {"checkpoint_minutes": -1}):
        with pytest.raises(InputError):
            validate_config(dict(_cfg(1, 1), **bad))
    c = _cfg(1, 1)
    c["data"] = dict(c["data"], train=[{"source": "tiny"}, {"source": "tiny"}], mix=[1.0])
    with pytest.raises(InputError, match="mix"):
        validate_config(c)


def test_real_cpu_config_loads():
    cfg = load_config(train_mod.CONFIG_DIR / "real_cpu.json")
    assert cfg["loss"]["pos_weight"] == 20.0 and cfg["batch_size"] == 8 and cfg["optimizer"]["name"] == "adam"
    assert isinstance(cfg["data"]["train"], list) and cfg["data"]["mix"] == [0.5, 0.5]
    assert cfg["data"]["validation"]["split"] == "validation" and cfg["checkpoint_minutes"] > 0
    assert cfg["num_threads"] == 2


def test_choose_decision_on_known_planes():
    """Two planes, a 'network' whose probability is 0.9 on the sac and 0.6 on a stray blob: the choice must be a
    threshold between them or the component post-processing, and it is scored inside the strip only."""
    truth = np.zeros((2, 40, 40), np.uint8)
    truth[:, 10:20, 15:25] = 1
    valid = np.zeros((2, 40, 40), bool)
    valid[:, :, 12:28] = True
    probs = np.where(truth > 0, 0.9, 0.01).astype(np.float16)
    probs[:, 30:34, 16:20] = 0.6  # stray blob inside the strip
    probs[:, 10:20, 0:5] = 0.99  # outside the strip: ignored
    planes = cal.PlaneSet(np.zeros((2, 40, 40), np.float32), truth, valid, np.array([0.25, 0.25]), ["1", "1"], [0, 4],
                          np.array([False, False]))
    best, rows = cal.choose_decision(probs, planes, thresholds=(0.5, 0.7), specs=("none", "largest2d"))
    assert best["mean_dice"] == pytest.approx(1.0)
    assert (best["threshold"], best["postprocess"]) in ((0.7, "none"), (0.5, "largest2d"), (0.7, "largest2d"))
    worst = next(r for r in rows if r["threshold"] == 0.5 and r["postprocess"] == "none")
    assert worst["mean_dice"] == pytest.approx(2 * 100 / (100 + 116))
    assert worst["area_mae_mm2"] == pytest.approx(16 * 0.25)


def test_best_candidate_breaks_exact_ties_by_the_unrounded_score():
    """Same rounded score and the same Dice (e.g. largest2d+fill vs track+fill, which bridges one empty slice): the
    smaller area error wins whatever the list order (the 2026-12-08 U-Net calibration had exactly this tie)."""
    a = {"postprocess": "largest2d+fill", "score": 0.798642, "mean_dice": 0.891604}
    b = {"postprocess": "track+fill", "score": 0.798841, "mean_dice": 0.891604}
    c = {"postprocess": "fill", "score": 0.7969, "mean_dice": 0.8999}
    for rows in ([a, b, c], [b, a, c], [c, a, b]):
        assert cal.best_candidate(rows)["postprocess"] == "track+fill"
    d = {"postprocess": "none", "score": 0.79870, "mean_dice": 0.8920}  # same rounded score, higher Dice: Dice first
    assert cal.best_candidate([a, b, d])["postprocess"] == "none"


def test_select_default_model(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "dsca_select_default.py"
    spec = importlib.util.spec_from_file_location("dsca_select_default", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, dice, mae in (("dsca-multiresunet", 0.80, 20.0), ("dsca-unet", 0.85, 18.0), ("dsca-attention-unet", 0.85, 25.0)):
        d = tmp_path / name
        d.mkdir()
        (d / "evaluation.json").write_text(json.dumps({
            "model": name, "real_slabs_strip": {"mean_dice": dice, "area_mae_mm2": mae, "pearson_r": 0.9,
                                                "mean_true_area_mm2": 150.0},
            "synthetic": {"mean_slice_dice": 0.7}, "phantom_study": {"dsca_bias_mm2": 3.0}}))
    choice = mod.select_default([tmp_path / n / "evaluation.json" for n in ("dsca-multiresunet", "dsca-unet", "dsca-attention-unet")])
    # score = Dice - MAE / 150: multiresunet 0.667, unet 0.730, attention 0.683
    assert choice["default"] == "dsca-unet"
    assert [round(r["score"], 3) for r in choice["ranking"]] == [0.73, 0.683, 0.667]
    assert [r["model"] for r in choice["ranking"]][-1] == "dsca-multiresunet"


def test_catalogue_decision_sets_threshold_and_postprocessing(tmp_path, monkeypatch):
    from DuralSacSegLib import models
    from DuralSacSegLib.networks import build_network

    from spinemorph.errors import ModelError

    torch.manual_seed(0)
    path = models.save_weights(tmp_path / "w.pt", build_network("unet"), "unet", config={"loss": {"pos_weight": 20.0}})
    entry = {"name": "m", "architecture": "unet", "weights": "w.pt", "sha256": models.sha256_of(path)}
    monkeypatch.setattr(models, "MODELS_DIR", tmp_path)

    def write(e):
        (tmp_path / "catalog.json").write_text(json.dumps({"format_version": 1, "default": "m", "models": [e]}))

    write(entry)
    _, info = models.load_model("m")
    assert info.threshold == pytest.approx(20 / 21) and info.postprocess == "none"
    write({**entry, "decision": {"threshold": 0.8, "postprocess": "track+fill", "chosen_on": "validation split"}})
    _, info = models.load_model("m")
    assert info.threshold == 0.8 and info.postprocess == "track+fill" and "validation split" in info.threshold_source
    for bad in ({"threshold": 1.5}, {"threshold": 0.8, "postprocess": "biggest"}, {"postprocess": "none"}):
        write({**entry, "decision": bad})
        with pytest.raises(ModelError):
            models.load_model("m")


def test_phantom_guard_refuses_a_strip_only_threshold():
    """On the strip the low threshold wins; on full phantom planes it adds 64 px x 1 mm² of bias: not eligible."""
    truth = np.zeros((1, 40, 40), np.uint8)
    truth[0, 10:20, 15:25] = 1
    valid = np.ones((1, 40, 40), bool)
    probs = np.where(truth > 0, 0.6, 0.01).astype(np.float16)  # under-confident on the strip: 0.5 finds the sac
    planes = cal.PlaneSet(np.zeros((1, 40, 40), np.float32), truth, valid, np.array([1.0]), ["1"], [0], np.array([False]))
    ph_probs = np.zeros((1, 40, 40), np.float16)
    ph_probs[0, 5:15, 5:15] = 0.99  # the sac: 100 mm², exact
    ph_probs[0, 20:28, 20:28] = 0.55  # over-segmentation that only a threshold of 0.5 keeps: +64 mm²
    ph = cal.PhantomPlanes(np.zeros((1, 40, 40), np.float32), np.array([1.0]), np.array([100.0]))
    free, _ = cal.choose_decision(probs, planes, thresholds=(0.5, 0.9), specs=("none",))
    assert free["threshold"] == 0.5
    guarded, rows = cal.choose_decision(probs, planes, thresholds=(0.5, 0.9), specs=("none",), phantom=(ph_probs, ph),
                                        current=(0.9, "none"))
    assert guarded["threshold"] == 0.9 and guarded["phantom_bias_mm2"] == pytest.approx(0.0)
    assert next(r for r in rows if r["threshold"] == 0.5)["phantom_bias_mm2"] == pytest.approx(64.0)


def _embed_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "embed_dsca_real.py"
    spec = importlib.util.spec_from_file_location("embed_dsca_real", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_run(tmp_path, sha_override=None, weights_epoch=None):
    """A finished run folder as scripts/train_dsca_real.sh leaves it (tiny numbers, real weights format)."""
    from DuralSacSegLib import models
    from DuralSacSegLib.networks import build_network

    run = tmp_path / "runs" / "dsca_real_unet"
    (run / "fold0").mkdir(parents=True)
    (run / "eval").mkdir()
    torch.manual_seed(0)
    best = models.save_weights(run / "fold0" / "best.pt", build_network("unet"), "unet",
                               config={"loss": {"pos_weight": 20.0},
                                       **({"epoch": weights_epoch} if weights_epoch else {})})
    sha = sha_override or models.sha256_of(best)
    cfg = json.loads((models.MODELS_DIR / "configs" / "real_cpu.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "architecture": "unet"}))
    (run / "fold0" / "history.csv").write_text("epoch,train_loss,val_loss,seconds,iterations,val_dice\n"
                                              "1,0.7,0.6,1800,150,0.65\n2,0.4,0.5,1800,150,0.80\n3,0.3,0.55,1800,150,0.78\n")
    chosen = {"threshold": 0.9, "postprocess": "track", "mean_dice": 0.85, "area_mae_mm2": 20.0}
    (run / "calibration.json").write_text(json.dumps({
        "weights_sha256": sha, "validation_patients": ["1", "2"], "n_planes": 96, "chosen": chosen,
        "current": {"threshold": 20 / 21, "postprocess": "none", "mean_dice": 0.84, "area_mae_mm2": 22.0}}))
    real = {"n_planes": 241, "n_patients": 7, "mean_dice": 0.88, "median_dice": 0.93, "area_mae_mm2": 21.0,
            "pearson_r": 0.86, "ba_mean_diff_mm2": -1.0, "patients": ["11", "41"], "row_step": 16,
            "per_patient": {"11": {"mean_dice": 0.9}}, "whole_sac_planes": {"n_planes": 19, "mean_dice": 0.9}}
    (run / "eval" / "evaluation.json").write_text(json.dumps({
        "weights_sha256": sha, "threshold": 0.9, "postprocess": "track", "command": "scripts/dsca_evaluate.py ...",
        "threshold_source": "x", "real_slabs_strip": real,
        "phantom_study": {"n_slices": 64, "dsca_bias_mm2": 2.5, "area_mae_mm2": 9.0}}))
    return run


def test_embed_real_run_writes_entry_and_card(tmp_path):
    """scripts/embed_dsca_real.py copies the weights byte for byte, stores the calibrated decision, the training record
    and the held-out numbers; the card is written from the same files; the default is left alone."""
    import shutil

    from DuralSacSegLib import models

    embed_dsca_real = _embed_script()

    dest = tmp_path / "Models"
    dest.mkdir()
    shutil.copyfile(models.MODELS_DIR / "catalog.json", dest / "catalog.json")
    default = json.loads((dest / "catalog.json").read_text())["default"]
    run = _fake_run(tmp_path)
    assert embed_dsca_real.main([str(run), "--dest", str(dest)]) == 0
    cat = json.loads((dest / "catalog.json").read_text())
    e = next(m for m in cat["models"] if m["name"] == "dsca-unet")
    assert e["sha256"] == models.sha256_of(run / "fold0" / "best.pt") == models.sha256_of(dest / "dsca_unet.pt")
    assert e["decision"]["threshold"] == 0.9 and e["decision"]["postprocess"] == "track"
    assert e["iterations"] == 300 and e["epochs"] == 2 and e["epochs_run"] == 3 and e["best_epoch"] == 2 and e["train_wall_hours"] == 1.5
    assert e["metrics"]["real-slabs, held-out, inside the strip"]["mean_dice"] == 0.88
    assert cat["default"] == default and len(cat["models"]) == 3
    card = (dest / "dsca_unet.md").read_text()
    assert e["sha256"] in card and "| 2 | 0.4000 | 0.5000 | 0.800 | 1800 |" in card and "0.880" in card


def test_embed_real_run_records_a_chosen_checkpoint(tmp_path):
    """Weights from the checkpoint choice (epoch 3, not the best-Dice epoch 2): the entry and card name epoch 3, its
    iterations, and the training's best-Dice epoch beside it."""
    import shutil

    from DuralSacSegLib import models

    embed_dsca_real = _embed_script()
    dest = tmp_path / "Models"
    dest.mkdir()
    shutil.copyfile(models.MODELS_DIR / "catalog.json", dest / "catalog.json")
    run = _fake_run(tmp_path, weights_epoch=3)
    assert embed_dsca_real.main([str(run), "--dest", str(dest)]) == 0
    e = next(m for m in json.loads((dest / "catalog.json").read_text())["models"] if m["name"] == "dsca-unet")
    assert (e["checkpoint_epoch"], e["epochs"], e["iterations"], e["best_epoch"]) == (3, 3, 450, 2)
    assert e["checkpoint_validation_dice"] == 0.78 and "dsca_choose_checkpoint" in e["checkpoint_rule"]
    card = (dest / "dsca_unet.md").read_text()
    assert "checkpoint of epoch 3 (validation Dice 0.780)" in card and "best validation Dice (2, 0.800)" in card


def test_embed_real_run_refuses_numbers_of_other_weights(tmp_path):
    embed_dsca_real = _embed_script()
    run = _fake_run(tmp_path, sha_override="0" * 64)
    with pytest.raises(SystemExit, match="other|not on"):
        embed_dsca_real.main([str(run), "--dest", str(tmp_path)])


def test_every_epochs_weights_kept_on_request(tmp_path):
    data = tiny_phantom_samples(6, seed=1)
    cfg = _cfg(2, 1, keep_epoch_weights=True)
    cfg["validation"]["select"] = "loss"
    run_training(cfg, tmp_path / "run", train_samples=data, external_samples=[], progress=False)
    kept = sorted(p.name for p in (tmp_path / "run" / "fold0" / "epochs").glob("*.pt"))
    assert kept == ["epoch_001.pt", "epoch_002.pt"]
    from DuralSacSegLib.models import read_weights_file

    assert read_weights_file(tmp_path / "run" / "fold0" / "epochs" / "epoch_002.pt")["config"]["epoch"] == 2
    plain = _cfg(1, 1)
    plain["validation"]["select"] = "loss"
    run_training(plain, tmp_path / "plain", train_samples=data, external_samples=[], progress=False)
    assert not (tmp_path / "plain" / "fold0" / "epochs").exists()


def test_checkpoint_choice_prefers_the_phantom_target_then_the_real_score():
    from DuralSacSegLib.calibration import choose_checkpoint

    def row(epoch, score, bias, dice=0.8):
        return {"epoch": epoch, "score": score, "mean_dice": dice, "phantom_bias_mm2": bias}

    rows = [row(11, 0.74, 2.8), row(18, 0.78, -10.3), row(20, 0.76, -4.9), row(22, 0.75, 7.0)]
    best, tier = choose_checkpoint(rows)
    assert best["epoch"] == 20 and tier == 5.0  # the best real score within ±5 mm², not the best score overall
    best, tier = choose_checkpoint([row(18, 0.78, -10.3), row(22, 0.75, 7.0)])
    assert best["epoch"] == 22 and tier == 10.0
    best, tier = choose_checkpoint([row(3, 0.5, 40.0), row(4, 0.6, float("nan"))])
    assert best["epoch"] == 4 and math.isinf(tier)  # nothing within a tier: the best real score, and it says so
    best, _ = choose_checkpoint([row(5, 0.7001, 1.0, 0.80), row(6, 0.7004, 1.0, 0.82)])
    assert best["epoch"] == 6  # a tie on the score goes to the higher Dice
    with pytest.raises(InputError):
        choose_checkpoint([])
