"""Training of the FORAMEN3D 3D U-Net (``spinemorph foramen train``).

Recipe (source method; the DEFAULT config ``Resources/Models/configs/foramen3d_paper.json``): 3D U-Net with trilinear
upsampling, 4 outputs; Adam, learning rate 5e-4 divided by 5 at epochs 33 and 66 (100 epochs), batch 2; 5-fold
cross-validation with 70 / 10 / 20 % train / validation / test; the best-validation weights of each fold are kept.

Loss: MONAI ``DiceCELoss`` (softmax Dice + cross-entropy, equal weights) on the network output grid. When the
network runs on a downsampled input (``input_downsample`` > 1, coarse model) the targets are the one-hot labels
average-pooled by the same factor (soft targets: the fraction of each class in a block), so no label information
is thrown away by the downsampling.

Data (``data.sources``, a mixture):

* ``"spider"``: SynthSeg-style images (:mod:`spinemorph.synth`, contrast mix of ``data.contrasts``) synthesised from
  the SPIDER training label maps (held-out patients, :data:`spinemorph.spider.HELD_OUT_MASK_CASES`, are never
  used) directly on the 0.8 mm crop grid that :func:`FORAMEN3DLib.preprocess.preprocess_volume` picks for a 0.8 mm
  sagittal scan of the label map's field of view, shifted by a random offset (``jitter_mm``: L-R, S-I, A-P). This
  reproduces where L4-5 falls in the crop window at inference (in the SPIDER scans the L4-5 disc lies 12-79 mm below
  the field-of-view centre), which crops centred on L4-5 would not;
* ``"phantom"``: :func:`spinemorph.samples.foramen_samples` with source "phantom" (procedural phantom with random
  anatomy, exact labels, crop centred on L4-5 ±10 mm, rotated ±10°; the phantom's T2 SPACE field of view is
  centred on L4-5 as well);
* ``"blocks"``: exact-geometry block phantoms (L4 / disc / L5 as boxes with posterior-element bars; random size,
  position and contrast) for smoke tests and CI.

Cross-validation is split by *patient* (all SPIDER series of a patient, e.g. ``104_t1`` and ``104_t2``, fall on
one side; every phantom / block case is its own group). Each source case contributes ``data.samples_per_case``
samples (different synthesis seeds). Samples are generated once per run, pooled to the network's resolution
(:func:`pool_sample`) and cached in ``RUN_DIR/cache`` (``.npz``; the file names carry a short hash of the config's
``seed`` and ``data`` settings, :func:`sample_cache_key`, so a cache is never reused for other data; caches written
before this naming, ``{case}_{idx}_d{down}.npz``, are not read).

Online augmentation (numpy ``default_rng``, checkpointed): left-right flip, narrower left-right coverage (a slab of
``fov_lr_mm``, zero outside, as for a 64-slice acquisition), intensity scale / shift, Gaussian noise.

Stopping: after ``epochs`` epochs, or when the training wall time (after sample generation) exceeds
``max_wall_s``: then the current epoch is closed (validation, best weights) and the fold is tested.

Run folder: ``config.json``; ``fold<k>/`` with ``checkpoint.pt`` (model, optimizer, scheduler, RNG state, epoch
order and position; written atomically every epoch and when a run is stopped early), ``history.csv``
(per epoch: mean training loss, learning rate, validation DSC per structure, wall time), ``curves.png``,
``best.pt`` (best-validation weights, fp16, loadable with ``--model``), ``test_metrics.json``; ``summary.json``
(per-fold and mean test metrics). ``--resume`` continues an interrupted run exactly where its checkpoint stopped;
``--overwrite`` removes the run's ``fold<k>/`` folders, ``cache/`` and ``summary.json`` before writing the new
``config.json`` (without it, an existing ``config.json`` or fold checkpoint is an error and nothing is written).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from spinemorph.atomic import atomic_path, atomic_write_text, prepare_output_dir
from spinemorph.errors import InputError, OutputError, SpineMorphError
from spinemorph.labels import FORAMEN_LABELS
from spinemorph.runconfig import merge_config, read_config_json, write_history_csv

from .models3d import MODELS_DIR, save_weights
from .network3d import NetworkConfig, build_network
from .preprocess import PADDED_SHAPE, pad_crop
from .samples3d import (  # noqa: F401  (re-exported: the sample API of ``spinemorph foramen train``)
    DATA_SOURCES,
    _spider_case_list,
    blocks_sample,
    generate_cases,
    phantom_sample,
    spider_sample,
)

CONFIG_DIR = MODELS_DIR / "configs"
PAPER_CONFIG_PATH = CONFIG_DIR / "foramen3d_paper.json"
TRAIN_SOURCES = ("spider", "phantom", "blocks")

#: every key a config may have, with its default (= the paper recipe)
DEFAULT_CONFIG: dict = {
    "name": "paper",
    "description": "Source-method recipe: 3D U-Net, trilinear upsampling, Adam 5e-4 /5 at epochs 33 and 66, batch 2, 5-fold CV 70/10/20",
    "seed": 0,
    "network": {"base_channels": 16, "depth": 4, "stem_stride": 1, "norm": "instance"},
    "input_downsample": 1,
    "data": {"sources": ["spider", "phantom"], "n_cases": None, "n_phantom_cases": 15, "samples_per_case": 3,
             "jitter_mm": [10.0, 20.0, 20.0], "contrasts": {"t2": 0.6, "t1": 0.15, "random": 0.25}},
    "cv": {"folds": 5, "run_folds": [0, 1, 2, 3, 4], "fractions": [0.7, 0.1, 0.2]},
    "epochs": 100,
    "iterations_per_epoch": None,
    "batch_size": 2,
    "optimizer": {"lr": 5e-4, "milestones": [33, 66], "gamma": 0.2, "weight_decay": 0.0},
    "loss": {"lambda_dice": 1.0, "lambda_ce": 1.0},
    "augment": {"flip_lr": 0.5, "intensity_scale": 0.1, "intensity_shift": 0.1, "noise_std": 0.05,
                "p_fov_lr": 0.3, "fov_lr_mm": [48.0, 100.0]},
    "validate_every": 1,
    "threads": 1,
    "device": "cpu",  # "cpu", "cuda", "mps" or "auto" (spinemorph.device.select_device); CUDA runs use float16 autocast
    "max_wall_s": None,  # training wall time (after sample generation) after which training ends and the fold is tested
}


# ---------------------------------------------------------------------- config
def _merge(base: dict, over: dict, where: str = "") -> dict:
    return merge_config(base, over, ("network", "contrasts"), where)


def load_config(path: str | os.PathLike | None = None) -> dict:
    """Read a training config (JSON) over :data:`DEFAULT_CONFIG`; ``None`` = the paper recipe."""
    if path is None:
        return validate_config(copy.deepcopy(DEFAULT_CONFIG))
    raw = read_config_json(path, f"; see {CONFIG_DIR} for examples")
    return validate_config(_merge(DEFAULT_CONFIG, raw))


def validate_config(cfg: dict) -> dict:
    """Check a merged config; raise :class:`InputError` naming the bad setting."""
    try:
        NetworkConfig.from_dict(cfg["network"])
    except (TypeError, ValueError) as exc:
        raise InputError(f"config network: {exc}") from None
    net = NetworkConfig.from_dict(cfg["network"])
    down = int(cfg["input_downsample"])
    if down not in (1, 2, 4):
        raise InputError("config input_downsample must be 1, 2 or 4")
    shape = [s // down for s in PADDED_SHAPE]
    if any(s % net.size_divisor for s in shape):
        raise InputError(f"network input {shape} is not divisible by {net.size_divisor}; reduce depth or stem_stride")
    srcs = cfg["data"]["sources"]
    if not srcs or any(x not in TRAIN_SOURCES for x in srcs):
        raise InputError(f"config data.sources must be a non-empty list of {', '.join(TRAIN_SOURCES)}; got {srcs!r}")
    fr = cfg["cv"]["fractions"]
    if len(fr) != 3 or abs(sum(fr) - 1) > 1e-6 or min(fr) < 0 or fr[0] <= 0:
        raise InputError("config cv.fractions must be three non-negative numbers (train, val, test) summing to 1")
    folds = int(cfg["cv"]["folds"])
    if folds < 1 or any(not 0 <= f < folds for f in cfg["cv"]["run_folds"]):
        raise InputError("config cv.run_folds must be fold numbers in 0..folds-1")
    if int(cfg["batch_size"]) < 1 or int(cfg["epochs"]) < 1:
        raise InputError("config batch_size and epochs must be positive")
    return cfg


# ---------------------------------------------------------------------- data: split + cache
def source_cases(cfg: dict) -> list[str]:
    """Source case ids of the training data (cross-validation is split over these).

    ``spider``: the SPIDER training label maps (``n_cases`` caps their number); ``phantom``: ``n_phantom_cases``
    ids ``phantom<n>`` (each sample draws a random phantom anatomy among seeds 0-999 of
    :func:`spinemorph.samples.foramen_samples`); ``blocks``: ``n_cases`` block phantoms ``blocks<n>``.
    """
    data = cfg["data"]
    cases: list[str] = []
    if "spider" in data["sources"]:
        sp = _spider_case_list("spider-train")
        cases += sp[: int(data["n_cases"])] if data["n_cases"] else sp
    if "phantom" in data["sources"]:
        cases += [f"phantom{idx}" for idx in range(int(data["n_phantom_cases"]))]
    if "blocks" in data["sources"]:
        cases += [f"blocks{idx}" for idx in range(int(data["n_cases"] or 10))]
    return cases


def patient_of(case: str) -> str:
    """Grouping key of a source case: the SPIDER patient id (``"104_t1"`` and ``"104_t2"`` → ``"104"``), else the id."""
    return case.split("_")[0] if "_" in case else case


def split_cases(cases: list[str], folds: int, fold: int, fractions, seed: int) -> dict:
    """Train / val / test case lists of ``fold``, split by *patient* (all series of a patient on one side).

    Patients are shuffled once (``seed``) and rotated by ``fold`` blocks; test takes patients until it holds
    ``fractions[2]`` of the cases, validation the next ``fractions[1]``, train the rest.
    """
    groups: dict[str, list[str]] = {}
    for c in cases:
        groups.setdefault(patient_of(c), []).append(c)
    keys = sorted(groups)
    rng = np.random.default_rng(seed)
    keys = [keys[i] for i in rng.permutation(len(keys))]
    start = (fold * len(keys)) // max(folds, 1) if fractions[2] > 0 else 0
    keys = keys[start:] + keys[:start]
    n = len(cases)
    n_test = int(round(fractions[2] * n))
    n_val = max(1 if fractions[1] > 0 else 0, int(round(fractions[1] * n)))
    test, val, train = [], [], []
    for key in keys:
        if len(test) < n_test:
            test += groups[key]
        elif len(val) < n_val:
            val += groups[key]
        else:
            train += groups[key]
    if not train:
        raise InputError(f"too few source cases ({n}) for the split {fractions}")
    return {"train": train, "val": val, "test": test}


def sample_seed(cfg: dict, case: str, idx: int) -> int:
    """Synthesis seed of training sample ``idx`` of source case ``case``.

    Not bounded below :data:`FORAMEN3DLib.evaluate3d.EVAL_SEED_BASE` (1 000 000): the case term alone reaches
    1 299 987, and the 150 sample seeds of the shipped budget config (50 source cases × 3) span 77 285 - 1 285 873.
    None of them lies in 1 000 000 - 1 000 999 (the evaluation seeds), which ``Testing/test_train3d.py`` checks;
    the formula is kept as it is because changing it would change the shipped model's training data.
    """
    return int(cfg["seed"]) * 100_003 + idx * 7_919 + (hash_case(case) % 100_000) * 13


def training_sample_seeds(cfg: dict, cases: list[str] | None = None) -> dict[tuple[str, int], int]:
    """``{(case, idx): seed}`` of every training sample of ``cfg`` (all source cases, or ``cases``)."""
    cases = source_cases(cfg) if cases is None else cases
    return {(c, s): sample_seed(cfg, c, s) for c in cases for s in range(int(cfg["data"]["samples_per_case"]))}


def _sample_arrays(cfg: dict, case: str, idx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = cfg["data"]
    seed = sample_seed(cfg, case, idx)
    if case.startswith("blocks"):
        return blocks_sample(int(case[6:]) + 1000 * int(cfg["seed"]), seed)
    if case.startswith("phantom"):
        return phantom_sample(seed, data["contrasts"])
    return spider_sample(case, seed, data["jitter_mm"], data["contrasts"])


def hash_case(case: str) -> int:
    """Stable (process-independent) integer of a case id."""
    import zlib

    return zlib.crc32(case.encode())


def normalise_sample(img: np.ndarray, lab: np.ndarray, fov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z-score inside the field of view and pad, exactly as :func:`preprocess_volume` (float32, uint8 padded)."""
    from spinemorph.intensity import zscore

    z = zscore(img, fov)
    z[~fov] = 0.0
    return pad_crop(z.astype(np.float32)), pad_crop(lab.astype(np.uint8))


