"""Post-processing of dural sac masks: keep the canal's component, fill holes.

A dural sac cross-section is one solid region: a network mask with several pieces holds at most one sac (the rest are
false positives: CSF-bright cysts, bowel, fluid in a facet joint ...) and a hole inside the sac is a dark nerve root or
flow void, never "no sac". The operations:

- ``"largest2d"``: per slice, keep only the largest 8-connected component;
- ``"track"``: the canal track is the 3D component (26-connected across neighbouring slices of a stack) with the
  largest volume — the canal runs through the whole stack, a stray blob does not. Other 3D components are kept when
  they continue that track: every slice of theirs has its centre within one sac diameter (the equivalent diameter of
  the track's mean cross-section) of the straight line fitted through the track's slice centres. That keeps the sac
  on the far side of a tight stenosis, where a thin mask can break the 3D connection (the phantom study's central
  stenosis lost every slice below it without this rule). Then, per slice, the largest 2D piece. Slices whose only
  foreground lies off the track become empty. On a single slice this equals ``"largest2d"``.
  **Gap bridging** (only where the probabilities are given: :func:`postprocess_probabilities`, or
  ``postprocess_masks(..., prob=...)``): a slice left empty *between* two slices of the track holds the sac - the
  dural sac runs without a break from the conus to S2, and a slice between two sac slices cannot be "no sac". The
  network's mask breaks where the sac is tightest (the phantom study's central stenosis: 79 and 95 mm2 left empty at
  the decision threshold 20/21, with mean probabilities 0.39 and 0.80 inside the sac). Such a slice is thresholded
  again at :data:`BRIDGE_THRESHOLD` and keeps the one 2D piece whose centre lies nearest the sac's expected centre
  (interpolated between the nearest track slices above and below), within one sac diameter of those slices, cut to the
  union of those two slices' masks (a gap is where the sac is tightest: the bridged outline is never wider than the sac
  around it; without this cut a piece at p >= 0.5 took 375-410 mm2 of epidural fat on the phantom's 79 mm2 stenosis,
  2026-12-08); their indices are returned (``bridged=[]``) so that the DSCA table flags them (``bridged_gap``: area listed,
  not graded - a reader confirms the outline). Empty slices at the ends of the track are never filled (the sac does
  end);
- ``fill_holes``: fill enclosed holes per slice (``scipy.ndimage.binary_fill_holes``).

Whether any of it is used is decided on a validation split of *training* patients
(``scripts/dsca_calibrate.py``), never on held-out patients; the chosen spec is stored per model in the catalogue
(``postprocess``) and applied by :func:`DuralSacSegLib.segment.segment_volume`. A spec is a string: ``"none"``,
``"largest2d"``, ``"track"``, optionally followed by ``"+fill"`` (e.g. ``"track+fill"``), or just ``"fill"``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from spinemorph.errors import InputError
from spinemorph.masks import largest_component

#: threshold of gap bridging (see the module doc). Design choice, fixed from the loss and not fitted to any data: 0.5
#: is the network's odds-neutral output; with the weighted BCE of the real-image models (positive weight 20, decision
#: threshold 20/21 = odds 20) it accepts pixels rated 20 times less likely than the decision asks, which is acceptable
#: only because the slice is known to contain the sac and only the piece on the track's line is kept.
BRIDGE_THRESHOLD = 0.5

#: component modes of a post-processing spec
MODES = ("none", "largest2d", "track")
#: every valid spec (mode, optionally "+fill")
SPECS = ("none", "fill", "largest2d", "largest2d+fill", "track", "track+fill")

def parse_spec(spec: str | None) -> tuple[str, bool]:
    """``(mode, fill_holes)`` of a spec string; None → ``("none", False)``. Raises :class:`InputError` otherwise."""
    if spec is None:
        return "none", False
    text = str(spec).strip().lower()
    if text not in SPECS:
        raise InputError(f"unknown post-processing {spec!r}; use one of {', '.join(SPECS)}")
    if text == "fill":
        return "none", True
    mode, _, fill = text.partition("+")
    return mode, fill == "fill"


def postprocess_masks(masks: np.ndarray, spec: str | None, prob: np.ndarray | None = None,
                      bridge_threshold: float = BRIDGE_THRESHOLD, bridged: list | None = None) -> np.ndarray:
    """Apply a post-processing spec to a binary stack ``(K, rows, cols)`` (or one slice ``(rows, cols)``).

    Slices are neighbours along axis 0 (the stack must be ordered by position). Returns a bool array of the same shape.
    With ``prob`` (the probabilities the masks were thresholded from, same shape) the ``"track"`` mode also bridges
    empty slices inside the track at ``bridge_threshold`` (module doc); their indices are appended to ``bridged``
    when a list is given.
    """
    mode, fill = parse_spec(spec)
    m = np.asarray(masks).astype(bool)
    single = m.ndim == 2
    if single:
        m = m[None]
    if m.ndim != 3:
        raise InputError(f"masks must be 2D or 3D (slices, rows, cols), got shape {np.shape(masks)}")
    if (mode == "none" and not fill) or not m.any():
        return m[0] if single else m
    out = m.copy()
    if mode == "track":
        out = _canal_track(out)
        if prob is not None and not single:
            p = np.asarray(prob)
            if p.shape != m.shape:
                raise InputError(f"probabilities {p.shape} and masks {m.shape} differ in shape")
            out, ks = _bridge_gaps(out, p, float(bridge_threshold))
            if bridged is not None:
                bridged.extend(ks)
    for k in range(out.shape[0]):
        if not out[k].any():
            continue
        if mode in ("track", "largest2d"):
            out[k] = largest_component(out[k], "full")  # 8-connected in the slice
        if fill:
            # fill within the foreground's bounding box + 1 pixel (holes touching the box stay holes): the sac covers
            # a few % of a slice, so this keeps post-processing at milliseconds per stack
            rows, cols = np.flatnonzero(out[k].any(axis=1)), np.flatnonzero(out[k].any(axis=0))
            r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, out.shape[1])
            c0, c1 = max(cols[0] - 1, 0), min(cols[-1] + 2, out.shape[2])
            out[k, r0:r1, c0:c1] = ndimage.binary_fill_holes(out[k, r0:r1, c0:c1])
    return out[0] if single else out


def _slice_centres(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slice indices with foreground and their (row, col) centres, of a ``(K, rows, cols)`` stack."""
    ks = np.flatnonzero(mask.any(axis=(1, 2)))
    return ks, np.array([np.argwhere(mask[k]).mean(axis=0) for k in ks]).reshape(-1, 2)


