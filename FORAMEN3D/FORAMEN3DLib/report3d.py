"""PNG report of the L4-5 foraminal morphometry: lateral views per side with the measurements drawn.

Panels: left foramen, right foramen (lateral view of the parasagittal slab through the pedicles: L4, disc and L5
coloured, foramen outline, height line, width line, values and flags), the midline view with the posterior disc
height, and a summary table. Images are drawn in the canal-aligned frame (``y'`` anterior → posterior to the
right, ``z'`` superior up).
"""

from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path

import numpy as np

from FORAMEN3DLib.morphometry import FLAG_TEXT, MorphometryResult
from spinemorph.atomic import atomic_write_bytes
from spinemorph.labels import COLORS, DISC_L45, L4, L5

_COL = {L4: COLORS["L4"], DISC_L45: COLORS["L4-5 disc"], L5: COLORS["L5"]}


def _rgb(fractions: dict) -> np.ndarray:
    shape = next(iter(fractions.values())).shape
    img = np.zeros((*shape, 3))
    for lab, col in _COL.items():
        f = np.clip(fractions[lab], 0, 1)[..., None]
        img = img * (1 - f) + f * np.asarray(col)[None, None, :]
    return img


def _crop_limits(view, yz_points, margin_mm=22.0):
    c = np.asarray(yz_points).reshape(-1, 2).mean(axis=0)
    return (c[0] - margin_mm, c[0] + margin_mm), (c[1] - margin_mm, c[1] + margin_mm)


def _draw_view(ax, view, title):
    ys, zs = view.y_mm, view.z_mm
    s = view.spacing_mm
    ax.imshow(_rgb(view.fractions), origin="lower", extent=[ys[0] - s / 2, ys[-1] + s / 2, zs[0] - s / 2, zs[-1] + s / 2])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("y' anterior → posterior (mm)")
    ax.set_ylabel("z' inferior → superior (mm)")


def render_report(result: MorphometryResult, path: str | os.PathLike, title: str = "") -> Path:
    """Draw the report PNG of ``result`` to ``path`` (written atomically).

    Parameters
    ----------
    result : MorphometryResult
        Output of :func:`FORAMEN3DLib.morphometry.measure_foramen`.
    path : path
        PNG file.
    title : str
        Figure title (e.g. the case name).
    """
    return atomic_write_bytes(Path(path), report_png_bytes(result, title))


