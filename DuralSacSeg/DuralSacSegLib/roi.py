"""Canal-centred crop inference: run the 2D network on a square window around the dural sac (issue 8).

The dural sac covers well under 5 % of a 320 × 320 axial slice, yet a fully convolutional network spends the same
work on every pixel. :func:`predict_stack` therefore

1. **locates** the canal: the network runs on the whole 320 × 320 slice for ``n_locate`` slices spread over the
   stack (at the fractions (i + ½) / n_locate of the slices with image data; by default 3, or one per
   :data:`LOCATE_EVERY_N_SLICES` slices in longer stacks); on each, the centre is the
   probability-weighted centroid of the thickest connected component of ``probability >= threshold``
   (:func:`canal_centre_px`). A located centre more than ``crop_px / 4`` away from the median of itself and its two
   neighbours along the stack is discarded as a stray (a false positive of a weak model);
2. **crops**: every other slice runs on a ``crop_px`` × ``crop_px`` window of the *normalised 320 × 320 slice* (same
   pixels, same pixel size, no resampling) centred on the canal centre interpolated linearly along the stack
   (nearest located slice beyond the first / last one), shifted to stay inside the slice;
3. **checks** every cropped result: if the canal (the thickest component of its mask) comes within ``margin_px`` of a
   window edge that is not the slice edge, the window was misplaced and that slice is run again whole, with its window
   re-centred on the canal found there.

Every slice's result is **limited to its window** (probability 0 outside, the located and re-run slices included),
so the segmentation is defined the same way on every slice: the network's prediction within
``crop_px`` × network pixel (88 mm at the usual 0.6875 mm) around the canal. False positives of a weak model far from
the canal (e.g. fat under the skin) are thereby excluded, which changes the DSCA of such slices compared with
whole-slice inference. Slices are run whole and kept whole when no canal was found on any located slice, or when the
stack has too few slices for cropping to pay.

With ``crop_px = 128`` a cropped slice costs 1/6.25 of a whole one. The network sees less context around the sac, so
the probabilities are not bit-identical to whole-slice inference (and false positives far from the canal are not
produced at all): ``scripts/roi_agreement.py`` measures the difference on held-out data (``docs/performance.md``).
``crop_px=None`` runs every slice whole (the source method's inference).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from spinemorph.errors import InputError, SpineMorphError

# The settings below are design choices of this project, not values from the source method or the literature.
# DEFAULT_CROP_PX is the crop size the embedded models were trained on (configs/budget_cpu.json). LOCATE_EVERY_N_SLICES
# and the stray rule (STRAY_FRACTION_OF_CROP) were added after looking at why slices of one held-out SPIDER stack
# (166_t2, synthesised) were re-run whole; docs/performance.md says so next to the figures they affect.
#: side of the crop window (pixels of the 320 × 320 network grid); a multiple of 16 (four 2× poolings)
DEFAULT_CROP_PX = 128
#: slices run whole to locate the canal
DEFAULT_N_LOCATE = 3
#: in longer stacks, one located slice per this many slices
LOCATE_EVERY_N_SLICES = 8
#: a located centre farther than this fraction of the crop side from its neighbours' median is dropped as a stray
STRAY_FRACTION_OF_CROP = 0.25
#: a cropped mask this close (pixels) to an inner window edge sends the slice back to whole-slice inference
DEFAULT_MARGIN_PX = 8
#: every network input size must be a multiple of this (2**4 for the four poolings of the 2D networks)
SIZE_DIVISOR = 16

Predict = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class RoiReport:
    """How :func:`predict_stack` ran each slice.

    Attributes
    ----------
    crop_px : int or None
        Window side (None: every slice whole).
    located : list of int
        Slices run whole to locate the canal.
    cropped : list of int
        Slices whose result comes from the window.
    rerun_whole : list of int
        Cropped slices whose mask reached an inner window edge and were run again whole.
    unused_located : list of int
        Located slices that gave no centre (no canal found, or a stray centre dropped).
    windows_px : dict
        Slice → (row, column) of the window's top-left pixel on the network grid.
    """

    crop_px: int | None
    located: list[int] = dataclasses.field(default_factory=list)
    cropped: list[int] = dataclasses.field(default_factory=list)
    rerun_whole: list[int] = dataclasses.field(default_factory=list)
    unused_located: list[int] = dataclasses.field(default_factory=list)
    windows_px: dict[int, tuple[int, int]] = dataclasses.field(default_factory=dict)

    @property
    def n_network_pixels(self) -> int:
        """Network input pixels actually processed, for a 320 × 320 grid (work measure)."""
        whole = (len(self.located) + len(self.rerun_whole)) * 320 * 320
        return whole + len(self.cropped) * (self.crop_px or 0) ** 2

    def to_dict(self) -> dict:
        return {
            "crop_px": self.crop_px,
            "located_slices": list(self.located),
            "cropped_slices": [k for k in self.cropped if k not in self.rerun_whole],
            "rerun_whole_slices": list(self.rerun_whole),
            "located_without_usable_centre": list(self.unused_located),
        }


def validate_crop_px(crop_px: int | None, size: int) -> int | None:
    """Check a crop side for a ``size`` × ``size`` grid; returns it (None = no cropping)."""
    if crop_px is None:
        return None
    if isinstance(crop_px, bool) or not isinstance(crop_px, (int, np.integer)):
        raise InputError(f"crop size must be a whole number of pixels, got {crop_px!r}")
    c = int(crop_px)
    if c <= 0 or c % SIZE_DIVISOR:
        raise InputError(f"crop size must be a positive multiple of {SIZE_DIVISOR} pixels, got {c}")
    if c > size:
        raise InputError(f"crop size {c} px is larger than the {size} × {size} network grid")
    return c


def thickest_component(mask: np.ndarray) -> np.ndarray:
    """The connected component of ``mask`` holding the largest Euclidean distance to the background (bool array)."""
    m = np.asarray(mask, dtype=bool)
    lab, n = ndimage.label(m)
    if n <= 1:
        return m
    depth = ndimage.distance_transform_edt(m)
    return lab == int(lab.flat[int(np.argmax(depth))])


def canal_centre_px(prob: np.ndarray, threshold: float) -> tuple[float, float] | None:
    """(row, column) centroid, weighted by probability, of the *thickest* component of ``prob >= threshold``.

    The thickest component (the one holding the largest Euclidean distance to the background) is taken rather than
    the largest: the dural sac is a compact blob, while false positives of a weak model tend to be thin bands (fat
    under the skin, vessel walls) that can hold more pixels. Returns None when nothing reaches the threshold.
    """
    p = np.asarray(prob, dtype=np.float32)
    fg = thickest_component(p >= threshold)
    if not fg.any():
        return None
    rr, cc = np.nonzero(fg)
    w = p[rr, cc].astype(np.float64)
    return float(np.average(rr, weights=w)), float(np.average(cc, weights=w))


def window_origin(centre: tuple[float, float], crop_px: int, size: int) -> tuple[int, int]:
    """Top-left (row, column) of a ``crop_px`` window centred on ``centre``, kept inside a ``size`` grid."""
    out = []
    for c in centre:
        o = int(round(c - (crop_px - 1) / 2.0))
        out.append(min(max(o, 0), size - crop_px))
    return out[0], out[1]


def canal_reaches_inner_edge(mask: np.ndarray, origin: tuple[int, int], size: int, margin_px: int) -> bool:
    """True if the canal (thickest component) of ``mask`` (a window) lies within ``margin_px`` of a window edge that
    is not the grid's edge."""
    m = thickest_component(mask)
    if not m.any():
        return False
    c = m.shape[0]
    r0, c0 = origin
    g = max(1, int(margin_px))
    if r0 > 0 and m[:g].any():
        return True
    if r0 + c < size and m[-g:].any():
        return True
    if c0 > 0 and m[:, :g].any():
        return True
    return bool(c0 + c < size and m[:, -g:].any())


