"""Evaluation of a fine (5-class) FORAMEN3D model on patients never trained on.

``python -m FORAMEN3DLib.evaluate_fine --model FILE|NAME --out DIR [--slabs [--pred-dir D] [--patients P1,P2]
[--l45-point reference]] [--synth N
[--synth-mode network|pipeline]] [--locator-study [--count] [--split train|held-out|all]] [--sac-end-study P1,P2,...]``

Any FORAMEN3D model can be evaluated (the coarse default too: canal Dice is then undefined), so that models are
compared on the same voxels.

* ``--slabs``: the **real T2 SPACE slabs** of the held-out patients (:func:`spinemorph.spider.held_out_slab_patients`)
  through the whole inference path (:func:`FORAMEN3DLib.segment3d.segment_volume`; for a fine model: coarse locator
  → fine crop → sliding window → labels on the slab's own grid). Truth: the slab mask with L4 / L4-5 disc / L5
  derived by :func:`FORAMEN3DLib.fine_data.slab_labels` (the patient's own SPACE label volume, or counting up from
  the lowest vertebral body; per-level Dice undefined where neither works). Scored on the fully labelled voxels
  inside the imaged slab and inside the fine crop placed on the **reference** L4-5 disc (:func:`reference_region`;
  the slab's canal runs far beyond L4-5: only the part inside that crop is scored). ``disc_offset_mm``: S-I distance
  of the predicted from the reference disc centroid (≈ 30-40 mm = a level mix-up).
* ``--synth N``: N images per held-out label map synthesised (contrast T2) on the fine crop centred on the true L4-5
  disc; ``network`` mode (default for fine models): the fine network alone (no locator); ``pipeline`` mode: the crop
  as an image through ``segment_volume`` (any model). With the **posterior-arch Dice**: L4 ∪ L5 voxels posterior of
  the anterior canal wall of their row (pedicles, articular processes, laminae, transverse and spinous processes).

* ``--locator-study`` (:func:`locator_study`) and ``--sac-end-study`` (:func:`sac_end_study`): the level errors of the
  coarse locator and the data behind the fine pipeline's level check. ``--count``: also the disc-counting locator
  (:mod:`FORAMEN3DLib.locator`) through ``segment_volume``; ``--split train`` (training and validation patients: the
  counting rules were chosen on these only), ``held-out`` or ``all``.

Writes ``DIR/metrics.json`` (per case and mean) and prints a summary table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from spinemorph.atomic import atomic_write_text
from spinemorph.errors import SpineMorphError

from . import fine_data as fd
from .locator import DEFAULT_LOCATOR_MODE, LOCATOR_MODES
from .train_fine import FINE_CLASS_NAMES, predict_crop


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * float((a & b).sum()) / s if s else math.nan


def posterior_arch_region(truth: np.ndarray) -> np.ndarray:
    """Voxels posterior of the anterior canal wall of their row (array ``(k, j, i)``, i anterior → posterior;
    :func:`FORAMEN3DLib.fine_data.behind_canal_wall` of the truth's canal)."""
    return fd.behind_canal_wall(truth == fd.CANAL)


def has_canal_class(loaded) -> bool:
    """True when the model segments the dural sac / canal (5 output classes)."""
    return int(loaded.network.config.out_channels) > fd.CANAL


def _score(row: dict, truth: np.ndarray, pred: np.ndarray, known: np.ndarray, canal: bool) -> None:
    for c, name in FINE_CLASS_NAMES.items():
        row[name] = _dice((truth == c) & known, (pred == c) & known) if (c != fd.CANAL or canal) else math.nan


def _arch_dice(truth: np.ndarray, pred: np.ndarray, known: np.ndarray) -> float:
    return fd.arch_dice(truth, pred, known)


def disc_offset_mm(vol, truth: np.ndarray, pred: np.ndarray) -> float:
    """Superior-inferior distance (mm, + = the prediction lies inferior) between the predicted and the reference
    L4-5 disc centroids on the grid of ``vol`` (NaN when either is missing). One level is about 30-40 mm: an
    offset of that size is a level mix-up of the locator, not a boundary error."""
    if not (truth == fd.DISC).any() or not (pred == fd.DISC).any():
        return math.nan
    t = vol.index_to_lps(np.argwhere(truth == fd.DISC).mean(0)[::-1])
    p = vol.index_to_lps(np.argwhere(pred == fd.DISC).mean(0)[::-1])
    return float(t[2] - p[2])  # LPS z points superior


def evaluate_synth(loaded, n: int, seed: int = 0, mode: str = "network", roi=None, window: dict | None = None) -> list[dict]:
    """Held-out label maps synthesised (contrast T2) on the fine crop centred on the true L4-5 disc.

    ``mode="network"``: the fine network alone on that crop (no locator; fine models only). ``mode="pipeline"``:
    the crop as an image volume through :func:`FORAMEN3DLib.segment3d.segment_volume` (any model: the coarse model's
    single pass, or locator + fine network), scored on the same voxels: the like-for-like comparison of models.
    ``roi``: sliding-window size of the fine network (array order; default the model's ``infer_roi``). ``window``:
    ``backend`` / ``precision`` of the fine network's windows (pipeline mode, :mod:`.fine_backends`)."""
    from spinemorph import spider

    from .segment3d import postprocess_labels, segment_volume

    if mode not in ("network", "pipeline"):
        raise SpineMorphError(f"synth mode must be network or pipeline, got {mode!r}")
    canal = has_canal_class(loaded)
    if mode == "network" and not canal:
        raise SpineMorphError(f"{loaded.name} is not a fine model; use --synth-mode pipeline")
    rows = []
    for case in spider.held_out_mask_cases():
        for s in range(n):
            smp = fd.synthetic_sample(case, 2_000_000 + seed + s, 0.0, contrast="t2", allow_held_out=True)
            t0 = time.perf_counter()
            if mode == "network":
                probs = predict_crop(loaded.network, smp["x"], roi or loaded.meta.get("infer_roi") or [96, 96, 96],
                                     0.25, device=loaded.device)
                pred = postprocess_labels(probs.argmax(0).astype(np.uint8), structures=(1, 2, 3, 4))
            else:
                opts = {**({"roi": tuple(roi)} if roi and canal else {}), **((window or {}) if canal else {})}
                pred = np.asarray(segment_volume(smp["grid"].volume(smp["x"]), loaded, "cpu",
                                                 fine_options=opts or None).labels.array)
            dt = time.perf_counter() - t0
            truth = fd.definite_labels(smp["bits"])
            known = truth != 255
            row = {"case": case, "seed": smp["meta"]["seed"], "source": f"synth-heldout-{mode}", "inference_s": dt}
            _score(row, truth, pred, known, canal)
            row["posterior arch"] = _arch_dice(truth, pred, known)
            row["disc_offset_mm"] = disc_offset_mm(smp["grid"].volume(truth), truth, pred)
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    return rows


def reference_region(image, mask, lab) -> np.ndarray:
    """Scored voxels of a slab (bool, slab grid): the fine crop placed on the **reference** L4-5 disc centre (for a
    patient whose levels cannot be derived: on the second-lowest disc, as :func:`fine_data.slab_sample` does).

    The region depends on the reference only, so every model is scored on the same voxels and a locator error
    shows as a lower Dice, not as a moved scoring window."""
    from spinemorph import spider


    centre = lab.disc_center_lps
    if centre is None:
        dlab, dids, _ = fd._components_by_height(np.asarray(mask.array) == spider.SLAB_DISC, 100)
        if not dids:
            raise SpineMorphError("slab has no disc component")
        centre = fd.label_center_lps(mask, dlab == dids[min(1, len(dids) - 1)])
    grid = fd.fine_crop_grid(centre)
    return _grid_region(image, grid.volume(np.zeros(grid.shape, np.uint8)))


def _grid_region(image, crop) -> np.ndarray:
    """Voxels of ``image``'s grid that lie inside the grid of the Volume ``crop`` (bool)."""
    from spinemorph.volume import resample_to_grid

    from .preprocess import _input_subgrid

    grid = fd.FineGrid(crop.origin_mm, crop.direction, crop.shape)
    inside = np.zeros(image.shape, bool)
    sub, (lo, hi) = _input_subgrid(image, grid)
    if sub is not None:
        ones = crop.with_array(np.ones(crop.shape, np.uint8))
        r = resample_to_grid(ones, sub.spacing_mm, sub.size_ijk, sub.origin_mm, sub.direction, "nearest").array
        inside[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]] = r.astype(bool)
    return inside


