"""Binary mask helpers shared by the 2D (DSCA) and 3D (foramen) code: connected components, bounding box.

Connectivity (``connectivity=``), for 2D and 3D arrays alike:

- ``"full"``: neighbours share a face, an edge or a corner (8-connectivity in 2D, 26-connectivity in 3D);
- ``"face"``: neighbours share a face (4-connectivity in 2D, 6-connectivity in 3D; SciPy's ``ndimage.label`` default).

Numpy in, numpy out; no geometry (a mask's spacing does not matter for connectivity).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from spinemorph.errors import InputError

#: accepted values of ``connectivity``
CONNECTIVITIES = ("full", "face")


def structure(ndim: int, connectivity: str = "full") -> np.ndarray:
    """Structuring element of ``connectivity`` for ``ndim``-dimensional arrays (bool, 3 × … × 3)."""
    if connectivity not in CONNECTIVITIES:
        raise InputError(f"unknown connectivity {connectivity!r}; use one of {', '.join(CONNECTIVITIES)}")
    return ndimage.generate_binary_structure(int(ndim), int(ndim) if connectivity == "full" else 1)


def label_components(mask: np.ndarray, connectivity: str = "full") -> tuple[np.ndarray, int]:
    """Connected components of a 2D or 3D mask (non-zero = foreground): ``(label image, number of components)``.

    Labels run 1..n in raster order of each component's first voxel (``scipy.ndimage.label``); 0 is background.
    """
    m = np.asarray(mask)
    if m.ndim not in (2, 3):
        raise InputError(f"mask must be 2D or 3D, got shape {m.shape}")
    lab, n = ndimage.label(m, structure=structure(m.ndim, connectivity))
    return lab, int(n)


def largest_component(mask: np.ndarray, connectivity: str = "full") -> np.ndarray:
    """The largest connected component of a 2D or 3D mask, as a bool array of the same shape.

    An empty mask stays empty and a mask of one component is returned whole. When two components have the same,
    largest size, the one whose first voxel comes first in raster (C) order is kept.
    """
    lab, n = label_components(mask, connectivity)
    if n <= 1:
        return np.asarray(mask).astype(bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def bounding_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index bounds ``lo`` (inclusive) and ``hi`` (exclusive) per array axis of the non-zero elements of ``mask``.

    Any number of dimensions; an empty mask has no bounding box (:class:`~spinemorph.errors.InputError`).
    """
    m = np.asarray(mask)
    if not m.any():
        raise InputError("the mask is empty; it has no bounding box")
    lo, hi = [], []
    for ax in range(m.ndim):
        other = tuple(a for a in range(m.ndim) if a != ax)
        nz = np.flatnonzero(m.any(axis=other))
        lo.append(int(nz[0]))
        hi.append(int(nz[-1]) + 1)
    return np.array(lo), np.array(hi)
