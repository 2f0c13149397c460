"""Procedural lumbar spine phantom (L1-S1 around an L4-5 segment) with EXACT analytic ground truth.

Stable API (other modules call these; later changes keep them working)
-----------------------------------------------------------------------
- :class:`PhantomParams` — documented dataclass of anatomy parameters (units in the names); :data:`PRESETS`
  (``"normal"``, ``"central-stenosis"``, ``"foraminal-stenosis"``) and :func:`preset_params`.
- :func:`make_phantom(params=None, seed=0, preset="normal", vary=False) <make_phantom>` → :class:`Phantom`.
- ``phantom.rasterize_labels(reference: Volume, kind="foramen"|"tissue"|"dural_sac", supersample=1) -> Volume``
  (uint8 labels on ANY grid: any spacing / orientation; ``supersample`` = int or (si, sj, sk) → majority label).
- ``phantom.space_grid()`` / ``phantom.axial_grid()`` → empty :class:`~spinemorph.volume.Volume` of the sagittal
  3D T2 SPACE grid (0.8 mm isotropic, 320×320, PIR) / the axial T1 stack grid (0.6875 mm, 320×320, LPS).
- ``phantom.truth`` (:class:`PhantomTruth`):
  ``truth.foramen["left"|"right"]`` (:class:`ForamenTruth`: ``height_mm, width_mm, area_mm2,
  height_points_lps (2×3), width_points_lps (2×3), outline_lps (N×3)``),
  ``truth.dsca_axial_mm2(z_mm)``, ``truth.dsca_perpendicular_mm2(s_mm)``, ``truth.dsca_plane_mm2(point, normal)``,
  ``truth.posterior_disc_height_mm`` (+ ``_points_lps``), ``truth.canal_point_lps(s_mm)``, ``truth.canal_axis_lps``,
  ``truth.slice_table(axial_grid)`` (per-slice exact axial / perpendicular DSCA and level), ``truth.to_dict()``.
- ``phantom.label_points(points_lps, kind)`` (labels at arbitrary points), ``phantom.rasterize_fine(grid, kind, s)``.
- ``phantom.body`` (:class:`BodyOutline`): skin surface (elliptic cylinder along the canal axis),
  ``contains(points)``, ``ray_exit_lps(origin, direction)`` (skin point of a ray), ``skin_points_lps(s_mm)``.
- ``phantom.canal_to_lps(p)``, ``phantom.lps_to_canal(p)``, ``phantom.levels`` ({name: (z0, z1)} in the canal frame),
  ``phantom.level_at(s_mm)``; :data:`TISSUE_LABELS`, :data:`TISSUE_COLORS`.
- Where it lives: labels, parameters, presets and variation in :mod:`spinemorph.phantom_params`; implicit solids in
  :mod:`spinemorph.phantom_shapes`; exact truth and body outline in :mod:`spinemorph.phantom_truth`; the realistic
  foramen phantom in :mod:`spinemorph.phantom_realistic`; :class:`Phantom` and :func:`make_phantom` here. This module
  re-exports all their public names.
- Images, DICOM and the whole study on disk: :mod:`spinemorph.acquisition` (``make_study``, ``acquire_axial_t1``,
  ``acquire_space_t2``, ``synthesize``).

Geometry
--------
Everything is built in a *canal frame* (x' = patient left, y' = posterior, z' = along the straight canal axis,
superior) whose origin is on the midline, on the posterior wall of the L4-5 disc at mid-disc height. The canal
frame is rotated about the left-right axis by ``tilt_deg`` (lordosis: the superior end leans anteriorly) and
shifted to ``origin_lps_mm``: ``p_lps = origin + R @ p_canal`` with R = [x̂, ŷ', ẑ'],
ŷ' = (0, cos θ, sin θ), ẑ' = (0, −sin θ, cos θ). The anatomy is a set of implicit primitives (boxes, D-shaped
vertebral bodies, elliptic cylinders/prisms, ellipsoids) evaluated at arbitrary points, so it rasterises on any grid.

Exactness by design
-------------------
- Dural sac (label map ``dural_sac``; in the tissue map CSF + cauda-equina rootlets clipped to the sac): elliptic
  cylinder along z' (semi-axes a, b) minus indentations that are prisms along x' (disc bulge:
  ellipse in (y', z') behind the disc; ligamentum flavum: ellipse in (y', z') in front of the interlaminar window)
  and a lateral-recess zone (facet hypertrophy) where the sac is limited to ``|x'| <= a - facet_hypertrophy_mm``.
  Any plane that contains the left-right axis (axial planes, gantry-tilted axial planes, planes perpendicular to the
  canal) cuts this in closed form: ∫ width(t) dt with width = 2a√(1−u²) (u linear in t), 0 in the indentation
  strips, min(2c, ·) in the lateral-recess strip. A full ellipse gives πab/cos θ on an axial plane.
- Foramen (lateral view = the (y', z') plane, identical for every parasagittal plane in the pedicle column): flat
  pedicle borders (rounded boxes), a flat posterior vertebral wall, a vertical SAP anterior face, so height, width
  and area are exact: height = roof − floor, width = W (corner to SAP face), area = polygon − half-ellipse bulge.

Typical adult dimensions used by the defaults (L4-5): L4 body ≈ 45 mm wide, 35 mm AP, 27 mm tall (Panjabi et al.,
Spine 1992; Zhou et al., Eur Spine J 2000); L4-5 disc ≈ 10-12 mm; pedicle height ≈ 14-15 mm, width ≈ 9-11 mm at L4
(Zindrick et al., Spine 1987); foraminal height ≈ 18-23 mm, width ≈ 8-10 mm (Hasegawa et al., JBJS 1995: height
≤ 15 mm and posterior disc height ≤ 4 mm associated with root compression); dural sac area ≈ 120-180 mm² normal,
< 100 mm² relative and < 75 mm² absolute central stenosis (Schönström et al., Spine 1985); ligamentum flavum
≈ 2-4 mm normal, > 4 mm hypertrophied.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from spinemorph.errors import InputError
from spinemorph.phantom_params import (
    AIR,
    ANNULUS,
    CAUDA,
    CORTEX,
    CSF,
    EPI_FAT,
    KINDS,
    LIGAMENT,
    MARROW,
    MUSCLE,
    NERVE,
    NUCLEUS,
    PRESETS,
    PSOAS,
    SIDES,
    SKIN,
    SOFT,
    SUBCUT_FAT,
    TISSUE_COLORS,
    TISSUE_LABELS,
    VARY_MAX_DRAWS,
    PhantomParams,
    preset_params,
    vary_params,
)
from spinemorph.phantom_realistic import (
    REALISTIC_CORNER_YZ,
    REALISTIC_PRESETS,
    ForamenSide,
    _realistic_truth,
    realistic_foramen_phantom,
)
from spinemorph.phantom_shapes import (
    BIG,
    Box,
    CylX,
    DBody,
    Ellipsoid,
    EllXY,
    EllYZ,
    Intersection,
    PedicleBox,
    Prim,
    Sac,
    arc_integral,
    line_ellipse_interval,
)
from spinemorph.phantom_truth import BodyOutline, ForamenTruth, PhantomTruth
from spinemorph.volume import Volume

#: names re-exported from the phantom_* modules (the stable API of this module)
__all__ = [
    "AIR", "ANNULUS", "CAUDA", "CORTEX", "CSF", "EPI_FAT", "KINDS", "LIGAMENT", "MARROW", "MUSCLE", "NERVE", "NUCLEUS",
    "PRESETS", "PSOAS", "SIDES", "SKIN", "SOFT", "SUBCUT_FAT", "TISSUE_COLORS", "TISSUE_LABELS", "VARY_MAX_DRAWS",
    "PhantomParams", "preset_params", "vary_params", "REALISTIC_CORNER_YZ", "REALISTIC_PRESETS", "ForamenSide",
    "realistic_foramen_phantom", "BodyOutline", "ForamenTruth", "PhantomTruth", "Phantom", "make_phantom",
    "_realistic_truth",
]


# ----------------------------------------------------------------------------------------------------- phantom
@dataclasses.dataclass
class _Part:
    prim: Prim
    tissue: int | None = None
    foramen: int = 0
    bone: bool = False  # painted as cortex shell + marrow core (shrunk by cortex thickness)


class Phantom:
    """A procedural lumbar spine (see module docstring). Build with :func:`make_phantom`."""

    #: cortical shell thickness of the tissue map (mm)
    cortex_mm = 1.2

    def __init__(self, params: PhantomParams | None = None, seed: int = 0):
        self.params = params if params is not None else PhantomParams()
        self.params.validate()
        self.seed = int(seed)
        p = self.params
        th = math.radians(p.tilt_deg)
        self.R = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(th), -math.sin(th)], [0.0, math.sin(th), math.cos(th)]])
        self.origin = np.asarray(p.origin_lps_mm, float)
        self.levels: dict[str, tuple[float, float]] = {}
        self._parts: list[_Part] = []
        self._build()
        self.body = BodyOutline(p.body_center_y_mm, p.body_width_mm / 2, p.body_depth_mm / 2, p.skin_thickness_mm,
                                p.subcutaneous_fat_mm, _phantom=self)
        self.truth = self._make_truth()

    # ---------------------------------------------------------------- frames
    def canal_to_lps(self, p) -> np.ndarray:
        """Canal-frame points (…, 3) → LPS mm."""
        return np.asarray(p, float) @ self.R.T + self.origin

    def lps_to_canal(self, p) -> np.ndarray:
        """LPS points (…, 3) → canal-frame mm."""
        return (np.asarray(p, float) - self.origin) @ self.R

    def level_at(self, s_mm: float) -> str:
        """Name of the vertebra or disc (e.g. ``"L4"``, ``"L4-5"``) at canal arc length ``s_mm``, or ``""``."""
        for name, (z0, z1) in self.levels.items():
            if z0 <= s_mm < z1:
                return name
        return ""

    # ---------------------------------------------------------------- anatomy
    def _build(self) -> None:
        p = self.params
        d = p.disc_height_mm
        parts = self._parts
        # ---- vertical layout (canal z'): list of (name, kind, z0, z1, dims)
        od = p.other_disc_height_mm
        l4 = (d / 2, d / 2 + p.l4_body_height_mm)
        l5 = (-d / 2 - p.l5_body_height_mm, -d / 2)
        verts = {"L4": l4, "L5": l5}
        discs = {"L4-5": (-d / 2, d / 2)}
        top = l4[1]
        for name, upper_disc in (("L3", "L3-4"), ("L2", "L2-3"), ("L1", "L1-2")):
            discs[upper_disc] = (top, top + od)
            verts[name] = (top + od, top + od + 27.0)
            top = verts[name][1]
        discs["T12-L1"] = (top, top + od)
        discs["L5-S1"] = (l5[0] - od, l5[0])
        verts["S1"] = (l5[0] - od - 70.0, l5[0] - od)
        self.levels = dict(sorted({**verts, **discs}.items(), key=lambda kv: kv[1][0]))
        order = ["S1", "L5", "L4", "L3", "L2", "L1"]
        dims = {n: (p.l4_body_width_mm, p.l4_body_depth_mm) for n in order}
        dims["L5"] = (p.l5_body_width_mm, p.l5_body_depth_mm)
        dims["S1"] = (p.l5_body_width_mm + 2, p.l5_body_depth_mm)
        defaults = PhantomParams()
        # per-vertebra pedicle geometry (z' centre, half height); the foramen below vertebra V is bounded by V's
        # pedicle (roof) and the SAP of the vertebra below V (posterior wall).
        ped = {}
        for n in order:
            z0, z1 = verts[n]
            if n == "L4":
                h, gap = p.l4_pedicle_height_mm, p.l4_pedicle_top_gap_mm
            elif n == "L5":
                h, gap = p.l5_pedicle_height_mm, p.l5_pedicle_top_gap_mm
            else:
                h, gap = defaults.l4_pedicle_height_mm, defaults.l5_pedicle_top_gap_mm + 1.0
            ped[n] = (z1 - gap - h / 2, h / 2)
        # foramen widths (W = SAP face, Wu = pars face) per foramen, keyed by the lower vertebra (owner of the SAP)
        fw = {n: (defaults.foraminal_width_mm, defaults.upper_foraminal_width_mm, defaults.sap_thickness_mm) for n in order}
        fw["L5"] = (p.foraminal_width_mm, p.upper_foraminal_width_mm, p.sap_thickness_mm)
        # Articular pillars/pars sit at y' = Wu of the foramen below the vertebra; the L4 pars is at the L4-5 foramen's Wu.
        pc, hw = p.pedicle_center_x_mm, p.pedicle_width_mm / 2
        x_med, x_lat = pc - hw, pc + hw
        cd = p.canal_depth_mm
        lab = {"L4": 1, "L5": 3}
        bone_parts: dict[str, list[Prim]] = {n: [] for n in order}
        for idx, n in enumerate(order):
            z0, z1 = verts[n]
            bw, bd = dims[n]
            zc, hh = ped[n]
            below = order[idx - 1] if idx > 0 else None  # vertebra below (owner of SAP of the foramen below n)
            above = order[idx + 1] if idx + 1 < len(order) else None
            Wu = (fw[below] if below else fw[n])[1]
            # SAP of vertebra n: rises to 'sap_tip_above_disc' above the inferior endplate of the vertebra above
            Wn, _, tsapn = fw[n]
            if above is not None:
                tip_n = verts[above][0] + (p.sap_tip_above_disc_mm if n == "L5" else defaults.sap_tip_above_disc_mm)
            else:
                tip_n = z1 + 3.0
            # tip of the SAP of the vertebra below (bottom end of n's pillar/pars)
            if below is not None:
                tip_below = verts[n][0] + (p.sap_tip_above_disc_mm if below == "L5" else defaults.sap_tip_above_disc_mm)
            else:
                tip_below = zc - hh - 8.0
            y_back = Wu + 7.0  # posterior surface of the articular pillar
            prims = bone_parts[n]
            prims.append(DBody(bw / 2, bd, z0, z1))
            for sgn in (1.0, -1.0):
                xsl = sorted((sgn * x_med, sgn * (x_lat + 1.0)))
                prims.append(PedicleBox(sgn * pc, hw, zc, hh, -4.0, y_back))
                # pillar / pars interarticularis: from the SAP tip of the vertebra below up to the pedicle top
                prims.append(Box(xsl[0], xsl[1], Wu, y_back, tip_below, zc + hh))
                # superior articular process: anterior face at y' = Wn (foramen width), up to its tip
                prims.append(Box(xsl[0], xsl[1], Wn, Wn + tsapn, zc + hh - 2.0, tip_n))
                # inferior articular process: medial to the pedicle column, behind the SAP of the vertebra below
                xi = sorted((sgn * (x_med - 3.0), sgn * x_med))
                prims.append(Box(xi[0], xi[1], Wu, y_back, tip_below - 8.0, zc - hh + 1.0))
                if below is not None:
                    # its lateral part, directly behind the SAP of the vertebra below (the facet joint): outside
                    # the foramen in the lateral view (y' >= W + SAP thickness >= upper foraminal width)
                    Wb, _, tsap_b = fw[below]
                    z_bot = max(tip_below - 10.0, ped[below][0] + ped[below][1] + 1.0)
                    xf = sorted((sgn * x_med, sgn * (x_lat + 1.0)))
                    prims.append(Box(xf[0], xf[1], Wb + tsap_b, y_back + 2.0, z_bot, tip_below))
                # lamina: from the pillar to the midline, roof of the canal
                xl = sorted((0.0, sgn * (x_med + 1.0)))
                prims.append(Box(xl[0], xl[1], cd, cd + 6.0, zc - hh - 6.0, zc + hh))
                # transverse process (thin, lateral, at pedicle level)
                xt = sorted((sgn * (x_lat - 1.0), sgn * (x_lat + (24.0 if n != "L5" else 14.0))))
                tz = 5.0 if n != "L5" else 7.0
                prims.append(Box(xt[0], xt[1], Wu - 2.0, Wu + 6.0, zc - tz, zc + tz))
            # spinous process (midline)
            prims.append(Box(-2.5, 2.5, cd + 3.0, cd + 36.0, zc - hh - 4.0, zc + hh - 2.0))
        # ---- soft tissues (painted first; later parts overwrite earlier ones)
        bc_y, bhw, bhd = p.body_center_y_mm, p.body_width_mm / 2, p.body_depth_mm / 2
        s1, s2 = p.skin_thickness_mm, p.skin_thickness_mm + p.subcutaneous_fat_mm
        inner = EllXY(0.0, bc_y, bhw - s2, bhd - s2)
        parts.append(_Part(EllXY(0.0, bc_y, bhw, bhd), SKIN))
        parts.append(_Part(EllXY(0.0, bc_y, bhw - s1, bhd - s1), SUBCUT_FAT))
        parts.append(_Part(inner, SOFT))
        for sgn in (1.0, -1.0):
            parts.append(_Part(Intersection(EllXY(sgn * 25.0, cd + 21.0, 25.5, 22.0), inner), MUSCLE))
            parts.append(_Part(Intersection(EllXY(sgn * 36.0, -24.0, 14.0, 17.0), inner), PSOAS))
        # epidural / foraminal fat: canal and foramina
        parts.append(_Part(EllXY(0.0, cd / 2, x_lat + 6.0, cd / 2 + 2.0), EPI_FAT))
        # ligamentum flavum at every interlaminar window; the L4-5 one carries the thickness parameter
        a, b, yc = p.sac_width_mm / 2, p.sac_depth_mm / 2, p.sac_center_y_mm
        cuts: list[EllYZ] = []
        recess = None
        for idx, n in enumerate(order[:-1]):
            up = order[idx + 1]
            zlo = ped[n][0] + ped[n][1]  # top of lower lamina
            zhi = ped[up][0] - ped[up][1] - 6.0  # bottom of upper lamina
            zc_f, hz = (zlo + zhi) / 2, (zhi - zlo) / 2 + 3.0
            t = p.flavum_thickness_mm if n == "L5" else defaults.flavum_thickness_mm
            fl = EllYZ(cd + 1.0, zc_f, 1.0 + t, hz, x_med - 0.5)
            parts.append(_Part(fl, LIGAMENT))
            if n == "L5":
                cuts.append(fl)
                if p.facet_hypertrophy_mm > 0:
                    c = a - p.facet_hypertrophy_mm
                    recess = EllYZ(cd + 1.0, zc_f, cd + 1.0 - yc, hz, x_med - 0.5, xmin=c)
                    parts.append(_Part(recess, LIGAMENT))
                    self._recess_c = c
        # nerve roots exiting the L4-5 foramen (upper part, under the L4 pedicle), painted before bone and sac
        roof, tip = p.foramen_roof_mm(), p.sap_tip_mm()
        r_root = max(0.8, min(2.5, (roof - max(tip, d / 2)) / 2 - 0.3, p.upper_foraminal_width_mm / 2 - 0.5))
        for sgn in (1.0, -1.0):
            xr = sorted((sgn * (a - 1.5), sgn * (x_lat + 12.0)))
            parts.append(_Part(CylX(min(p.upper_foraminal_width_mm / 2, yc), roof - r_root - 0.3, r_root, xr[0], xr[1]), NERVE))
        # discs: annulus + nucleus; L4-5 bulge (prism along x' behind the disc)
        for n, (z0, z1) in discs.items():
            hw_d = (min(p.l4_body_width_mm, p.l5_body_width_mm) if n == "L4-5" else p.l4_body_width_mm) / 2
            dep = p.l4_body_depth_mm
            parts.append(_Part(DBody(hw_d, dep, z0, z1), ANNULUS, foramen=2 if n == "L4-5" else 0))
            h = z1 - z0
            parts.append(_Part(Ellipsoid((0.0, -dep * 0.45, (z0 + z1) / 2), (hw_d * 0.55, dep * 0.3, h * 0.35)), NUCLEUS,
                               foramen=2 if n == "L4-5" else 0))
        if p.disc_bulge_mm > 0:
            bulge = EllYZ(0.0, 0.0, p.disc_bulge_mm, d / 2, min(p.l4_body_width_mm, p.l5_body_width_mm) / 2 - 0.5)
            parts.append(_Part(bulge, ANNULUS, foramen=2))
            cuts.insert(0, bulge)
        # bones: per vertebra
        for n in order:
            for prim in bone_parts[n]:
                parts.append(_Part(prim, CORTEX, foramen=lab.get(n, 0), bone=True))
        # the dural sac last (nothing else overlaps it by construction)
        self._sac = Sac(a, b, yc, cuts, recess, getattr(self, "_recess_c", a))
        parts.append(_Part(self._sac, CSF))
        # cauda equina rootlets (dorsal half of the sac, supine), clipped to the sac: the sac map = CSF ∪ rootlets
        for fx, fy in ((-0.5, 0.45), (0.5, 0.45), (-0.2, 0.62), (0.2, 0.62), (-0.68, 0.12), (0.68, 0.12), (0.0, 0.35),
                       (-0.35, 0.2), (0.35, 0.2)):
            parts.append(_Part(Intersection(EllXY(fx * a, yc + fy * b, 0.9, 0.9), self._sac), CAUDA))
        self._bone_parts = bone_parts
        self._ped = ped

    # ---------------------------------------------------------------- exact truth
    def _sac_area_plane(self, point_lps, normal_lps) -> float:
        n = np.asarray(normal_lps, float)
        n = n / np.linalg.norm(n)
        nc = self.R.T @ n
        if abs(nc[0]) > 1e-9:
            raise ValueError("exact DSCA needs a plane containing the left-right axis (normal with x-component 0)")
        pc = self.lps_to_canal(np.asarray(point_lps, float))
        ey, ez = nc[2], -nc[1]  # in-plane direction in (y', z'), orthogonal to x'
        if abs(ey) < 1e-12:
            raise ValueError("plane is parallel to the canal axis; the dural sac area is unbounded")
        y0, z0 = pc[1], pc[2]
        sac = self._sac
        a, b, yc = sac.a, sac.b, sac.yc
        # u(t) = (y0 + t ey - yc) / b
        t_lo, t_hi = sorted(((yc - b - y0) / ey, (yc + b - y0) / ey))
        zero = []
        for cut in sac.cuts:
            iv = line_ellipse_interval(y0, z0, ey, ez, cut.yc, cut.zc, cut.ay, cut.az)
            if iv:
                zero.append(iv)
        capped = None
        brk = {t_lo, t_hi}
        if sac.recess is not None:
            r = sac.recess
            capped = line_ellipse_interval(y0, z0, ey, ez, r.yc, r.zc, r.ay, r.az)
            if capped:
                brk.update(capped)
            us = math.sqrt(max(0.0, 1.0 - (sac.c / a) ** 2))
            for u in (-us, us):
                brk.add((yc + u * b - y0) / ey)
        for iv in zero:
            brk.update(iv)
        ts = sorted(t for t in brk if t_lo <= t <= t_hi)
        total = 0.0
        for t1, t2 in zip(ts[:-1], ts[1:]):
            if t2 <= t1:
                continue
            tm = 0.5 * (t1 + t2)
            if any(lo < tm < hi for lo, hi in zero):
                continue
            u1, u2 = (y0 + t1 * ey - yc) / b, (y0 + t2 * ey - yc) / b
            um = (y0 + tm * ey - yc) / b
            if capped and capped[0] < tm < capped[1] and a * math.sqrt(max(0.0, 1 - um * um)) > sac.c:
                total += 2 * sac.c * (t2 - t1)
            else:
                total += 2 * a * b / ey * (arc_integral(u2) - arc_integral(u1))
        return float(total)

    def _make_truth(self) -> PhantomTruth:
        p = self.params
        d = p.disc_height_mm
        roof, floor, tip = p.foramen_roof_mm(), p.foramen_floor_mm(), p.sap_tip_mm()
        W, Wu, beta = p.foraminal_width_mm, p.upper_foraminal_width_mm, p.disc_bulge_mm
        # lateral-view outline, counter-clockwise in (y', z')
        poly = [(0.0, roof), (0.0, d / 2)]
        if beta > 0:
            ang = np.linspace(np.pi / 2, -np.pi / 2, 33)[1:-1]
            poly += [(beta * math.cos(t), d / 2 * math.sin(t)) for t in ang]
        poly += [(0.0, -d / 2), (0.0, floor), (W, floor), (W, tip), (Wu, tip), (Wu, roof)]
        yz = np.array(poly)
        area = W * (roof - floor) + (Wu - W) * (roof - tip) - math.pi * beta * d / 4
        fora = {}
        for side, sgn in SIDES.items():
            x = sgn * p.pedicle_center_x_mm
            yh = W / 2
            hp = self.canal_to_lps(np.array([[x, yh, roof], [x, yh, floor]]))
            wp = self.canal_to_lps(np.array([[x, 0.0, d / 2], [x, W, d / 2]]))
            out = self.canal_to_lps(np.column_stack([np.full(len(yz), x), yz[:, 0], yz[:, 1]]))
            fora[side] = ForamenTruth(side, float(roof - floor), float(W), float(area), hp, wp, out, yz.copy(), float(x))
        pdh = self.canal_to_lps(np.array([[0.0, 0.0, d / 2], [0.0, 0.0, -d / 2]]))
        return PhantomTruth(
            foramen=fora,
            posterior_disc_height_mm=float(d),
            posterior_disc_height_points_lps=pdh,
            tilt_deg=float(p.tilt_deg),
            canal_axis_lps=self.R[:, 2].copy(),
            sac_area_unindented_mm2=float(math.pi * p.sac_width_mm * p.sac_depth_mm / 4),
            _phantom=self,
        )

    # ---------------------------------------------------------------- rasterisation
    def _parts_for(self, kind: str) -> list[tuple[Prim, int, float]]:
        """(primitive, label, erosion) in painting order for a label-map kind."""
        if kind not in KINDS:
            raise InputError(f"unknown label-map kind {kind!r}; choose one of {', '.join(KINDS)}")
        out = []
        if kind == "dural_sac":
            return [(self._sac, 1, 0.0)]
        if kind == "foramen":
            for part in self._parts:
                if part.foramen:
                    out.append((part.prim, part.foramen, 0.0))
            return out
        pending_bone: list[Prim] = []

        def flush():
            for prim in pending_bone:
                out.append((prim, CORTEX, 0.0))
            for prim in pending_bone:
                out.append((prim, MARROW, self.cortex_mm))
            pending_bone.clear()

        for part in self._parts:
            if part.bone:
                pending_bone.append(part.prim)
                continue
            flush()
            out.append((part.prim, part.tissue, 0.0))
        flush()
        return out

    def label_points(self, points_lps, kind: str = "tissue") -> np.ndarray:
        """Labels (uint8) of arbitrary LPS points (…, 3)."""
        pts = np.asarray(points_lps, float)
        c = self.lps_to_canal(pts.reshape(-1, 3))
        X, Y, Z = c[:, 0], c[:, 1], c[:, 2]
        lab = np.zeros(len(c), np.uint8)
        for prim, value, m in self._parts_for(kind):
            lab[prim.inside(X, Y, Z, m)] = value
        return lab.reshape(pts.shape[:-1])

    def _raster(self, spacing, size_ijk, origin, direction, kind: str) -> np.ndarray:
        """Label array [k, j, i] at the voxel centres of a grid (centre sampling)."""
        spacing = np.asarray(spacing, float)
        direction = np.asarray(direction, float)
        ni, nj, nk = (int(s) for s in size_ijk)
        M = direction * spacing[None, :]
        A = self.R.T @ M  # canal = A @ ijk + b
        bvec = self.R.T @ (np.asarray(origin, float) - self.origin)
        Ainv = np.linalg.inv(A)
        out = np.zeros((nk, nj, ni), np.uint8)
        # float32 coordinates: ~1e-5 mm rounding at 200 mm from the origin, half the memory traffic of float64
        ii, jj, kk = (np.arange(n, dtype=np.float32) for n in (ni, nj, nk))
        A32, b32 = A.astype(np.float32), bvec.astype(np.float32)
        max_pts = 1_500_000
        for prim, value, m in self._parts_for(kind):
            lo = np.maximum(prim.lo, -BIG)
            hi = np.minimum(prim.hi, BIG)
            corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
            idx = (corners - bvec) @ Ainv.T
            i0, j0, k0 = np.maximum(np.floor(idx.min(0)).astype(np.int64), 0)
            i1, j1, k1 = np.minimum(np.ceil(idx.max(0)).astype(np.int64) + 1, (ni, nj, nk))
            if i1 <= i0 or j1 <= j0 or k1 <= k0:
                continue
            ci, cj = ii[i0:i1], jj[j0:j1]
            step = max(1, max_pts // max(1, (i1 - i0) * (j1 - j0)))
            for ks in range(k0, k1, step):
                ck = kk[ks:min(k1, ks + step)]
                X, Y, Z = (
                    A32[r, 0] * ci[None, None, :] + A32[r, 1] * cj[None, :, None] + A32[r, 2] * ck[:, None, None] + b32[r]
                    for r in range(3)
                )
                X, Y, Z = np.broadcast_arrays(X, Y, Z)
                inside = prim.inside(X, Y, Z, m)
                view = out[ks:ks + len(ck), j0:j1, i0:i1]
                view[inside] = value
        return out

    def rasterize_fine(self, reference: Volume, kind: str = "tissue", supersample=1) -> np.ndarray:
        """Labels sampled at ``si×sj×sk`` sub-voxel points per voxel: array [k, j, i, sk, sj, si] (uint8)."""
        s = _factors(supersample)
        sp = np.asarray(reference.spacing_mm, float)
        fine_sp = sp / np.asarray(s)
        size = np.asarray(reference.size_ijk) * np.asarray(s)
        # sub-voxel centres: voxel centre + (q + 0.5)/s - 0.5 voxel
        shift = (0.5 / np.asarray(s) - 0.5) * sp
        origin = np.asarray(reference.origin_mm) + reference.direction @ shift
        fine = self._raster(fine_sp, size, origin, reference.direction, kind)
        nk, nj, ni = reference.array.shape[:3]
        return fine.reshape(nk, s[2], nj, s[1], ni, s[0]).transpose(0, 2, 4, 1, 3, 5)

    def rasterize_labels(self, reference: Volume, kind: str = "foramen", supersample=1) -> Volume:
        """Label map of ``kind`` on the grid of ``reference`` (its array is ignored; only the geometry is used).

        Parameters
        ----------
        reference : Volume
            Any grid (spacing, orientation, origin).
        kind : {"foramen", "tissue", "dural_sac"}
            ``foramen``: 0 bg, 1 L4, 2 L4-5 disc, 3 L5 (whole vertebrae with posterior elements);
            ``tissue``: :data:`TISSUE_LABELS`; ``dural_sac``: 0/1.
        supersample : int or (si, sj, sk)
            Sub-samples per voxel along i, j, k; the voxel gets the most frequent label (ties → lower label).
            1 = the label at the voxel centre.
        """
        s = _factors(supersample)
        if s == (1, 1, 1):
            arr = self._raster(reference.spacing_mm, reference.size_ijk, reference.origin_mm, reference.direction, kind)
            return Volume(arr, reference.spacing_mm, reference.origin_mm, reference.direction)
        fine = self.rasterize_fine(reference, kind, s)
        nk, nj, ni = fine.shape[:3]
        flat = fine.reshape(nk, nj, ni, -1)
        n_labels = int(flat.max()) + 1
        best = np.zeros((nk, nj, ni), np.uint8)
        best_count = np.full((nk, nj, ni), -1, np.int32)
        for v in range(n_labels):
            cnt = (flat == v).sum(-1, dtype=np.int32)
            upd = cnt > best_count
            best[upd] = v
            best_count[upd] = cnt[upd]
        return Volume(best, reference.spacing_mm, reference.origin_mm, reference.direction)

    # ---------------------------------------------------------------- acquisition grids (geometry only)
    def space_grid(self, n_slices: int = 64, size: tuple[int, int] = (320, 320), spacing_mm: float = 0.8,
                   center_lps=None) -> Volume:
        """Empty sagittal 3D T2 SPACE grid: ``spacing_mm`` isotropic, i → posterior, j → inferior, k → right (PIR).

        ``size`` = (columns A-P, rows S-I). Default centre: the canal frame origin shifted 20 mm anteriorly (so the
        posterior skin is in the field of view), covering both foramina with 64 slices (51 mm left-right).
        """
        if center_lps is None:
            center_lps = self.origin + np.array([0.0, -20.0, 0.0])
        direction = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
        return _grid(size[0], size[1], int(n_slices), (spacing_mm,) * 3, center_lps, direction)

    def axial_grid(self, mode: str = "cover", slice_thickness_mm: float = 4.0, pixel_mm: float = 0.6875,
                   size: int = 320, n_slices: int | None = None, gantry_tilt: bool = False, gap_mm: float = 0.0,
                   center_y_mm: float = -15.0, disc: str = "L4-5") -> Volume:
        """Empty axial stack grid (i → left, j → posterior, k → superior; LPS).

        Parameters
        ----------
        mode : {"cover", "disc"}
            ``cover``: contiguous slices from the bottom of L5 to the top of L4 (along the canal); ``disc``: a block of
            ``n_slices`` (default 5) centred on the disc ``disc``.
        slice_thickness_mm, gap_mm : float
            Slice thickness; slice spacing = thickness + gap.
        gantry_tilt : bool
            Tilt the slices about the left-right axis so they are parallel to the L4-5 disc (perpendicular to the canal).
        center_y_mm : float
            AP position (canal frame) of the field-of-view centre.
        disc : str
            Disc of ``mode="disc"``: ``"L4-5"`` (default), ``"L3-4"``, ``"L5-S1"``, ...
        """
        if mode not in ("cover", "disc"):
            raise InputError(f"unknown axial mode {mode!r}; use 'cover' or 'disc'")
        step = float(slice_thickness_mm) + float(gap_mm)
        direction = self.R.copy() if gantry_tilt else np.eye(3)
        k_dir = direction[:, 2]
        if mode == "cover":
            lo, hi = self.levels["L5"][0], self.levels["L4"][1]
            pts = [self.truth.canal_point_lps(s) for s in (lo, hi)]
            proj = [float(np.dot(q, k_dir)) for q in pts]
            span = abs(proj[1] - proj[0])
            n = int(n_slices) if n_slices else int(math.ceil(span / step))
            s_mid = 0.5 * (lo + hi)
        else:
            if "-" not in disc or disc not in self.levels:
                discs = [name for name in self.levels if "-" in name]
                raise InputError(f"unknown disc {disc!r}; choose one of {', '.join(discs)}")
            n = int(n_slices) if n_slices else 5
            s_mid = 0.5 * sum(self.levels[disc])
        c_axis = self.truth.canal_point_lps(s_mid)
        c_fov = self.canal_to_lps(np.array([0.0, center_y_mm, s_mid]))
        # centre of the stack: the canal point on the central slice, FOV centre in plane
        centre = c_axis + (direction[:, 0] * np.dot(c_fov - c_axis, direction[:, 0]) + direction[:, 1] * np.dot(c_fov - c_axis, direction[:, 1]))
        vol = _grid(size, size, n, (pixel_mm, pixel_mm, step), centre, direction)
        return vol


def _factors(supersample) -> tuple[int, int, int]:
    if np.isscalar(supersample):
        s = (int(supersample),) * 3
    else:
        s = tuple(int(v) for v in supersample)
    if len(s) != 3 or min(s) < 1:
        raise ValueError(f"supersample must be a positive int or three positive ints, got {supersample!r}")
    return s


def _grid(ni, nj, nk, spacing, center_lps, direction) -> Volume:
    direction = np.asarray(direction, float)
    sp = np.asarray(spacing, float)
    half = (np.array([ni, nj, nk], float) - 1) / 2 * sp
    origin = np.asarray(center_lps, float) - direction @ half
    return Volume(np.zeros((nk, nj, ni), np.uint8), tuple(sp), tuple(origin), direction)


def make_phantom(params: PhantomParams | None = None, seed: int = 0, preset: str = "normal", vary: bool = False) -> Phantom:
    """Build a phantom.

    Parameters
    ----------
    params : PhantomParams, optional
        Anatomy; default: ``preset_params(preset)``.
    seed : int
        Stored on the phantom (used by acquisitions for noise / bias field) and, with ``vary=True``, to perturb the
        anatomy deterministically (:func:`vary_params`).
    preset : str
        Preset used when ``params`` is None.
    vary : bool
        Randomly perturb the parameters within realistic ranges (deterministic per seed).
    """
    p = params if params is not None else preset_params(preset)
    if vary:
        p = vary_params(p, seed)
    return Phantom(p, seed=seed)
