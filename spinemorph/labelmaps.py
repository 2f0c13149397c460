"""Recognise label maps and map their numbering to the foramen task (1 L4, 2 L4-5 disc, 3 L5). Slicer-free.

Routing rule used by ``spinemorph foramen measure``: an integer-valued volume with few distinct values
(≤ :data:`MAX_LABEL_VALUES`) is a label map and is never segmented. Its numbering is read as

- the foramen scheme itself (values within {0, 1, 2, 3});
- SPIDER scheme A (lowest labelled vertebra = L5 = 1, L4 = 2, L4-5 disc = 202; vertebrae 1-9, discs 201-209,
  canal 100);
- SPIDER scheme B (L5 = 24, L4 = 23, L4-5 disc = 223; vertebrae 18-24 / 17-24, discs 217-224);
- any other numbering through explicit ids (``--label-ids L4,DISC,L5``).

Both SPIDER schemes assume that the lowest labelled vertebra is L5 (no transitional vertebra), as the SPIDER data
README states.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from spinemorph.errors import InputError
from spinemorph.labels import DISC_L45, L4, L5
from spinemorph.volume import Volume

#: an integer volume with at most this many distinct values is a label map (an MR image has hundreds or more)
MAX_LABEL_VALUES = 64
#: SPIDER canal label
SPIDER_CANAL = 100


@dataclasses.dataclass(frozen=True)
class LabelScheme:
    """How a label map's values map to L4, the L4-5 disc and L5."""

    name: str
    l4: int
    disc: int
    l5: int

    def describe(self) -> str:
        return f"{self.name} (L4 = {self.l4}, L4-5 disc = {self.disc}, L5 = {self.l5})"


def distinct_values(vol: Volume, limit: int = MAX_LABEL_VALUES + 1) -> np.ndarray | None:
    """Sorted distinct values of an integer-valued volume, or None when it is not integer-valued or has more than
    ``limit`` distinct values (an image)."""
    a = np.asarray(vol.array)
    if a.size == 0:
        return None
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or not np.array_equal(a, np.round(a)):
            return None
    elif not np.issubdtype(a.dtype, np.integer) and a.dtype != bool:
        return None
    # cheap pre-check on a subsample before the full unique
    sub = a.ravel()[:: max(1, a.size // 200_000)]
    if len(np.unique(sub)) > limit:
        return None
    vals = np.unique(a)
    if len(vals) > limit:
        return None
    return vals.astype(np.int64)


def is_label_map(vol: Volume) -> bool:
    """True for an integer-valued volume with few distinct values (≤ :data:`MAX_LABEL_VALUES`)."""
    v = distinct_values(vol)
    return v is not None and len(v) >= 1


def parse_label_ids(text: str) -> tuple[int, int, int]:
    """``"L4,DISC,L5"`` (three different non-negative integers) → tuple."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        ids = tuple(int(p) for p in parts)
    except ValueError:
        raise InputError(f"--label-ids {text!r}: give three integers L4,DISC,L5 (e.g. 2,202,1)") from None
    if len(ids) != 3 or len(set(ids)) != 3 or min(ids) <= 0:
        raise InputError(f"--label-ids {text!r}: give three different positive integers L4,DISC,L5 (e.g. 2,202,1)")
    return ids  # type: ignore[return-value]


def detect_scheme(values, label_ids: tuple[int, int, int] | None = None) -> LabelScheme:
    """Numbering of a label map from its distinct values (see module docstring).

    Raises
    ------
    InputError
        When L4, the L4-5 disc and L5 cannot all be found: one line naming what is missing.
    """
    present = {int(v) for v in values}
    if label_ids is not None:
        l4, disc, l5 = label_ids
        missing = [f"{n} = {v}" for n, v in (("L4", l4), ("L4-5 disc", disc), ("L5", l5)) if v not in present]
        if missing:
            raise InputError(f"label map has no {', '.join(missing)} (--label-ids); values present: {_fmt(present)}")
        return LabelScheme("explicit --label-ids", l4, disc, l5)
    nonzero = present - {0}
    if nonzero and nonzero <= {1, 2, 3}:
        if {1, 2, 3} <= nonzero:
            return LabelScheme("foramen (1 L4, 2 disc, 3 L5)", L4, DISC_L45, L5)
        lacking = [f"{v} ({n})" for v, n in ((1, "L4"), (2, "L4-5 disc"), (3, "L5")) if v not in nonzero]
        raise InputError(f"label map without {', '.join(lacking)}; it needs 1 L4, 2 L4-5 disc and 3 L5 (or give --label-ids)")
    verts = sorted(v for v in nonzero if 1 <= v <= 30)
    discs = {v for v in nonzero if 200 <= v <= 230}
    if 24 in verts and 23 in verts and 223 in discs:
        return LabelScheme("SPIDER B (L5 = 24)", 23, 223, 24)
    if verts and verts[0] == 1 and 2 in verts and 202 in discs:
        return LabelScheme("SPIDER A (L5 = 1)", 2, 202, 1)
    if verts or discs:
        raise InputError(
            "label map has vertebra/disc labels but no usable L4, L4-5 disc and L5 (SPIDER scheme A needs 1, 2, 202; "
            f"scheme B 23, 24, 223); values present: {_fmt(present)}; give --label-ids L4,DISC,L5"
        )
    raise InputError(
        f"label map with values {_fmt(present)} has no recognisable L4, L4-5 disc and L5; give --label-ids L4,DISC,L5"
    )


def to_foramen_labels(vol: Volume, scheme: LabelScheme) -> Volume:
    """Map ``scheme``'s L4 / disc / L5 to 1 / 2 / 3; every other value becomes 0 (uint8, same geometry)."""
    a = np.asarray(vol.array)
    if np.issubdtype(a.dtype, np.floating):
        a = np.round(a).astype(np.int64)
    out = np.zeros(a.shape, np.uint8)
    out[a == scheme.l4] = L4
    out[a == scheme.disc] = DISC_L45
    out[a == scheme.l5] = L5
    return vol.with_array(out)


def _fmt(values) -> str:
    v = sorted(values)
    s = ", ".join(str(x) for x in v[:20])
    return s + (", ..." if len(v) > 20 else "")
