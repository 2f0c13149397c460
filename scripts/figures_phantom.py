"""Figures of the procedural lumbar phantom → ``Resources/Screenshots/phantom_*.png``.

Usage: ``python scripts/figures_phantom.py [--out Resources/Screenshots] [--seed 0]``

- ``phantom_sagittal_t2.png``: simulated 3D T2 SPACE, mid-sagittal and parasagittal (left foramen) slices with the
  exact foramen outline, height and width;
- ``phantom_axial_t1.png``: simulated axial T1 at the L4-5 disc, normal vs central stenosis, with the exact axial
  dural sac area;
- ``phantom_foramen_presets.png``: lateral view of the foramen label map (L4 / disc / L5) for the three presets
  with the exact truth drawn on top.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from spinemorph.acquisition import acquire_axial_t1, acquire_space_t2  # noqa: E402
from spinemorph.atomic import atomic_path  # noqa: E402
from spinemorph.phantom import PRESETS, make_phantom  # noqa: E402
from spinemorph.volume import Volume  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")


def sagittal(out: Path, seed: int) -> None:
    ph = make_phantom(seed=seed)
    acq = acquire_space_t2(ph)
    img = acq.image
    f = ph.truth.foramen["left"]
    k_mid = int(round(img.lps_to_index(ph.truth.canal_point_lps(0.0))[2]))
    k_for = int(round(img.lps_to_index(f.height_points_lps[0])[2]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.6))
    for ax, k, title in ((axes[0], k_mid, "mid-sagittal"), (axes[1], k_for, "parasagittal, left L4-5 foramen")):
        ax.imshow(img.array[k], cmap="gray", vmin=0, vmax=np.percentile(img.array, 99.5))
        ax.set_title(f"T2 SPACE 0.8 mm: {title}")
        ax.axis("off")
    for pts, style, label in ((f.outline_lps, "y-", "outline"), (f.height_points_lps, "c-o", f"height {f.height_mm:.1f} mm"),
                              (f.width_points_lps, "m-o", f"width {f.width_mm:.1f} mm")):
        ij = img.lps_to_index(pts)
        if style == "y-":
            ij = np.vstack([ij, ij[:1]])
        axes[1].plot(ij[:, 0], ij[:, 1], style, lw=1.2, ms=3, label=label)
    axes[1].legend(loc="lower left", fontsize=8, title=f"area {f.area_mm2:.0f} mm²", title_fontsize=8)
    _save(fig, out / "phantom_sagittal_t2.png")


def axial(out: Path, seed: int) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.6))
    for ax, preset in zip(axes, ("normal", "central-stenosis")):
        ph = make_phantom(preset=preset, seed=seed)
        acq = acquire_axial_t1(ph, mode="disc", n_slices=3)
        k = 1
        row = acq.slice_table[k]
        ax.imshow(acq.image.array[k], cmap="gray", vmin=0, vmax=np.percentile(acq.image.array, 99.5))
        ax.contour(acq.labels["dural_sac"].array[k], levels=[0.5], colors="yellow", linewidths=0.8)
        ax.set_title(f"T1 axial at L4-5, {preset}\nexact DSCA {row['dsca_axial_mm2']:.1f} mm² axial, "
                     f"{row['dsca_perpendicular_mm2']:.1f} mm² perpendicular", fontsize=9)
        ax.axis("off")
    _save(fig, out / "phantom_axial_t1.png")


def presets(out: Path) -> None:
    fig, axes = plt.subplots(1, len(PRESETS), figsize=(5 * len(PRESETS), 5.4))
    cmap = matplotlib.colors.ListedColormap(["white", "#e6d98c", "#66b3f2", "#d99966"])
    for ax, preset in zip(axes, PRESETS):
        ph = make_phantom(preset=preset)
        f = ph.truth.foramen["left"]
        pix, n = 0.1, 500
        d = np.column_stack([ph.R[:, 1], -ph.R[:, 2], ph.R[:, 0]])
        centre = ph.canal_to_lps(np.array([f.plane_x_mm, 5.0, 2.0]))
        grid = Volume(np.zeros((1, n, n), np.uint8), (pix, pix, 1.0),
                      tuple(centre - d @ np.array([(n - 1) / 2 * pix, (n - 1) / 2 * pix, 0.0])), d)
        lab = ph.rasterize_labels(grid, "foramen").array[0]
        half = n * pix / 2
        ax.imshow(lab, cmap=cmap, vmin=0, vmax=3, extent=[5 - half, 5 + half, 2 - half, 2 + half], origin="upper")
        yz = np.vstack([f.outline_canal_yz, f.outline_canal_yz[:1]])
        ax.plot(yz[:, 0], yz[:, 1], "k-", lw=1.2)
        for pts, st in ((f.height_points_lps, "b-o"), (f.width_points_lps, "m-o")):
            c = ph.lps_to_canal(pts)
            ax.plot(c[:, 1], c[:, 2], st, ms=3)
        ax.set_title(f"{preset}: H {f.height_mm:.1f} mm, W {f.width_mm:.1f} mm, A {f.area_mm2:.0f} mm²", fontsize=9)
        ax.set_xlabel("y' (posterior, mm)")
        ax.set_ylabel("z' (along canal, mm)")
    _save(fig, out / "phantom_foramen_presets.png")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "Resources" / "Screenshots"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    sagittal(out, args.seed)
    axial(out, args.seed)
    presets(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
