"""FORAMEN3D training: configs, data split, network-resolution targets, 2-iteration training + exact resume,
evaluation outputs and the command-line parsers."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from FORAMEN3DLib import cli_seg, train3d
from FORAMEN3DLib.evaluate3d import evaluate_cases
from FORAMEN3DLib.network3d import NetworkConfig, build_network, count_parameters

from spinemorph.errors import InputError, OutputError

torch.set_num_threads(1)

TINY = {
    "name": "tiny",
    "network": {"base_channels": 4, "depth": 2, "stem_stride": 1, "norm": "instance"},
    "input_downsample": 4,
    "data": {"sources": ["blocks"], "n_cases": 4, "samples_per_case": 1},
    "cv": {"folds": 4, "run_folds": [0], "fractions": [0.5, 0.25, 0.25]},
    "epochs": 2,
    "iterations_per_epoch": 1,
    "batch_size": 1,
}


def test_paper_config_is_the_default():
    paper = json.loads(train3d.PAPER_CONFIG_PATH.read_text())
    assert train3d.load_config(train3d.PAPER_CONFIG_PATH) == train3d.load_config(None)
    assert paper["optimizer"]["lr"] == 5e-4 and paper["optimizer"]["milestones"] == [33, 66]
    assert paper["optimizer"]["gamma"] == pytest.approx(0.2) and paper["batch_size"] == 2 and paper["epochs"] == 100
    assert paper["cv"] == {"folds": 5, "run_folds": [0, 1, 2, 3, 4], "fractions": [0.7, 0.1, 0.2]}
    assert paper["network"]["stem_stride"] == 1 and paper["input_downsample"] == 1


def test_budget_config_is_valid_and_small():
    cfg = train3d.load_config(train3d.CONFIG_DIR / "foramen3d_budget_cpu.json")
    net = build_network(cfg["network"])
    assert count_parameters(net) * 2 < 16 * 2**20  # fp16 weights under 16 MB
    assert cfg["threads"] == 1 and cfg["input_downsample"] == 2


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"nonsense": 1}, "unknown config key"),
        ({"cv": {"fractions": [0.5, 0.5, 0.5]}}, "fractions"),
        ({"network": {"depth": 6, "stem_stride": 2}}, "not divisible"),
        ({"data": {"sources": ["mri"]}}, "data.sources"),
    ],
)
def test_config_errors(tmp_path, bad, match):
    p = tmp_path / "c.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(InputError, match=match):
        train3d.load_config(p)


def test_split_by_patient_covers_every_case_once():
    cases = ["1_t1", "1_t2", "2_t2", "3_t1", "4_t2", "4_t1", "5_t2", "6_t2", "phantom0", "phantom1"]
    seen = []
    for fold in range(5):
        sp = train3d.split_cases(cases, 5, fold, [0.7, 0.1, 0.2], seed=0)
        assert sorted(sp["train"] + sp["val"] + sp["test"]) == sorted(cases)
        groups = {k: {train3d.patient_of(c) for c in v} for k, v in sp.items()}
        assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["val"])
        seen += sp["test"]
    assert set(seen) == set(cases)  # every case is tested in some fold


def test_held_out_cases_are_never_training_cases(spider_root):
    from spinemorph import spider

    cfg = train3d.load_config(train3d.CONFIG_DIR / "foramen3d_budget_cpu.json")
    cases = train3d.source_cases(cfg)
    assert not set(cases) & set(spider.HELD_OUT_MASK_CASES)
    assert not {train3d.patient_of(c) for c in cases} & set(spider.HELD_OUT_PATIENTS)


@pytest.mark.parametrize("config", ["foramen3d_budget_cpu.json", None])
def test_training_seeds_are_not_evaluation_seeds(spider_root, config):
    """No training sample seed equals an evaluation seed (EVAL_SEED_BASE .. + 999; the card uses + 0..9).

    Training seeds are *not* all below EVAL_SEED_BASE (the budget config's reach 1 285 873)."""
    from FORAMEN3DLib.evaluate3d import EVAL_SEED_BASE

    cfg = train3d.load_config(train3d.CONFIG_DIR / config if config else None)
    seeds = train3d.training_sample_seeds(cfg)
    assert len(seeds) == len(train3d.source_cases(cfg)) * cfg["data"]["samples_per_case"]
    assert not set(seeds.values()) & set(range(EVAL_SEED_BASE, EVAL_SEED_BASE + 1000))
    if config:
        assert min(seeds.values()) == 77_285 and max(seeds.values()) == 1_285_873  # the figures in the docs


def test_sample_seed_formula_is_unchanged():
    """The shipped model was trained with these seeds: the formula must not change."""
    cfg = {"seed": 0, "data": {"samples_per_case": 3}}
    assert train3d.sample_seed(cfg, "104_t1", 0) == (train3d.hash_case("104_t1") % 100_000) * 13
    assert train3d.sample_seed({"seed": 2}, "phantom3", 1) == 2 * 100_003 + 7_919 + (train3d.hash_case("phantom3") % 100_000) * 13


def test_pooled_targets_match_torch_pooling():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 12, 16)).astype(np.float32)
    y = rng.integers(0, 4, (8, 12, 16)).astype(np.uint8)
    xp, counts = train3d.pool_sample(x, y, 2)
    ref = F.avg_pool3d(torch.from_numpy(x)[None, None], 2)[0, 0].numpy()
    np.testing.assert_allclose(xp.astype(np.float32), ref, atol=2e-3)
    assert counts.shape == (4, 4, 6, 8) and np.all(counts.sum(0) == 8)
    onehot = F.one_hot(torch.from_numpy(y.astype(np.int64)), 4).permute(3, 0, 1, 2).float()
    np.testing.assert_allclose(counts / 8.0, F.avg_pool3d(onehot[None], 2)[0].numpy(), atol=1e-6)
    aug = {"flip_lr": 1.0, "intensity_scale": 0.1, "intensity_shift": 0.1, "noise_std": 0.05, "p_fov_lr": 1.0,
           "fov_lr_mm": [3.0, 5.0]}
    xa, ca = train3d._augment(np.random.default_rng(1), xp, counts, aug, 2)
    assert np.all(ca.sum(0) == 8) and xa.shape == xp.shape


