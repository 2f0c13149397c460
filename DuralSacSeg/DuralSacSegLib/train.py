"""Training of the 2D dural sac networks: the source paper's recipe, K-fold cross-validation, resumable runs.

Recipe (``DuralSacSeg/Resources/Models/configs/paper.json``, the default): axial slices resized to 320×320 and
normalised per slice with :func:`spinemorph.intensity.normalize_percentile` (:func:`DuralSacSegLib.models.prepare_slice`,
the same function inference uses); weighted binary cross-entropy with positive weight 20; Adam; batch 8; 20 epochs;
5-fold cross-validation with folds split by patient (``group``); the checkpoint with the lowest validation loss is kept
("best"); an external validation set, never in any fold, is evaluated with the best checkpoint of every fold.

The learning rate is not given by the source; we use Adam's common default for U-Net segmentation, 1e-4
(the Keras/PyTorch default 1e-3 is often unstable with a positive weight of 20 and BN at batch 8).

The budget configuration (``configs/budget_cpu.json``) trains on random crops at the 320-grid scale (mostly around the
canal, some anywhere) for a fixed number of iterations and runs only one fold; the networks are fully convolutional,
so they run on whole 320×320 slices as well as on the 128×128 canal windows ``dsca segment`` uses
(:mod:`DuralSacSegLib.roi`).

Run folder::

    config.json             the configuration used (with the command-line overrides applied)
    fold<k>/state.pt        resumable state: weights, optimizer, epoch, RNG states, history (atomic, each epoch)
    fold<k>/best.pt         weights with the lowest validation loss (SpineMorph weights format, float16)
    fold<k>/epochs/epoch_NNN.pt  every epoch's weights with ``"keep_epoch_weights": true`` (dsca_choose_checkpoint)
    fold<k>/history.csv     per-epoch train / validation loss, validation Dice, seconds
    fold<k>/loss_curve.png  train and validation loss per epoch
    fold<k>/metrics.json    validation and external-validation metrics of best.pt (also *_slices.csv)
    folds.csv, summary.json per-fold metrics and their mean / SD
    best.pt                 the best fold's weights (lowest validation loss)
    loss_curves.png         every fold's curves
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from DuralSacSegLib.evaluate import evaluate_network, write_csv, write_json
from DuralSacSegLib.slice_data import EVAL_SPECS, SliceSample, load_dataset, preprocess_samples  # noqa: F401  (EVAL_SPECS re-exported)
from spinemorph.atomic import atomic_path, atomic_write_bytes, atomic_write_text, prepare_output_dir
from spinemorph.errors import InputError, OutputError, SpineMorphError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "Resources" / "Models" / "configs"
PAPER_CONFIG = CONFIG_DIR / "paper.json"
BUDGET_CONFIG = CONFIG_DIR / "budget_cpu.json"

#: defaults of every configuration key (paper recipe)
DEFAULT_CONFIG: dict = {
    "name": "paper",
    "architecture": "multiresunet",
    "seed": 0,
    "input_size": [320, 320],
    "loss": {"name": "weighted_bce", "pos_weight": 20.0},
    "optimizer": {"name": "adam", "lr": 1e-4, "betas": [0.9, 0.999], "weight_decay": 0.0},
    "batch_size": 8,
    "epochs": 20,
    "iterations_per_epoch": None,
    "folds": 5,
    "run_folds": None,
    "crop": None,
    "augment": {"flip_lr": False, "gamma": None},
    "validation": {"max_slices": None, "batch_size": 4},
    "external": {"max_slices": None},
    "data": {
        "train": {"source": "synthetic", "n": 600, "seed": 0},
        "external": {"source": "real-slabs", "isotropic_mm": 0.6, "square": 320, "row_step": 4},
    },
    "num_threads": None,
    "device": "auto",
    "precision": "fp32",
    "checkpoint_minutes": 5,
}


# ----------------------------------------------------------------------------- configuration
def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("data",):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(path: str | os.PathLike | None = None, **overrides) -> dict:
    """Read a training configuration (JSON) on top of :data:`DEFAULT_CONFIG`; ``None`` → the paper recipe.

    Keyword overrides whose value is ``None`` are ignored (``seed``, ``folds``, ``architecture``, ...).
    """
    path = Path(path) if path is not None else PAPER_CONFIG
    if not path.is_file():
        raise InputError(f"training configuration {path} does not exist")
    try:
        user = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"training configuration {path} is not valid JSON ({exc})") from None
    if not isinstance(user, dict):
        raise InputError(f"training configuration {path} must be a JSON object")
    cfg = _merge(DEFAULT_CONFIG, user)
    for k, v in overrides.items():
        if v is not None:
            cfg[k] = v
    validate_config(cfg)
    return cfg


def validate_config(cfg: dict) -> None:
    """Raise :class:`InputError` for impossible settings."""
    from DuralSacSegLib.networks import NETWORKS, SIZE_DIVISOR

    if cfg["architecture"] not in NETWORKS:
        raise InputError(f"unknown architecture {cfg['architecture']!r}; choose one of {', '.join(NETWORKS)}")
    if int(cfg["folds"]) < 2:
        raise InputError("folds must be at least 2 (one fold is validation); use run_folds to train only some folds")
    if int(cfg["batch_size"]) < 1 or int(cfg["epochs"]) < 1:
        raise InputError("batch_size and epochs must be at least 1")
    if cfg["run_folds"] is not None and any(not 0 <= int(f) < int(cfg["folds"]) for f in cfg["run_folds"]):
        raise InputError(f"run_folds {cfg['run_folds']} must lie in 0..{int(cfg['folds']) - 1}")
    crop = cfg.get("crop")
    if crop and int(crop["size"]) % SIZE_DIVISOR:
        raise InputError(f"crop size {crop['size']} must be a multiple of {SIZE_DIVISOR}")
    if cfg["loss"].get("name", "weighted_bce") != "weighted_bce":
        raise InputError(f"unknown loss {cfg['loss'].get('name')!r}; only 'weighted_bce' is implemented")
    if cfg["optimizer"].get("name", "adam") != "adam":
        raise InputError(f"unknown optimizer {cfg['optimizer'].get('name')!r}; only 'adam' is implemented")
    if str(cfg.get("precision") or "fp32").lower() not in ("fp32", "bf16"):
        raise InputError(f"precision must be 'fp32' or 'bf16', got {cfg.get('precision')!r}")
    ck = cfg.get("checkpoint_minutes")
    if ck is not None and not (isinstance(ck, (int, float)) and ck >= 0):
        raise InputError(f"checkpoint_minutes must be a number >= 0 (0 = only at the end of each epoch), got {ck!r}")
    train = (cfg.get("data") or {}).get("train")
    mix = (cfg.get("data") or {}).get("mix")
    if mix is not None:
        n_src = len(train) if isinstance(train, list) else 1
        if len(mix) != n_src or any(float(m) < 0 for m in mix) or sum(float(m) for m in mix) <= 0:
            raise InputError(f"data.mix {mix} must give one non-negative weight per training source ({n_src}), not all 0")


# ----------------------------------------------------------------------------- loss
def weighted_bce_loss(logits, target, pos_weight: float = 20.0, weight=None):
    """Weighted binary cross-entropy on logits: mean over pixels of ``-(w·y·log σ(x) + (1−y)·log(1−σ(x)))``.

    ``weight`` (same shape, 0/1): a loss-weight mask — the mean is taken over the pixels with weight 1 only (e.g. the
    imaged strip of a real slab plane; the padding around it holds no image and no truth). ``None`` = every pixel.
    """
    import torch
    import torch.nn.functional as F

    logits = logits.float()
    w = torch.as_tensor([float(pos_weight)], dtype=logits.dtype, device=logits.device)
    if weight is None:
        return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=w)
    weight = weight.to(logits.dtype)
    per_pixel = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=w, reduction="none")
    return (per_pixel * weight).sum() / weight.sum().clamp_min(1.0)


# ----------------------------------------------------------------------------- folds
def make_folds(groups: Sequence[str], n_folds: int, seed: int) -> list[np.ndarray]:
    """Split sample indices into ``n_folds`` folds by group (patient); fold k's indices are its validation set.

    Groups are shuffled with ``seed`` and dealt round-robin; with fewer groups than folds the samples themselves are
    dealt (no group information to respect).
    """
    groups = [str(g) for g in groups]
    uniq = sorted(set(groups))
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(n_folds)]
    if len(uniq) >= n_folds:
        order = [uniq[i] for i in rng.permutation(len(uniq))]
        fold_of = {g: i % n_folds for i, g in enumerate(order)}
        for idx, g in enumerate(groups):
            folds[fold_of[g]].append(idx)
    else:
        for j, idx in enumerate(rng.permutation(len(groups))):
            folds[j % n_folds].append(int(idx))
    return [np.array(sorted(f), dtype=int) for f in folds]


# ----------------------------------------------------------------------------- batches
class BatchSampler:
    """Draws training batches (full slices or crops) from preprocessed slices, with its own RNG.

    ``valid`` (N, H, W) uint8: loss-weight masks (1 = pixel counts in the loss; e.g. the imaged strip of a real slab
    plane), default all ones. ``source_ids`` (N,) and ``mix`` (one probability per source): each batch element first
    draws its source with these probabilities, then a slice of that source (default: one source).
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, cfg: dict, rng: np.random.Generator,
                 valid: np.ndarray | None = None, source_ids: np.ndarray | None = None, mix: Sequence[float] | None = None):
        self.images, self.masks, self.cfg, self.rng = images, masks, cfg, rng
        self.valid = valid
        self.batch = int(cfg["batch_size"])
        self.crop = cfg.get("crop") or None
        self.source_ids = np.zeros(len(images), int) if source_ids is None else np.asarray(source_ids, int)
        n_src = int(self.source_ids.max()) + 1 if len(self.source_ids) else 1
        mix = np.ones(n_src) if mix is None else np.asarray(mix, float)
        self.members = [np.flatnonzero(self.source_ids == k) for k in range(n_src)]
        mix = np.array([m if len(self.members[k]) else 0.0 for k, m in enumerate(mix[:n_src])], float)
        self.mix = mix / mix.sum()
        has_fg = masks.reshape(len(masks), -1).any(axis=1)
        self.positive_by_source = [ix[has_fg[ix]] for ix in self.members]
        self.positive = np.flatnonzero(has_fg)
        self._order: list[int] = []

    def _next_index(self) -> int:
        if not self._order:
            self._order = [int(i) for i in self.rng.permutation(len(self.images))]
        return int(self._order.pop())

    def _crop(self, idx: int, around_canal: bool):
        size = int(self.crop["size"])
        rows, cols = self.images.shape[1:]
        if around_canal:
            ys, xs = np.nonzero(self.masks[idx])
            k = int(self.rng.integers(len(ys)))
            lo, hi = float(self.crop.get("canal_margin", 0.15)), 1.0 - float(self.crop.get("canal_margin", 0.15))
            oy = int(round(ys[k] - self.rng.uniform(lo, hi) * size))
            ox = int(round(xs[k] - self.rng.uniform(lo, hi) * size))
        else:
            oy = int(self.rng.integers(0, rows - size + 1))
            ox = int(self.rng.integers(0, cols - size + 1))
        oy = min(max(oy, 0), rows - size)
        ox = min(max(ox, 0), cols - size)
        win = (idx, slice(oy, oy + size), slice(ox, ox + size))
        return self.images[win], self.masks[win], (self.valid[win] if self.valid is not None else None)

    def _augment(self, img: np.ndarray, msk: np.ndarray, wgt: np.ndarray):
        aug = self.cfg.get("augment") or {}
        img = img.astype(np.float32)
        if aug.get("flip_lr") and self.rng.random() < 0.5:
            img, msk, wgt = img[:, ::-1], msk[:, ::-1], wgt[:, ::-1]
        if aug.get("gamma"):
            lo, hi = aug["gamma"]
            img = np.clip(img, 0, 1) ** float(np.exp(self.rng.uniform(np.log(lo), np.log(hi))))
        return np.ascontiguousarray(img), np.ascontiguousarray(msk), np.ascontiguousarray(wgt)

    def _draw(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        multi = len(self.members) > 1
        src = int(self.rng.choice(len(self.mix), p=self.mix)) if multi else 0
        pool, pos = (self.members[src], self.positive_by_source[src]) if multi else (None, self.positive)
        if self.crop:
            neg_frac = float(self.crop.get("negative_fraction", 0.25))
            if len(pos) and self.rng.random() >= neg_frac:
                img, msk, wgt = self._crop(int(self.rng.choice(pos)), True)
            else:
                idx = int(self.rng.choice(pool)) if multi else int(self.rng.integers(len(self.images)))
                img, msk, wgt = self._crop(idx, False)
        else:
            idx = int(self.rng.choice(pool)) if multi else self._next_index()
            img, msk = self.images[idx], self.masks[idx]
            wgt = self.valid[idx] if self.valid is not None else None
        if wgt is None:
            wgt = np.ones(msk.shape, np.uint8)
        return img, msk, wgt

    def next_batch(self, with_weight: bool = False):
        """``(x, y)`` float32 arrays ``(B, 1, H, W)``; with ``with_weight`` also the loss-weight mask ``w``."""
        xs, ys, ws = [], [], []
        for _ in range(self.batch):
            img, msk, wgt = self._augment(*self._draw())
            xs.append(img)
            ys.append(msk)
            ws.append(wgt)
        x, y = np.stack(xs)[:, None].astype(np.float32), np.stack(ys)[:, None].astype(np.float32)
        if with_weight:
            return x, y, np.stack(ws)[:, None].astype(np.float32)
        return x, y

    def batches_per_epoch(self) -> int:
        it = self.cfg.get("iterations_per_epoch")
        return int(it) if it else max(1, math.ceil(len(self.images) / self.batch))


# ----------------------------------------------------------------------------- state (resume)
def _save_torch(obj, path: Path) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _rng_state(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)


def _restore_rng(state: str) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = json.loads(state)
    return rng


def _validation_loss(net, images, masks, pos_weight: float, device, batch_size: int, valid=None, threshold=None):
    """Mean weighted BCE over the validation slices (inside ``valid`` when given); with ``threshold`` also return the
    mean per-slice Dice inside ``valid`` of the slices with a sac: ``(loss, dice)``."""
    import torch

    net.eval()
    total, n, dices = 0.0, 0, []
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size, None], dtype=np.float32)).to(device)
            y = torch.from_numpy(masks[s : s + batch_size, None].astype(np.float32)).to(device)
            w = None if valid is None else torch.from_numpy(valid[s : s + batch_size, None].astype(np.float32)).to(device)
            logits = net(x)
            total += float(weighted_bce_loss(logits, y, pos_weight, w)) * len(x)
            n += len(x)
            if threshold is not None:
                pred = (torch.sigmoid(logits.float()) >= threshold).cpu().numpy()[:, 0]
                truth = masks[s : s + batch_size] > 0
                if valid is not None:
                    pred &= valid[s : s + batch_size] > 0
                for p_, t_ in zip(pred, truth):
                    if t_.any():
                        dices.append(2.0 * np.count_nonzero(p_ & t_) / (np.count_nonzero(p_) + np.count_nonzero(t_)))
    net.train()
    loss = total / max(n, 1)
    if threshold is None:
        return loss
    return loss, (float(np.mean(dices)) if dices else math.nan)