def evaluate_slabs(model, device="cpu", pred_dir: Path | None = None, patients=None,
                   l45_point: str | None = None, roi=None, locator_mode: str | None = None,
                   window: dict | None = None) -> list[dict]:
    """Held-out real slabs through :func:`segment_volume` (any model), scored on :func:`reference_region`.

    ``patients``: a subset of the held-out slab patients (default all). ``l45_point="reference"``: the crop is
    centred on the **reference** L4-5 disc centroid of the slab mask, as a reader's hand-placed point would be
    (``segment_volume(..., l45_point=...)``; fine models only; the coarse locator does not run). ``locator_mode``:
    the fine pipeline's locator (``segment_fine``; None: its default).

    ``pred_dir``: write each prediction as ``<patient>.nrrd`` (labels on the slab grid) and the region the model
    segmented (its fine crop, or the coarse window, on the slab grid) as ``region/<patient>.nrrd``, for
    ``scripts/dsca3d_slabs.py --pred-dir DIR --region-dir DIR/region``."""
    from spinemorph import spider
    from spinemorph.volume import write_volume

    from .segment3d import get_model, segment_volume

    loaded = get_model(model, device)
    canal = has_canal_class(loaded)
    rows = []
    held = spider.held_out_slab_patients()
    if patients:
        unknown = [p for p in patients if p not in held]
        if unknown:
            raise SpineMorphError(f"--patients: {', '.join(unknown)} not held-out slab patients ({', '.join(held)})")
    if l45_point not in (None, "reference"):
        raise SpineMorphError(f"--l45-point must be 'reference', got {l45_point!r}")
    for p in patients or held:
        image, mask = spider.load_slab(p)
        lab = fd.slab_labels(p, image, mask)
        point = None
        if l45_point == "reference":
            if lab.disc_center_lps is None:
                raise SpineMorphError(f"patient {p}: levels not derivable, no reference L4-5 disc for --l45-point")
            point = tuple(float(v) for v in lab.disc_center_lps)
        opts = {**({"roi": tuple(roi)} if roi and canal else {}), **((window or {}) if canal else {})}
        if locator_mode is not None and canal:
            opts["locator_mode"] = locator_mode
        res = segment_volume(image.with_array(image.array.astype(np.float32)), loaded, device, l45_point=point,
                             fine_options=opts)
        pred = np.asarray(res.labels.array)
        if pred_dir is not None:
            (pred_dir / "region").mkdir(parents=True, exist_ok=True)
            write_volume(res.labels, pred_dir / f"{p}.nrrd")
            write_volume(image.with_array(_grid_region(image, res.crop_labels).astype(np.uint8)),
                         pred_dir / "region" / f"{p}.nrrd")
        truth = fd.definite_labels(lab.bits)
        known = (truth != 255) & reference_region(image, mask, lab)
        row = {"case": p, "source": "slab-heldout", "identity": lab.identity, "total_s": res.timings_s["total"],
               "qc": "; ".join(res.qc), "locator": res.locator,
               "l45_centre_lps": list(res.l45_centre_lps) if res.l45_centre_lps is not None else None,
               "canal_threshold": res.canal_threshold}
        _score(row, truth, pred, known, canal)
        if lab.identity == "merged":  # levels not derived: per-level Dice undefined (not 0)
            row.update({FINE_CLASS_NAMES[c]: math.nan for c in (fd.L4, fd.DISC, fd.L5)})
        # merged classes as in the slab mask (every vertebra / disc), inside the scored region
        m = np.asarray(mask.array)
        row["vertebra (merged, L4+L5 rows)"] = _dice((m == spider.SLAB_VERTEBRA) & known & (truth > 0) & (truth < 4),
                                                     ((pred == 1) | (pred == 3)) & known & (truth > 0) & (truth < 4))
        row["disc_offset_mm"] = disc_offset_mm(image, np.where(known, truth, 0), pred)
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    return rows


