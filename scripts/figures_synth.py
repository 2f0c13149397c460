"""Figures of the SynthSeg-style synthesis next to real T2 SPACE slices, so a reader can judge realism by eye.

Writes into ``Resources/Screenshots/``:

- ``synth_sagittal.png``: a real mid-sagittal T2 SPACE slice (SPIDER slab) next to sagittal images synthesised on the
  0.8 mm grid of the 3D task from a SPIDER label volume (T2-like, T1-like and random contrast) and from the phantom;
- ``synth_axial.png``: a real axial plane of a T2 SPACE slab (resampled to isotropic pixels; the slab is only
  ~15-25 mm wide, so only the canal region exists) next to synthetic 2D DSCA training planes with their dural sac
  outline;
- ``synth_foramen.png``: parasagittal and mid-sagittal planes of 3D foramen training samples with L4 / L4-5 disc / L5
  outlines.

Usage: ``python scripts/figures_synth.py [--out Resources/Screenshots] [--seed 0]`` (needs the SPIDER data;
about a minute on one core). Real images: SPIDER (van der Graaf et al., Sci Data 11:264, 2024, CC BY 4.0).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _save(fig, path: Path) -> None:
    from spinemorph.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", facecolor="white")
    print(f"wrote {path}")


def _show(ax, img, title, aspect=1.0):
    lo, hi = np.percentile(img, [0.5, 99.5])
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, aspect=aspect, interpolation="bilinear")
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def sagittal_figure(out: Path, seed: int, real_patient: str, case: str) -> None:
    import matplotlib.pyplot as plt

    from spinemorph import phantom, spider, synth

    image, _ = spider.load_slab(real_patient)
    real = image.array[image.shape[0] // 2].astype(np.float32)  # rows S->I, cols A->P
    series = spider.get_series(case)
    generic = spider.remap_labels(spider.load_mask(series), series, "generic")
    src = synth.prepare_labels(generic, fine_spacing_mm=0.8)
    lab = src.labels()
    centre = lab.index_to_lps(np.argwhere(lab.array == 202).mean(0)[::-1])
    grid = synth.iso_grid(src.codes, 0.8, "PIR", centre, (3, 300, 256))
    panels = [(real, f"REAL T2 SPACE (SPIDER patient {real_patient})")]
    for i, con in enumerate(("t2", "t2", "t1", "random")):
        res = synth.synthesize(src, seed + i, grid, con)
        panels.append((res.image.array[1], f"synthetic {con} from SPIDER {case}"))
    ph = phantom.make_phantom(seed=seed, vary=True)
    pg = ph.space_grid(n_slices=3, size=(256, 300))
    tissue = ph.rasterize_labels(pg, kind="tissue")
    psrc = synth.prepare_labels(tissue, synth.phantom_tissue_classes(), fine_spacing_mm=None, nucleus=False,
                                cortex_mm=0.0, margin_mm=1e6)
    pres = synth.synthesize(psrc, seed, synth.grid_like(pg), "t2", synth.SynthOptions.intensity_only())
    panels.append((pres.image.array[1], "synthetic t2 from the phantom"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.6))
    for ax, (img, title) in zip(axes, panels):
        _show(ax, img, title)
    fig.suptitle("Sagittal: real T2 SPACE vs SynthSeg-style synthesis (0.8 mm grid of the 3D task)", fontsize=10)
    fig.text(0.5, 0.01, spider.SPIDER_ATTRIBUTION, ha="center", fontsize=6)
    _save(fig, out / "synth_sagittal.png")
    plt.close(fig)


def axial_figure(out: Path, seed: int, real_patient: str) -> None:
    import matplotlib.pyplot as plt

    from spinemorph import samples, spider

    planes = samples.dsca_real_slab_samples([real_patient], isotropic_mm=0.469)
    real = max(planes, key=lambda p: p.area_mm2) if planes else None
    synth_samples = list(samples.dsca_samples(3, seed, sources=("spider_masks",), contrast="t1"))
    synth_samples += list(samples.dsca_samples(2, seed + 1, sources=("spider_masks",), contrast="t2"))
    synth_samples += list(samples.dsca_samples(1, seed + 2, sources=("phantom",), contrast="t1"))
    n = len(synth_samples) + (1 if real else 0)
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 3.4))
    axes = list(axes)
    if real is not None:
        ax = axes.pop(0)
        _show(ax, real.image, f"REAL T2 SPACE axial plane (patient {real_patient});\nslab only {real.image.shape[1] * 0.469:.0f} mm wide")
        ax.contour(real.mask, [0.5], colors="yellow", linewidths=0.7)
    for ax, s in zip(axes, synth_samples):
        _show(ax, s.image, f"synthetic {s.contrast} ({s.case})\npixel {s.pixel_mm[0]:.2f} mm, sac {s.area_mm2:.0f} mm²")
        ax.contour(s.mask, [0.5], colors="yellow", linewidths=0.7)
    fig.suptitle("Axial: 2D DSCA training planes (320 × 320 after resizing the FOV), dural sac outlined", fontsize=10)
    fig.text(0.5, 0.01, spider.SPIDER_ATTRIBUTION, ha="center", fontsize=6)
    _save(fig, out / "synth_axial.png")
    plt.close(fig)


def foramen_figure(out: Path, seed: int) -> None:
    import matplotlib.pyplot as plt

    from spinemorph import samples

    got = list(samples.foramen_samples(2, seed, sources=("spider_masks",), crop_shape=(128, 192, 192)))
    got += list(samples.foramen_samples(1, seed, sources=("phantom",), crop_shape=(128, 192, 192)))
    fig, axes = plt.subplots(2, len(got), figsize=(3.2 * len(got), 6.4))
    colours = {1: "tab:red", 2: "tab:cyan", 3: "tab:orange"}
    for c, s in enumerate(got):
        for r, k in enumerate((s.image.shape[0] // 2, s.image.shape[0] // 2 - 30)):
            ax = axes[r, c]
            _show(ax, s.image[k], f"{s.source} {s.case} {s.contrast}\n{'mid' if r == 0 else 'para'}sagittal")
            for lab, col in colours.items():
                if (s.labels[k] == lab).any():
                    ax.contour(s.labels[k] == lab, [0.5], colors=col, linewidths=0.6)
    fig.suptitle("3D foramen samples (0.8 mm, PIR crop 128 × 192 × 192): L4 red, L4-5 disc cyan, L5 orange", fontsize=10)
    _save(fig, out / "synth_foramen.png")
    plt.close(fig)


def main(argv=None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from spinemorph import spider

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "Resources" / "Screenshots")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real-patient", default="45", help="training slab patient shown as the real image")
    ap.add_argument("--case", default="104_t2", help="SPIDER label volume used for the sagittal synthesis")
    args = ap.parse_args(argv)
    if spider.spider_root() is None:
        print("error: SPIDER data not found; set SPINEMORPH_SPIDER", file=sys.stderr)
        return 1
    sagittal_figure(args.out, args.seed, args.real_patient, args.case)
    axial_figure(args.out, args.seed, args.real_patient)
    foramen_figure(args.out, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