def _subset(indices: np.ndarray, max_n, seed: int) -> np.ndarray:
    if max_n is None or len(indices) <= int(max_n):
        return indices
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(indices, int(max_n), replace=False))


def plot_loss_curves(histories: dict[str, list[dict]], path: Path, title: str = "") -> Path:
    """Train / validation loss per epoch of one or more folds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, hist) in enumerate(histories.items()):
        if not hist:
            continue
        ep = [h["epoch"] for h in hist]
        color = f"C{i}"
        ax.plot(ep, [h["train_loss"] for h in hist], "-", color=color, label=f"{name} train")
        ax.plot(ep, [h["val_loss"] for h in hist], "--", color=color, label=f"{name} validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("weighted BCE loss")
    ax.set_title(title or "loss")
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- one fold
def _log(run_dir: Path, text: str) -> None:
    """Print a progress line and append it to ``run_dir/train.log`` (with a UTC time stamp)."""
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} {text}"
    print(line, flush=True)
    try:
        with open(run_dir / "train.log", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError:
        pass


def _autocast(cfg: dict, device):
    """``torch.autocast`` for ``cfg["precision"] == "bf16"`` (CPU or CUDA), else a no-op context."""
    import contextlib

    import torch

    prec = str(cfg.get("precision") or "fp32").lower()
    if prec == "fp32":
        return contextlib.nullcontext()
    if prec == "bf16":
        return torch.autocast(device.type if device.type in ("cpu", "cuda") else "cpu", dtype=torch.bfloat16)
    raise InputError(f"precision must be 'fp32' or 'bf16', got {prec!r}")


def train_fold(
    fold: int,
    cfg: dict,
    run_dir: Path,
    images: np.ndarray,
    masks: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    device,
    resume: bool,
    progress: bool = True,
    valid: np.ndarray | None = None,
    source_ids: np.ndarray | None = None,
    val_data: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None,
    init_weights: str | os.PathLike | None = None,
) -> dict:
    """Train one fold (resumable); returns its state summary (history, best epoch / loss, seconds).

    ``valid``: loss-weight masks of all slices (None = every pixel counts). ``source_ids``: data source of each slice
    (mixed by ``cfg["data"]["mix"]``). ``val_data``: ``(images, masks, valid)`` validation slices outside the
    training data (instead of ``val_idx``). The state is saved atomically after every epoch and, within an epoch,
    every ``cfg["checkpoint_minutes"]`` minutes (a resumed run continues at that iteration with the same RNG state).
    The best checkpoint is chosen by ``cfg["validation"]["select"]``: ``"loss"`` (lowest validation loss, default) or
    ``"dice"`` (highest mean validation Dice at the loss-prior threshold w/(w+1), inside the valid region).
    ``init_weights`` (a new fold only): warm start from weights exported by ``scripts/export_dsca_training.py`` (see
    :func:`warm_start_state`): the schedule continues at their epoch with their history and best score, with a fresh
    optimizer state.
    """
    import torch

    from DuralSacSegLib.models import save_weights
    from DuralSacSegLib.networks import build_network

    fold_dir = run_dir / f"fold{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    state_path = fold_dir / "state.pt"
    seed = int(cfg["seed"]) * 1000 + fold
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(cfg["architecture"])
    net.to(device)
    opt_cfg = cfg["optimizer"]
    opt = torch.optim.Adam(
        net.parameters(), lr=float(opt_cfg["lr"]), betas=tuple(opt_cfg.get("betas", (0.9, 0.999))),
        weight_decay=float(opt_cfg.get("weight_decay", 0.0)),
    )
    rng = np.random.default_rng(seed)
    state = {"epoch": 0, "history": [], "best_val_loss": math.inf, "best_epoch": 0, "seconds": 0.0, "done": False,
             "best_val_dice": -math.inf}
    partial = None
    if resume and state_path.is_file():
        try:
            saved = torch.load(state_path, map_location="cpu", weights_only=True)
            net.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            rng = _restore_rng(saved["numpy_rng"])
            state = json.loads(saved["state"])
            state.setdefault("best_val_dice", -math.inf)
            partial = json.loads(saved["partial"]) if saved.get("partial") else None
            state["done"] = int(state["epoch"]) >= int(cfg["epochs"])  # the saved config may have more epochs now
        except Exception as exc:  # noqa: BLE001 - any unreadable state means the same to the user
            raise SpineMorphError(f"cannot resume from {state_path} ({type(exc).__name__}); delete it to restart the fold") from None
    elif init_weights is not None:
        state = warm_start_state(net, init_weights, cfg, fold_dir)
        _log(run_dir, f"fold {fold}: warm start from {init_weights} at epoch {state['epoch']} "
                      f"(best epoch {state['best_epoch']}; optimizer state fresh)")
        _save_torch({"model": net.state_dict(), "optimizer": opt.state_dict(), "numpy_rng": _rng_state(rng),
                     "state": json.dumps(state), "partial": ""}, state_path)  # so --resume continues from here
    state["trained_now"] = False
    if state["done"]:
        return state
    state["trained_now"] = True
    net.train()
    mix = (cfg.get("data") or {}).get("mix")
    sampler = BatchSampler(images[train_idx], masks[train_idx], cfg, rng,
                           valid=None if valid is None else valid[train_idx],
                           source_ids=None if source_ids is None else source_ids[train_idx], mix=mix)
    if val_data is not None:
        v_images, v_masks, v_valid = val_data
    else:
        v_idx = _subset(val_idx, (cfg.get("validation") or {}).get("max_slices"), seed + 17)
        v_images, v_masks = images[v_idx], masks[v_idx]
        v_valid = None if valid is None else valid[v_idx]
    pos_weight = float(cfg["loss"].get("pos_weight", 20.0))
    prior_thr = pos_weight / (pos_weight + 1.0)
    val_bs = int((cfg.get("validation") or {}).get("batch_size", 4))
    select = str((cfg.get("validation") or {}).get("select", "loss"))
    if select not in ("loss", "dice"):
        raise InputError(f"validation.select must be 'loss' or 'dice', got {select!r}")
    ckpt_s = 60.0 * float(cfg.get("checkpoint_minutes") or 0) or math.inf
    use_weight = valid is not None
    n_batches = sampler.batches_per_epoch()

    def save_state(partial_state: dict | None) -> None:
        _save_torch(
            {
                "model": net.state_dict(),
                "optimizer": opt.state_dict(),
                "numpy_rng": _rng_state(sampler.rng),
                "state": json.dumps(state),
                "partial": json.dumps(partial_state) if partial_state else "",
            },
            state_path,
        )

    for epoch in range(int(state["epoch"]) + 1, int(cfg["epochs"]) + 1):
        t0 = time.perf_counter()
        losses: list[float] = []
        start_it, prior_seconds = 0, 0.0
        if partial is not None and int(partial.get("epoch", -1)) == epoch:
            start_it, losses, prior_seconds = int(partial["iteration"]), list(partial["losses"]), float(partial["seconds"])
            sampler._order = [int(i) for i in partial.get("order", [])]
            _log(run_dir, f"fold {fold} epoch {epoch}: resumed at iteration {start_it}/{n_batches}")
        else:
            sampler._order = []  # every epoch starts a new permutation (so a resumed run draws what a straight one would)
        partial = None
        last_save = time.perf_counter()
        it = range(start_it, n_batches)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"fold {fold} epoch {epoch}/{cfg['epochs']}", unit="batch", leave=False,
                      initial=start_it, total=n_batches)
        for i in it:
            batch = sampler.next_batch(with_weight=True)
            x, y = torch.from_numpy(batch[0]).to(device), torch.from_numpy(batch[1]).to(device)
            w = torch.from_numpy(batch[2]).to(device) if use_weight else None
            opt.zero_grad(set_to_none=True)
            with _autocast(cfg, device):
                logits = net(x)
            loss = weighted_bce_loss(logits, y, pos_weight, w)
            if not torch.isfinite(loss):
                raise SpineMorphError(f"training diverged (loss {float(loss)}) in fold {fold} epoch {epoch}; lower the learning rate")
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if progress:
                it.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            if time.perf_counter() - last_save >= ckpt_s and i + 1 < n_batches:
                save_state({"epoch": epoch, "iteration": i + 1, "losses": losses, "order": sampler._order,
                            "seconds": prior_seconds + time.perf_counter() - t0})
                last_save = time.perf_counter()
                _log(run_dir, f"fold {fold} epoch {epoch}: checkpoint at iteration {i + 1}/{n_batches} "
                              f"(train loss so far {np.mean(losses):.4f})")
        if select == "dice":
            val_loss, val_dice = _validation_loss(net, v_images, v_masks, pos_weight, device, val_bs, v_valid, prior_thr)
        else:
            val_loss, val_dice = _validation_loss(net, v_images, v_masks, pos_weight, device, val_bs, v_valid), math.nan
        seconds = prior_seconds + time.perf_counter() - t0
        state["history"].append(
            {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss, "seconds": seconds,
             "iterations": len(losses), "val_dice": val_dice}
        )
        state["seconds"] += seconds
        state["epoch"] = epoch
        better = (val_dice > state["best_val_dice"]) if select == "dice" else (val_loss < state["best_val_loss"])
        if better:
            state["best_val_loss"], state["best_epoch"] = val_loss, epoch
            if select == "dice":
                state["best_val_dice"] = val_dice
            save_weights(fold_dir / "best.pt", net, cfg["architecture"], config={**cfg, "fold": fold, "epoch": epoch})
        save_weights(fold_dir / "last.pt", net, cfg["architecture"], config={**cfg, "fold": fold, "epoch": epoch})
        if cfg.get("keep_epoch_weights"):  # every epoch's weights, for a later checkpoint choice on more criteria
            save_weights(fold_dir / "epochs" / f"epoch_{epoch:03d}.pt", net, cfg["architecture"],
                         config={**cfg, "fold": fold, "epoch": epoch})
        state["done"] = epoch >= int(cfg["epochs"])
        save_state(None)
        write_csv(fold_dir / "history.csv", state["history"])
        plot_loss_curves({f"fold {fold}": state["history"]}, fold_dir / "loss_curve.png", f"{cfg['architecture']} fold {fold}")
        dice_txt = f", validation Dice {val_dice:.4f}" if math.isfinite(val_dice) else ""
        _log(run_dir, f"fold {fold} epoch {epoch}: train loss {np.mean(losses):.4f}, validation loss {val_loss:.4f}"
                      f"{dice_txt} ({seconds:.0f} s){' *best*' if better else ''}")
    return state


def read_snapshot(path: Path, cfg: dict) -> tuple[dict, dict]:
    """Read exported training weights for a warm start; one clear error if they cannot continue ``cfg``'s run."""
    from DuralSacSegLib.models import read_weights_file

    ckpt = read_weights_file(path)
    if str(ckpt["architecture"]) != str(cfg["architecture"]):
        raise InputError(f"--init-weights {path} holds a {ckpt['architecture']} network; this run trains "
                         f"{cfg['architecture']} (pass --architecture {ckpt['architecture']} or other weights)")
    ts = (ckpt.get("config") or {}).get("training_state")
    if not isinstance(ts, dict) or "epoch" not in ts:
        raise InputError(f"--init-weights {path} records no training state (epoch, history); export it with "
                         "scripts/export_dsca_training.py")
    return ckpt, ts


