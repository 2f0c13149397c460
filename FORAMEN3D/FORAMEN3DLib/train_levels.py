"""Training of the level-naming L4-5 locator (:mod:`FORAMEN3DLib.level_locator`) on real T2 SPACE slabs.

    python -m FORAMEN3DLib.train_levels --out runs/levels [--iterations 3000] [--threads 2]
    python -m FORAMEN3DLib.train_levels --out runs/levels --resume        # after an interruption
    python -m FORAMEN3DLib.train_levels --out runs/levels --export FILE   # fp16 weights of the chosen iteration

Data: the mid-sagittal planes (:func:`level_data.slab_planes`, 2 mm) of every training slab patient whose levels can
be derived (held-out patients never); the validation patients (:data:`VAL_PATIENTS`, the fine model's four plus two
slabs on which the coarse locator erred) are never trained on. Augmentation: affine (rotation, scale, shift),
intensity (gamma, bias field, noise) and a field of view cut above or below (never through the sacrum's top: a
locator needs to see the sacrum, as a reader does).

Loss: cross-entropy (ignoring vertebra fragments of unknown level) + soft Dice of the six level classes. Adam.
Validation every ``--validate-every`` iterations: on each validation patient the L4-5 centre of
:func:`level_locator.locate_from_probabilities` against the reference disc centre — level errors (|offset| ≥
:data:`LEVEL_ERROR_MM`) then mean |offset| choose the best iteration (``best.pt``). State saved atomically every
``--save-every`` iterations and at each validation (``state.pt``); ``--resume`` continues bit-for-bit from it
(random generators included). Log: ``train.log`` and ``history.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from . import level_data as ld
from . import level_locator as ll

#: validation patients (training slabs, never trained on by this model)
VAL_PATIENTS = ("22", "69", "146", "161", "191", "241")
#: patients whose slab geometry is not the nominal sagittal one (65: LPS label volume) are left out
SKIP_PATIENTS = ("65",)
#: a located L4-5 this far from the reference (mm) is a level error: the locator study's definition, one source
from .evaluate_fine import LEVEL_ERROR_MM  # noqa: E402


def load_cases(patients, allow_held_out: bool = False) -> list[dict]:
    out = []
    for p in patients:
        if p in SKIP_PATIENTS:
            continue
        s = ld.slab_planes(p, allow_held_out=allow_held_out)
        if s is not None:
            out.append(s)
    return out


def _bias(rng, shape, strength):
    coarse = rng.normal(0.0, strength, (4, 4))
    return np.exp(ndimage.zoom(coarse, (shape[0] / 4, shape[1] / 4), order=3))[: shape[0], : shape[1]]


def augment(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, fov: np.ndarray):
    """One augmented plane (x z-scored, y classes, fov imaged pixels), same shape."""
    h, w = x.shape
    ang = np.deg2rad(rng.uniform(-12, 12))
    s = rng.uniform(0.85, 1.2) * np.array([1.0, 1.0]) * rng.uniform(0.95, 1.05, 2)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    m = rot @ np.diag(1.0 / s)
    c = np.array([h, w]) / 2.0
    off = c - m @ c + rng.uniform(-15, 15, 2)
    x = ndimage.affine_transform(x, m, off, order=1, mode="constant", cval=0.0)
    y = ndimage.affine_transform(y, m, off, order=0, mode="constant", cval=ld.BG)
    f = ndimage.affine_transform(fov.astype(np.uint8), m, off, order=0, mode="constant", cval=0).astype(bool)
    if f.sum() > 100:
        v = x[f]
        lo, hi = np.percentile(v, [0.5, 99.5])
        u = np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1) ** rng.uniform(0.6, 1.6)
        u = u * _bias(rng, u.shape, 0.25) + rng.normal(0, rng.uniform(0, 0.05), u.shape)
        x = np.where(f, u, 0.0)
        v = x[f]
        x = np.where(f, (x - v.mean()) / max(v.std(), 1e-6), 0.0)
    rows = np.nonzero(f.any(1))[0]
    sac = np.nonzero((y == ld.DISC_L5S1).any(1))[0]
    if len(rows) and rng.random() < 0.35:  # field of view cut above: keep at least L3 (60 mm above L4-5)
        l45 = np.nonzero((y == ld.DISC_L45).any(1))[0]
        if len(l45):
            top = int(rng.uniform(rows[0], max(rows[0], l45.min() - 60 / ld.LEVEL_SPACING_MM)))
            x[:top], y[:top], f[:top] = 0.0, ld.BG, False
    if len(rows) and len(sac) and rng.random() < 0.25:  # cut below: keep the sacrum's top (40 mm below L5-S1)
        bottom = int(rng.uniform(min(rows[-1], sac.max() + 40 / ld.LEVEL_SPACING_MM), rows[-1] + 1))
        x[bottom:], y[bottom:], f[bottom:] = 0.0, ld.BG, False
    return x.astype(np.float32), y.astype(np.uint8), f


def loss_fn(logits, target):
    import torch
    import torch.nn.functional as F

    ce = F.cross_entropy(logits, target.long(), ignore_index=ld.IGNORE)
    valid = (target != ld.IGNORE).unsqueeze(1).float()
    p = torch.softmax(logits, 1) * valid
    onehot = F.one_hot(torch.where(target == ld.IGNORE, 0, target).long(), ld.N_CLASSES).permute(0, 3, 1, 2).float()
    onehot = onehot * valid
    inter = (p * onehot).sum((0, 2, 3))[1:]
    den = (p + onehot).sum((0, 2, 3))[1:]
    dice = 1.0 - ((2 * inter + 1.0) / (den + 1.0)).mean()
    return ce + dice


def validate(model, cases) -> dict:
    errs, offs, rows = 0, [], []
    for c in cases:
        probs = ll.predict_planes(model, c["x"])
        # the kept planes of a slab: average them all (the slab is the spine's middle)
        res = ll.locate_from_probabilities(probs, c["fov"], c["grid"])
        if res.centre_lps is None:
            off = float("nan")
        else:
            d = np.asarray(c["grid"].direction, float)
            off = float(d[:, 1] @ (res.centre_lps - c["disc_lps"]))
        bad = not np.isfinite(off) or abs(off) >= LEVEL_ERROR_MM
        errs += int(bad)
        offs.append(abs(off) if np.isfinite(off) else 100.0)
        rows.append({"case": c["case"], "offset_mm": None if not np.isfinite(off) else round(off, 1),
                     "order_ok": res.order_ok})
    return {"level_errors": errs, "mean_abs_offset_mm": float(np.mean(offs)), "cases": rows}


def _save_state(path, net, opt, it, rng, best, torch_rng):
    import torch

    from spinemorph.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"network": net.state_dict(), "optimizer": opt.state_dict(), "iteration": it,
                    "rng": rng.bit_generator.state, "torch_rng": torch_rng, "best": best}, tmp)


def train(out: Path, iterations: int, threads: int, resume: bool, validate_every: int, save_every: int,
          batch: int = 8, lr: float = 1e-3, seed: int = 0) -> dict:
    import torch

    from spinemorph import spider

    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "train.log", "a")

    def say(msg):
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} {msg}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    train_p = [p for p in spider.train_slab_patients() if p not in VAL_PATIENTS]
    cases = load_cases(train_p)
    vals = load_cases([p for p in VAL_PATIENTS if p in spider.train_slab_patients()])
    say(f"data: {len(cases)} training slabs ({sum(len(c['x']) for c in cases)} planes: "
        f"{', '.join(c['case'] for c in cases)}); validation {', '.join(c['case'] for c in vals)}")
    torch.manual_seed(seed)
    net = ll.build_network()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    it, best = 0, None
    if resume and (out / "state.pt").is_file():
        st = torch.load(out / "state.pt", map_location="cpu", weights_only=False)
        net.load_state_dict(st["network"])
        opt.load_state_dict(st["optimizer"])
        it, best = int(st["iteration"]), st["best"]
        rng.bit_generator.state = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        say(f"resumed at iteration {it}")
    (out / "config.json").write_text(json.dumps({"iterations": iterations, "batch": batch, "lr": lr, "seed": seed,
                                                  "val_patients": list(VAL_PATIENTS), "network": ll.NETWORK,
                                                  "train_patients": [c["case"] for c in cases]}, indent=1))
    hist = out / "history.csv"
    model = ll.LevelModel(net, {}, None, torch.device("cpu"))
    t0, losses = time.perf_counter(), []
    while it < iterations:
        net.train()
        xs, ys = [], []
        for _ in range(batch):
            c = cases[int(rng.integers(len(cases)))]
            k = int(rng.integers(len(c["x"])))
            x, y, _ = augment(rng, c["x"][k], c["y"][k], c["fov"][k])
            xs.append(x)
            ys.append(y)
        xb = torch.from_numpy(np.stack(xs)[:, None])
        yb = torch.from_numpy(np.stack(ys))
        for g in opt.param_groups:  # step decay: ÷5 at 60 % and 85 % of the schedule
            g["lr"] = lr * (0.2 ** ((it >= 0.6 * iterations) + (it >= 0.85 * iterations)))
        loss = loss_fn(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        it += 1
        if it % validate_every == 0 or it == iterations:
            net.eval()
            v = validate(model, vals)
            score = (v["level_errors"], v["mean_abs_offset_mm"])
            is_best = best is None or score < tuple(best["score"])
            if is_best:
                best = {"score": list(score), "iteration": it}
                ll.save_level_model(net, out / "best.pt", {"iteration": it, "validation": v, "val_patients":
                                                           list(VAL_PATIENTS)})
            new = not hist.exists()
            with open(hist, "a", newline="") as fh:
                wr = csv.writer(fh)
                if new:
                    wr.writerow(["iteration", "loss", "level_errors", "mean_abs_offset_mm", "offsets"])
                wr.writerow([it, round(float(np.mean(losses)), 4), v["level_errors"], round(v["mean_abs_offset_mm"], 2),
                             " ".join(f"{r['case']}:{r['offset_mm']}" for r in v["cases"])])
            say(f"it {it}: loss {np.mean(losses):.3f}, validation level errors {v['level_errors']}/{len(vals)}, "
                f"mean |offset| {v['mean_abs_offset_mm']:.1f} mm{' (best)' if is_best else ''}; "
                f"{(time.perf_counter() - t0) / max(len(losses), 1):.2f} s/it")
            losses, t0 = [], time.perf_counter()
            _save_state(out / "state.pt", net, opt, it, rng, best, torch.get_rng_state())
        elif it % save_every == 0:
            _save_state(out / "state.pt", net, opt, it, rng, best, torch.get_rng_state())
    say(f"done: {it} iterations; best iteration {best['iteration'] if best else None}")
    return best or {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m FORAMEN3DLib.train_levels", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--validate-every", type=int, default=250)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0, help="network initialisation and sampling seed (default 0)")
    ap.add_argument("--export", type=Path, default=None, help="copy best.pt (fp16) to this file and stop")
    a = ap.parse_args(argv)
    if a.export is not None:
        import shutil

        shutil.copyfile(a.out / "best.pt", a.export)
        print(f"wrote {a.export}")
        return 0
    train(a.out, a.iterations, a.threads, a.resume, a.validate_every, a.save_every, seed=a.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