#: a located L4-5 centre this far (mm, superior-inferior) from the reference disc is a level error (one level is
#: 30-40 mm)
LEVEL_ERROR_MM = 15.0


def study_patients(split: str) -> list[str]:
    """Slab patients of a split for the locator study: ``"train"`` (training and validation: rules are chosen on
    these), ``"held-out"`` or ``"all"``."""
    from spinemorph import spider

    if split == "train":
        return spider.train_slab_patients()
    if split == "held-out":
        return spider.held_out_slab_patients()
    if split == "all":
        return spider.list_slab_patients()
    raise SpineMorphError(f"split must be train, held-out or all, got {split!r}")


def locator_study(patients=None, count_model=None, level_model=None) -> list[dict]:
    """Level errors of the L4-5 locator on real slabs (``--locator-study``).

    For every slab patient whose levels can be derived (:func:`fine_data.slab_labels`; labelled by ``split``), the
    superior-inferior offset (mm, + = inferior) of the coarse locator's L4-5 centre from the reference disc centre
    (``disc_offset_mm``) and its level error (``level``: the offset in levels, 0 = right, + = low). With
    ``count_model`` (a fine model) also the **disc count** (:mod:`FORAMEN3DLib.locator`, the whole
    ``segment_volume`` path with ``locator_mode="count"``): ``count_offset_mm``, ``count_level``, the walk (each
    crop with its own ``offset_mm`` / ``level`` and its dural sac's end, ``sac_end_gap_mm``), whether it fell back
    to the coarse answer, and the QC notes. With ``level_model`` (:class:`level_locator.LevelModel`) also the level
    network's L4-5 on the planes around the coarse answer (``levels_offset_mm``, ``levels_level``, ``levels_order_ok``,
    ``levels_s``)."""
    from spinemorph import spider

    from .preprocess import preprocess_volume
    from .segment3d import DEFAULT_LOCATOR, locate_l45, segment_preprocessed, segment_volume

    def level(off: float) -> int:
        return 0 if abs(off) < LEVEL_ERROR_MM else int(np.sign(off)) * max(1, int(round(abs(off) / 35.0)))

    rows = []
    for p in patients or spider.list_slab_patients():
        image, mask = spider.load_slab(p)
        lab = fd.slab_labels(p, image, mask)
        if lab.disc_center_lps is None:
            continue
        img = image.with_array(image.array.astype(np.float32))
        prep = preprocess_volume(img)
        d = prep.crop.direction
        ref = np.asarray(lab.disc_center_lps)
        split = "held-out" if p in spider.HELD_OUT_SLAB_PATIENTS else "training/validation"

        def si_offset(lps, d=d, ref=ref) -> float:  # superior-inferior offset from the reference L4-5 (mm, + = low)
            return float((d.T @ (np.asarray(lps, float) - ref))[1])

        if count_model is None:
            padded, _, _ = segment_preprocessed(prep, DEFAULT_LOCATOR, "cpu", inverse=False)
            off = si_offset(locate_l45(prep, padded))
            row = {"case": p, "split": split, "identity": lab.identity, "disc_offset_mm": off, "level": level(off)}
        else:
            t0 = time.perf_counter()
            res = segment_volume(img, count_model, "cpu", fine_options={"locator_mode": "count"})
            det = res.locator_details or {}
            off, coff = si_offset(det["coarse_centre_lps"]), si_offset(res.l45_centre_lps)
            row = {"case": p, "split": split, "identity": lab.identity, "disc_offset_mm": off, "level": level(off),
                   "count_offset_mm": coff, "count_level": level(coff), "locator": res.locator,
                   "walk": [w["kind"] for w in det.get("walk", [])], "reason": det.get("reason"),
                   "walk_steps": [{**w, "offset_mm": round(si_offset(w["centre_lps"]), 1),
                                   "level": level(si_offset(w["centre_lps"]))} for w in det.get("walk", [])],
                   "qc": list(res.qc), "total_s": time.perf_counter() - t0}
        if level_model is not None:
            from .level_locator import locate_levels

            if count_model is not None:
                coarse = det["coarse_centre_lps"]
            else:
                coarse = locate_l45(prep, padded)
            t0 = time.perf_counter()
            lv = locate_levels(img, level_model, coarse)
            loff = si_offset(lv.centre_lps) if lv.centre_lps is not None else math.nan
            row.update({"levels_offset_mm": loff, "levels_level": level(loff) if np.isfinite(loff) else None,
                        "levels_order_ok": lv.order_ok, "levels_s": time.perf_counter() - t0})
        rows.append(row)
        print(json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    return rows


def sac_end_study(loaded, patients) -> list[dict]:
    """Where the fine model's dural sac ends in a crop on the reference L4-5 disc and in a crop on the lowest disc
    (L5-S1: one level low), as :func:`FORAMEN3DLib.segment3d.sac_end_gap_mm` (``--sac-end-study``; training
    patients: the level check's threshold is chosen on them)."""
    from spinemorph import spider
    from spinemorph.volume import resample_to_grid

    from .segment3d import fine_network_labels, postprocess_labels, sac_end_gap_mm

    rows = []
    for p in patients:
        image, mask = spider.load_slab(p)
        image = image.with_array(image.array.astype(np.float32))
        lab = fd.slab_labels(p, image, mask)
        if lab.disc_center_lps is None:
            continue
        dlab, dids, _ = fd._components_by_height(np.asarray(mask.array) == spider.SLAB_DISC,
                                                 int(200 / np.prod(mask.spacing_mm)))
        row = {"case": p, "split": "held-out" if p in spider.HELD_OUT_SLAB_PATIENTS else "training/validation"}
        for name, centre in (("reference", lab.disc_center_lps), ("one level low", fd.label_center_lps(mask, dlab == dids[0]))):
            grid = fd.fine_crop_grid(centre)
            img = resample_to_grid(image, grid.spacing_mm, grid.size_ijk, grid.origin_mm, grid.direction, "linear").array
            fov = resample_to_grid(image.with_array(np.ones(image.shape, np.uint8)), grid.spacing_mm, grid.size_ijk,
                                   grid.origin_mm, grid.direction, "nearest").array.astype(bool)
            raw = fine_network_labels(loaded, fd.normalise(img, fov))
            raw[~fov] = 0
            row[f"gap_{name}_mm"] = sac_end_gap_mm(postprocess_labels(raw, structures=(1, 2, 3, 4)), fov)
        rows.append(row)
        print(json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    return rows


def _nanmean(values) -> float:
    v = np.asarray(values, float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else math.nan


def summarize(rows: list[dict]) -> dict:
    out: dict = {}
    for src in sorted({r["source"] for r in rows}):
        sel = [r for r in rows if r["source"] == src]
        keys = [k for k in sel[0] if isinstance(sel[0][k], float) and not k.endswith(("_s", "_mm"))]
        out[src] = {k: _nanmean([r[k] for r in sel]) for k in keys}
        out[src]["n with levels"] = int(sum(np.isfinite(r.get("L4", math.nan)) for r in sel))
        offs = [abs(r["disc_offset_mm"]) for r in sel if np.isfinite(r.get("disc_offset_mm", math.nan))]
        out[src]["level mix-ups (|disc offset| > 15 mm)"] = int(sum(o > 15.0 for o in offs))
        bones = [out[src][n] for n in ("L4", "L4-5 disc", "L5") if n in out[src]]
        out[src]["mean L4/disc/L5"] = float(np.mean(bones)) if bones else math.nan
        out[src]["n"] = len(sel)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m FORAMEN3DLib.evaluate_fine", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--slabs", action="store_true")
    ap.add_argument("--synth", type=int, default=0)
    ap.add_argument("--synth-mode", choices=("network", "pipeline"), default=None,
                    help="network: the fine network alone on the crop (default for fine models); pipeline: the whole "
                         "segment_volume path (any model; the like-for-like comparison)")
    ap.add_argument("--pred-dir", type=Path, default=None,
                    help="with --slabs: write each slab prediction as <patient>.nrrd (for scripts/dsca3d_slabs.py)")
    ap.add_argument("--patients", default=None, metavar="P1,P2",
                    help="with --slabs: only these held-out slab patients (default all)")
    ap.add_argument("--l45-point", choices=("reference",), default=None,
                    help="with --slabs: centre the fine crop on the reference L4-5 disc centroid (a hand-placed point) "
                         "instead of the coarse locator's answer")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--roi", default=None, metavar="A,B,C",
                    help="sliding-window size of the fine network, array order (default: the model's infer_roi)")
    ap.add_argument("--backend", choices=("auto", "openvino", "onnx", "torch"), default="auto",
                    help="what runs the fine network's windows (pipeline mode; default: OpenVINO on a CPU where installed)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="the fine network's arithmetic (bf16: OpenVINO bfloat16 / torch autocast; pipeline mode)")
    ap.add_argument("--locator-study", action="store_true",
                    help="level errors of the coarse locator on every slab patient with derived levels")
    ap.add_argument("--count", action="store_true",
                    help="with --locator-study: also the disc count (locator_mode='count') through segment_volume")
    ap.add_argument("--levels", default=None, metavar="FILE",
                    help="with --locator-study: also the level network (level-locator weights; 'default' = embedded)")
    ap.add_argument("--locator", choices=LOCATOR_MODES, default=None,
                    help=f"with --slabs: the fine pipeline's L4-5 locator (default {DEFAULT_LOCATOR_MODE})")
    ap.add_argument("--split", choices=("train", "held-out", "all"), default="all",
                    help="with --locator-study: the slab patients studied (rules are chosen on train only)")
    ap.add_argument("--sac-end-study", default=None, metavar="P1,P2",
                    help="where the fine model's dural sac ends in crops on the reference and on the L5-S1 disc")
    a = ap.parse_args(argv)
    import torch

    from . import models3d

    torch.set_num_threads(a.threads)
    window = {"backend": a.backend, "precision": a.precision}
    try:
        roi = [int(v) for v in a.roi.split(",")] if a.roi else None
    except ValueError:
        print(f"error: --roi needs three integers, got {a.roi!r}", file=sys.stderr)
        return 1
    try:
        if roi is not None and (len(roi) != 3 or min(roi) < 16):
            raise SpineMorphError(f"--roi needs three sizes of at least 16 voxels, got {a.roi!r}")
        loaded = models3d.load_model(a.model, "cpu")
        div = int(getattr(loaded.network.config, "size_divisor", 1))
        if roi is not None and any(r % div for r in roi):
            raise SpineMorphError(f"--roi {a.roi}: every size must be a multiple of {div} for this network")
        rows = []
        if a.synth:
            mode = a.synth_mode or ("network" if has_canal_class(loaded) else "pipeline")
            rows += evaluate_synth(loaded, a.synth, mode=mode, roi=roi, window=window)
        if a.slabs:
            pts = [p.strip() for p in a.patients.split(",") if p.strip()] if a.patients else None
            rows += evaluate_slabs(loaded, pred_dir=a.pred_dir, patients=pts, l45_point=a.l45_point, roi=roi,
                                   locator_mode=a.locator, window=window)
        studies = {}
        if a.locator_study:
            lvm = None
            if a.levels:
                from .level_locator import load_level_model

                lvm = load_level_model(None if a.levels == "default" else a.levels)
            studies["locator"] = locator_study(study_patients(a.split), loaded if a.count else None, lvm)
            lr = studies["locator"]
            studies["locator_summary"] = {"n": len(lr), "coarse level errors": [r["case"] for r in lr if r["level"]]}
            if lvm is not None:
                studies["locator_summary"]["level-network level errors"] = [r["case"] for r in lr if r["levels_level"] != 0]
            if a.count:
                studies["locator_summary"]["count level errors"] = [r["case"] for r in lr if r["count_level"]]
            print(json.dumps(studies["locator_summary"]))
        if a.sac_end_study:
            studies["sac_end"] = sac_end_study(loaded, [p.strip() for p in a.sac_end_study.split(",") if p.strip()])
    except SpineMorphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows) if rows else {}
    atomic_write_text(out / "metrics.json", json.dumps({"model": str(a.model), "meta": loaded.meta, "roi": roi, "window": window,
                                                        "summary": summary,
                                                        "rows": rows, "studies": studies}, indent=2, default=str))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
