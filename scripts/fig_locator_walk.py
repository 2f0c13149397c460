"""Draw the counting locator's walk on a real T2 SPACE slab: each walked disc crop's mid-slab sagittal slice with the
fine network's labels, its dural sac and the slab mask's canal, and where the sac ends relative to the crop's lower
face — the evidence :func:`FORAMEN3DLib.locator.choose_by_sac_end` uses (model card, "Counting locator").

``python scripts/fig_locator_walk.py --case 11 --out docs/figures/locator_walk_11.png [--model foramen3d-fine-cpu]``

Real SPIDER data (CC BY 4.0, attribution in the caption); needs ../shared/data/spider.
"""

from __future__ import annotations

import argparse
import textwrap

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", required=True, help="slab patient id")
    ap.add_argument("--out", required=True, help="PNG path")
    ap.add_argument("--model", default="foramen3d-fine-cpu")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from FORAMEN3DLib import fine_data as fd
    from FORAMEN3DLib.models3d import load_model
    from FORAMEN3DLib.segment3d import sac_end_gap_mm, segment_volume

    from spinemorph import spider
    from spinemorph.spider import SPIDER_ATTRIBUTION
    from spinemorph.volume import resample_to_grid

    torch.set_num_threads(a.threads)
    image, mask = spider.load_slab(a.case)
    img = image.with_array(image.array.astype(np.float32))
    model = load_model(a.model, "cpu")
    walked = segment_volume(img, model, "cpu", fine_options={"locator_mode": "count"})
    steps = [w for w in (walked.locator_details or {}).get("walk", []) if w["kind"].startswith("disc")]
    if not steps:
        raise SystemExit(f"no disc walked on slab {a.case}: {walked.locator_details}")
    canal = mask.with_array((np.asarray(mask.array) == spider.SLAB_CANAL).astype(np.uint8))
    fig, axes = plt.subplots(1, len(steps), figsize=(4.2 * len(steps), 5.0), squeeze=False)
    for ax, w in zip(axes[0], steps):
        res = segment_volume(img, model, "cpu", l45_point=w["centre_lps"], fine_options={"level_check": False})
        g = res.crop_labels
        lab = np.asarray(g.array)

        def on_crop(vol, interp, g=g):
            return resample_to_grid(vol, g.spacing_mm, g.shape[::-1], g.origin_mm, g.direction, interp).array

        x = on_crop(img, "linear")
        truth = on_crop(canal, "nearest")
        fov = on_crop(img.with_array(np.ones(img.shape, np.uint8)), "nearest").astype(bool)
        k = int(np.argmax(fov.sum(axis=(1, 2))))  # the slab's middle slice inside the crop
        ax.imshow(x[k], cmap="gray")
        ax.imshow(np.ma.masked_where(lab[k] != fd.CANAL, lab[k]), cmap="autumn_r", alpha=0.45)
        ax.contour(truth[k], levels=[0.5], colors="cyan", linewidths=0.8)
        for c, col in ((fd.L4, "red"), (fd.DISC, "lime"), (fd.L5, "blue")):
            if (lab[k] == c).any():
                ax.contour(lab[k] == c, levels=[0.5], colors=col, linewidths=0.7)
        ax.axhline(lab.shape[1] - 1, color="red", lw=3)
        chosen = " — chosen as L4-5" if w["kind"] == "disc (L4-5)" else ""
        ax.set_title(f"crop on walked disc at z {w['centre_lps'][2]:.0f} mm{chosen}\n"
                     f"predicted sac ends {sac_end_gap_mm(lab, fov):.0f} mm above the lower face", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{a.model}, held-out/real slab {a.case}: predicted dural sac (yellow), slab-mask canal (cyan), fine "
                 "L4 red / disc green / L5 blue;\ncrop's lower face = red bottom line. "
                 + "\n".join(textwrap.wrap(SPIDER_ATTRIBUTION, 40 * len(steps))), fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out, dpi=80)
    print(f"walk: {walked.locator_details['reason']}; wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
