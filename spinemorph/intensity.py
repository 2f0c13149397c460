"""Intensity normalisation shared by training-sample builders and inference (one definition for both)."""

from __future__ import annotations

import numpy as np

#: percentiles used by :func:`normalize_percentile` (2D DSCA networks)
PERCENTILES = (0.5, 99.5)


def normalize_percentile(array: np.ndarray, lower: float = PERCENTILES[0], upper: float = PERCENTILES[1]) -> np.ndarray:
    """Clip to the [lower, upper] percentiles and scale linearly to [0, 1] (float32).

    This is the 2D networks' "intensity normalisation": robust to a few bright voxels (fat, flow artefacts) and
    independent of scanner scaling. Apply it per axial slice (2D) — the same function is used for training
    samples and at inference.
    """
    a = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(a, [lower, upper])
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros_like(a, dtype=np.float32)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def zscore(array: np.ndarray, mask: np.ndarray | None = None, eps: float = 1e-6) -> np.ndarray:
    """Z-score (zero mean, unit standard deviation) over ``mask`` (default: all voxels), float32.

    This is the 3D foramen network's normalisation (as in the source method).
    """
    a = np.asarray(array, dtype=np.float32)
    sel = a[mask.astype(bool)] if mask is not None else a
    mean = float(sel.mean()) if sel.size else 0.0
    std = float(sel.std()) if sel.size else 1.0
    return ((a - mean) / max(std, eps)).astype(np.float32)
