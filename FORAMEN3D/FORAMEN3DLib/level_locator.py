"""Level-naming L4-5 locator: a 2D network on the mid-sagittal planes of the whole field of view that names L5, L4,
the L4-5 and L5-S1 discs and the higher levels (:mod:`FORAMEN3DLib.level_data` for the grid, the classes and the
training labels; ``python -m FORAMEN3DLib.train_levels`` trains it).

:func:`locate_levels` gives the L4-5 disc centre (``locator_mode="levels"`` of
:func:`FORAMEN3DLib.segment3d.segment_fine`): the class probabilities of the :data:`~level_data.N_PLANES` planes
around the spine's midline are averaged, and the L4-5 disc is the largest connected region where the L4-5 disc
class wins. It is checked by order against the other levels the network names (L4 above it, L5 and the L5-S1 disc
below it); a disc that is missing or out of order is reported, never silently used.

Weights file (``torch.save`` dictionary, loaded with ``weights_only=True``)::

    {"format": "spinemorph-foramen3d-levels", "format_version": 1, "network": {monai UNet arguments},
     "classes": [...], "spacing_mm": 2.0, "state_dict": {...}, "meta": {...}}
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
from scipy import ndimage

from spinemorph.errors import ModelError
from spinemorph.volume import Volume

from . import level_data as ld
from .fine_data import SlabLabels

FORMAT = "spinemorph-foramen3d-levels"
FORMAT_VERSION = 1
#: embedded weights (absent until trained and reviewed; :func:`load_level_model` then says so)
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "Resources" / "Models" / "foramen3d_levels.pt"
#: MONAI UNet arguments of the level network (5 poolings: a receptive field over the whole lumbar spine at 2 mm)
NETWORK = {"spatial_dims": 2, "in_channels": 1, "out_channels": ld.N_CLASSES, "channels": (16, 32, 64, 128, 256, 256),
           "strides": (2, 2, 2, 2, 2), "num_res_units": 1, "norm": "instance"}
#: the L4-5 disc region must hold at least this much area on the plane-averaged decision (mm²). A design choice, not a
#: literature value: a mid-sagittal lumbar disc section is several hundred mm² (about 35 mm deep × 8-12 mm high), so
#: 40 mm² (10 pixels of 2 mm) only rejects specks (training patient 50, a slab off the midline at L4-L5, got no L4-5
#: disc from the network); the crop then stays on the coarse answer with a QC note
MIN_DISC_AREA_MM2 = 40.0


def build_network(config: dict | None = None):
    from monai.networks.nets import UNet

    cfg = dict(NETWORK if config is None else config)
    cfg["channels"], cfg["strides"] = tuple(cfg["channels"]), tuple(cfg["strides"])
    return UNet(**cfg)


@dataclasses.dataclass(eq=False)
class LevelModel:
    network: object
    meta: dict
    path: Path | None
    device: object


def save_level_model(network, path, meta: dict, half: bool = True) -> None:
    import torch

    from spinemorph.atomic import atomic_path

    sd = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
          for k, v in network.state_dict().items()}
    obj = {"format": FORMAT, "format_version": FORMAT_VERSION,
           "network": {k: list(v) if isinstance(v, tuple) else v for k, v in NETWORK.items()},
           "classes": list(ld.CLASS_NAMES), "spacing_mm": ld.LEVEL_SPACING_MM, "state_dict": sd, "meta": meta}
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_level_model(path=None, device="cpu") -> LevelModel:
    """Load level-locator weights (default: the embedded :data:`DEFAULT_WEIGHTS`). Raises :class:`ModelError` with
    one line for a missing, unreadable or foreign file."""
    import torch

    p = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not p.is_file():
        raise ModelError(f"level-locator weights not found: {p} (train them with python -m FORAMEN3DLib.train_levels)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one ModelError
        raise ModelError(f"cannot read level-locator weights {p}: {e}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ModelError(f"{p} is not a level-locator weights file (format {FORMAT!r})")
    net = build_network(obj["network"])
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in obj["state_dict"].items()})
    except RuntimeError as e:
        raise ModelError(f"level-locator weights {p} do not fit their network: {str(e).splitlines()[0]}") from None
    net.eval().to(device)
    return LevelModel(net, dict(obj.get("meta", {})), p, torch.device(device))


@functools.lru_cache(maxsize=2)
def _cached(path: str, mtime_ns: int, device: str) -> LevelModel:
    return load_level_model(path, device)


def get_level_model(device="cpu", path=None) -> LevelModel:
    """:func:`load_level_model`, loaded once per file (path and modification time) and device."""
    p = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not p.is_file():
        return load_level_model(p, device)  # the one clear error
    return _cached(str(p), p.stat().st_mtime_ns, str(device))


def predict_planes(model: LevelModel, x: np.ndarray, batch: int = 8) -> np.ndarray:
    """Softmax ``(k, C, H, W)`` float32 of planes ``x`` ``(k, H, W)`` (rows / columns padded, :func:`level_data.pad_planes`)."""
    import torch

    out = []
    with torch.inference_mode():
        for s in range(0, len(x), batch):
            t = torch.from_numpy(np.ascontiguousarray(x[s : s + batch, None], np.float32)).to(model.device)
            out.append(torch.softmax(model.network(t).float(), 1).cpu().numpy())
    return np.concatenate(out, 0)


@dataclasses.dataclass
class LevelResult:
    """What :func:`locate_levels` found: the L4-5 disc centre (LPS; None when not found), a one-line account, the
    superior-inferior centre of every named level on the planes (mm along the grid's rows from the L4-5 disc, +
    = inferior; None when absent) and whether their order is anatomical."""

    centre_lps: np.ndarray | None
    reason: str
    level_rows_mm: dict
    order_ok: bool

    def details(self) -> dict:
        return {"mode": "levels", "reason": self.reason, "order_ok": bool(self.order_ok),
                "levels_mm_from_l45": {k: (None if v is None else round(float(v), 1)) for k, v in self.level_rows_mm.items()},
                "centre_lps": None if self.centre_lps is None else [round(float(v), 3) for v in self.centre_lps]}


def decide(probs: np.ndarray, fov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Averaged class probabilities of the imaged planes ``(C, H, W)`` and their argmax."""
    imaged = fov.reshape(len(fov), -1).any(1)
    if not imaged.any():
        imaged[:] = True
    mean = probs[imaged].mean(0)
    return mean, mean.argmax(0)


