"""Landmarks of the L4-5 motion segment found from the geometry of a label map (no image needed).

Input: a label :class:`spinemorph.volume.Volume` with 1 = L4, 2 = L4-5 disc, 3 = L5 (each vertebra label includes
its posterior elements, as in the SPIDER masks), in any orientation and spacing.

Method (see ``docs/foramen_method.md`` for figures):

1. **Canal-aligned frame** (:func:`build_frame`; the ``"posterior-elements"`` rule of the one segment-frame
   estimator, :mod:`FORAMEN3DLib.landmarks_frame`): ``z'`` = normal of the L4-5 disc (smallest principal axis of the
   disc's voxel cloud), oriented towards L4, averaged with the L5→L4 vertebral-body centroid axis; ``y'``
   (anterior → posterior) = direction from the disc centroid to the centroid of the posterior elements (vertebra
   voxels outside the extruded disc footprint), made perpendicular to ``z'``; ``x' = y' × z'`` (patient left for
   normal anatomy, like LPS ``x``). Only physical (LPS) coordinates are used, so any input orientation (PIR, LPS,
   oblique) and any tilt / lordosis gives the same anatomical frame.
2. **Resampling** (:func:`resample_to_frame`): each label's indicator is linearly interpolated (SimpleITK) onto an
   isotropic grid aligned with the frame (default 0.5 mm) around L4-L5, giving partial-volume fractions whose 0.5
   level set is a sub-voxel boundary.
3. **Body column**: the projection along ``z'`` of both vertebral bodies (step 4), dilated by 2 mm; the body part
   of a lateral view is the vertebra inside this column.
4. **Pedicles**: the vertebral body is the largest component of the morphological opening of the vertebra by a
   6 mm ball (1.5 mm grid, distance maps); its posterior wall at the midline is the 98th percentile of ``y'`` there.
   Per side (``x'`` beyond the midline ± 3 mm) the coronal cross-section area of the vertebra is profiled along
   ``y'`` from 1 to 15 mm behind that wall: the pedicle is the waist — the narrow bridge between body and arch —
   at the minimum of this profile (the body's lateral bulge lies in front of it, articular pillar, transverse
   process and lamina behind). The vertebra in a 3 mm coronal slab at the waist gives the pedicle column (the
   ``x'`` interval around the histogram mode where the count stays ≥ 50 % of the peak), its centre and ``z'``
   range.
5. **Lateral views**: per side, a parasagittal slab centred on the mean L4/L5 pedicle centre (default ±1.5 mm,
   like one clinical sagittal slice) is projected along ``x'`` (mean of the fractions, then a Gaussian of half the
   input voxel size; :func:`slab_candidates` lists the wider maximum projections tried when that view does not
   enclose the foramen), giving 2D images in (``y'``, ``z'``) in which the foramen is the hole between L4 pedicle, L4 body, disc, L5 body, L5 pedicle and the
   facet (see :mod:`FORAMEN3DLib.morphometry`). The midline slab gives the posterior disc height.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import disk

from FORAMEN3DLib.landmarks_frame import SegmentFrame, _label_points, posterior_elements_frame, segment_frame
from spinemorph.errors import InputError
from spinemorph.labels import DISC_L45, L4, L5
from spinemorph.masks import largest_component
from spinemorph.volume import Volume, resample_to_grid

SIDES = ("left", "right")
#: the canal-aligned frame of the morphometry: the one segment frame (:mod:`FORAMEN3DLib.landmarks_frame`), built
#: with the ``"posterior-elements"`` axis rule (its former name)
SpineFrame = SegmentFrame


@dataclasses.dataclass
class FrameGrid:
    """Label fractions resampled on an isotropic grid aligned with a :class:`SpineFrame`.

    ``fractions[label]`` is a float32 array indexed ``[z', y', x']``; voxel ``[0, 0, 0]`` sits at frame coordinates
    ``origin_frame_mm``.
    """

    frame: SpineFrame
    spacing_mm: float
    origin_frame_mm: np.ndarray
    fractions: dict

    @property
    def shape(self) -> tuple:
        return next(iter(self.fractions.values())).shape

    def axis_mm(self, axis: str) -> np.ndarray:
        """Frame coordinates (mm) of the grid lines along ``'x'``, ``'y'`` or ``'z'``."""
        c = "xyz".index(axis)
        n = self.shape[2 - c]
        return self.origin_frame_mm[c] + self.spacing_mm * np.arange(n)

    def index_of(self, axis: str, value_mm: float) -> int:
        c = "xyz".index(axis)
        n = self.shape[2 - c]
        return int(np.clip(np.round((value_mm - self.origin_frame_mm[c]) / self.spacing_mm), 0, n - 1))


@dataclasses.dataclass
class Pedicle:
    """One pedicle root found in the band behind the vertebral body (frame coordinates, mm)."""

    vertebra: str
    side: str
    x_range_mm: tuple
    center_x_mm: float
    z_range_mm: tuple
    n_voxels: int
    y_mm: float = float("nan")
    #: True when the cross-section profile has a real waist there: an interior minimum with the body's larger
    #: section in front and the posterior arch (a larger section) behind it
    waist: bool = True


@dataclasses.dataclass
class LateralView:
    """Projection of a parasagittal slab along ``x'``: 2D images indexed ``[z', y']``.

    Attributes
    ----------
    side : str
        ``'left'``, ``'right'`` or ``'midline'``.
    x_mm, half_width_mm : float
        Slab centre and half width along ``x'`` (frame mm).
    projection : str
        ``'mean'`` (the slab's partial volume, like one thick sagittal slice; unbiased for structures that do not
        change across the slab) or ``'max'`` (any structure anywhere in the slab).
    smooth_mm : float
        Standard deviation of the Gaussian applied to the projected fractions (removes the voxel staircase of
        the input grid; a straight boundary keeps its 0.5 level).
    y_mm, z_mm : numpy.ndarray
        Frame coordinates of the image columns (``y'``) and rows (``z'``).
    fractions : dict
        label → maximum over the slab of that label's fraction.
    body : dict
        label (L4, L5) → same, restricted to the vertebral body column.
    body_max : dict
        label (L4, L5) → maximum over the slab of the body-column fraction (a vertebral body seen anywhere in the
        slab is solid: at the lateral edge of a body a thin slab is only partly filled).
    frame : SpineFrame
    """

    side: str
    x_mm: float
    half_width_mm: float
    projection: str
    smooth_mm: float
    y_mm: np.ndarray
    z_mm: np.ndarray
    fractions: dict
    body: dict
    body_max: dict
    frame: SpineFrame

    @property
    def spacing_mm(self) -> float:
        return float(self.y_mm[1] - self.y_mm[0])

    def pixel_to_yz(self, rc) -> np.ndarray:
        """Continuous (row, col) pixel coordinates ``(N, 2)`` → (``y'``, ``z'``) in mm."""
        rc = np.asarray(rc, dtype=float).reshape(-1, 2)
        s = self.spacing_mm
        return np.stack([self.y_mm[0] + s * rc[:, 1], self.z_mm[0] + s * rc[:, 0]], axis=1)

    def yz_to_lps(self, yz) -> np.ndarray:
        """(``y'``, ``z'``) points ``(N, 2)`` on the slab's central plane → LPS ``(N, 3)``."""
        yz = np.asarray(yz, dtype=float).reshape(-1, 2)
        q = np.column_stack([np.full(len(yz), self.x_mm), yz])
        return self.frame.to_lps(q)

    def lps_to_yz(self, points_lps) -> np.ndarray:
        """LPS points ``(N, 3)`` → (``y'``, ``z'``) (projection along ``x'``)."""
        q = self.frame.to_frame(np.asarray(points_lps, dtype=float).reshape(-1, 3))
        return q[:, 1:]


@dataclasses.dataclass
class Landmarks:
    """Everything :func:`find_landmarks` derives from the label map."""

    frame: SpineFrame
    grid: FrameGrid
    footprint: np.ndarray
    body_column: np.ndarray
    midline_x_mm: float
    posterior_wall_y_mm: float
    pedicles: dict
    lateral_views: dict
    midline_view: LateralView
    structure_volumes_mm3: dict
    smooth_mm: float = 0.0
    #: side -> why that side has no pedicles / lateral view (a side whose arch is missing is not measured; the other
    #: side still is); empty when both sides were found
    side_errors: dict = dataclasses.field(default_factory=dict)
    #: per vertebra ("L4", "L5"): volume of its bone behind the body on the smaller side / on the larger side (1 =
    #: symmetric arches); see :func:`arch_balance`
    arch_balance: dict = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------- helpers


def build_frame(labels: Volume) -> SpineFrame:
    """Canal-aligned frame at L4-5 from the label geometry (module docstring, step 1): the ``"posterior-elements"``
    rule of the one segment-frame estimator, :func:`FORAMEN3DLib.landmarks_frame.segment_frame`.

    Raises
    ------
    InputError
        Missing / tiny labels, or L4 and L5 not on opposite sides of the disc.
    """
    return segment_frame(labels, "posterior-elements")


def resample_to_frame(labels: Volume, frame: SpineFrame, spacing_mm: float = 0.5, bounds_mm=None, cvol=None) -> FrameGrid:
    """Resample the indicator of each label onto a frame-aligned isotropic grid (linear interpolation).

    Parameters
    ----------
    labels : Volume
        Label map (1 L4, 2 disc, 3 L5).
    frame : SpineFrame
    spacing_mm : float
        Grid spacing.
    bounds_mm : array-like (2, 3), optional
        Frame-coordinate box ``[[x0, y0, z0], [x1, y1, z1]]``; default: the box of the labels.
    """
    src = cvol if cvol is not None else labels
    if bounds_mm is None:
        pts, _, _ = _label_points(labels)
        q = frame.to_frame(np.concatenate(list(pts.values())))
        bounds_mm = np.stack([q.min(0) - 2, q.max(0) + 2])
    bounds_mm = np.asarray(bounds_mm, dtype=float)
    lo = bounds_mm[0]
    size = np.maximum(np.ceil((bounds_mm[1] - lo) / spacing_mm).astype(int) + 1, 2)
    origin = frame.to_lps(lo)
    a = np.asarray(src.array)
    fr = {
        lab: resample_to_grid(src.with_array((a == lab).astype(np.float32)), (float(spacing_mm),) * 3, size, origin,
                              frame.axes_lps, "linear").array
        for lab in (L4, DISC_L45, L5)
    }
    return FrameGrid(frame=frame, spacing_mm=float(spacing_mm), origin_frame_mm=lo, fractions=fr)


def _view(
    grid: FrameGrid,
    side: str,
    x_mm: float,
    half_width_mm: float,
    body_col: np.ndarray,
    projection: str = "mean",
    smooth_mm: float = 0.0,
) -> LateralView:
    xs = grid.axis_mm("x")
    sel = np.abs(xs - x_mm) <= half_width_mm + 1e-6
    if not sel.any():
        sel[grid.index_of("x", x_mm)] = True
    sig = float(smooth_mm) / grid.spacing_mm

    def red(a):
        if projection == "mean":
            out = a.mean(axis=2)
            return ndi.gaussian_filter(out, sig, mode="nearest") if sig > 0 else out
        # union across the slab: smooth each slice first (in 3D), so that the maximum does not pick the outermost
        # voxel step of an oblique grid on every boundary
        return (ndi.gaussian_filter(a, sig, mode="nearest") if sig > 0 else a).max(axis=2)

    fr = {lab: red(grid.fractions[lab][:, :, sel]) for lab in grid.fractions}
    col = body_col[:, sel].astype(np.float32)
    body = {lab: red(grid.fractions[lab][:, :, sel] * col[None]) for lab in (L4, L5)}
    body_max = {}
    for lab in (L4, L5):
        m = (grid.fractions[lab][:, :, sel] * col[None]).max(axis=2)
        body_max[lab] = ndi.gaussian_filter(m, sig, mode="nearest") if sig > 0 else m
    return LateralView(
        side=side,
        x_mm=float(x_mm),
        half_width_mm=float(half_width_mm),
        projection=projection,
        smooth_mm=float(smooth_mm),
        y_mm=grid.axis_mm("y"),
        z_mm=grid.axis_mm("z"),
        fractions=fr,
        body=body,
        body_max=body_max,
        frame=grid.frame,
    )


def find_landmarks(
    labels: Volume,
    spacing_mm: float = 0.5,
    slab_half_width_mm: float = 1.5,
    band_mm: tuple = (1.0, 15.0),
    body_radius_mm: float = 6.0,
    smooth_mm: float | None = None,
) -> Landmarks:
    """Frame, body/pedicle split and lateral views of the L4-5 segment (see module docstring).

    Parameters
    ----------
    labels : Volume
        Label map, 1 = L4, 2 = L4-5 disc, 3 = L5 (vertebrae with posterior elements), any orientation.
    spacing_mm : float
        Spacing of the frame-aligned working grid.
    slab_half_width_mm : float
        Half width of the parasagittal slab (lateral view) through each pedicle.
    band_mm : (float, float)
        Range behind the posterior wall of the body (at the midline) searched for the pedicle waist.
    body_radius_mm : float
        Radius of the ball of the morphological opening that keeps the vertebral body and removes pedicles and arch.
    smooth_mm : float, optional
        Gaussian smoothing of the lateral views (default: half the largest voxel spacing of the input, at most 1 mm).

    Raises
    ------
    InputError
        Missing labels, labels in the wrong order, or no pedicle found on either side (one side without a
        pedicle is recorded in ``Landmarks.side_errors`` and has no lateral view).
    """
    pts, cvol, counts = _label_points(labels)
    if smooth_mm is None:
        smooth_mm = min(0.5 * max(labels.spacing_mm), 1.0)
    frame = posterior_elements_frame(pts)
    q = {lab: frame.to_frame(p) for lab, p in pts.items()}
    allq = np.concatenate(list(q.values()))
    dq = q[DISC_L45]
    lo = np.maximum(allq.min(0) - 3.0, [-45.0, dq[:, 1].min() - 4.0, -45.0])
    hi = np.minimum(allq.max(0) + 3.0, [45.0, dq[:, 1].max() + 35.0, 45.0])
    grid = resample_to_frame(labels, frame, spacing_mm, np.stack([lo, hi]), cvol=cvol)
    s = grid.spacing_mm

    disc = grid.fractions[DISC_L45] > 0.5
    fp = disc.any(axis=0)
    if not fp.any():
        raise InputError("the L4-5 disc (label 2) vanished on resampling; it is too thin to measure")
    fp = largest_component(ndi.binary_fill_holes(ndi.binary_closing(fp, iterations=2)), "face")

    f = max(1, int(round(1.5 / s)))  # coarse grid of about 1.5 mm for the morphological work
    cs = f * s
    cx, cy, cz = (float(c) for c in grid.origin_frame_mm + s * (f - 1) / 2.0)
    bodies, pedicles, coarse, side_errors = {}, {}, {}, {}
    body_col_c = None
    for lab, name in ((L4, "L4"), (L5, "L5")):
        vert = coarse[lab] = _block_mean(grid.fractions[lab], f) > 0.5
        body = _open_body(vert, body_radius_mm / cs)
        if not body.any():
            raise InputError(
                f"no vertebral body found in {name} (label {lab}): nothing {2 * body_radius_mm:.0f} mm thick; check the label map"
            )
        bodies[lab] = body
        col = body.any(axis=0)
        body_col_c = col if body_col_c is None else (body_col_c | col)
    ys_c = cy + cs * np.arange(body_col_c.shape[0])
    xs_c = cx + cs * np.arange(body_col_c.shape[1])
    zs_c = cz + cs * np.arange(bodies[L4].shape[0])
    bz, by, bx = np.nonzero(bodies[L4] | bodies[L5])
    mid_x = float(np.mean(xs_c[bx]))
    central = np.abs(xs_c[bx] - mid_x) <= 5.0
    wall_y = float(np.percentile(ys_c[by[central]], 98)) if central.any() else float(ys_c[by].max())
    for lab, name in ((L4, "L4"), (L5, "L5")):
        vert = coarse[lab]
        bz, by, bx = np.nonzero(bodies[lab])
        central = np.abs(xs_c[bx] - mid_x) <= 5.0
        wall_v = float(np.percentile(ys_c[by[central]], 98)) if central.any() else wall_y
        for side in SIDES:
            if side in side_errors:
                continue
            xsel = xs_c > mid_x + 3.0 if side == "left" else xs_c < mid_x - 3.0
            sub = vert[:, :, xsel]
            area = sub.sum(axis=(0, 2)).astype(float)  # coronal cross-section of this side per y', in coarse voxels (× cs² for mm²; only its argmin is used)
            area = np.convolve(area, np.ones(3) / 3.0, mode="same")
            ysel = np.flatnonzero((ys_c >= wall_v + band_mm[0]) & (ys_c <= wall_v + band_mm[1]) & (area > 0))
            if len(ysel) == 0:
                side_errors[side] = (
                    f"no {side} pedicle found on {name}: nothing of label {lab} behind the vertebral body on that side; "
                    "the vertebra labels must include the pedicles"
                )
                continue
            j, waist = _waist(area, ysel)
            kz, _, kx = np.nonzero(sub[:, max(j - 1, 0) : j + 2, :])
            xv, zv = xs_c[xsel][kx], zs_c[kz]
            # the pedicle lies on its own side of the disc: L4's above the disc centre, L5's below (a SAP or a
            # transverse process in the same coronal slab does not extend its z-range across the disc)
            own = zv > 0.0 if lab == L4 else zv < 0.0
            if own.sum() >= 4:
                kz, kx, xv, zv = kz[own], kx[own], xv[own], zv[own]
            if len(kz) < 4:
                side_errors[side] = (
                    f"no posterior arch found behind the {name} body on the {side} side (nothing of label {lab} forms a "
                    "pedicle there); check that the vertebra labels include the posterior elements"
                )
                continue
            x0, x1 = _main_peak(xv, cs)
            keep = (xv >= x0 - cs) & (xv <= x1 + cs)
            xv, zv = xv[keep], zv[keep]
            zv = _main_run(zv, cs)
            pedicles[(name, side)] = Pedicle(
                vertebra=name,
                side=side,
                x_range_mm=(float(x0), float(x1)),
                center_x_mm=float((x0 + x1) / 2),
                z_range_mm=(float(zv.min()), float(zv.max())),
                n_voxels=int(len(xv)),
                y_mm=float(ys_c[j]),
                waist=waist,
            )
    # body column on the fine grid (projection of both bodies along z', dilated by 2 mm)
    ny, nx = grid.shape[1], grid.shape[2]
    col = np.repeat(np.repeat(body_col_c, f, axis=0), f, axis=1)[:ny, :nx]
    col = np.pad(col, ((0, ny - col.shape[0]), (0, nx - col.shape[1])), mode="edge")
    body_col = ndi.binary_dilation(col, structure=disk(max(1, int(round(2.0 / s))), dtype=bool))
    # one side without an arch is reported for that side (the surgeon still gets the other); none at all is an error
    if len(side_errors) == len(SIDES):
        raise InputError("; ".join(side_errors[s] for s in SIDES))
    pedicles = {k: v for k, v in pedicles.items() if k[1] not in side_errors}
    views = {}
    for side in (s for s in SIDES if s not in side_errors):
        xc = 0.5 * (pedicles[("L4", side)].center_x_mm + pedicles[("L5", side)].center_x_mm)
        views[side] = _view(grid, side, xc, slab_half_width_mm, body_col, "mean", smooth_mm)
    midline = _view(grid, "midline", mid_x, slab_half_width_mm, body_col, "mean", smooth_mm)
    vols = {lab: float(n) * labels.voxel_volume_mm3 for lab, n in counts.items()}
    return Landmarks(
        frame=frame,
        grid=grid,
        footprint=fp,
        body_column=body_col,
        midline_x_mm=mid_x,
        posterior_wall_y_mm=wall_y,
        pedicles=pedicles,
        lateral_views=views,
        midline_view=midline,
        structure_volumes_mm3=vols,
        smooth_mm=float(smooth_mm),
        side_errors=side_errors,
        arch_balance=arch_balance(grid, mid_x, wall_y),
    )


def arch_balance(grid: FrameGrid, midline_x_mm: float, wall_y_mm: float, lateral_mm: float = 3.0) -> dict:
    """Per vertebra (``{"L4": r, "L5": r}``): its voxels behind the posterior body wall (``y' > wall + 1 mm``) more than
    ``lateral_mm`` left of the midline vs right of it, smaller / larger (1 = symmetric, 0 = one side without arch).

    The frame's y' axis points at the mean of the posterior elements, so an arch missing from one side's labels (a
    segmentation that missed it) rotates the frame and every lateral view; this ratio is the evidence for the QC
    note of :func:`FORAMEN3DLib.morphometry.measure_foramen`."""
    s = grid.spacing_mm
    ys = grid.origin_frame_mm[1] + s * np.arange(grid.shape[1])
    xs = grid.origin_frame_mm[0] + s * np.arange(grid.shape[2])
    behind = ys > wall_y_mm + 1.0
    out = {}
    for lab, name in ((L4, "L4"), (L5, "L5")):
        v = grid.fractions[lab][:, behind, :] > 0.5
        n_left = int(v[:, :, xs > midline_x_mm + lateral_mm].sum())
        n_right = int(v[:, :, xs < midline_x_mm - lateral_mm].sum())
        out[name] = min(n_left, n_right) / max(n_left, n_right, 1)
    return out


def lateral_view(lm: Landmarks, side: str, x_mm: float, half_width_mm: float, projection: str = "mean") -> LateralView:
    """Lateral view of another parasagittal slab (frame ``x'`` centre and half width in mm)."""
    return _view(lm.grid, side, x_mm, half_width_mm, lm.body_column, projection, lm.smooth_mm)


@dataclasses.dataclass
class SlabStack:
    """Union-slab lateral views of one side, prepared once for the offset search (:func:`stack_view`).

    The 3D Gaussian of :func:`_view` is separable: its in-plane part (``z'``, ``y'``) does not depend on which
    slices form the slab, so it is applied once to every parasagittal slice of the searched range, on the window
    around the seed only; the part along ``x'`` (within the slab, ``mode='nearest'`` at its faces) is a small
    linear map applied per slab. A view from the stack equals ``_view(..., 'max')`` cropped to the window (up to
    float rounding), at a fraction of the cost.
    """

    side: str
    x_mm: np.ndarray
    y_mm: np.ndarray
    z_mm: np.ndarray
    smooth_sigma_px: float
    #: label → in-plane-smoothed fractions ``[slice, z', y']``; ("body", label) → the same for the body column part
    smoothed: dict
    #: label → unsmoothed body-column part ``[slice, z', y']`` with the Gaussian's margin (for ``body_max``)
    raw_body: dict
    #: the window within ``raw_body``
    inner: tuple
    frame: SpineFrame


def slab_stack(lm: Landmarks, side: str, x_lo_mm: float, x_hi_mm: float, seed_yz, window_mm: float) -> SlabStack | None:
    """:class:`SlabStack` of the slices ``x_lo_mm``-``x_hi_mm`` (frame ``x'``) within ``window_mm`` of ``seed_yz``
    (the crop of the search views); None when the window is too small (use :func:`lateral_view` instead)."""
    g = lm.grid
    s = g.spacing_mm
    ys, zs, xs = g.axis_mm("y"), g.axis_mm("z"), g.axis_mm("x")
    cols = np.flatnonzero(np.abs(ys - seed_yz[0]) <= window_mm)
    rows = np.flatnonzero(np.abs(zs - seed_yz[1]) <= window_mm)
    xi = np.flatnonzero((xs >= x_lo_mm - 1e-6) & (xs <= x_hi_mm + 1e-6))
    if len(cols) < 8 or len(rows) < 8 or len(xi) == 0:
        return None
    sig = float(lm.smooth_mm) / s
    m = int(4.0 * sig + 0.5) + 1 if sig > 0 else 0  # margin: the Gaussian's support (truncate 4), exact inside
    r0, r1 = max(rows[0] - m, 0), min(rows[-1] + 1 + m, g.shape[0])
    c0, c1 = max(cols[0] - m, 0), min(cols[-1] + 1 + m, g.shape[1])
    inner = (slice(rows[0] - r0, rows[-1] + 1 - r0), slice(cols[0] - c0, cols[-1] + 1 - c0))
    col = lm.body_column[c0:c1, xi[0] : xi[-1] + 1].astype(np.float32)

    def smooth2d(a):
        if sig > 0:
            a = ndi.gaussian_filter1d(a, sig, axis=0, mode="nearest")
            a = ndi.gaussian_filter1d(a, sig, axis=1, mode="nearest")
        return np.ascontiguousarray(np.moveaxis(a[inner], 2, 0))  # [slice, z', y']

    smoothed, raw_body = {}, {}
    for lab, f in g.fractions.items():
        sub = f[r0:r1, c0:c1, xi[0] : xi[-1] + 1]
        smoothed[lab] = smooth2d(sub)
        if lab in (L4, L5):
            prod = sub * col[None]
            smoothed[("body", lab)] = smooth2d(prod)
            raw_body[lab] = np.ascontiguousarray(np.moveaxis(prod, 2, 0))
    return SlabStack(side, xs[xi], ys[cols], zs[rows], sig, smoothed, raw_body, inner, g.frame)


def stack_view(st: SlabStack, x_mm: float, half_width_mm: float) -> LateralView:
    """The union-slab (maximum projection) lateral view centred at ``x_mm`` from a :class:`SlabStack`."""
    sel = np.flatnonzero(np.abs(st.x_mm - x_mm) <= half_width_mm + 1e-6)
    if len(sel) == 0:
        sel = np.array([int(np.argmin(np.abs(st.x_mm - x_mm)))])
    sl = slice(sel[0], sel[-1] + 1)
    n = len(sel)
    if st.smooth_sigma_px > 0:
        w = ndi.gaussian_filter1d(np.eye(n, dtype=np.float64), st.smooth_sigma_px, axis=0, mode="nearest").astype(np.float32)

        def red(a):
            return np.tensordot(w, a[sl], axes=(1, 0)).max(axis=0)  # out[k] = sum_j w[k, j] a[j], then the union
    else:

        def red(a):
            return a[sl].max(axis=0)

    fr = {lab: red(st.smoothed[lab]) for lab in (L4, DISC_L45, L5)}
    body = {lab: red(st.smoothed[("body", lab)]) for lab in (L4, L5)}
    body_max = {}
    for lab in (L4, L5):
        mx = st.raw_body[lab][sl].max(axis=0)
        body_max[lab] = (ndi.gaussian_filter(mx, st.smooth_sigma_px, mode="nearest") if st.smooth_sigma_px > 0 else mx)[st.inner]
    return LateralView(
        side=st.side,
        x_mm=float(x_mm),
        half_width_mm=float(half_width_mm),
        projection="max",
        smooth_mm=float(st.smooth_sigma_px * (st.y_mm[1] - st.y_mm[0])),
        y_mm=st.y_mm,
        z_mm=st.z_mm,
        fractions=fr,
        body=body,
        body_max=body_max,
        frame=st.frame,
    )


def slab_candidates(lm: Landmarks, side: str, default_half_width_mm: float = 1.5) -> list[tuple[float, float, str]]:
    """Slabs (centre, half width, projection) tried in turn for one side's lateral view.

    1. the default thin slab through the mean L4/L5 pedicle centre, averaged across (a thick sagittal slice);
    2. the slab covering both pedicles' ``x'`` extents, maximum projection;
    3. that slab extended 4 mm medially (maximum projection), to take in an articular process that lies medial to
       the pedicles.
    """
    p4, p5 = lm.pedicles[("L4", side)], lm.pedicles[("L5", side)]
    c = 0.5 * (p4.center_x_mm + p5.center_x_mm)
    lo = min(p4.x_range_mm[0], p5.x_range_mm[0])
    hi = max(p4.x_range_mm[1], p5.x_range_mm[1])
    out = [(c, default_half_width_mm, "mean")]
    out.append(((lo + hi) / 2, (hi - lo) / 2, "max"))
    if side == "left":
        lo -= 4.0
    else:
        hi += 4.0
    out.append(((lo + hi) / 2, (hi - lo) / 2, "max"))
    return out


def _waist(area: np.ndarray, ysel: np.ndarray, rise: float = 1.25) -> tuple[int, bool]:
    """Pedicle waist in the coronal cross-section profile ``area`` (per y') within the band ``ysel``.

    A waist is an interior minimum of the band with a section at least ``rise`` × larger both in front of it (the
    body's lateral part) and behind it (the posterior arch: articular pillar, lamina, transverse process). The first
    such minimum from the front is taken. Without one (no arch behind, or the section only shrinks), the smallest
    section of the band is returned with ``False``.
    """
    a = area
    for j in ysel:
        if j <= 0 or j >= len(a) - 1 or a[j] <= 0:
            continue
        if a[j] > a[j - 1] or a[j] > a[j + 1]:
            continue
        front = a[: j].max(initial=0.0)
        back = a[j + 1 :].max(initial=0.0)
        if front >= rise * a[j] and back >= rise * a[j]:
            return int(j), True
    return int(ysel[np.argmin(a[ysel])]), False


def _main_run(z: np.ndarray, step: float) -> np.ndarray:
    """The values of ``z`` in the largest run of occupied ``step`` bins (drops detached pieces above / below)."""
    if len(z) == 0:
        return z
    lo = float(z.min())
    idx = np.round((z - lo) / step).astype(int)
    h = np.bincount(idx) > 0
    best, cur, start = (0, 0), 0, 0
    for i, occ in enumerate(h):
        if occ:
            if cur == 0:
                start = i
            cur += 1
            if cur > best[1] - best[0]:
                best = (start, i + 1)
        else:
            cur = 0
    keep = (idx >= best[0]) & (idx < best[1])
    return z[keep]


def _main_peak(x: np.ndarray, step: float, frac: float = 0.5) -> tuple[float, float]:
    """x-interval around the mode of ``x`` where the histogram stays >= ``frac`` × the peak (the pedicle column;
    a transverse process root or articular process in the band adds a low, wide tail that is cut off)."""
    lo = float(x.min())
    idx = np.round((x - lo) / step).astype(int)
    h = np.bincount(idx)
    m = int(np.argmax(h))
    a = m
    while a > 0 and h[a - 1] >= frac * h[m]:
        a -= 1
    b = m
    while b < len(h) - 1 and h[b + 1] >= frac * h[m]:
        b += 1
    return lo + a * step, lo + b * step


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over ``f``×``f``×``f`` blocks (the array is padded with zeros to a multiple of ``f``)."""
    if f == 1:
        return a
    pad = [(0, (-n) % f) for n in a.shape]
    b = np.pad(a, pad)
    k, j, i = (n // f for n in b.shape)
    return b.reshape(k, f, j, f, i, f).mean(axis=(1, 3, 5))


def _open_body(vert: np.ndarray, radius_vox: float) -> np.ndarray:
    """Largest component of the morphological opening of ``vert`` by a ball (via Euclidean distance maps)."""
    pad = int(np.ceil(radius_vox)) + 2
    v = np.pad(vert, pad)
    core = ndi.distance_transform_edt(v) > radius_vox
    if not core.any():
        return np.zeros_like(vert)
    opened = (ndi.distance_transform_edt(~core) <= radius_vox) & v
    opened = opened[pad:-pad, pad:-pad, pad:-pad]
    return largest_component(opened, "face")