def warm_start_state(net, init_weights: str | os.PathLike, cfg: dict, fold_dir: Path) -> dict:
    """Load exported training weights into ``net`` and return the fold state they continue.

    The file is a SpineMorph weights file whose ``config`` holds ``training_state`` (epoch, best epoch, best
    validation loss / Dice, history: written by ``scripts/export_dsca_training.py``). The weights become the fold's
    ``best.pt`` (they are the best so far); the returned state continues the schedule at their epoch.
    """
    import torch

    from DuralSacSegLib.models import save_weights

    path = Path(init_weights)
    ckpt, ts = read_snapshot(path, cfg)
    net.load_state_dict({k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v)
                         for k, v in ckpt["state_dict"].items()}, strict=True)
    save_weights(fold_dir / "best.pt", net, cfg["architecture"], config={**cfg, "fold": int(ts.get("fold", 0)),
                                                                          "epoch": int(ts["epoch"])})
    state = {"epoch": int(ts["epoch"]), "history": list(ts.get("history") or []),
             "best_val_loss": float(ts.get("best_val_loss", math.inf)), "best_epoch": int(ts.get("best_epoch", ts["epoch"])),
             "seconds": float(ts.get("seconds", 0.0)), "best_val_dice": float(ts.get("best_val_dice", -math.inf)),
             "warm_start": {"file": path.name, "epoch": int(ts["epoch"])}}
    state["done"] = state["epoch"] >= int(cfg["epochs"])
    return state


