"""Training of the fine (0.8 mm, 5-class) FORAMEN3D model on patches — resumable at any moment.

Command: ``python -m FORAMEN3DLib.train_fine --config CONFIG --out RUN_DIR`` (new run) or
``python -m FORAMEN3DLib.train_fine --out RUN_DIR --resume`` (continue; ``--max-iterations N`` extends a run).
``scripts/train_foramen_fine.sh`` wraps both.

Data (:mod:`FORAMEN3DLib.fine_data`): a **sample pool** per source — ``synth`` (SynthSeg-style images from the SPIDER
training label maps), ``slab`` (real T2 SPACE slabs of training patients, partial labels), ``phantom`` — of fine crops
(144×144×160 at 0.8 mm around L4-5). Every sample is a deterministic function of ``(source, case, seed)``; the pool is
a list of such keys (checkpointed) whose arrays are cached in ``RUN_DIR/bank/*.npz`` (regenerated when missing). The
pool starts with ``pool.initial`` samples per source and, every ``pool.refresh_every`` iterations, one new sample is
made (source drawn with ``pool.refresh_weights``): it is added until ``pool.size`` is reached, then it replaces the
oldest sample of its source, so the network keeps seeing new synthetic images (synthesis costs 3-5 s per crop, about
half a training iteration: measured in docs/performance.md).

Each iteration draws ``batch_size`` samples (source drawn with ``sample_weights``), a random patch (centred on a
labelled voxel with probability ``foreground_p``; on a posterior-arch voxel — L4/L5 bone behind the anterior canal
wall, :func:`fine_data.arch_voxels` — with probability ``arch_p``), left-right flip, intensity scale / shift / noise and, for synthetic
and phantom crops, a narrower left-right field of view (``p_slab``: a 15-100 mm slab, zero input and ignored labels
outside, z-scored again inside) so that the network also learns the narrow real slabs.

Loss (:func:`partial_label_loss`): cross-entropy on the *sum* of the probabilities of the classes a voxel allows
(−log Σ_{c allowed} p_c: ordinary cross-entropy for a fully labelled voxel, a merged-class loss for the slabs' merged
vertebra / disc labels, 0 for ignored voxels) + soft Dice over the fully labelled voxels.

Learning rate: a function of the iteration only (linear warm-up, then cosine from ``lr`` to ``lr_min`` at
``max_iterations``), so resuming — also with a larger ``--max-iterations`` — needs no scheduler state beyond the
iteration.

Validation every ``validate_every`` iterations on the validation patients (``val_patients``: never trained on, not the
held-out test patients): their synthesised label maps and real slabs, whole fine crops by MONAI sliding-window
inference; Dice per class on the fully labelled voxels (slabs: inside the imaged slices) and, on the synthesised
crops, the posterior-arch Dice (:func:`arch_dice_on_definite`; in the mean only with ``val_mean_arch``). The best mean
is kept as ``best.pt`` (fp16, loadable by :mod:`FORAMEN3DLib.models3d`).

Run folder: ``config.json``, ``checkpoint.pt`` (model, optimizer, numpy RNG, iteration, pool keys, best value,
history; written atomically every ``checkpoint_every_s`` seconds and at each validation), ``best.pt``, ``last.pt``,
``history.csv`` (validation rows), ``train.log`` (progress lines), ``bank/``.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from spinemorph.atomic import atomic_path, atomic_write_text
from spinemorph.errors import InputError, OutputError, SpineMorphError
from spinemorph.runconfig import merge_config, read_config_json, write_history_csv

from . import fine_data as fd

FINE_CLASS_NAMES = {1: "L4", 2: "L4-5 disc", 3: "L5", 4: "canal"}

DEFAULT_FINE_CONFIG: dict = {
    "name": "fine",
    "description": "Fine 0.8 mm 5-class 3D U-Net (strided stem + full-resolution refinement) on 144x144x160 crops "
                   "around L4-5; patches; synthetic + phantom + real-slab (partial labels) data",
    "seed": 0,
    "network": {"in_channels": 4, "out_channels": 5, "base_channels": 16, "depth": 4, "stem_stride": 2,
                "refine_channels": 8, "norm": "instance"},
    "patch": [96, 96, 96],
    "batch_size": 1,
    "lr": 5e-4,
    "lr_min": 2e-5,
    "warmup_iterations": 100,
    "weight_decay": 1e-5,
    "max_iterations": 6000,
    "precision": "bf16",
    "channels_last": False,
    "threads": 2,
    "device": "cpu",
    "val_patients": ["191", "241", "22", "146"],
    "sample_weights": {"synth": 0.6, "slab": 0.3, "phantom": 0.1},
    "pool": {"initial": {"synth": 12, "slab": 12, "phantom": 2}, "size": {"synth": 48, "slab": 26, "phantom": 6},
             "refresh_every": 6, "refresh_weights": {"synth": 0.75, "slab": 0.2, "phantom": 0.05}},
    "jitter_mm": 8.0,
    "augment": {"flip_lr": 0.5, "intensity_scale": 0.15, "intensity_shift": 0.15, "noise_std": 0.05,
                "p_slab": 0.25, "slab_mm": [15.0, 100.0], "foreground_p": 0.8, "arch_p": 0.0},
    "validate_every": 300,
    "val_mean_arch": False,
    # training slabs whose levels the mask does not give: named by the level network where its rule accepts
    # (level_locator.slab_labels_from_levels; scripts/slab_identity_study.py), else merged classes
    "slab_identity_from_levels": False,
    "checkpoint_every_s": 300,
    "log_every": 10,
    "sliding_overlap": 0.25,
    "infer_roi": [96, 96, 96],
    "max_wall_s": None,
}


def _merge(base: dict, over: dict, where: str = "") -> dict:
    return merge_config(base, over, ("network", "sample_weights"), where, kind="fine config")


def load_fine_config(path: str | os.PathLike | None) -> dict:
    """A fine config (JSON over :data:`DEFAULT_FINE_CONFIG`), validated."""
    if path is None:
        return validate_fine_config(copy.deepcopy(DEFAULT_FINE_CONFIG))
    raw = read_config_json(path)
    return validate_fine_config(_merge(DEFAULT_FINE_CONFIG, raw))


def validate_fine_config(cfg: dict) -> dict:
    from .network3d import NetworkConfig

    try:
        net = NetworkConfig.from_dict(cfg["network"])
    except (TypeError, ValueError) as exc:
        raise InputError(f"fine config network: {exc}") from None
    if net.out_channels != fd.N_FINE_CLASSES:
        raise InputError(f"fine config network.out_channels must be {fd.N_FINE_CLASSES}")
    if net.in_channels not in (1, 4):
        raise InputError("fine config network.in_channels must be 1 (image) or 4 (image + 3 crop coordinates)")
    patch = [int(p) for p in cfg["patch"]]
    if len(patch) != 3 or any(p % net.size_divisor or p > s for p, s in zip(patch, fd.FINE_SHAPE)):
        raise InputError(f"fine config patch {patch} must be 3 multiples of {net.size_divisor} within {fd.FINE_SHAPE}")
    if any(int(r) % net.size_divisor for r in cfg["infer_roi"]):
        raise InputError(f"fine config infer_roi {cfg['infer_roi']} must be multiples of {net.size_divisor}")
    if cfg["precision"] not in ("fp32", "bf16"):
        raise InputError("fine config precision must be 'fp32' or 'bf16'")
    aug = cfg["augment"]
    if not (0 <= float(aug["arch_p"]) and 0 <= float(aug["foreground_p"])
            and float(aug["arch_p"]) + float(aug["foreground_p"]) <= 1):
        raise InputError("fine config augment.arch_p and augment.foreground_p must be probabilities with a sum <= 1")
    for key in ("sample_weights",):
        if any(s not in ("synth", "slab", "phantom") for s in cfg[key]):
            raise InputError(f"fine config {key}: sources are synth, slab, phantom")
    from spinemorph import spider

    bad = set(map(str, cfg["val_patients"])) & set(spider.HELD_OUT_PATIENTS)
    if bad:
        raise InputError(f"fine config val_patients {sorted(bad)} are held-out test patients; choose training patients")
    return cfg


# ---------------------------------------------------------------------- loss
def partial_label_loss(logits, bits, dice_weight: float = 1.0):
    """Merged-class cross-entropy + soft Dice on fully labelled voxels (see the module docstring).

    ``logits`` ``(N, C, ...)`` float; ``bits`` ``(N, ...)`` uint8 allowed-class masks. Returns a scalar tensor.
    """
    import torch

    logits = logits.float()
    c = logits.shape[1]
    b = bits.long()
    allowed = torch.stack([(b >> k) & 1 for k in range(c)], dim=1).bool()
    logp = torch.log_softmax(logits, dim=1)
    merged = torch.logsumexp(logp.masked_fill(~allowed, -1e4), dim=1)  # log Σ_{allowed} p
    informative = b != fd.IGNORE
    n_inf = informative.sum()
    if n_inf == 0:
        return logits.sum() * 0.0
    ce = -(merged * informative).sum() / n_inf
    # Dice over definite voxels (exactly one allowed class)
    definite = allowed.sum(dim=1) == 1
    p = logp.exp() * definite[:, None]
    t = allowed.float() * definite[:, None]
    dims = (0, *range(2, logits.ndim))
    inter = (p * t).sum(dims)
    denom = p.sum(dims) + t.sum(dims)
    present = t.sum(dims) > 0
    dice = (2 * inter + 1e-5) / (denom + 1e-5)
    dloss = (1 - dice[1:])[present[1:]].mean() if present[1:].any() else logits.sum() * 0.0
    return ce + dice_weight * dloss


# ---------------------------------------------------------------------- samples
def make_sample(key: tuple, cfg: dict) -> dict:
    """The sample of a pool key ``(source, case, seed)`` (deterministic)."""
    source, case, seed = key
    if source == "synth":
        return fd.synthetic_sample(case, int(seed), cfg["jitter_mm"])
    if source == "slab":
        name_levels = None
        if cfg.get("slab_identity_from_levels"):
            from .level_locator import get_level_model, slab_labels_from_levels

            def name_levels(image, mask):
                return slab_labels_from_levels(image, mask, get_level_model())
        return fd.slab_sample(case, int(seed), cfg["jitter_mm"], name_levels=name_levels)
    if source == "phantom":
        return fd.phantom_sample(int(seed), cfg["jitter_mm"])
    raise SpineMorphError(f"unknown sample source {source!r}")


class Bank:
    """Disk cache of pool samples (``x`` float16, ``bits`` uint8) in ``RUN_DIR/bank``, with an in-memory copy."""

    def __init__(self, folder: Path, cfg: dict):
        self.dir = folder
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.mem: dict = {}

    def path(self, key) -> Path:
        return self.dir / f"{key[0]}_{key[1]}_{int(key[2])}.npz"

    def get(self, key) -> tuple[np.ndarray, np.ndarray]:
        key = (str(key[0]), str(key[1]), int(key[2]))
        if key in self.mem:
            return self.mem[key]
        p = self.path(key)
        arr = None
        if p.is_file():
            try:
                with np.load(p) as z:
                    arr = (z["x"], z["bits"])
            except (OSError, ValueError, KeyError):
                arr = None  # a damaged cache file is regenerated
        if arr is None:
            s = make_sample(key, self.cfg)
            arr = (s["x"].astype(np.float16), s["bits"])
            buf = io.BytesIO()
            np.savez(buf, x=arr[0], bits=arr[1])
            with atomic_path(p) as tmp:
                tmp.write_bytes(buf.getvalue())
        self.mem[key] = arr
        return arr

    def drop(self, key) -> None:
        key = (str(key[0]), str(key[1]), int(key[2]))
        self.mem.pop(key, None)
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass


def training_cases(cfg: dict) -> dict[str, list[str]]:
    """Case lists per source: SPIDER training label maps / slab patients minus the validation patients."""
    from spinemorph import spider

    val = set(map(str, cfg["val_patients"]))
    synth = [c for c in spider.train_mask_cases() if c.split("_")[0] not in val]
    slabs = [p for p in spider.train_slab_patients() if p not in val]
    held = set(spider.HELD_OUT_PATIENTS)
    if any(c.split("_")[0] in held for c in synth) or held & set(slabs):
        raise SpineMorphError("held-out patients would be trained on; fix spinemorph.spider")
    return {"synth": sorted(synth), "slab": sorted(slabs, key=int), "phantom": ["phantom"]}


def validation_cases(cfg: dict) -> list[tuple]:
    """Fixed validation samples: synthesised label maps (contrast T2, no jitter) and slabs of ``val_patients``."""
    from spinemorph import spider

    val = [str(p) for p in cfg["val_patients"]]
    keys = [("synth", c, 0) for c in spider.train_mask_cases() if c.split("_")[0] in val]
    keys += [("slab", p, 0) for p in val if p in spider.train_slab_patients()]
    return keys


def val_sample(key, cfg) -> tuple[np.ndarray, np.ndarray]:
    source, case, seed = key
    if source == "synth":
        s = fd.synthetic_sample(case, 10_000 + int(seed), 0.0, contrast="t2")
    else:
        s = fd.slab_sample(case, 10_000 + int(seed), 0.0)
    return s["x"], s["bits"]


# ---------------------------------------------------------------------- augmentation / patches
def coordinate_channels(crop_shape, lo=(0, 0, 0), size=None) -> np.ndarray:
    """Position inside the fine crop, ``(3, *size)`` float32 in [-1, 1] along k, j, i, of the block starting at
    ``lo`` (default: the whole crop). The network gets them as extra input channels, so that a patch knows where it
    lies relative to the L4-5 disc (L4 above, L5 below) — the crop is centred on the located disc."""
    size = tuple(crop_shape) if size is None else tuple(size)
    out = np.empty((3, *size), np.float32)
    for a in range(3):
        half = (crop_shape[a] - 1) / 2.0
        v = ((np.arange(lo[a], lo[a] + size[a], dtype=np.float32) - half) / half).astype(np.float32)
        shp = [1, 1, 1]
        shp[a] = size[a]
        out[a] = v.reshape(shp)
    return out


def with_coordinates(x: np.ndarray, crop_shape, lo=(0, 0, 0)) -> np.ndarray:
    """``(4, ...)`` network input: the image and :func:`coordinate_channels`."""
    return np.concatenate([np.asarray(x, np.float32)[None], coordinate_channels(crop_shape, lo, x.shape)])


def _patch(rng, x, bits, patch, fg_p, arch_p: float = 0.0):
    shape = np.asarray(x.shape)
    patch = np.asarray(patch)
    u = rng.random()
    arch = fd.arch_voxels(bits) if u < arch_p else ()
    if len(arch):  # centred on the posterior arch (a thin, small share of the foreground); a crop without
        # a definite canal has no arch region: its patch is centred on the foreground instead
        centre = np.array(np.unravel_index(arch[int(rng.integers(len(arch)))], x.shape))
    elif u < arch_p + fg_p:
        fg = np.flatnonzero((bits != fd.IGNORE) & (bits != 1))
        centre = np.array(np.unravel_index(fg[int(rng.integers(len(fg)))], x.shape)) if len(fg) else shape // 2
    else:
        centre = np.array([rng.integers(s) for s in shape])
    lo = np.clip(centre - patch // 2, 0, shape - patch)
    sl = tuple(slice(int(a), int(a + p)) for a, p in zip(lo, patch))
    return x[sl].astype(np.float32), bits[sl].copy(), tuple(int(a) for a in lo)


def augment(rng, x, bits, aug: dict, synthetic: bool):
    """Intensity / field-of-view augmentation of a patch (the left-right flip is applied to the whole crop)."""
    fov = x != 0
    if synthetic and rng.random() < aug["p_slab"]:
        width = rng.uniform(*aug["slab_mm"]) / fd.FINE_SPACING_MM
        centre = x.shape[0] / 2 + rng.uniform(-0.15, 0.15) * x.shape[0]
        keep = (np.abs(np.arange(x.shape[0]) + 0.5 - centre) <= width / 2)[:, None, None] & fov
        if keep.sum() > 0.02 * keep.size:
            vals = x[keep]
            x = np.where(keep, (x - vals.mean()) / max(float(vals.std()), 1e-6), 0.0).astype(np.float32)
            bits = np.where(keep, bits, fd.IGNORE).astype(np.uint8)
            fov = keep
    s = 1.0 + rng.uniform(-1, 1) * aug["intensity_scale"]
    b = rng.uniform(-1, 1) * aug["intensity_shift"]
    x = np.where(fov, x * s + b, 0.0)
    if aug["noise_std"] > 0:
        x = x + fov * rng.normal(0.0, rng.uniform(0, aug["noise_std"]), x.shape)
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(bits)


def lr_at(cfg: dict, it: int) -> float:
    base, low = float(cfg["lr"]), float(cfg["lr_min"])
    warm = int(cfg["warmup_iterations"])
    if it < warm:
        return base * (it + 1) / warm
    total = max(int(cfg["max_iterations"]) - warm, 1)
    t = min(max(it - warm, 0) / total, 1.0)
    return low + 0.5 * (base - low) * (1 + math.cos(math.pi * t))


# ---------------------------------------------------------------------- inference on a crop
def predict_crop(net, x: np.ndarray, patch, overlap: float = 0.25, precision: str = "fp32", sw_batch: int = 1,
                 device=None):
    """Class probabilities ``(C, *x.shape)`` of a whole fine crop by MONAI sliding-window inference (Gaussian
    blending)."""
    import torch
    from monai.inferers import sliding_window_inference

    dev = torch.device(device or "cpu")
    n_in = int(getattr(getattr(net, "config", None), "in_channels", 1))
    inp = with_coordinates(x, x.shape) if n_in == 4 else np.asarray(x, np.float32)[None]
    xt = torch.from_numpy(np.ascontiguousarray(inp))[None].to(dev)
    amp_dtype = torch.bfloat16 if dev.type == "cpu" else torch.float16
    with torch.inference_mode(), torch.autocast(dev.type, dtype=amp_dtype, enabled=precision == "bf16"):
        logits = sliding_window_inference(xt, tuple(int(p) for p in patch), sw_batch, lambda t: net(t).float(),
                                          overlap=overlap, mode="gaussian")
    return torch.softmax(logits.float(), 1)[0].cpu().numpy()


def dice_on_definite(bits: np.ndarray, pred: np.ndarray) -> dict:
    """Dice per fine class on the fully labelled voxels (NaN when the class is absent from truth and prediction)."""
    truth = fd.definite_labels(bits)
    known = truth != 255
    out = {}
    for c, name in FINE_CLASS_NAMES.items():
        a = (truth == c) & known
        b = (pred == c) & known
        s = int(a.sum()) + int(b.sum())
        out[name] = 2.0 * float((a & b).sum()) / s if s else math.nan
    return out


def arch_dice_on_definite(bits: np.ndarray, pred: np.ndarray) -> float:
    """Dice of L4 + L5 bone behind the anterior canal wall (the posterior arches) on the fully labelled voxels of a
    crop with a definite canal (NaN without one); the metric of ``evaluate_fine``'s "posterior arch"."""
    truth = fd.definite_labels(bits)
    if not (truth == fd.CANAL).any():
        return math.nan
    return fd.arch_dice(truth, pred, truth != 255)


