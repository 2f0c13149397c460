"""Heat maps of the angle sweep (bone volume in the channel and clearance to bone, per side; best channel marked).
Part of :mod:`FORAMEN3DLib.planning`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from FORAMEN3DLib.planning_sweep import PlanResult
from spinemorph.atomic import atomic_path


def write_heatmap_png(result: PlanResult, path, dpi: int = 110) -> Path:
    """Heat maps (per side) of bone volume in the channel (mm³) and clearance (mm) over the sweep; best marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    sides = list(result.sides)
    fig, axes = plt.subplots(len(sides), 2, figsize=(11, 4.2 * len(sides)), squeeze=False)
    d = result.config.diameter_mm
    for row, side in enumerate(sides):
        sw = result.sides[side]
        ma, cc = sw.medial_angles_deg, sw.craniocaudal_angles_deg
        extent = _extent(ma, cc)
        bi, bj = sw.best_index
        scope = "entry to disc" if sw.bone_scope == "approach" else "entry to target"
        clr = sw.scope_clearance_mm
        for col, (data, title, cmap) in enumerate(
            (
                (sw.scope_bone_mm3, f"{side}: bone (L4+L5) in {d:g} mm channel ({scope}), mm³", "magma_r"),
                (np.where(np.isfinite(clr), clr, np.nan), f"{side}: clearance to bone ({scope}), mm", "RdYlGn"),
            )
        ):
            ax = axes[row, col]
            kw = {}
            if col == 1:
                lim = float(np.clip(np.nanmax(data), 1.0, 10.0)) if np.isfinite(data).any() else 1.0
                kw = {"vmin": -lim, "vmax": lim}  # clearance below -lim saturates
            im = ax.imshow(data.T, origin="lower", extent=extent, aspect="auto", cmap=cmap, interpolation="nearest", **kw)
            fig.colorbar(im, ax=ax)
            if col == 1 and np.isfinite(data).any() and np.nanmin(data) < 0 < np.nanmax(data) and min(data.shape) > 1:
                ax.contour(ma, cc, data.T, levels=[0.0], colors="k", linewidths=0.8)
            ax.plot([ma[bi]], [cc[bj]], marker="*", markersize=16, color="cyan", markeredgecolor="k")
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("medial angle from sagittal plane (deg)")
            ax.set_ylabel("craniocaudal angle (deg, + = caudally directed)")
        verdict = "foraminoplasty needed" if sw.foraminoplasty_needed else "bone-free channel found"
        axes[row, 0].text(0.01, 1.12, verdict, transform=axes[row, 0].transAxes, fontsize=10, fontweight="bold")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


def _extent(ma, cc):
    def edges(v):
        v = np.asarray(v, dtype=float)
        if len(v) == 1:
            return v[0] - 0.5, v[0] + 0.5
        step = np.diff(v).mean()
        return v[0] - step / 2, v[-1] + step / 2

    return (*edges(ma), *edges(cc))