def _track_line(mask: np.ndarray):
    """``(fit, diameter_px)`` of a stack's foreground: straight lines (row, col) through the slice centres against
    the slice index, and the equivalent diameter of the mean cross-section."""
    ks, cs = _slice_centres(mask)
    diameter = 2.0 * np.sqrt(mask.sum() / len(ks) / np.pi)
    if len(ks) >= 2:
        fit = [np.polyfit(ks, cs[:, j], 1) for j in range(2)]
    else:
        fit = [np.array([0.0, cs[0, j]]) for j in range(2)]
    return fit, diameter


def _bridge_gaps(track: np.ndarray, prob: np.ndarray, low: float) -> tuple[np.ndarray, list[int]]:
    """Empty slices strictly between the first and last slice of ``track``: the 2D piece of ``prob >= low`` nearest
    the track's line, when its centre lies within one sac diameter of it (module doc). Returns (mask, bridged slices)."""
    ks = np.flatnonzero(track.any(axis=(1, 2)))
    if len(ks) < 2:
        return track, []
    gaps = [k for k in range(ks[0] + 1, ks[-1]) if not track[k].any()]
    if not gaps:
        return track, []
    done = []
    cs = {int(k): c for k, c in zip(*_slice_centres(track))}
    out = track.copy()
    for k in gaps:
        lab, n = ndimage.label(prob[k] >= low, structure=np.ones((3, 3), bool))
        if n == 0:
            continue
        # where the sac should be: between the nearest track slices above and below (a lordotic canal is not straight)
        k0, k1 = max(j for j in cs if j < k), min(j for j in cs if j > k)
        t = (k - k0) / (k1 - k0)
        expected = (1 - t) * cs[k0] + t * cs[k1]
        diameter = np.mean([2.0 * np.sqrt(track[j].sum() / np.pi) for j in (k0, k1)])
        centres = np.array(ndimage.center_of_mass(np.ones(lab.shape), lab, range(1, n + 1))).reshape(-1, 2)
        dist = np.hypot(*(centres - expected).T)
        best = int(np.argmin(dist))
        if dist[best] > diameter:
            continue
        # no wider than the sac around it: a gap is where the sac is tightest, so the piece is kept only inside the
        # canal cross-section of its two neighbouring sac slices (at p >= 0.5 a piece can spill into the epidural fat)
        piece = (lab == best + 1) & (track[k0] | track[k1])
        if piece.any():
            out[k] = largest_component(piece)
            done.append(int(k))
    return out, done


def _canal_track(m: np.ndarray) -> np.ndarray:
    """The largest 26-connected component plus the components that continue its line (see the module doc)."""
    lab, n = ndimage.label(m, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return m
    sizes = np.bincount(lab.ravel())[1:]
    main = int(np.argmax(sizes)) + 1
    keep = lab == main
    fit, diameter = _track_line(keep)  # pixels
    for other in range(1, n + 1):
        if other == main:
            continue
        comp = lab == other
        oks, ocs = _slice_centres(comp)
        line = np.stack([np.polyval(fit[j], oks) for j in range(2)], axis=1)
        if np.all(np.hypot(*(ocs - line).T) <= diameter):
            keep |= comp
    return keep


def postprocess_probabilities(prob: np.ndarray, threshold: float, spec: str | None,
                              bridged: list | None = None) -> np.ndarray:
    """Probabilities whose thresholded mask is the post-processed mask (for resampling onto other grids).

    Removed pixels are set to 0, filled holes and bridged gaps (``"track"``, module doc) to 1; everything else keeps
    its probability. The indices of bridged slices are appended to ``bridged`` when a list is given.
    """
    mode, fill = parse_spec(spec)
    if mode == "none" and not fill:
        return prob
    raw = np.asarray(prob) >= threshold
    kept = postprocess_masks(raw, spec, prob=prob if raw.ndim == 3 else None, bridged=bridged)
    out = np.array(prob, dtype=np.float32, copy=True)
    out[raw & ~kept] = 0.0
    out[kept & ~raw] = 1.0
    return out
