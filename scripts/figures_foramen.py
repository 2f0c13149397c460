"""Figures of the FORAMEN3D morphometry method for ``docs/foramen_method.md`` (written to ``docs/figures/``).

1. ``foramen_frame_pedicles.png`` — the canal-aligned frame and the body / pedicle split on a real SPIDER mask
   (axial section at the L4 pedicles with the opened body and the pedicle columns; the coronal cross-section
   profile along y' whose minimum is the pedicle waist).
2. ``foramen_lateral_steps.png`` — one side's lateral view: projected fractions, occupancy with bridged gaps, the
   foramen hole and its outline coloured by structure (roof, floor, anterior wall, SAP), height and width.
3. ``foramen_rules_spider.png`` — the landmark rules on real masks: offset search and the chosen lateral view with
   notches, corner, SAP face, facet closure and the manual reader's points.
4. ``foramen_pdh_spider.png`` — the posterior body corners of the posterior disc height (45° points on the bone)
   on the midline view of the four SPIDER SPACE masks, with the manual reader's corners.
5. ``foramen_phantom_accuracy.png`` — phantom (``spinemorph.phantom``) lateral views with the exact outline and
   the measured one, normal and foraminal-stenosis presets; prints the accuracy table.

SPIDER data: van der Graaf JW et al., Sci Data 11, 264 (2024), CC BY 4.0.

    .venv/bin/python scripts/figures_foramen.py [--out docs/figures]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from FORAMEN3DLib.landmarks import find_landmarks  # noqa: E402
from FORAMEN3DLib.morphometry import DISC_L45, L4, L5, measure_foramen  # noqa: E402
from FORAMEN3DLib.morphometry_hole import FACET_BRIDGE, occupancy  # noqa: E402
from FORAMEN3DLib.report3d import _rgb  # noqa: E402

from spinemorph import phantom as phantom_mod  # noqa: E402
from spinemorph import spider  # noqa: E402
from spinemorph.atomic import atomic_path  # noqa: E402
from spinemorph.volume import Volume  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PIR = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
VERTEX_COLORS = {L4: "tab:red", DISC_L45: "tab:blue", L5: "tab:green", FACET_BRIDGE: "gold"}


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def figure_frame(labels: Volume, out: Path, case: str) -> None:
    from FORAMEN3DLib.landmarks import _block_mean, _open_body
    from scipy import ndimage as ndi

    lm = find_landmarks(labels)
    g = lm.grid
    s = g.spacing_mm
    f = max(1, int(round(1.5 / s)))
    cs = f * s
    c0 = g.origin_frame_mm + s * (f - 1) / 2
    vert = _block_mean(g.fractions[L4], f) > 0.5
    body = _open_body(vert, 6.0 / cs)
    p = lm.pedicles[("L4", "left")]
    k = int(round((np.mean(p.z_range_mm) - c0[2]) / cs))
    ny, nx = vert.shape[1:]
    ext = [c0[0], c0[0] + cs * nx, c0[1], c0[1] + cs * ny]
    fig, ax = plt.subplots(1, 3, figsize=(17, 5.2))
    img = np.zeros((ny, nx, 3))
    img[vert[k]] = (0.9, 0.85, 0.55)
    img[body[k]] = (0.75, 0.55, 0.3)
    ax[0].imshow(img, origin="lower", extent=ext)
    for side, col in (("left", "tab:cyan"), ("right", "tab:pink")):
        pp = lm.pedicles[("L4", side)]
        ax[0].axvspan(*pp.x_range_mm, color=col, alpha=0.3, label=f"L4 {side} pedicle column")
        ax[0].axhline(pp.y_mm, color=col, ls="--", lw=1)
    ax[0].axhline(lm.posterior_wall_y_mm, color="k", lw=1, label="posterior body wall (midline)")
    ax[0].set_title(f"SPIDER {case}: axial section z' = {c0[2] + cs * k:.0f} mm of L4\nbody = opening by a 6 mm ball (dark)")
    ax[0].set_xlabel("x' (mm, + = patient left)")
    ax[0].set_ylabel("y' (mm, + = posterior)")
    ax[0].legend(fontsize=7, loc="lower left")
    ys = c0[1] + cs * np.arange(ny)
    xs = c0[0] + cs * np.arange(nx)
    for side, col in (("left", "tab:cyan"), ("right", "tab:pink")):
        sel = xs > lm.midline_x_mm + 3 if side == "left" else xs < lm.midline_x_mm - 3
        area = vert[:, :, sel].sum(axis=(0, 2)) * cs * cs
        ax[1].plot(ys - lm.posterior_wall_y_mm, area, color=col, label=f"{side}")
        ax[1].axvline(lm.pedicles[("L4", side)].y_mm - lm.posterior_wall_y_mm, color=col, ls="--")
    ax[1].axvspan(1, 15, color="0.9", zorder=0, label="search range")
    ax[1].set_xlim(-5, 30)
    ax[1].set_xlabel("distance behind the posterior body wall (mm)")
    ax[1].set_ylabel("coronal cross-section of L4 on one side (mm²)")
    ax[1].set_title("pedicle = waist of the cross-section profile")
    ax[1].legend(fontsize=8)
    # lateral overview: the three structures on the left slab, the frame axes
    v = lm.lateral_views["left"]
    ax[2].imshow(_rgb(v.fractions), origin="lower", extent=[v.y_mm[0], v.y_mm[-1], v.z_mm[0], v.z_mm[-1]])
    ax[2].arrow(0, 0, 10, 0, color="w", width=0.4)
    ax[2].arrow(0, 0, 0, 10, color="w", width=0.4)
    ax[2].text(11, -3, "y'", color="w")
    ax[2].text(1, 11, "z'", color="w")
    ax[2].set_title("frame: origin = disc centroid; z' = disc normal ⊕ body axis;\ny' = towards the posterior elements; x' = y' × z'")
    ax[2].set_xlabel("y' (mm)")
    ax[2].set_ylabel("z' (mm)")
    fig.tight_layout()
    _save(fig, out / "foramen_frame_pedicles.png")
    del ndi


def figure_steps(labels: Volume, out: Path, case: str, side: str = "left") -> None:
    res = measure_foramen(labels)
    r = res.sides[side]
    v = r.view
    ext = [v.y_mm[0], v.y_mm[-1], v.z_mm[0], v.z_mm[-1]]
    fig, ax = plt.subplots(1, 3, figsize=(17, 5.4))
    ax[0].imshow(_rgb(v.fractions), origin="lower", extent=ext)
    ax[0].set_title(f"SPIDER {case} {side}: slab x' = {v.x_mm:+.1f} ± {v.half_width_mm:.1f} mm ({v.projection})\nL4 / disc / L5 fractions")
    u = occupancy(v)
    ax[1].imshow(u, origin="lower", extent=ext, cmap="gray")
    o = np.vstack([r.outline_yz, r.outline_yz[:1]])
    ax[1].plot(o[:, 0], o[:, 1], color="tab:cyan", lw=1.5)
    ax[1].set_title(f"occupancy (sum of fractions), hole = foramen\n(closing radius {r.closing_radius_mm:g} mm)")
    ax[2].imshow(_rgb(v.fractions), origin="lower", extent=ext)
    for lab, col in VERTEX_COLORS.items():
        m = r.vertex_labels == lab
        if m.any():
            ax[2].plot(r.outline_yz[m, 0], r.outline_yz[m, 1], ".", color=col, ms=3, label={L4: "L4", DISC_L45: "disc", L5: "L5", FACET_BRIDGE: "bridge"}[lab])
    ax[2].plot(*r.height_yz.T, "-o", color="tab:red", lw=2, label=f"height {r.height.value:.1f} mm")
    ax[2].plot(*r.width_yz.T, "-o", color="tab:green", lw=2, label=f"width {r.width.value:.1f} mm")
    ax[2].set_title(f"outline vertices by structure; area {r.area.value:.0f} mm²")
    ax[2].legend(fontsize=8, loc="upper left")
    c = r.outline_yz.mean(axis=0)
    for a in ax:
        a.set_xlim(c[0] - 20, c[0] + 20)
        a.set_ylim(c[1] - 20, c[1] + 20)
        a.set_xlabel("y' (mm)")
        a.set_ylabel("z' (mm)")
    fig.tight_layout()
    _save(fig, out / "foramen_lateral_steps.png")


def figure_rules(cases, out: Path) -> None:
    """The landmark rules on real SPIDER masks: per side, the offset search (invented boundary per slab) and the chosen
    lateral view with the foramen outline, facet closure, L4 / L5 notches, L4 corner, SAP face and the manual reader's
    points (black crosses, for reference only)."""
    import json

    from FORAMEN3DLib import morphometry as M
    from FORAMEN3DLib import morphometry_hole as MH
    from FORAMEN3DLib import morphometry_outline as MO

    root = spider.spider_root()
    manual = json.loads((root / "foramen_manual.json").read_text()) if (root / "foramen_manual.json").is_file() else {}
    fig, axes = plt.subplots(2, len(cases), figsize=(6.2 * len(cases), 11.5))
    for k, (case, side) in enumerate(cases):
        name = f"{case}_t2_SPACE"
        labels = spider.remap_labels(spider.load_mask(name), name, target="foramen")
        res = measure_foramen(labels)
        lm, r = res.landmarks, res.sides[side]
        p4, p5 = lm.pedicles[("L4", side)], lm.pedicles[("L5", side)]
        seed = (lm.posterior_wall_y_mm + M.SEED_BEHIND_WALL_MM, 0.5 * (p4.z_range_mm[0] + p5.z_range_mm[1]))
        offs, opens, ok = [], [], []
        for off, view, found in M._search_offsets(lm, side, seed, r.view.half_width_mm):
            try:
                mv = MO._measure_view(view, found, side)
            except Exception:  # noqa: BLE001 - a slab that cannot be measured is simply not plotted
                continue
            offs.append(off)
            opens.append(mv["open_mm"])
            ok.append(not mv["fallbacks"])
        a = axes[0, k]
        offs, opens, ok = np.array(offs), np.array(opens), np.array(ok, bool)
        a.plot(offs[ok], opens[ok], "o-", color="tab:blue", label="closed, landmarks found")
        if (~ok).any():
            a.plot(offs[~ok], opens[~ok], "x", color="tab:gray", label="closed, needs a fallback landmark")
        a.axvline(r.offset_mm, color="tab:red", label=f"chosen: {r.offset_mm:.1f} mm")
        a.set_xlabel("slab offset from the midline (mm)")
        a.set_ylabel("invented boundary: bridged outline (mm)")
        a.set_title(f"SPIDER {case} {side}: offset search (2 mm union slabs)")
        a.legend(fontsize=8)
        a = axes[1, k]
        v = r.view
        a.imshow(_rgb(v.fractions), origin="lower", extent=[v.y_mm[0], v.y_mm[-1], v.z_mm[0], v.z_mm[-1]])
        o = np.vstack([r.outline_yz, r.outline_yz[:1]])
        a.plot(o[:, 0], o[:, 1], color="tab:cyan", lw=1.2, label=f"outline, area {r.area.value:.0f} mm²")
        sap = MO._sap_face(r.outline_yz, MH._vertex_labels(v, r.outline_yz, np.zeros(v.fractions[L4].shape, bool),
                                                           np.zeros(v.fractions[L4].shape, bool))[0],
                          r.vertex_labels, r.width_yz[0], r.height_yz[1])
        a.plot(r.outline_yz[sap, 0], r.outline_yz[sap, 1], ".", color="magenta", ms=4, label="SAP anterior face")
        if r.facet_segment_yz is not None:
            a.plot(*r.facet_segment_yz.T, "w--", lw=2, label=f"facet closure {r.facet_closure_mm:.1f} mm")
        a.plot(*r.height_yz.T, "-o", color="tab:red", lw=2, label=f"height (notch to notch) {r.height.value:.1f} mm")
        a.plot(*r.width_yz.T, "-o", color="tab:green", lw=2, label=f"width (corner to SAP) {r.width.value:.1f} mm")
        m = manual.get(case, {}).get(side)
        if m:
            q = v.lps_to_yz(np.array(list(m["points_mm"].values())))
            a.plot(q[:, 0], q[:, 1], "kx", ms=9, mew=2,
                   label=f"manual reader (plane {m['plane_offset_mm']:.0f} mm): h {m['height_mm']}, w {m['width_mm']}")
        c = r.outline_yz.mean(axis=0)
        a.set_xlim(c[0] - 17, c[0] + 17)
        a.set_ylim(c[1] - 17, c[1] + 17)
        a.set_title(f"chosen view, QC {r.qc_status}, closing {r.closing_radius_mm:g} mm")
        a.set_xlabel("y' anterior → posterior (mm)")
        a.set_ylabel("z' inferior → superior (mm)")
        a.legend(fontsize=7, loc="lower left")
    fig.suptitle("Landmark rules on real label maps (SPIDER, van der Graaf et al. 2024, CC BY 4.0)")
    fig.tight_layout()
    _save(fig, out / "foramen_rules_spider.png")


def figure_pdh(cases, out: Path) -> None:
    """Posterior disc height on real masks: the midline view with the 45° corner points on the bone (the bone point
    nearest the intersection of the posterior wall and endplate lines; the rule), the line intersections themselves
    (the previous rule, in the disc space off a rounded corner) and the manual reader's corners (projected)."""
    import json

    from FORAMEN3DLib import morphometry_outline as M

    root = spider.spider_root()
    manual = json.loads((root / "foramen_manual.json").read_text()) if (root / "foramen_manual.json").is_file() else {}
    fig, axes = plt.subplots(1, len(cases), figsize=(4.6 * len(cases), 5.0))
    for a, case in zip(np.atleast_1d(axes), cases):
        name = f"{case}_t2_SPACE"
        labels = spider.remap_labels(spider.load_mask(name), name, target="foramen")
        lm = find_landmarks(labels, slab_half_width_mm=1.0)
        v = lm.midline_view
        a.imshow(_rgb(v.fractions), origin="lower", extent=[v.y_mm[0], v.y_mm[-1], v.z_mm[0], v.z_mm[-1]])
        b4, b5 = M._body_corner(v, L4, (1.0, -1.0), on_bone=True), M._body_corner(v, L5, (1.0, 1.0), on_bone=True)
        i4, i5 = M._body_corner(v, L4, (1.0, -1.0)), M._body_corner(v, L5, (1.0, 1.0))
        a.plot(*np.stack([b4, b5]).T, "-o", color="white", lw=2, ms=5,
               label=f"45° bone points (rule): {np.linalg.norm(b4 - b5):.2f} mm")
        a.plot(*np.stack([i4, i5]).T, "--s", color="tab:orange", lw=1.2, ms=5,
               label=f"wall/endplate line intersections: {np.linalg.norm(i4 - i5):.2f} mm")
        m = manual.get(case, {})
        if "posterior_disc_height_points_mm" in m:
            q = v.lps_to_yz(np.array(list(m["posterior_disc_height_points_mm"].values())))
            a.plot(q[:, 0], q[:, 1], "kx", ms=10, mew=2, label=f"manual reader: {m['posterior_disc_height_mm']} mm")
        c = 0.5 * (b4 + b5)
        a.set_xlim(c[0] - 10, c[0] + 6)
        a.set_ylim(c[1] - 9, c[1] + 9)
        a.set_title(f"SPIDER {case}: midline, posterior disc height")
        a.set_xlabel("y' anterior → posterior (mm)")
        a.set_ylabel("z' (mm)")
        a.legend(fontsize=7, loc="best")
    fig.suptitle("Posterior body corners on real label maps (SPIDER, van der Graaf et al. 2024, CC BY 4.0)")
    fig.tight_layout()
    _save(fig, out / "foramen_pdh_spider.png")


