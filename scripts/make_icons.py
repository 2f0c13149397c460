"""Draw the extension and module icons (PNG, 128×128) with matplotlib.

Run: ``python scripts/make_icons.py`` (writes Resources/Icons/SpineMorph.png and each module's
Resources/Icons/<Module>.png).
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches as mp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BONE, DISC, SAC, BG = "#e8d9a8", "#6fb3e8", "#f2d23c", "#26323f"


def _canvas():
    fig = plt.figure(figsize=(1.28, 1.28), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 128)
    ax.set_ylim(0, 128)
    ax.set_axis_off()
    ax.add_patch(mp.FancyBboxPatch((2, 2), 124, 124, boxstyle="round,pad=0,rounding_size=18", color=BG))
    return fig, ax


def axial_icon(path):
    """Axial vertebra with the dural sac highlighted (DuralSacSeg)."""
    fig, ax = _canvas()
    ax.add_patch(mp.Ellipse((64, 84), 70, 44, color=BONE))  # body
    ax.add_patch(mp.Polygon([[34, 66], [20, 30], [64, 14], [108, 30], [94, 66]], color=BONE))  # arch
    ax.add_patch(mp.Ellipse((64, 50), 36, 26, color=BG))  # canal
    ax.add_patch(mp.Ellipse((64, 50), 28, 19, color=SAC))  # dural sac
    fig.savefig(path, transparent=True)
    plt.close(fig)


def lateral_icon(path):
    """Lateral view: L4, disc, L5 and the foramen (FORAMEN3D)."""
    fig, ax = _canvas()
    ax.add_patch(mp.FancyBboxPatch((14, 76), 56, 34, boxstyle="round,pad=0,rounding_size=6", color=BONE))  # L4
    ax.add_patch(mp.FancyBboxPatch((16, 56), 52, 16, boxstyle="round,pad=0,rounding_size=6", color=DISC))  # disc
    ax.add_patch(mp.FancyBboxPatch((14, 18), 56, 34, boxstyle="round,pad=0,rounding_size=6", color=BONE))  # L5
    ax.add_patch(mp.Polygon([[70, 92], [100, 96], [104, 84], [76, 80]], color=BONE))  # L4 pedicle
    ax.add_patch(mp.Polygon([[70, 42], [100, 40], [104, 52], [76, 50]], color=BONE))  # L5 pedicle
    ax.add_patch(mp.Ellipse((88, 66), 18, 28, color=SAC, fill=False, lw=3))  # foramen outline
    fig.savefig(path, transparent=True)
    plt.close(fig)


def extension_icon(path):
    fig, ax = _canvas()
    for y in (84, 24):
        ax.add_patch(mp.FancyBboxPatch((18, y), 60, 28, boxstyle="round,pad=0,rounding_size=6", color=BONE))
    ax.add_patch(mp.FancyBboxPatch((20, 58), 56, 20, boxstyle="round,pad=0,rounding_size=6", color=DISC))
    ax.add_patch(mp.Rectangle((86, 14), 14, 100, color=SAC))  # dural sac (sagittal)
    ax.text(64, 3, "SpineMorph", ha="center", va="bottom", color="white", fontsize=10, weight="bold")
    fig.savefig(path, transparent=True)
    plt.close(fig)


if __name__ == "__main__":
    extension_icon(ROOT / "Resources/Icons/SpineMorph.png")
    axial_icon(ROOT / "DuralSacSeg/Resources/Icons/DuralSacSeg.png")
    lateral_icon(ROOT / "FORAMEN3D/Resources/Icons/FORAMEN3D.png")
    print("icons written")