def locate_from_probabilities(probs: np.ndarray, fov: np.ndarray, grid: ld.LevelGrid) -> LevelResult:
    """The L4-5 disc centre from per-plane softmax ``(k, C, H, W)`` (see the module docstring)."""
    mean, lab = decide(probs, fov)
    px_mm2 = ld.LEVEL_SPACING_MM**2
    comp, n = ndimage.label(lab == ld.DISC_L45)
    if n == 0:
        return LevelResult(None, "the level network found no L4-5 disc on the mid-sagittal planes", {}, False)
    sizes = ndimage.sum(np.ones_like(comp), comp, index=np.arange(1, n + 1))
    best = int(np.argmax(sizes)) + 1
    if sizes[best - 1] * px_mm2 < MIN_DISC_AREA_MM2:
        return LevelResult(None, f"the L4-5 disc found is too small ({sizes[best - 1] * px_mm2:.0f} mm² on the "
                                 f"mid-sagittal planes; at least {MIN_DISC_AREA_MM2:.0f})", {}, False)
    region = comp == best
    w = mean[ld.DISC_L45] * region
    jj, ii = np.indices(region.shape)
    j, i = float((jj * w).sum() / w.sum()), float((ii * w).sum() / w.sum())
    k = (grid.size_ijk[2] - 1) / 2.0  # the middle plane: the spine's midline
    centre = grid.volume(np.zeros((grid.size_ijk[2], *region.shape), np.uint8)).index_to_lps((i, j, k))
    rows = {}
    for c, name in ((ld.L4, "L4"), (ld.L5, "L5"), (ld.DISC_L5S1, "L5-S1 disc")):
        sel = lab == c
        rows[name] = None if sel.sum() * px_mm2 < MIN_DISC_AREA_MM2 else float((jj[sel].mean() - j) * ld.LEVEL_SPACING_MM)
    present = {k2: v for k2, v in rows.items() if v is not None}
    order_ok = (present.get("L4", -1.0) < 0) and all(v > 0 for n2, v in present.items() if n2 != "L4")
    why = "L4-5 = the disc the level network names on the mid-sagittal planes of the whole field of view"
    if not order_ok:
        why += " (its neighbours are out of order: " + ", ".join(f"{a} {b:+.0f} mm" for a, b in present.items()) + ")"
    return LevelResult(np.asarray(centre, float), why, rows, order_ok)


def locate_levels(image, model: LevelModel, lr_centre_lps) -> LevelResult:
    """L4-5 disc centre of ``image`` (a :class:`~spinemorph.volume.Volume`) on the planes around the left-right
    position of ``lr_centre_lps`` (the coarse locator's L4-5: the spine's midline)."""
    grid = ld.level_grid(image, lr_centre_lps)
    img = image if np.issubdtype(image.array.dtype, np.floating) else image.with_array(image.array.astype(np.float32))
    x, fov = ld.level_input(img, grid)
    return locate_from_probabilities(predict_planes(model, x), fov, grid)