def _phantom_labels(ph, spacing=0.8, direction=PIR):
    D = np.asarray(direction, float)
    c = ph.canal_to_lps(np.array([0.0, 12.0, 0.0]))
    n = np.array([int(100 / spacing), int(100 / spacing), int(70 / spacing)])
    ref = Volume(np.zeros(n[::-1], np.uint8), (spacing,) * 3, c - D @ (n * spacing / 2), D)
    return ph.rasterize_labels(ref, kind="foramen")


def figure_phantom(out: Path) -> None:
    fig, ax = plt.subplots(1, 2, figsize=(12, 5.6))
    print("| preset | side | height truth / measured (mm) | width truth / measured (mm) | area truth / measured (mm²) |")
    print("| --- | --- | --- | --- | --- |")
    for a, preset in zip(ax, ("normal", "foraminal-stenosis")):
        ph = phantom_mod.make_phantom(preset=preset)
        res = measure_foramen(_phantom_labels(ph))
        for side in ("left", "right"):
            t, r = ph.truth.foramen[side], res.sides[side]
            print(
                f"| {preset} | {side} | {t.height_mm:.2f} / {r.height.value:.2f} | {t.width_mm:.2f} / {r.width.value:.2f} | "
                f"{t.area_mm2:.1f} / {r.area.value:.1f} |"
            )
        r, t = res.sides["left"], ph.truth.foramen["left"]
        v = r.view
        a.imshow(_rgb(v.fractions), origin="lower", extent=[v.y_mm[0], v.y_mm[-1], v.z_mm[0], v.z_mm[-1]])
        tyz = v.lps_to_yz(t.outline_lps)
        tyz = np.vstack([tyz, tyz[:1]])
        a.plot(tyz[:, 0], tyz[:, 1], "w--", lw=1.5, label=f"exact outline ({t.area_mm2:.1f} mm²)")
        o = np.vstack([r.outline_yz, r.outline_yz[:1]])
        a.plot(o[:, 0], o[:, 1], color="tab:cyan", lw=1.2, label=f"measured ({r.area.value:.1f} mm²)")
        a.plot(*r.height_yz.T, "-o", color="tab:red", label=f"height {r.height.value:.2f} (exact {t.height_mm:.2f}) mm")
        a.plot(*r.width_yz.T, "-o", color="tab:green", label=f"width {r.width.value:.2f} (exact {t.width_mm:.2f}) mm")
        c = r.outline_yz.mean(axis=0)
        a.set_xlim(c[0] - 16, c[0] + 16)
        a.set_ylim(c[1] - 16, c[1] + 16)
        a.set_title(f"phantom '{preset}', left foramen, 0.8 mm PIR grid, tilt {ph.params.tilt_deg:g}°")
        a.set_xlabel("y' (mm)")
        a.set_ylabel("z' (mm)")
        a.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    _save(fig, out / "foramen_phantom_accuracy.png")