# ---------------------------------------------------------------------- training
def _log(run: Path, msg: str) -> None:
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} {msg}"
    print(line, flush=True)
    with open(run / "train.log", "a") as fh:
        fh.write(line + "\n")


def _write_history(history: list[dict], path: Path) -> None:
    write_history_csv(history, path)


def save_fine_weights(net, path: Path, meta: dict) -> str:
    from .models3d import save_weights

    return save_weights(net, path, 1, {"infer_roi": [96, 96, 96], **meta, "kind": "fine",
                                       "fine_shape": list(fd.FINE_SHAPE), "fine_offset_mm": list(fd.FINE_OFFSET_MM),
                                       "locator": meta.get("locator", "foramen3d-budget-cpu")})


def _warm_start(net, path: Path, cfg: dict) -> int:
    """Load exported weights into ``net`` (architecture must equal the run's) and return their iteration."""
    from .models3d import read_weights

    blob = read_weights(path)
    if dict(blob["network"]) != net.config.to_dict():
        raise InputError(f"{path} holds a different network ({blob['network']}) than this run's config "
                         f"({net.config.to_dict()}); use a matching config")
    net.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()}, strict=True)
    iteration = int((blob.get("meta") or {}).get("iteration", 0))
    if iteration >= int(cfg["max_iterations"]):
        raise InputError(f"{path} is from iteration {iteration}, not below max_iterations {cfg['max_iterations']}; "
                         "pass --max-iterations")
    return iteration