def slab_labels_from_levels(image: Volume, mask: Volume, level_model) -> SlabLabels | None:
    """L4 / L4-5 disc / L5 of a slab mask named by the **level network** (training data only, never a reference).

    Each vertebral-body component (26-connected, ≥ 2 cm³, within 2 voxels of a disc) and disc component (≥ 0.2 cm³)
    takes the majority class (more than half of its non-background votes) of the level network's averaged
    prediction on the level grid through the slab (planes on the slab's left-right centre). Accepted only when
    exactly one disc is named L4-5, at least one body each L4 and L5, no named body spans two vertebrae
    (:data:`FORAMEN3DLib.fine_data.MAX_BODY_SPAN_MM`) and L4 lies above the disc above L5; else None. Unnamed components keep the merged
    classes. Checked by ``scripts/slab_identity_study.py``: on the 18 slabs whose levels are also derived from the
    mask (6 of them the level network's validation patients) every named voxel agrees; of the 7 merged training
    slabs it names 7, 55 and 177 and refuses 45, 78, 152 and 234 (``docs/figures/slab_identity.png``)."""
    from spinemorph import spider

    from .fine_data import (
        BG,
        CANAL,
        DISC,
        L4,
        L5,
        MAX_BODY_SPAN_MM,
        MERGED_DISC,
        MERGED_VERTEBRA,
        label_center_lps,
        slab_components,
    )

    m = np.asarray(mask.array)
    vert, disc = m == spider.SLAB_VERTEBRA, m == spider.SLAB_DISC
    centre = image.index_to_lps((np.asarray(image.size_ijk, float) - 1) / 2.0)
    n_planes = max(1, int(np.floor(image.size_ijk[2] * image.spacing_mm[2] / ld.LEVEL_SPACING_MM)))
    grid = ld.level_grid(image, centre, n_planes)
    x, fov = ld.level_input(image.with_array(np.asarray(image.array, np.float32)), grid)
    lab = decide(predict_planes(level_model, x), fov)[1]
    vlab, _, _, dlab, dids, _, bodies = slab_components(mask)
    level_vol = grid.volume(np.zeros((1, 1, 1), np.uint8))  # the level grid's index <-> LPS map
    named: dict[int, list] = {L4: [], L5: [], DISC: []}
    for comps, labmap, allowed in ((bodies, vlab, {ld.L4: L4, ld.L5: L5}), (dids, dlab, {ld.DISC_L45: DISC})):
        for c in comps:
            idx = np.argwhere(labmap == c)  # (k, j, i)
            g = np.rint(level_vol.lps_to_index(mask.index_to_lps(idx[:, ::-1]))).astype(int)  # level grid (i, j, k)
            ok = (g[:, 1] >= 0) & (g[:, 1] < lab.shape[0]) & (g[:, 0] >= 0) & (g[:, 0] < lab.shape[1])
            votes = np.bincount(lab[g[ok, 1], g[ok, 0]].astype(int), minlength=ld.N_CLASSES)
            votes[0] = 0
            win = int(np.argmax(votes))
            if votes.sum() == 0 or win not in allowed or votes[win] <= 0.5 * votes.sum():
                continue
            if allowed[win] != DISC and np.ptp(idx[:, 1]) * mask.spacing_mm[1] >= MAX_BODY_SPAN_MM:
                return None
            named[allowed[win]].append((c, float(idx[:, 1].mean())))
    if len(named[DISC]) != 1 or not named[L4] or not named[L5]:
        return None
    d_row = named[DISC][0][1]  # array rows run superior -> inferior
    if not (max(r for _, r in named[L4]) < d_row < min(r for _, r in named[L5])):
        return None
    bits = np.full(m.shape, 1 << BG, np.uint8)
    bits[m == spider.SLAB_CANAL] = 1 << CANAL
    bits[vert] = MERGED_VERTEBRA
    bits[disc] = MERGED_DISC
    for cls, labmap in ((L4, vlab), (L5, vlab), (DISC, dlab)):
        for c, _ in named[cls]:
            bits[labmap == c] = 1 << cls
    return SlabLabels(bits, label_center_lps(mask, dlab == named[DISC][0][0]), "level-network",
                      f"{len(named[L4])} L4 / {len(named[L5])} L5 body and 1 disc component named by the level network")


def require_monai() -> None:
    try:
        import monai  # noqa: F401
    except ImportError:
        raise ModelError("the level locator needs MONAI (pip install monai)") from None