def locate_slices(todo: Sequence[int], n_locate: int) -> list[int]:
    """Slices (from ``todo``, in order) at the fractions (i + ½) / n_locate of the list."""
    n = len(todo)
    if n == 0:
        return []
    picks = sorted({min(n - 1, int(math.floor((i + 0.5) * n / n_locate))) for i in range(max(1, int(n_locate)))})
    return [todo[i] for i in picks]


def drop_stray_centres(centres: dict[int, tuple[float, float]], max_px: float) -> dict[int, tuple[float, float]]:
    """Drop centres farther than ``max_px`` from the median of themselves and their neighbours (in slice order).

    With fewer than three centres nothing is dropped (no majority to judge by).
    """
    ks = sorted(centres)
    if len(ks) < 3:
        return dict(centres)
    pts = np.array([centres[k] for k in ks], dtype=float)
    keep = {}
    for i, k in enumerate(ks):
        lo, hi = max(0, i - 1), min(len(ks), i + 2)
        if hi - lo < 3:  # the ends: judge by the three nearest
            lo, hi = (0, 3) if i == 0 else (len(ks) - 3, len(ks))
        med = np.median(pts[lo:hi], axis=0)
        if float(np.hypot(*(pts[i] - med))) <= max_px:
            keep[k] = centres[k]
    return keep


def interpolate_centres(known: dict[int, tuple[float, float]], slices: Sequence[int]) -> dict[int, tuple[float, float]]:
    """Linear interpolation of the known centres along the slice index (constant beyond the ends)."""
    ks = sorted(known)
    rows = [known[k][0] for k in ks]
    cols = [known[k][1] for k in ks]
    return {int(k): (float(np.interp(k, ks, rows)), float(np.interp(k, ks, cols))) for k in slices}