def report_png_bytes(result: MorphometryResult, title: str = "") -> bytes:
    """The report PNG of ``result`` drawn in memory (see :func:`render_report`), so that a caller can draw it
    before writing any of its other output files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(19, 5.6), gridspec_kw={"width_ratios": [1, 1, 1, 0.9]})
    try:
        return _draw_report(fig, axes, result, title)
    finally:
        plt.close(fig)


def _draw_report(fig, axes, result: MorphometryResult, title: str) -> bytes:
    for ax, side in zip(axes[:2], ("right", "left")):  # patient's right on the left, as a radiologist looks
        r = result.sides[side]
        if not r.measured:
            ax.axis("off")
            ax.set_title(f"{side} foramen: NOT MEASURED", fontsize=10)
            ax.text(0.5, 0.5, textwrap.fill(r.qc_reasons[0], 48), transform=ax.transAxes, ha="center", va="center",
                    fontsize=9, bbox={"facecolor": "gold", "alpha": 0.85, "edgecolor": "none"})
            continue
        v = r.view
        qc = getattr(r, "qc_status", "ok")
        kind = getattr(r, "view_kind", r.method)
        fb = " FALLBACK" if getattr(r, "fallbacks", None) else ""
        _draw_view(ax, v, f"{side} foramen: QC {qc.upper()}{fb}\n{kind} {getattr(r, 'offset_mm', float('nan')):.1f} mm, "
                   f"{2 * v.half_width_mm:g} mm {'union' if v.projection == 'max' else v.projection}, closing {r.closing_radius_mm:g} mm")
        seg = getattr(r, "facet_segment_yz", None)
        if seg is not None:
            ax.plot(seg[:, 0], seg[:, 1], "--", color="white", lw=1.5, label=f"facet closure {r.facet_closure_mm:.1f} mm")
        o = np.vstack([r.outline_yz, r.outline_yz[:1]])
        ax.fill(o[:, 0], o[:, 1], color="tab:cyan", alpha=0.25, lw=0)
        ax.plot(o[:, 0], o[:, 1], color="tab:cyan", lw=1.5, label=f"area {r.area.value:.0f} mm²")
        ax.plot(r.height_yz[:, 0], r.height_yz[:, 1], "-o", color="tab:red", ms=4, lw=2, label=f"height {r.height.value:.1f} mm")
        ax.plot(r.width_yz[:, 0], r.width_yz[:, 1], "-o", color="tab:green", ms=4, lw=2, label=f"width {r.width.value:.1f} mm")
        (y0, y1), (z0, z1) = _crop_limits(v, r.outline_yz)
        ax.set_xlim(y0, y1)
        ax.set_ylim(z0, z1)
        ax.legend(loc="upper left", fontsize=8, framealpha=0.8)
        if r.flagged:
            ax.text(0.5, 0.03, FLAG_TEXT, transform=ax.transAxes, ha="center", color="white", fontsize=9,
                    bbox={"facecolor": "tab:red", "alpha": 0.85, "edgecolor": "none"})
        elif qc != "ok":
            why = "; ".join(getattr(r, "qc_reasons", []))
            ax.text(0.5, 0.03, "REVIEW: " + (why[:70] + ("…" if len(why) > 70 else "")), transform=ax.transAxes,
                    ha="center", color="black", fontsize=7, wrap=True,
                    bbox={"facecolor": "gold", "alpha": 0.85, "edgecolor": "none"})
    mv = result.landmarks.midline_view
    _draw_view(axes[2], mv, "midline: posterior disc height")
    p = result.pdh_yz
    pdh = result.posterior_disc_height
    axes[2].plot(p[:, 0], p[:, 1], "-o", color="tab:purple", ms=4, lw=2, label=f"PDH {pdh.value:.1f} mm")
    (y0, y1), (z0, z1) = _crop_limits(mv, p, 25.0)
    axes[2].set_xlim(y0, y1)
    axes[2].set_ylim(z0, z1)
    axes[2].legend(loc="upper left", fontsize=8)
    ax = axes[3]
    ax.axis("off")
    rows = [["metric", "right", "left"]]
    for metric, unit in (("height", "mm"), ("width", "mm"), ("area", "mm²")):
        vals = [getattr(result.sides[s], metric) for s in ("right", "left")]
        rows.append([f"foraminal {metric} ({unit})"] + ["–" if not np.isfinite(m.value) else
                     f"{m.value:.1f}" + (" *" if m.flag else "") + (" †" if getattr(m, "qc", "ok") != "ok" else "") for m in vals])
    rows.append(["flag", *(("yes" if result.sides[s].flagged else "no") for s in ("right", "left"))])
    rows.append(["QC", *(getattr(result.sides[s], "qc_status", "ok") for s in ("right", "left"))])
    rows.append(["posterior disc height (mm)", f"{pdh.value:.1f}" + (" *" if pdh.flag else ""), ""])
    tab = ax.table(cellText=rows, loc="upper center", cellLoc="center", colWidths=[0.55, 0.22, 0.22])
    tab.auto_set_font_size(False)
    tab.set_fontsize(9)
    tab.scale(1, 1.5)
    t = result.thresholds
    ax.text(0.0, 0.35,
            f"* flag: height ≤ {t.height_mm:g} mm or width ≤ {t.width_mm:g} mm\n→ {FLAG_TEXT}\n"
            f"(height: Hasegawa et al., JBJS Am 1995;77:32-38;\n width: threshold of the source method)\n"
            f"PDH ≤ {t.posterior_disc_height_mm:g} mm: Hasegawa et al. 1995\n"
            "† QC review: fallback, facet closing > 4 mm, thick slices, or\n outside height 8-30 mm / width 2-15 mm / area 30-300 mm²;\n"
            " a value under review never raises the flag\n\n"
            "Frame: z' = L4-5 disc normal / body axis,\n y' = towards the posterior elements, x' = left.",
            transform=ax.transAxes, fontsize=8, va="top")
    fig.suptitle(title or "L4-5 foraminal morphometry", fontsize=12)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()