def train_fine(config=None, run_dir="runs/fine", resume: bool = False, overwrite: bool = False,
               max_iterations: int | None = None, stop_after: int | None = None,
               init_weights: str | os.PathLike | None = None) -> dict:
    """Train (or continue) a fine model into ``run_dir``; returns the last state summary.

    ``stop_after`` stops after that many iterations of *this call* (with a checkpoint), for tests and dry runs.
    ``init_weights`` (new runs only): start from exported fp16 weights (e.g. the committed
    ``foramen3d_fine_cpu.pt``) at the iteration recorded in them, so that a run whose checkpoint was lost (a new
    machine) continues from git; the optimizer's moments start afresh, the learning-rate schedule continues.
    """
    import torch

    from .network3d import build_network

    run = Path(run_dir)
    cfg_file = run / "config.json"
    ckpt_path = run / "checkpoint.pt"
    if resume:
        if not cfg_file.is_file():
            raise InputError(f"nothing to resume in {run} (no config.json); start a run without --resume")
        cfg = validate_fine_config(_merge(DEFAULT_FINE_CONFIG, json.loads(cfg_file.read_text())))
    else:
        cfg = config if isinstance(config, dict) else load_fine_config(config)
        cfg = validate_fine_config(_merge(DEFAULT_FINE_CONFIG, cfg))
        if cfg_file.exists() and not overwrite:
            raise OutputError(f"{cfg_file} exists; pass --resume to continue that run or --overwrite to replace it")
        run.mkdir(parents=True, exist_ok=True)
        for p in (ckpt_path, run / "history.csv", run / "best.pt", run / "last.pt"):
            if p.exists():
                p.unlink()
        atomic_write_text(cfg_file, json.dumps(cfg, indent=2))
    if max_iterations is not None:
        cfg["max_iterations"] = int(max_iterations)
        atomic_write_text(cfg_file, json.dumps(cfg, indent=2))
    torch.set_num_threads(int(cfg["threads"]))
    seed = int(cfg["seed"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(cfg["network"])
    opt = torch.optim.AdamW(net.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    rng = np.random.default_rng(seed)
    cases = training_cases(cfg)
    state = {"iteration": 0, "pool": {s: [] for s in cases}, "next_seed": {s: 0 for s in cases}, "best": -1.0,
             "best_iteration": -1, "history": [], "wall_s": 0.0, "samples_made": 0}
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        rng.bit_generator.state = ck["rng"]
        state.update(ck["state"])
        _log(run, f"resumed at iteration {state['iteration']} (best val {state['best']:.4f} at {state['best_iteration']})")
    elif ckpt_path.exists() and not resume:
        raise OutputError(f"{ckpt_path} exists; pass --resume")
    if init_weights is not None:
        if resume and ckpt_path.is_file():
            raise InputError(f"{run} already has a checkpoint; --init-weights is only for a new run (use --resume)")
        state["iteration"] = _warm_start(net, Path(init_weights), cfg)
        _log(run, f"warm start from {init_weights} at iteration {state['iteration']} (optimizer state fresh)")
    from spinemorph.device import select_device

    dev = select_device(str(cfg["device"]))
    net = net.to(dev)
    if resume and ckpt_path.is_file():
        opt.load_state_dict(ck["optimizer"])  # again, so that its state tensors follow the model's device
    if cfg["channels_last"]:
        net = net.to(memory_format=torch.channels_last_3d)
    amp_dtype = torch.bfloat16 if dev.type == "cpu" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda" and cfg["precision"] == "bf16")
    bank = Bank(run / "bank", cfg)

    def new_key(source: str):
        cl = cases[source]
        n = state["next_seed"][source]
        state["next_seed"][source] = n + 1
        case = cl[n % len(cl)]
        return (source, case, seed * 1_000_003 + n)

    def save_checkpoint():
        with atomic_path(ckpt_path) as tmp:
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "rng": rng.bit_generator.state,
                        "state": state, "config": cfg}, tmp)

    # initial pool
    t0 = time.perf_counter()
    for source, n in cfg["pool"]["initial"].items():
        if float(cfg["sample_weights"].get(source, 0)) <= 0:
            continue
        while len(state["pool"][source]) < int(n):
            state["pool"][source].append(new_key(source))
    for keys in state["pool"].values():
        for k in keys:
            bank.get(k)
    _log(run, f"pool ready ({ {s: len(v) for s, v in state['pool'].items()} }) in {time.perf_counter() - t0:.0f} s")
    vkeys = validation_cases(cfg)
    val_data: dict = {k: val_sample(k, cfg) for k in vkeys}
    _log(run, f"validation cases: {vkeys}")

    def validate():
        net.eval()
        rows = []
        for k in vkeys:
            if k not in val_data:
                val_data[k] = val_sample(k, cfg)
            x, bits = val_data[k]
            probs = predict_crop(net, x, cfg["infer_roi"], float(cfg["sliding_overlap"]), cfg["precision"], device=dev)
            pred = probs.argmax(0).astype(np.uint8)
            rows.append((k, {**dice_on_definite(bits, pred), "posterior arch": arch_dice_on_definite(bits, pred)}))
        net.train()
        row = {"iteration": state["iteration"]}
        for src in ("synth", "slab"):
            for name in FINE_CLASS_NAMES.values():
                vals = [d[name] for k, d in rows if k[0] == src and not math.isnan(d[name])]
                row[f"val_{src}_{name}"] = float(np.mean(vals)) if vals else math.nan
        vals = [d["posterior arch"] for k, d in rows if k[0] == "synth" and not math.isnan(d["posterior arch"])]
        arch = float(np.mean(vals)) if vals else math.nan
        row["val_mean"] = float(np.nanmean([v for k, v in row.items() if k.startswith("val_")]
                                           + ([arch] if cfg.get("val_mean_arch") else [])))
        row["val_synth_posterior arch"] = arch  # logged always; part of val_mean only with "val_mean_arch"
        return row

    samples = {s: float(w) for s, w in cfg["sample_weights"].items() if float(w) > 0}
    src_names = sorted(samples)
    src_p = np.array([samples[s] for s in src_names])
    ref_w = {s: float(w) for s, w in cfg["pool"]["refresh_weights"].items() if samples.get(s, 0) > 0}
    ref_names = sorted(ref_w)
    ref_p = np.array([ref_w[s] for s in ref_names])
    t_start = time.perf_counter() - float(state["wall_s"])
    t_ckpt = time.perf_counter()
    t_log = time.perf_counter()
    it_log = state["iteration"]
    losses: list[float] = []
    done_here = 0
    net.train()
    precision = cfg["precision"]
    n_in = int(cfg["network"].get("in_channels", 1))
    while state["iteration"] < int(cfg["max_iterations"]):
        it = state["iteration"]
        # ---- pool refresh
        if it > 0 and it % int(cfg["pool"]["refresh_every"]) == 0:
            src = ref_names[int(rng.choice(len(ref_names), p=ref_p / ref_p.sum()))]
            key = new_key(src)
            bank.get(key)
            state["samples_made"] += 1
            pool = state["pool"][src]
            pool.append(key)
            if len(pool) > int(cfg["pool"]["size"][src]):
                bank.drop(pool.pop(0))
        # ---- batch
        xs, bs_ = [], []
        for _ in range(int(cfg["batch_size"])):
            src = src_names[int(rng.choice(len(src_names), p=src_p / src_p.sum()))]
            pool = state["pool"][src]
            key = pool[int(rng.integers(len(pool)))]
            x, bits = bank.get(key)
            if rng.random() < cfg["augment"]["flip_lr"]:
                x, bits = x[::-1], bits[::-1]
            xp, bp, lo = _patch(rng, x, bits, cfg["patch"], cfg["augment"]["foreground_p"],
                                float(cfg["augment"].get("arch_p", 0.0)))
            xp, bp = augment(rng, xp, bp, cfg["augment"], src != "slab")
            xs.append(with_coordinates(xp, x.shape, lo) if n_in == 4 else xp[None])
            bs_.append(bp)
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, it)
        xt = torch.from_numpy(np.stack(xs)).to(dev)
        bt = torch.from_numpy(np.stack(bs_)).to(dev)
        if cfg["channels_last"]:
            xt = xt.contiguous(memory_format=torch.channels_last_3d)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=precision == "bf16"):
            out = net(xt)
        loss = partial_label_loss(out, bt)
        if not torch.isfinite(loss):
            raise SpineMorphError(f"training diverged (loss {float(loss)}) at iteration {it}; lower the learning rate")
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
        state["iteration"] = it + 1
        state["wall_s"] = time.perf_counter() - t_start
        done_here += 1
        if state["iteration"] % int(cfg["log_every"]) == 0:
            dt = time.perf_counter() - t_log
            n = state["iteration"] - it_log
            _log(run, f"it {state['iteration']} loss {np.mean(losses[-n:]):.4f} lr {lr_at(cfg, it):.2e} "
                      f"{dt / max(n, 1):.1f} s/it samples_made {state['samples_made']}")
            t_log, it_log = time.perf_counter(), state["iteration"]
        validate_now = state["iteration"] % int(cfg["validate_every"]) == 0 or state["iteration"] == int(cfg["max_iterations"])
        if validate_now:
            tv = time.perf_counter()
            row = validate()
            row["train_loss"] = float(np.mean(losses[-int(cfg["validate_every"]):])) if losses else math.nan
            row["wall_s"] = state["wall_s"]
            row["val_s"] = time.perf_counter() - tv
            state["history"].append(row)
            meta = {"config": cfg["name"], "seed": seed, "infer_roi": cfg["infer_roi"], "iteration": state["iteration"], "val_mean": row["val_mean"],
                    "val_patients": cfg["val_patients"], "patch": cfg["patch"], "precision": precision}
            save_fine_weights(net, run / "last.pt", meta)
            if row["val_mean"] > state["best"]:
                state["best"], state["best_iteration"] = row["val_mean"], state["iteration"]
                save_fine_weights(net, run / "best.pt", {**meta, "val": row})
            _write_history(state["history"], run / "history.csv")
            _log(run, "validation " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
            t_log = time.perf_counter()
        over_wall = cfg.get("max_wall_s") is not None and state["wall_s"] >= float(cfg["max_wall_s"])
        if over_wall and not validate_now:
            row = validate()
            row["wall_s"] = state["wall_s"]
            state["history"].append(row)
            meta = {"config": cfg["name"], "seed": seed, "infer_roi": cfg["infer_roi"], "iteration": state["iteration"],
                    "val_mean": row["val_mean"], "val_patients": cfg["val_patients"], "patch": cfg["patch"]}
            save_fine_weights(net, run / "last.pt", meta)
            if row["val_mean"] > state["best"]:
                state["best"], state["best_iteration"] = row["val_mean"], state["iteration"]
                save_fine_weights(net, run / "best.pt", {**meta, "val": row})
            _write_history(state["history"], run / "history.csv")
            _log(run, "validation " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
        stop = (stop_after is not None and done_here >= stop_after) or over_wall
        if validate_now or stop or time.perf_counter() - t_ckpt >= float(cfg["checkpoint_every_s"]):
            save_checkpoint()
            t_ckpt = time.perf_counter()
        if stop:
            _log(run, f"stopped after {done_here} iterations (iteration {state['iteration']}); continue with --resume")
            break
    else:
        save_checkpoint()
        _log(run, f"finished: {state['iteration']} iterations, best val {state['best']:.4f} at {state['best_iteration']}")
    return {"iteration": state["iteration"], "best": state["best"], "best_iteration": state["best_iteration"],
            "history": state["history"], "run_dir": str(run)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m FORAMEN3DLib.train_fine", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=None, help="fine config JSON (default: built-in defaults)")
    ap.add_argument("--out", required=True, help="run folder")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing run's config/checkpoint")
    ap.add_argument("--max-iterations", type=int, default=None, help="total iterations (extends a resumed run)")
    ap.add_argument("--stop-after", type=int, default=None, help="stop after N iterations of this call")
    ap.add_argument("--init-weights", default=None, metavar="FILE",
                    help="new run only: start from exported weights (e.g. the committed foramen3d_fine_cpu.pt) at "
                         "their recorded iteration; for continuing on a machine without the run folder")
    a = ap.parse_args(argv)
    try:
        res = train_fine(a.config, a.out, a.resume, a.overwrite, a.max_iterations, a.stop_after, a.init_weights)
    except SpineMorphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in res.items() if k != "history"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