def pool_sample(x: np.ndarray, y: np.ndarray, down: int, n_classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Network-resolution training pair: input average-pooled by ``down`` (float16) and per-block class counts
    (uint8, ``(n_classes, ...)``; soft target = counts / down**3)."""
    if down == 1:
        return x.astype(np.float16), np.stack([(y == c) for c in range(n_classes)]).astype(np.uint8)
    shp = tuple(s // down for s in x.shape)
    xb = x.reshape(shp[0], down, shp[1], down, shp[2], down).mean(axis=(1, 3, 5))
    yb = y.reshape(shp[0], down, shp[1], down, shp[2], down)
    counts = np.stack([(yb == c).sum(axis=(1, 3, 5), dtype=np.uint8) for c in range(n_classes)])
    return xb.astype(np.float16), counts


def sample_cache_key(cfg: dict) -> str:
    """Short hash (8 hex digits) of the config's ``seed`` and ``data`` settings: the part of a sample cache file's
    name that ties it to the data it was generated from."""
    blob = json.dumps({"seed": int(cfg["seed"]), "data": cfg["data"]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


class SampleCache:
    """Generates (once) and keeps the training pairs of ``case`` × sample index at the network's resolution.

    Per sample: ``x`` (float16 input, average-pooled by ``input_downsample``), ``counts`` (uint8 class counts per
    pooled block) and ``y`` (uint8 labels at 0.8 mm, padded; kept in memory only for validation / test items).
    Stored in ``cache_dir`` as ``.npz`` so that a resumed run does not synthesise them again.
    """

    def __init__(self, cfg: dict, cache_dir: Path | None):
        self.cfg = cfg
        self.down = int(cfg["input_downsample"])
        self.key = sample_cache_key(cfg)
        self.dir = cache_dir
        self.mem: dict = {}

    def get(self, case: str, idx: int, full: bool = False):
        """``(x, counts)``, or ``(x, counts, y)`` with ``full=True``."""
        key = (case, idx, full)
        if key in self.mem:
            return self.mem[key]
        path = self.dir / f"{case}_{idx}_d{self.down}_{self.key}.npz" if self.dir else None
        if path is not None and path.is_file():
            with np.load(path) as z:
                x, counts, y = z["x"], z["counts"], (z["y"] if full else None)
        else:
            xf, y = normalise_sample(*_sample_arrays(self.cfg, case, idx))
            x, counts = pool_sample(xf, y, self.down)
            if path is not None:
                buf = io.BytesIO()
                np.savez_compressed(buf, x=x, counts=counts, y=y)
                with atomic_path(path) as tmp:
                    tmp.write_bytes(buf.getvalue())
        out = (x, counts, y) if full else (x, counts)
        self.mem[key] = out
        return out


# ---------------------------------------------------------------------- training
def _augment(rng: np.random.Generator, x: np.ndarray, counts: np.ndarray, aug: dict, down: int):
    """Random left-right flip, narrower left-right coverage, intensity scale / shift and Gaussian noise (on the
    network-resolution input ``x`` and class ``counts``)."""
    x = x.astype(np.float32)
    if rng.random() < aug["flip_lr"]:
        x, counts = x[::-1], counts[:, ::-1]
    fov = x != 0
    if rng.random() < aug["p_fov_lr"]:
        # narrower left-right coverage (e.g. a 64-slice slab): zero outside, z-score again inside
        width = rng.uniform(*aug["fov_lr_mm"]) / (0.8 * down)
        centre = x.shape[0] / 2 + rng.uniform(-0.1, 0.1) * x.shape[0]
        kk = np.arange(x.shape[0]) + 0.5
        keep = (np.abs(kk - centre) <= width / 2)[:, None, None] & fov
        if keep.sum() > 0.05 * keep.size:
            vals = x[keep]
            x = np.where(keep, (x - vals.mean()) / max(float(vals.std()), 1e-6), 0.0).astype(np.float32)
            counts = counts * keep[None]
            counts[0] += (down**3 - counts.sum(0, dtype=np.uint8)).astype(np.uint8)
            fov = keep
    s = 1.0 + rng.uniform(-1, 1) * aug["intensity_scale"]
    b = rng.uniform(-1, 1) * aug["intensity_shift"]
    x = np.where(fov, x * s + b, 0.0)
    if aug["noise_std"] > 0:
        x = x + fov * rng.normal(0.0, rng.uniform(0, aug["noise_std"]), x.shape).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(counts)


def _to_net(xs, counts, down: int):
    """Batch tensors: inputs ``(N, 1, ...)`` and soft targets ``(N, C, ...)`` = counts / down**3."""
    import torch

    xt = torch.from_numpy(np.stack(xs))[:, None]
    yt = torch.from_numpy(np.stack(counts).astype(np.float32) / float(down**3))
    return xt, yt


def predict_labels(net, x: np.ndarray, down: int) -> np.ndarray:
    """Argmax labels ``PADDED_SHAPE`` of one network-resolution input (logits upsampled to 0.8 mm, as at inference)."""
    import torch
    import torch.nn.functional as F

    dev = next(net.parameters()).device
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None].to(dev)
        logits = net(xt).float()
        if logits.shape[2:] != PADDED_SHAPE:
            logits = F.interpolate(logits, size=PADDED_SHAPE, mode="trilinear", align_corners=False)
        return logits.argmax(1)[0].cpu().numpy().astype(np.uint8)


def _dsc_per_structure(truth: np.ndarray, pred: np.ndarray) -> dict:
    from .evaluate3d import structure_metrics

    return {name: m["dsc"] for name, m in structure_metrics(truth, pred).items()}


def _plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    a1.plot(ep, [h["train_loss"] for h in history], "-o", ms=3)
    a1.set_xlabel("epoch")
    a1.set_ylabel("training loss (Dice + CE)")
    a1.grid(alpha=0.3)
    for name in FORAMEN_LABELS.values():
        vals = [h.get(f"val_dsc_{name}", math.nan) for h in history]
        a2.plot(ep, vals, "-o", ms=3, label=name)
    a2.plot(ep, [h.get("val_dsc_mean", math.nan) for h in history], "k--", label="mean")
    a2.set_xlabel("epoch")
    a2.set_ylabel("validation DSC")
    a2.set_ylim(0, 1)
    a2.legend(fontsize=8)
    a2.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _write_history(history: list[dict], path: Path) -> None:
    write_history_csv(history, path)


def train_fold(cfg: dict, fold: int, run_dir: Path, split: dict, resume: bool = False, progress: bool = True,
               stop_at_iteration: int | None = None) -> dict:
    """Train one fold (resumable); returns its result dict (also ``fold<k>/test_metrics.json``).

    ``stop_at_iteration`` stops (with a checkpoint) after that many iterations in total — for tests of resuming.
    """
    import torch
    from monai.losses import DiceCELoss
    from tqdm import tqdm

    fold_dir = run_dir / f"fold{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = fold_dir / "checkpoint.pt"
    seed = int(cfg["seed"]) + 1000 * fold
    down = int(cfg["input_downsample"])
    bs = int(cfg["batch_size"])
    n_spc = int(cfg["data"]["samples_per_case"])
    train_items = [(c, s) for c in split["train"] for s in range(n_spc)]
    val_items = [(c, 0) for c in split["val"]]
    test_items = [(c, 0) for c in split["test"]]
    ipe = int(cfg["iterations_per_epoch"] or math.ceil(len(train_items) / bs))
    cache = SampleCache(cfg, run_dir / "cache")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(cfg["network"])
    from spinemorph.device import select_device

    dev = select_device(str(cfg.get("device", "cpu")))
    net = net.to(dev)
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda")
    opt_cfg = cfg["optimizer"]
    optimizer = torch.optim.Adam(net.parameters(), lr=float(opt_cfg["lr"]), weight_decay=float(opt_cfg["weight_decay"]))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(opt_cfg["milestones"]), gamma=float(opt_cfg["gamma"]))
    loss_fn = DiceCELoss(softmax=True, lambda_dice=float(cfg["loss"]["lambda_dice"]), lambda_ce=float(cfg["loss"]["lambda_ce"]))
    rng = np.random.default_rng(seed)
    state = {"epoch": 0, "iteration": 0, "order": None, "pos": 0, "history": [], "best_dsc": -1.0, "best_epoch": -1,
             "wall_s": 0.0, "losses": []}
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        rng.bit_generator.state = ck["rng"]
        state.update(ck["state"])
    elif ckpt_path.exists() and not resume:
        raise OutputError(f"{ckpt_path} exists; pass --resume to continue that run or choose another --out")
    if state.get("done"):
        return json.loads((fold_dir / "test_metrics.json").read_text())

    def save_checkpoint():
        with atomic_path(ckpt_path) as tmp:
            torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "rng": rng.bit_generator.state, "state": state, "config": cfg}, tmp)

    meta_base = {"config": cfg["name"], "fold": fold, "seed": int(cfg["seed"]), "train_cases": split["train"],
                 "val_cases": split["val"], "test_cases": split["test"], "samples_per_case": n_spc}
    # generate (or load from the cache) every sample of this fold up front, so that iteration timings are clean
    t_gen = time.perf_counter()
    for c, s in tqdm(train_items + val_items + test_items, desc=f"fold {fold} samples", unit="sample", disable=not progress):
        cache.get(c, s, (c, s) in val_items or (c, s) in test_items)
    state.setdefault("sample_generation_s", 0.0)
    state["sample_generation_s"] += time.perf_counter() - t_gen
    t_start = time.perf_counter() - float(state["wall_s"])
    epochs = int(cfg["epochs"])
    max_wall = cfg.get("max_wall_s")
    stopped = None
    bar = tqdm(total=epochs * ipe, initial=int(state["iteration"]), desc=f"fold {fold}", unit="it", disable=not progress)
    net.train()
    while state["epoch"] < epochs:
        if state["order"] is None:
            reps = math.ceil(ipe * bs / len(train_items))
            state["order"] = np.concatenate([rng.permutation(len(train_items)) for _ in range(reps)])[: ipe * bs].tolist()
            state["pos"] = 0
            state["losses"] = []
        while state["pos"] < ipe:
            batch = [train_items[t] for t in state["order"][state["pos"] * bs : (state["pos"] + 1) * bs]]
            xs, ys = zip(*(_augment(rng, *cache.get(c, s), cfg["augment"], down) for c, s in batch))
            xt, yt = _to_net(xs, ys, down)
            xt, yt = xt.to(dev), yt.to(dev)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.float16, enabled=dev.type == "cuda"):
                out = net(xt)
            loss = loss_fn(out.float(), yt)
            if not torch.isfinite(loss):
                raise SpineMorphError(f"training diverged (loss {float(loss)}) at iteration {state['iteration']}; lower the learning rate")
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            state["losses"].append(loss.item())
            state["pos"] += 1
            state["iteration"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}")
            state["wall_s"] = time.perf_counter() - t_start
            if stop_at_iteration is not None and state["iteration"] >= stop_at_iteration:
                stopped = "stop_at_iteration"
            elif max_wall is not None and state["wall_s"] >= float(max_wall):
                # wall-time budget: end training here (validate, keep the best weights, test)
                state["wall_limited"] = True
                break
            if stopped and state["pos"] < ipe:
                save_checkpoint()
                bar.close()
                return {"stopped": stopped, "iteration": state["iteration"], "epoch": state["epoch"]}
            if stopped:
                break
        # ---- end of epoch: validation, best weights, checkpoint
        row = {"epoch": state["epoch"] + 1, "iteration": state["iteration"], "train_loss": float(np.mean(state["losses"])),
               "lr": optimizer.param_groups[0]["lr"]}
        last = state["epoch"] + 1 == epochs or state.get("wall_limited")
        if val_items and ((state["epoch"] + 1) % int(cfg["validate_every"]) == 0 or last):
            net.eval()
            dscs = [_dsc_per_structure(cache.get(c, s, True)[2], predict_labels(net, cache.get(c, s, True)[0], down))
                    for c, s in val_items]
            net.train()
            for name in FORAMEN_LABELS.values():
                row[f"val_dsc_{name}"] = float(np.nanmean([d[name] for d in dscs]))
            row["val_dsc_mean"] = float(np.nanmean([row[f"val_dsc_{n}"] for n in FORAMEN_LABELS.values()]))
            if row["val_dsc_mean"] > state["best_dsc"]:
                state["best_dsc"], state["best_epoch"] = row["val_dsc_mean"], state["epoch"] + 1
                save_weights(net, fold_dir / "best.pt", down, {**meta_base, "epoch": state["epoch"] + 1,
                                                                "iteration": state["iteration"], "val_dsc_mean": row["val_dsc_mean"]})
        elif not val_items:
            save_weights(net, fold_dir / "best.pt", down, {**meta_base, "epoch": state["epoch"] + 1, "iteration": state["iteration"]})
        row["wall_s"] = time.perf_counter() - t_start
        state["history"].append(row)
        state["epoch"] += 1
        state["order"] = None
        scheduler.step()
        state["wall_s"] = row["wall_s"]
        save_checkpoint()
        _write_history(state["history"], fold_dir / "history.csv")
        _plot_curves(state["history"], fold_dir / "curves.png")
        if stopped:
            bar.close()
            return {"stopped": stopped, "iteration": state["iteration"], "epoch": state["epoch"]}
        if state.get("wall_limited"):
            break
    bar.close()
    # ---- test on the fold's test cases with the best weights
    from . import models3d
    from .evaluate3d import structure_metrics, summarize
    from .segment3d import postprocess_labels

    best = models3d.load_model(fold_dir / "best.pt", "cpu")
    rows = []
    for c, s in test_items:
        x, _, y = cache.get(c, s, True)
        pred = postprocess_labels(predict_labels(best.network, x, down))
        for name, m in structure_metrics(y, pred).items():
            rows.append({"case": c, "structure": name, **{k: m[k] for k in ("dsc", "precision", "recall")}})
    result = {"fold": fold, "iterations": state["iteration"], "epochs": state["epoch"], "wall_s": state["wall_s"],
              "best_epoch": state["best_epoch"], "best_val_dsc_mean": state["best_dsc"], "split": split,
              "stopped_by_wall_limit": bool(state.get("wall_limited")), "max_wall_s": max_wall,
              "sample_generation_s": state.get("sample_generation_s"),
              "test": summarize(rows) if rows else None, "test_rows": rows}
    atomic_write_text(fold_dir / "test_metrics.json", json.dumps(result, indent=2, allow_nan=True))
    state["done"] = True
    save_checkpoint()
    return result


_FOLD_DIR = re.compile(r"fold\d+")


def _prepare_run_dir(run: Path, overwrite: bool) -> None:
    """Check (and with ``overwrite`` clear) a run folder before a new run writes its ``config.json``.

    Without ``overwrite`` an existing ``config.json`` or ``fold<k>/checkpoint.pt`` is an error (nothing written).
    With it, the folder's ``fold<k>/`` folders, ``cache/`` and ``summary.json`` are removed (only these, only inside
    ``run``), so that the new config never sits beside checkpoints or samples of another one.
    """
    prepare_output_dir(run, overwrite, ["config.json"])
    folds = sorted(p for p in run.iterdir() if p.is_dir() and _FOLD_DIR.fullmatch(p.name))
    if not overwrite:
        ckpts = [p / "checkpoint.pt" for p in folds if (p / "checkpoint.pt").exists()]
        if ckpts:
            raise OutputError(f"{ckpts[0]} exists; pass --resume to continue that run, --overwrite to replace it, "
                              "or choose another --out")
        return
    for p in [*folds, run / "cache"]:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    if (run / "summary.json").exists():
        (run / "summary.json").unlink()


def train(config: dict | str | os.PathLike | None, run_dir: str | os.PathLike, resume: bool = False, seed: int | None = None,
          progress: bool = True, overwrite: bool = False, stop_at_iteration: int | None = None) -> dict:
    """Run the folds of ``config`` into ``run_dir`` (see the module docstring); returns ``summary.json``'s content."""
    import torch

    run = Path(run_dir)
    cfg_file = run / "config.json"
    if resume:
        if not cfg_file.is_file():
            raise InputError(f"nothing to resume in {run} (no config.json); start a run without --resume")
        cfg = validate_config(_merge(DEFAULT_CONFIG, json.loads(cfg_file.read_text())))
    else:
        cfg = config if isinstance(config, dict) else load_config(config)
        cfg = validate_config(_merge(DEFAULT_CONFIG, cfg))
        if seed is not None:
            cfg["seed"] = int(seed)
        _prepare_run_dir(run, overwrite)
        atomic_write_text(cfg_file, json.dumps(cfg, indent=2))
    torch.set_num_threads(int(cfg["threads"]))
    cases = source_cases(cfg)
    results = []
    for fold in cfg["cv"]["run_folds"]:
        split = split_cases(cases, int(cfg["cv"]["folds"]), int(fold), cfg["cv"]["fractions"], int(cfg["seed"]))
        res = train_fold(cfg, int(fold), run, split, resume=resume, progress=progress, stop_at_iteration=stop_at_iteration)
        results.append(res)
        if res.get("stopped"):
            summary = {"status": f"stopped ({res['stopped']}) in fold {fold}; continue with --resume", "folds": results}
            atomic_write_text(run / "summary.json", json.dumps(summary, indent=2, allow_nan=True))
            return summary
    tests = [r["test"]["mean"]["dsc"]["mean"] for r in results if r.get("test")]
    summary = {"status": "done", "config": cfg["name"], "folds": [{k: v for k, v in r.items() if k != "test_rows"} for r in results],
               "mean_test_dsc": float(np.mean(tests)) if tests else None}
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=2, allow_nan=True))
    return summary
