#!/usr/bin/env python
"""Can the level network name L4 / L4-5 disc / L5 on the real slab masks whose levels cannot be counted? (issue 15)

    scripts/slab_identity_study.py --out runs/slab_identity.json [--figure docs/figures/slab_identity.png]

Seven training slab patients (7, 45, 55, 78, 152, 177, 234) have masks whose vertebrae and discs cannot be counted
into levels (``fine_data.slab_labels`` → "merged": mask gaps, bodies that touch no disc), so the fine network
trains on them with merged classes only. The rule (``level_locator.slab_labels_from_levels``) gives each **mask component** (vertebra component ≥ 2
cm³ touching a disc, disc component ≥ 0.2 cm³; 26-connected, as ``slab_labels`` counts them) the majority class of
the level network's averaged prediction (``level_locator.decide``) over the component's voxels, sampled on the
level grid through the slab (planes on the slab's left-right centre). It is accepted only when exactly one disc
component is "L4-5 disc", at least one body component each is "L4" and "L5", and their centres are in anatomical
order (L4 above the disc above L5).

It is checked against the patients whose levels **are** derived (own SPACE label volume or counting): per voxel of
the mask's vertebra + disc classes, the share that gets the same identity (L4, L5, disc, other) as the derived
labels. The level network was trained on 14 of those patients (its training split); its 6 validation patients (22,
69, 146, 161, 191, 241) are the fair check. Held-out slab patients are never read. Nothing here changes training
data: the result says whether the rule may (next session).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

#: identity codes of this study
OTHER, L4, DISC, L5 = 0, 1, 2, 3
NAMES = {OTHER: "other", L4: "L4", DISC: "L4-5 disc", L5: "L5"}
LEVEL_VAL = ("22", "69", "146", "161", "191", "241")


def _codes(sl) -> np.ndarray:
    """Identity codes of a :class:`FORAMEN3DLib.fine_data.SlabLabels` (OTHER where not L4 / L5 / the L4-5 disc)."""
    from FORAMEN3DLib import fine_data as fd

    out = np.zeros(sl.bits.shape, np.uint8)
    out[sl.bits == (1 << fd.L4)] = L4
    out[sl.bits == (1 << fd.L5)] = L5
    out[sl.bits == (1 << fd.DISC)] = DISC
    return out


def derived_identity(patient, image, mask) -> np.ndarray | None:
    """Identity codes from ``fine_data.slab_labels`` (own SPACE labels or counting), None when merged."""
    from FORAMEN3DLib import fine_data as fd

    sl = fd.slab_labels(patient, image, mask)
    return None if sl.identity == "merged" else _codes(sl)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--figure", type=Path, default=None, help="PNG: the mid slab slice of every patient the rule names")
    a = ap.parse_args(argv)
    import torch
    from FORAMEN3DLib.level_locator import get_level_model, slab_labels_from_levels

    from spinemorph import spider

    torch.set_num_threads(1)
    model = get_level_model()
    rows, shown = [], []
    for p in spider.train_slab_patients():
        image, mask = spider.load_slab(p)
        named = slab_labels_from_levels(image, mask, model)
        got, why = (None, "refused") if named is None else (_codes(named), "ok")
        ref = derived_identity(p, image, mask)
        row = {"patient": p, "split": "level-validation" if p in LEVEL_VAL else "level-training",
               "derived": ref is not None, "rule": why}
        if got is not None and ref is not None:
            m = np.asarray(mask.array)
            sel = np.isin(m, (spider.SLAB_VERTEBRA, spider.SLAB_DISC)) & (ref > 0)
            row["agreement_named_voxels"] = float((got[sel] == ref[sel]).mean()) if sel.any() else None
            row["named_by_rule_not_derived"] = int(((got > 0) & (ref == 0)).sum())
        if got is not None:
            row["voxels"] = {NAMES[c]: int((got == c).sum()) for c in (L4, DISC, L5)}
            if ref is None:
                shown.append((p, np.asarray(image.array), np.asarray(mask.array), got))
        rows.append(row)
        print(json.dumps(row), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"rows": rows}, indent=2))
    if a.figure is not None and shown:
        _figure(shown, a.figure)
    return 0


def _figure(shown, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 4.2))
    cmap = ListedColormap([(0, 0, 0, 0), (0.9, 0.2, 0.2, 0.55), (0.2, 0.8, 0.2, 0.55), (0.2, 0.4, 0.95, 0.55)])
    for ax, (p, img, m, got) in zip(np.atleast_1d(axes), shown):
        k = img.shape[0] // 2
        ax.imshow(img[k], cmap="gray")
        ax.imshow(got[k], cmap=cmap, vmin=0, vmax=3, interpolation="nearest")
        ax.contour(m[k] > 0, levels=[0.5], colors="yellow", linewidths=0.4)
        ax.set_title(f"slab {p} (mask merged)", fontsize=8)
        ax.axis("off")
    fig.suptitle("level-network names on merged slab masks: L4 red, L4-5 disc green, L5 blue, mask outline yellow "
                 "(SPIDER, CC BY 4.0)", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