def predict_stack(
    predict: Predict,
    slices: np.ndarray,
    threshold: float,
    *,
    todo: Sequence[int] | None = None,
    crop_px: int | None = DEFAULT_CROP_PX,
    n_locate: int | None = None,
    margin_px: int = DEFAULT_MARGIN_PX,
    batch_size: int = 8,
    progress: Callable[[float, str], None] | None = None,
    check_cancel: Callable[[], None] | None = None,
) -> tuple[np.ndarray, RoiReport]:
    """Probabilities of a stack of normalised network slices, whole or canal-centred (module docstring).

    Parameters
    ----------
    predict : callable
        ``predict(batch (N, 1, H, W) float32) -> probabilities (N, 1, H, W)``; must accept both the whole grid and
        ``crop_px`` windows when cropping.
    slices : ndarray, (K, S, S)
        Normalised slices on the square network grid.
    threshold : float
        Probability threshold of the mask (for locating and for the edge check).
    todo : sequence of int, optional
        Slices to run (default all); the others stay 0.
    crop_px : int or None
        Window side; None runs every slice whole.
    n_locate : int, optional
        Slices run whole to locate the canal (default: max(3, ⌈slices / 8⌉)).
    margin_px : int
        See the module docstring.
    batch_size : int
        Slices per ``predict`` call.
    progress : callable, optional
        ``progress(fraction 0..1, message)`` after every call.
    check_cancel : callable, optional
        Called before every ``predict`` call (raises to cancel).

    Returns
    -------
    prob : ndarray, (K, S, S) float32
    report : RoiReport
    """
    arr = np.asarray(slices, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise InputError(f"slices must be a (K, S, S) stack, got shape {arr.shape}")
    nk, size = arr.shape[0], arr.shape[1]
    crop = validate_crop_px(crop_px, size)
    todo = list(range(nk)) if todo is None else [int(k) for k in todo]
    bs = max(1, int(batch_size))
    prob = np.zeros(arr.shape, dtype=np.float32)
    if n_locate is None:
        n_locate = max(DEFAULT_N_LOCATE, math.ceil(len(todo) / LOCATE_EVERY_N_SLICES))
    if crop is not None and (crop >= size or len(todo) <= int(n_locate) + 1):
        crop = None  # nothing to gain
    report = RoiReport(crop_px=crop)
    total_px = max(1, len(todo) * size * size)
    done_px = [0]

    def run(ks: list[int], windows: dict[int, tuple[int, int]] | None) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        for b in range(0, len(ks), bs):
            if check_cancel is not None:
                check_cancel()
            part = ks[b: b + bs]
            if windows is None:
                batch = arr[part]
            else:
                batch = np.stack([arr[k, r: r + crop, c: c + crop] for k in part for r, c in [windows[k]]])
            side = batch.shape[-1]
            p = _checked(predict(np.ascontiguousarray(batch[:, None])), len(part), side)
            for i, k in enumerate(part):
                out[k] = p[i, 0]
            done_px[0] += len(part) * side * side
            if progress is not None:
                progress(min(1.0, done_px[0] / total_px), f"segmented {len(out)} slices ({'whole' if windows is None else f'{side}-pixel window'})")
        return out

    if crop is None:
        for k, p in run(todo, None).items():
            prob[k] = p
        return prob, report

    located = locate_slices(todo, n_locate)
    report.located = located
    whole: dict[int, np.ndarray] = run(located, None)
    found = {k: c for k, p in whole.items() if (c := canal_centre_px(p, threshold)) is not None}
    centres = drop_stray_centres(found, STRAY_FRACTION_OF_CROP * crop)
    report.unused_located = sorted(set(located) - set(centres))
    rest = [k for k in todo if k not in set(located)]
    if not centres:  # no canal on any located slice: nothing to centre on, every slice whole
        report.crop_px = None
        report.rerun_whole = list(rest)
        whole.update(run(rest, None))
        for k, p in whole.items():
            prob[k] = p
        return prob, report
    total_px = (len(located) * size * size) + len(rest) * crop * crop
    windows = {k: window_origin(c, crop, size) for k, c in interpolate_centres(centres, todo).items()}
    windows.update({k: window_origin(c, crop, size) for k, c in centres.items()})
    report.cropped = list(rest)
    again = []
    for k, p in run(rest, windows).items():
        r, c = windows[k]
        if canal_reaches_inner_edge(p >= threshold, (r, c), size, margin_px):
            again.append(k)
            continue
        prob[k, r: r + crop, c: c + crop] = p
    if again:
        report.rerun_whole = again
        total_px += len(again) * size * size
        redo = run(again, None)
        for k, p in redo.items():
            c = canal_centre_px(p, threshold)
            if c is not None:
                windows[k] = window_origin(c, crop, size)
        whole.update(redo)
    for k, p in whole.items():  # located and re-run slices: limited to their window like the others
        r, c = windows[k]
        prob[k, r: r + crop, c: c + crop] = p[r: r + crop, c: c + crop]
    report.windows_px = {int(k): (int(r), int(c)) for k, (r, c) in windows.items()}
    return prob, report


def _checked(prob, n: int, size: int) -> np.ndarray:
    p = np.asarray(prob, dtype=np.float32)
    if p.shape == (n, size, size):
        p = p[:, None]
    if p.shape != (n, 1, size, size):
        raise SpineMorphError(f"the predictor returned shape {p.shape}, expected ({n}, 1, {size}, {size})")
    if not np.all(np.isfinite(p)):
        raise SpineMorphError("the predictor returned NaN or infinite probabilities; the model is unusable on this input")
    return np.clip(p, 0.0, 1.0)