def test_two_iterations_train_and_exact_resume(tmp_path):
    full = train3d.train(TINY, tmp_path / "a", progress=False)
    assert full["status"] == "done"
    fold = tmp_path / "a" / "fold0"
    for name in ("checkpoint.pt", "best.pt", "history.csv", "curves.png", "test_metrics.json"):
        assert (fold / name).is_file(), name
    assert (tmp_path / "a" / "config.json").is_file() and (tmp_path / "a" / "summary.json").is_file()
    tm = json.loads((fold / "test_metrics.json").read_text())
    assert tm["iterations"] == 2 and tm["split"]["test"]
    # one test sample per test case, one row per case and structure
    assert sorted({r["case"] for r in tm["test_rows"]}) == sorted(tm["split"]["test"])
    assert len(tm["test_rows"]) == 3 * len(tm["split"]["test"])
    # interrupted after one iteration, then resumed: identical weights and optimizer state
    part = train3d.train(TINY, tmp_path / "b", progress=False, stop_at_iteration=1)
    assert part["status"].startswith("stopped")
    with pytest.raises(OutputError):
        train3d.train(TINY, tmp_path / "b", progress=False)
    train3d.train(None, tmp_path / "b", resume=True, progress=False)
    a = torch.load(fold / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "fold0" / "checkpoint.pt", weights_only=False)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["state"]["iteration"] == b["state"]["iteration"] == 2
    assert a["state"]["history"][-1]["train_loss"] == b["state"]["history"][-1]["train_loss"]
    # evaluation outputs of the trained weights on block phantoms
    out = tmp_path / "eval"
    summary = evaluate_cases(train3d.generate_cases("blocks", 2, 50), fold / "best.pt", "cpu", out, n_overlays=1,
                             progress=False)
    assert summary["n_cases"] == 2
    for name in ("metrics.csv", "summary.json", "dsc_boxplot.png"):
        assert (out / name).is_file()
    assert len(list(out.glob("overlay_*.png"))) == 1
    with pytest.raises(OutputError):
        evaluate_cases(train3d.generate_cases("blocks", 1, 50), fold / "best.pt", "cpu", out, progress=False)