def table_realistic() -> None:
    """Print the accuracy table of the realistic foramen presets (exact truth)."""
    print("| preset | side | height truth / measured | width truth / measured | area truth / measured |")
    print("| --- | --- | --- | --- | --- |")
    for preset in ("realistic", "realistic-disc-bulge", "realistic-disc-contact"):
        vol, truth = phantom_mod.realistic_foramen_phantom(preset, 0.5, supersample=1)
        res = measure_foramen(vol)
        for side in ("left", "right"):
            t, r = truth[side], res.sides[side]
            qc = f" ({r.qc_status}, {r.view_kind}{', flagged' if r.flagged else ''})"
            print(f"| {preset} | {side} | {t['height_mm']:.2f} / {r.height.value:.2f} | {t['width_mm']:.2f} / "
                  f"{r.width.value:.2f} | {t['area_mm2']:.1f} / {r.area.value:.1f}{qc} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "figures"))
    ap.add_argument("--case", default="18", help="SPIDER T2 SPACE case for figures 1-2")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    if spider.spider_root() is not None:
        name = f"{args.case}_t2_SPACE"
        labels = spider.remap_labels(spider.load_mask(name), name, target="foramen")
        figure_frame(labels, out, args.case)
        figure_steps(labels, out, args.case)
        figure_rules([("65", "left"), ("98", "right"), ("50", "left")], out)
        figure_pdh(["18", "50", "65", "98"], out)
    else:
        print("SPIDER data not found: figures 1-2 skipped", file=sys.stderr)
    figure_phantom(out)
    table_realistic()
    return 0


if __name__ == "__main__":
    sys.exit(main())