# ----------------------------------------------------------------------------- whole run
def _prepare(samples: list[SliceSample], size) -> tuple[np.ndarray, np.ndarray]:
    images, masks, _ = preprocess_samples(samples, tuple(size))
    return images.astype(np.float16), masks


def _prepare_valid(samples: list[SliceSample], size) -> np.ndarray | None:
    """Loss-weight masks on the network grid (1 where the slice has image data), or None if every slice is whole."""
    from DuralSacSegLib.models import resize_mask

    if all(s.valid is None for s in samples):
        return None
    out = np.zeros((len(samples), *tuple(size)), np.uint8)
    for i, s in enumerate(samples):
        out[i] = resize_mask(s.valid if s.valid is not None else np.ones_like(s.mask), s.pixel_mm, tuple(size))
    return out


def load_training_data(spec, purpose: str = "training") -> tuple[list[SliceSample], np.ndarray]:
    """Training slices of one spec or a list of specs (several sources, e.g. synthetic + real slab planes).

    Returns the slices and the source index of each (position of its spec in the list)."""
    specs = spec if isinstance(spec, list) else [spec]
    samples: list[SliceSample] = []
    ids: list[int] = []
    for k, sp in enumerate(specs):
        got = load_dataset(sp, purpose=purpose)
        samples += got
        ids += [k] * len(got)
    return samples, np.array(ids, dtype=int)