def test_overwrite_clears_old_checkpoints_and_cache(tmp_path):
    """``--overwrite`` used to rewrite config.json and then stop at the old checkpoint (config no longer matching it)."""
    run = tmp_path / "r"
    train3d.train(TINY, run, progress=False, stop_at_iteration=1)
    old_cache = sorted(p.name for p in (run / "cache").iterdir())
    key0 = train3d.sample_cache_key(train3d.validate_config(train3d._merge(train3d.DEFAULT_CONFIG, TINY)))
    assert old_cache and all(n.endswith(f"_{key0}.npz") for n in old_cache)
    # without --overwrite: an error, and config.json is left as it was
    cfg_before = (run / "config.json").read_text()
    with pytest.raises(OutputError):
        train3d.train(TINY, run, progress=False, seed=5)
    assert (run / "config.json").read_text() == cfg_before
    # a checkpoint without config.json is refused too (nothing written)
    (run / "config.json").unlink()
    with pytest.raises(OutputError, match="checkpoint.pt exists"):
        train3d.train(TINY, run, progress=False, seed=5)
    assert not (run / "config.json").exists()
    # with --overwrite: old folds and cache are removed, the new run trains to the end with the new seed
    summary = train3d.train(TINY, run, progress=False, seed=5, overwrite=True)
    assert summary["status"] == "done"
    assert json.loads((run / "config.json").read_text())["seed"] == 5
    ck = torch.load(run / "fold0" / "checkpoint.pt", weights_only=False)
    assert ck["config"]["seed"] == 5 and ck["state"]["iteration"] == 2
    new_cache = sorted(p.name for p in (run / "cache").iterdir())
    assert new_cache and not set(new_cache) & set(old_cache)


def test_sample_cache_key_depends_on_seed_and_data_only():
    cfg = train3d.validate_config(train3d._merge(train3d.DEFAULT_CONFIG, TINY))
    key = train3d.sample_cache_key(cfg)
    assert len(key) == 8 and key == train3d.sample_cache_key(json.loads(json.dumps(cfg)))
    assert train3d.sample_cache_key({**cfg, "seed": 1}) != key
    assert train3d.sample_cache_key({**cfg, "data": {**cfg["data"], "samples_per_case": 2}}) != key
    assert train3d.sample_cache_key({**cfg, "epochs": 7, "batch_size": 3}) == key


def test_resume_without_a_run_is_an_error(tmp_path):
    with pytest.raises(InputError, match="nothing to resume"):
        train3d.train(None, tmp_path, resume=True, progress=False)


def test_cli_parsers(capsys):
    parser = argparse.ArgumentParser(prog="spinemorph foramen")
    sub = parser.add_subparsers(dest="command")
    cli_seg.add_train_parser(sub)
    cli_seg.add_evaluate_parser(sub)
    args = parser.parse_args(["train", "--out", "RUN", "--seed", "3"])
    assert args.func is cli_seg.run_train and args.seed == 3 and args.config is None
    args = parser.parse_args(["evaluate", "--data", "phantom", "--out", "D"])
    assert args.func is cli_seg.run_evaluate and args.model == "default"
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "--data", "mri", "--out", "D"])
    assert cli_seg.main(["train", "--config", "/no/such.json", "--out", "/tmp/never-created-run"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert "paper" in cli_seg.TRAIN_HELP and NetworkConfig().depth == 4