def _select(samples: list[SliceSample], max_n, seed: int) -> list[SliceSample]:
    idx = _subset(np.arange(len(samples)), max_n, seed)
    return [samples[i] for i in idx]


CONFIG_NAME = "config.json"


def run_training(
    config: dict,
    run_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    train_samples: list[SliceSample] | None = None,
    external_samples: list[SliceSample] | None = None,
    epochs: int | None = None,
    init_weights: str | os.PathLike | None = None,
) -> dict:
    """Train every requested fold of ``config`` into ``run_dir`` and write the run's reports.

    Parameters
    ----------
    config : dict
        Configuration as returned by :func:`load_config`.
    run_dir : path
        Run folder. A new run refuses a folder that already holds a run; ``resume=True`` continues it with the
        configuration saved there.
    train_samples, external_samples : list of SliceSample, optional
        Data given directly (tests); default: loaded from ``config["data"]``.
    epochs : int, optional
        With ``resume``: extend (or shorten) the run to this many epochs; the saved ``config.json`` is updated.
    init_weights : path, optional
        A new run only: warm start every fold from these exported weights (:func:`warm_start_state`), e.g. the
        committed weights of a run whose folder was lost with its machine.

    Returns
    -------
    dict
        The summary written to ``summary.json``.
    """
    import torch

    from DuralSacSegLib.models import load_model
    from spinemorph.device import select_device

    run_dir = Path(run_dir)
    cfg_path = run_dir / CONFIG_NAME
    if init_weights is not None and resume:
        raise InputError("--init-weights starts a new run from exported weights; drop it to --resume an existing run")
    if resume:
        if not cfg_path.is_file():
            raise OutputError(f"--resume: {run_dir} holds no run ({CONFIG_NAME} missing); start a new run without --resume")
        config = load_config(cfg_path)
        if epochs is not None and int(epochs) != int(config["epochs"]):
            config["epochs"] = int(epochs)
            atomic_write_text(cfg_path, json.dumps(config, indent=2) + "\n")
    else:
        prepare_output_dir(run_dir)
        if cfg_path.exists():
            raise OutputError(f"{run_dir} already holds a training run; pass --resume to continue it or choose another --out")
        validate_config(config)
        if init_weights is not None:
            read_snapshot(Path(init_weights), config)  # before anything is written
    cfg = config
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg["num_threads"]))
    device = select_device(cfg.get("device", "auto"))
    t_start = time.perf_counter()
    source_ids = None
    if train_samples is None:
        train_samples, source_ids = load_training_data(cfg["data"]["train"], purpose="training")
    val_samples = load_dataset(cfg["data"]["validation"], purpose="validation") if cfg["data"].get("validation") else None
    if external_samples is None and cfg["data"].get("external"):
        external_samples = load_dataset(cfg["data"]["external"], purpose="external validation")
    external_samples = _select(external_samples or [], (cfg.get("external") or {}).get("max_slices"), int(cfg["seed"]) + 99)
    if not cfg_path.exists():  # a new run: written only once its data loaded (a failed start leaves no "run" behind)
        atomic_write_text(cfg_path, json.dumps(config, indent=2) + "\n")
    images, masks = _prepare(train_samples, cfg["input_size"])
    valid = _prepare_valid(train_samples, cfg["input_size"])
    val_data = None
    if val_samples is not None:
        # a fixed validation split outside the training data (e.g. real slab planes of training patients set apart):
        # one "fold" trained on every training slice
        val_samples = _select(val_samples, (cfg.get("validation") or {}).get("max_slices"), int(cfg["seed"]) + 17)
        v_images, v_masks = _prepare(val_samples, cfg["input_size"])
        val_data = (v_images, v_masks, _prepare_valid(val_samples, cfg["input_size"]))
        folds = [np.array([], dtype=int)]
        run_folds = [0]
    else:
        folds = make_folds([s.group for s in train_samples], int(cfg["folds"]), int(cfg["seed"]))
        run_folds = cfg["run_folds"] if cfg["run_folds"] is not None else list(range(int(cfg["folds"])))
    _log(run_dir, f"data: {len(train_samples)} training slices"
                  + (f" (per source {np.bincount(source_ids).tolist()}, mix {cfg['data'].get('mix')})" if source_ids is not None else "")
                  + (f", {len(val_samples)} validation slices (fixed split)" if val_samples is not None else "")
                  + f"; {time.perf_counter() - t_start:.0f} s to load")
    fold_rows, histories = [], {}
    for fold in run_folds:
        fold = int(fold)
        val_idx = folds[fold]
        train_idx = np.setdiff1d(np.arange(len(train_samples)), val_idx)
        if len(train_idx) == 0 or (len(val_idx) == 0 and val_data is None):
            raise InputError(f"fold {fold} has no training or no validation slices; use fewer folds or more data")
        state = train_fold(fold, cfg, run_dir, images, masks, train_idx, val_idx, device, resume, progress,
                           valid=valid, source_ids=source_ids, val_data=val_data, init_weights=init_weights)
        histories[f"fold {fold}"] = state["history"]
        fold_dir = run_dir / f"fold{fold}"
        metrics_path = fold_dir / "metrics.json"
        if metrics_path.is_file() and resume and not state["trained_now"]:
            row = json.loads(metrics_path.read_text())
        else:
            net, info = load_model(fold_dir / "best.pt", device)
            if val_samples is not None:
                v_list = val_samples
            else:
                v_idx = _subset(val_idx, (cfg.get("validation") or {}).get("max_slices"), int(cfg["seed"]) * 1000 + fold + 17)
                v_list = [train_samples[i] for i in v_idx]
            val_summary, val_rows, *_ = evaluate_network(net, v_list, device=device,
                                                         threshold=info.threshold, size=tuple(cfg["input_size"]))
            write_csv(fold_dir / "validation_slices.csv", val_rows)
            row = {
                "fold": fold,
                "n_train_slices": int(len(train_idx)),
                "n_val_slices": int(len(v_list)),
                "n_val_evaluated": int(len(v_list)),
                "best_epoch": state["best_epoch"],
                "best_val_loss": state["best_val_loss"],
                "train_seconds": state["seconds"],
                "threshold": float(info.threshold),
                "validation": val_summary,
            }
            if external_samples:
                ext_summary, ext_rows, *_ = evaluate_network(net, external_samples, device=device,
                                                             threshold=info.threshold, size=tuple(cfg["input_size"]))
                write_csv(fold_dir / "external_slices.csv", ext_rows)
                row["external"] = ext_summary
            write_json(metrics_path, row)
        fold_rows.append(row)
    keys = ("accuracy", "precision", "recall", "f1", "mean_slice_dice", "area_mae_mm2", "area_mse_mm2", "pearson_r",
            "ba_mean_diff_mm2", "ba_loa_low_mm2", "ba_loa_high_mm2")
    table = []
    for row in fold_rows:
        flat = {k: row[k] for k in ("fold", "n_train_slices", "n_val_slices", "best_epoch", "best_val_loss", "train_seconds")}
        for part in (p for p in ("validation", "external") if p in row):
            for k in keys:  # real slab planes also inside the imaged strip (the padding, never trained on, excluded)
                flat[f"{part}_{k}"] = row[part].get(k)
                if f"within_valid_{k}" in row[part]:
                    flat[f"{part}_within_strip_{k}"] = row[part][f"within_valid_{k}"]
        table.append(flat)
    write_csv(run_dir / "folds.csv", table)
    summary = {"architecture": cfg["architecture"], "config": cfg.get("name", ""), "folds": table, "mean": {}, "sd": {}}
    for k in (k for k in table[0] if k != "fold"):
        vals = np.array([r[k] for r in table if r.get(k) is not None], dtype=float)
        if len(vals):
            summary["mean"][k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
            summary["sd"][k] = float(np.nanstd(vals, ddof=1)) if np.isfinite(vals).sum() > 1 else math.nan
    best = min(fold_rows, key=lambda r: r["best_val_loss"])
    summary["best_fold"] = best["fold"]
    summary["wall_seconds_this_session"] = time.perf_counter() - t_start
    shutil.copyfile(run_dir / f"fold{best['fold']}" / "best.pt", run_dir / ".best.pt.tmp")
    os.replace(run_dir / ".best.pt.tmp", run_dir / "best.pt")
    plot_loss_curves(histories, run_dir / "loss_curves.png", f"{cfg['architecture']} ({cfg.get('name', '')})")
    write_json(run_dir / "summary.json", summary)
    return summary
