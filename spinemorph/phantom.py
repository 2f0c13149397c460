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
import warnings

import numpy as np

from spinemorph.errors import InputError
from spinemorph.volume import Volume

# ----------------------------------------------------------------------------------------------------- labels
#: tissue map labels (used for image synthesis); 0 = air / outside the body
TISSUE_LABELS: dict[int, str] = {
    0: "air",
    1: "skin",
    2: "subcutaneous fat",
    3: "paraspinal muscle",
    4: "psoas muscle",
    5: "other soft tissue",
    6: "cortical bone",
    7: "bone marrow",
    8: "disc annulus",
    9: "disc nucleus",
    10: "CSF (dural sac)",
    11: "epidural fat",
    12: "ligamentum flavum",
    13: "nerve root",
    14: "cauda equina",
}
AIR, SKIN, SUBCUT_FAT, MUSCLE, PSOAS, SOFT, CORTEX, MARROW, ANNULUS, NUCLEUS, CSF, EPI_FAT, LIGAMENT, NERVE, CAUDA = range(15)

#: display colours (RGB 0..1) of the tissue labels (segments of the tissue .seg.nrrd)
TISSUE_COLORS: dict[int, tuple[float, float, float]] = {
    1: (0.96, 0.80, 0.70),
    2: (0.98, 0.92, 0.55),
    3: (0.75, 0.30, 0.30),
    4: (0.65, 0.25, 0.35),
    5: (0.80, 0.65, 0.60),
    6: (0.95, 0.95, 0.90),
    7: (0.90, 0.80, 0.55),
    8: (0.30, 0.55, 0.85),
    9: (0.55, 0.80, 1.00),
    10: (0.95, 0.90, 0.20),
    11: (1.00, 0.85, 0.40),
    12: (0.55, 0.45, 0.75),
    13: (0.95, 0.55, 0.15),
    14: (0.90, 0.70, 0.30),
}

#: label-map kinds accepted by :meth:`Phantom.rasterize_labels`
KINDS = ("tissue", "foramen", "dural_sac")

#: foramen sides; "left" is +x (LPS x points to the patient's left)
SIDES = {"left": 1.0, "right": -1.0}


# ----------------------------------------------------------------------------------------------------- params
@dataclasses.dataclass
class PhantomParams:
    """Anatomy of the phantom (lengths in mm, angles in degrees). Defaults = normal adult L4-5.

    Attributes
    ----------
    tilt_deg : float
        Angle between the canal axis and the scanner superior axis (rotation about left-right; positive = superior
        end leans anteriorly, as in lumbar lordosis). Axial slices cut the canal obliquely unless gantry-tilted.
    origin_lps_mm : tuple of float
        LPS position of the canal-frame origin (midline, posterior wall of the L4-5 disc, mid-disc height).
    l4_body_width_mm, l4_body_depth_mm, l4_body_height_mm : float
        L4 vertebral body (D-shaped: flat posterior wall, elliptic anterior contour). Typical 45 / 35 / 27 mm.
    l5_body_width_mm, l5_body_depth_mm, l5_body_height_mm : float
        L5 vertebral body. Typical 48 / 35 / 26 mm.
    disc_height_mm : float
        L4-5 disc height (endplates parallel, so also the posterior disc height). Typical 10-12 mm; loss narrows the
        foramen (height).
    other_disc_height_mm : float
        Height of the other discs (L1-2 ... L5-S1).
    disc_bulge_mm : float
        Posterior bulge of the L4-5 disc beyond the vertebral wall (AP, mm; 0 = none). Indents the dural sac and the
        foramen.
    sac_width_mm, sac_depth_mm : float
        Dural sac (elliptic cylinder) full left-right and AP diameters; area π·w·d/4 (default 16 × 12 → 150.8 mm²).
    sac_center_y_mm : float
        AP position of the sac axis behind the vertebral wall.
    canal_depth_mm : float
        Distance from the posterior vertebral wall to the anterior surface of the laminae (midline canal depth).
    flavum_thickness_mm : float
        Ligamentum flavum thickness at the interlaminar window (normal 2-4 mm; > 4 mm hypertrophy). It indents
        the sac when ``canal_depth - flavum_thickness`` < the sac's posterior edge.
    facet_hypertrophy_mm : float
        Medial encroachment of the hypertrophied facet joints / capsule into the lateral recess at the L4-5 level:
        the posterior half of the sac is limited to ``|x'| <= sac_width/2 - facet_hypertrophy_mm`` there.
    pedicle_center_x_mm : float
        Distance of the pedicle axes from the midline (same for L4 and L5 so the lateral view is one plane).
    pedicle_width_mm : float
        Left-right width of the pedicles (typical 9-11 mm at L4).
    l4_pedicle_height_mm, l5_pedicle_height_mm : float
        Cranio-caudal pedicle height (typical 14-16 mm).
    l4_pedicle_top_gap_mm, l5_pedicle_top_gap_mm : float
        Distance from the superior endplate of the body to the top of its pedicle.
    foraminal_width_mm : float
        AP distance from the posterior wall of the L4 body to the anterior face of the L5 superior articular process
        (SAP) — the foraminal width (typical 8-10 mm; SAP overgrowth narrows it).
    upper_foraminal_width_mm : float
        AP width of the upper (root-exit) part of the foramen, up to the L4 pars interarticularis.
        Must lie between ``foraminal_width_mm`` and ``foraminal_width_mm + sap_thickness_mm``.
    sap_thickness_mm : float
        AP thickness of the superior articular processes.
    sap_tip_above_disc_mm : float
        Height of the L5 SAP tip above the L4 inferior endplate (SAP overgrowth raises it).
    body_width_mm, body_depth_mm : float
        Skin outline (elliptic cylinder along the canal axis), left-right and AP diameters.
    body_center_y_mm : float
        AP position of the body outline centre (canal frame; negative = anterior to the vertebral wall).
    skin_thickness_mm, subcutaneous_fat_mm : float
        Skin and subcutaneous fat layer thickness.
    """

    tilt_deg: float = 15.0
    origin_lps_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    l4_body_width_mm: float = 45.0
    l4_body_depth_mm: float = 35.0
    l4_body_height_mm: float = 27.0
    l5_body_width_mm: float = 48.0
    l5_body_depth_mm: float = 35.0
    l5_body_height_mm: float = 26.0
    disc_height_mm: float = 10.0
    other_disc_height_mm: float = 10.0
    disc_bulge_mm: float = 0.0
    sac_width_mm: float = 16.0
    sac_depth_mm: float = 12.0
    sac_center_y_mm: float = 7.5
    canal_depth_mm: float = 17.0
    flavum_thickness_mm: float = 3.0
    facet_hypertrophy_mm: float = 0.0
    pedicle_center_x_mm: float = 16.5
    pedicle_width_mm: float = 9.0
    l4_pedicle_height_mm: float = 15.0
    l5_pedicle_height_mm: float = 15.0
    l4_pedicle_top_gap_mm: float = 3.0
    l5_pedicle_top_gap_mm: float = 2.0
    foraminal_width_mm: float = 9.0
    upper_foraminal_width_mm: float = 11.0
    sap_thickness_mm: float = 5.0
    sap_tip_above_disc_mm: float = 3.0
    body_width_mm: float = 320.0
    body_depth_mm: float = 230.0
    body_center_y_mm: float = -40.0
    skin_thickness_mm: float = 2.0
    subcutaneous_fat_mm: float = 18.0

    # ------------------------------------------------------------------ helpers
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def replace(self, **changes) -> PhantomParams:
        """Copy with some fields changed (unknown names raise :class:`InputError`)."""
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise InputError(f"unknown phantom parameter(s) {', '.join(unknown)}; known: {', '.join(self.field_names())}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["origin_lps_mm"] = list(d["origin_lps_mm"])
        return d

    def validate(self) -> None:
        """Raise :class:`InputError` if the parameters do not give a consistent, measurable anatomy."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "origin_lps_mm":
                if len(v) != 3 or not all(math.isfinite(float(c)) for c in v):
                    raise InputError("origin_lps_mm must be three finite numbers")
                continue
            if not math.isfinite(float(v)):
                raise InputError(f"phantom parameter {f.name}={v} is not a finite number")
            if f.name not in ("tilt_deg", "body_center_y_mm", "disc_bulge_mm", "facet_hypertrophy_mm") and v <= 0:
                raise InputError(f"phantom parameter {f.name}={v} must be > 0")
        p = self
        checks = [
            (abs(p.tilt_deg) <= 45, "tilt_deg must be within ±45°"),
            (p.disc_bulge_mm >= 0, "disc_bulge_mm must be >= 0"),
            (p.facet_hypertrophy_mm >= 0, "facet_hypertrophy_mm must be >= 0"),
            (p.facet_hypertrophy_mm < p.sac_width_mm / 2 - 1, "facet_hypertrophy_mm must be < sac_width_mm/2 - 1"),
            (p.disc_bulge_mm < p.foraminal_width_mm - 0.5, "disc_bulge_mm must be smaller than foraminal_width_mm - 0.5"),
            (p.sac_center_y_mm - p.sac_depth_mm / 2 > 0.25, "the dural sac must lie behind the vertebral wall (sac_center_y_mm > sac_depth_mm/2)"),
            (p.sac_center_y_mm + p.sac_depth_mm / 2 < p.canal_depth_mm - 0.25, "the dural sac must lie in front of the laminae (sac_center_y_mm + sac_depth_mm/2 < canal_depth_mm)"),
            (p.sac_width_mm / 2 + 0.5 < p._iap_medial_x(), "the dural sac is too wide for the canal (sac_width_mm vs pedicle_center_x_mm/pedicle_width_mm)"),
            (p.pedicle_center_x_mm + p.pedicle_width_mm / 2 < min(p.l4_body_width_mm, p.l5_body_width_mm) / 2 - 0.5,
             "pedicles must lie within the vertebral body width (pedicle_center_x_mm + pedicle_width_mm/2 < body width/2)"),
            (p.foraminal_width_mm < p.upper_foraminal_width_mm < p.foraminal_width_mm + p.sap_thickness_mm,
             "upper_foraminal_width_mm must lie between foraminal_width_mm and foraminal_width_mm + sap_thickness_mm"),
            (p.upper_foraminal_width_mm + 3 < p.canal_depth_mm + 4, "upper_foraminal_width_mm is too large for canal_depth_mm"),
            (p.l4_pedicle_top_gap_mm + p.l4_pedicle_height_mm < p.l4_body_height_mm - 1, "the L4 pedicle must end above the L4 inferior endplate"),
            (p.l5_pedicle_top_gap_mm + p.l5_pedicle_height_mm < p.l5_body_height_mm, "the L5 pedicle must fit the L5 body height"),
            (p.foramen_roof_mm() - p.sap_tip_mm() > 1.0, "the L5 SAP tip must stay > 1 mm below the L4 pedicle (reduce sap_tip_above_disc_mm)"),
            (p.canal_depth_mm - p.flavum_thickness_mm > p.sac_center_y_mm - p.sac_depth_mm / 2 + 1,
             "flavum_thickness_mm leaves no canal; reduce it"),
            (p.disc_bulge_mm < p.sac_center_y_mm + p.sac_depth_mm / 2 - 1, "disc_bulge_mm leaves no canal; reduce it"),
            (p.body_depth_mm / 2 + p.body_center_y_mm - p.skin_thickness_mm - p.subcutaneous_fat_mm > p.canal_depth_mm + 37,
             "body_depth_mm/body_center_y_mm leave no room for the spinous processes under the subcutaneous fat"),
        ]
        for ok, msg in checks:
            if not ok:
                raise InputError(f"inconsistent phantom parameters: {msg}")
        rem = (p.canal_depth_mm - p.flavum_thickness_mm) - (p.disc_bulge_mm)
        if rem < 2.0:
            raise InputError("inconsistent phantom parameters: disc bulge and flavum leave < 2 mm of canal; reduce them")

    # derived canal-frame positions (z' of the L4-5 foramen borders)
    def foramen_roof_mm(self) -> float:
        """z' of the inferior border of the L4 pedicle."""
        return self.disc_height_mm / 2 + self.l4_body_height_mm - self.l4_pedicle_top_gap_mm - self.l4_pedicle_height_mm

    def foramen_floor_mm(self) -> float:
        """z' of the superior border of the L5 pedicle."""
        return -self.disc_height_mm / 2 - self.l5_pedicle_top_gap_mm

    def sap_tip_mm(self) -> float:
        """z' of the L5 SAP tip."""
        return self.disc_height_mm / 2 + self.sap_tip_above_disc_mm

    def _iap_medial_x(self) -> float:
        return self.pedicle_center_x_mm - self.pedicle_width_mm / 2 - 3.0


#: named parameter presets
PRESETS: dict[str, dict] = {
    "normal": {},
    # central canal stenosis: diffuse disc bulge, hypertrophied flavum, facet hypertrophy (trefoil sac)
    "central-stenosis": {"disc_bulge_mm": 4.5, "flavum_thickness_mm": 7.0, "facet_hypertrophy_mm": 3.0},
    # foraminal stenosis: disc height loss (height ≤ 15 mm) and SAP overgrowth (width ≤ 8 mm)
    "foraminal-stenosis": {
        "disc_height_mm": 4.0,
        "l4_pedicle_height_mm": 16.0,
        "foraminal_width_mm": 5.0,
        "upper_foraminal_width_mm": 7.0,
        "sap_tip_above_disc_mm": 3.5,
        "disc_bulge_mm": 1.5,
    },
}


def preset_params(preset: str = "normal", **overrides) -> PhantomParams:
    """Parameters of a named preset (see :data:`PRESETS`), with optional field overrides."""
    if preset not in PRESETS:
        raise InputError(f"unknown phantom preset {preset!r}; choose one of {', '.join(PRESETS)}")
    p = PhantomParams().replace(**PRESETS[preset])
    return p.replace(**overrides) if overrides else p


#: relative / absolute jitter used by ``vary=True`` (field -> (kind, amount)); "rel" = ×(1 ± amount), "abs" = ± amount
_VARIATION = {
    "tilt_deg": ("abs", 8.0),
    "l4_body_width_mm": ("rel", 0.06),
    "l4_body_depth_mm": ("rel", 0.06),
    "l4_body_height_mm": ("rel", 0.05),
    "l5_body_width_mm": ("rel", 0.06),
    "l5_body_depth_mm": ("rel", 0.06),
    "l5_body_height_mm": ("rel", 0.05),
    "disc_height_mm": ("rel", 0.10),
    "sac_width_mm": ("rel", 0.08),
    "sac_depth_mm": ("rel", 0.08),
    "pedicle_width_mm": ("rel", 0.08),
    "l4_pedicle_height_mm": ("rel", 0.05),
    "l5_pedicle_height_mm": ("rel", 0.05),
    "foraminal_width_mm": ("rel", 0.08),
    "body_width_mm": ("rel", 0.10),
    "body_depth_mm": ("rel", 0.10),
    "subcutaneous_fat_mm": ("rel", 0.30),
}


#: draws tried by :func:`vary_params` before it gives up (project design choice)
VARY_MAX_DRAWS = 50


def vary_params(params: PhantomParams, seed: int) -> PhantomParams:
    """Randomly perturb ``params`` (deterministic per ``seed``) within realistic ranges; retries until valid.

    If none of :data:`VARY_MAX_DRAWS` draws is valid, ``params`` is returned unchanged and a ``UserWarning`` says so
    (the anatomy is then not varied for this seed).
    """
    rng = np.random.default_rng(seed)
    for _ in range(VARY_MAX_DRAWS):
        changes = {}
        for name, (kind, amount) in _VARIATION.items():
            v = getattr(params, name)
            r = rng.uniform(-1.0, 1.0)
            changes[name] = float(v + amount * r) if kind == "abs" else float(v * (1 + amount * r))
        w = changes["foraminal_width_mm"]
        changes["upper_foraminal_width_mm"] = float(w + (params.upper_foraminal_width_mm - params.foraminal_width_mm))
        cand = params.replace(**changes)
        try:
            cand.validate()
        except InputError:
            continue
        return cand
    warnings.warn(f"vary_params: none of {VARY_MAX_DRAWS} random variations of the phantom parameters was valid for "
                  f"seed {seed}; the anatomy is NOT varied (the unvaried parameters are used)", UserWarning, stacklevel=2)
    return params


# ----------------------------------------------------------------------------------------------------- primitives
_BIG = 1.0e4


class _Prim:
    """An implicit solid in canal coordinates with a bounding box. ``inside(X, Y, Z, m)`` = solid eroded by ``m``."""

    lo: np.ndarray
    hi: np.ndarray

    def inside(self, X, Y, Z, m: float = 0.0):  # pragma: no cover - abstract
        raise NotImplementedError


class _Box(_Prim):
    def __init__(self, x0, x1, y0, y1, z0, z1):
        self.lo = np.array([x0, y0, z0], float)
        self.hi = np.array([x1, y1, z1], float)

    def inside(self, X, Y, Z, m=0.0):
        lo, hi = self.lo + m, self.hi - m
        return (X >= lo[0]) & (X <= hi[0]) & (Y >= lo[1]) & (Y <= hi[1]) & (Z >= lo[2]) & (Z <= hi[2])


class _DBody(_Prim):
    """Vertebral body / disc: flat posterior wall at y'=0, half-elliptic anterior contour, z' in [z0, z1]."""

    def __init__(self, half_width, depth, z0, z1):
        self.a, self.d, self.z0, self.z1 = float(half_width), float(depth), float(z0), float(z1)
        self.lo = np.array([-self.a, -self.d, self.z0])
        self.hi = np.array([self.a, 0.0, self.z1])

    def inside(self, X, Y, Z, m=0.0):
        a, d = self.a - m, self.d - m
        yy = Y + 0.0  # ellipse centred on the posterior wall
        return (Y <= -m) & (Z >= self.z0 + m) & (Z <= self.z1 - m) & ((X / a) ** 2 + (yy / d) ** 2 <= 1.0)


class _PedicleBox(_Prim):
    """Pedicle: rectangle in (x', z') with rounded corners (radius r), extruded along y'."""

    def __init__(self, xc, half_w, zc, half_h, y0, y1, r=2.0):
        self.xc, self.hw, self.zc, self.hh, self.y0, self.y1, self.r = map(float, (xc, half_w, zc, half_h, y0, y1, r))
        self.lo = np.array([self.xc - self.hw, self.y0, self.zc - self.hh])
        self.hi = np.array([self.xc + self.hw, self.y1, self.zc + self.hh])

    def inside(self, X, Y, Z, m=0.0):
        hw, hh, r = self.hw - m, self.hh - m, max(self.r - m, 0.0)
        ax, az = np.abs(X - self.xc), np.abs(Z - self.zc)
        dx = np.maximum(ax - (hw - r), 0.0)
        dz = np.maximum(az - (hh - r), 0.0)
        return (ax <= hw) & (az <= hh) & (dx * dx + dz * dz <= r * r) & (Y >= self.y0 + m) & (Y <= self.y1 - m)


class _EllYZ(_Prim):
    """Elliptic prism along x': ((y'-yc)/ay)² + ((z'-zc)/az)² <= 1 and xmin <= |x'| <= xmax (both sides)."""

    def __init__(self, yc, zc, ay, az, xmax, xmin=0.0):
        self.yc, self.zc, self.ay, self.az, self.xmax, self.xmin = map(float, (yc, zc, ay, az, xmax, xmin))
        self.lo = np.array([-self.xmax, self.yc - self.ay, self.zc - self.az])
        self.hi = np.array([self.xmax, self.yc + self.ay, self.zc + self.az])

    def inside(self, X, Y, Z, m=0.0):
        ay, az = self.ay - m, self.az - m
        ax = np.abs(X)
        return (((Y - self.yc) / ay) ** 2 + ((Z - self.zc) / az) ** 2 <= 1.0) & (ax <= self.xmax - m) & (ax >= self.xmin)


class _EllXY(_Prim):
    """Elliptic cylinder along z': ((x'-xc)/ax)² + ((y'-yc)/ay)² <= 1, z' in [z0, z1]."""

    def __init__(self, xc, yc, ax, ay, z0=-_BIG, z1=_BIG):
        self.xc, self.yc, self.ax, self.ay, self.z0, self.z1 = map(float, (xc, yc, ax, ay, z0, z1))
        self.lo = np.array([self.xc - self.ax, self.yc - self.ay, self.z0])
        self.hi = np.array([self.xc + self.ax, self.yc + self.ay, self.z1])

    def inside(self, X, Y, Z, m=0.0):
        return (((X - self.xc) / (self.ax - m)) ** 2 + ((Y - self.yc) / (self.ay - m)) ** 2 <= 1.0) & (Z >= self.z0) & (Z <= self.z1)


class _Ellipsoid(_Prim):
    def __init__(self, c, semi):
        self.c, self.s = np.asarray(c, float), np.asarray(semi, float)
        self.lo, self.hi = self.c - self.s, self.c + self.s

    def inside(self, X, Y, Z, m=0.0):
        s = self.s - m
        return ((X - self.c[0]) / s[0]) ** 2 + ((Y - self.c[1]) / s[1]) ** 2 + ((Z - self.c[2]) / s[2]) ** 2 <= 1.0


class _CylX(_Prim):
    """Circular cylinder along x' (nerve root), radius r around (y', z') = (yc, zc), x0 <= x' <= x1."""

    def __init__(self, yc, zc, r, x0, x1):
        self.yc, self.zc, self.r, self.x0, self.x1 = map(float, (yc, zc, r, x0, x1))
        self.lo = np.array([self.x0, self.yc - self.r, self.zc - self.r])
        self.hi = np.array([self.x1, self.yc + self.r, self.zc + self.r])

    def inside(self, X, Y, Z, m=0.0):
        return ((Y - self.yc) ** 2 + (Z - self.zc) ** 2 <= (self.r - m) ** 2) & (X >= self.x0) & (X <= self.x1)


class _And(_Prim):
    """Intersection of primitive ``a`` with ``b`` (bounding box of ``a``)."""

    def __init__(self, a: _Prim, b: _Prim):
        self.a, self.b = a, b
        self.lo, self.hi = np.maximum(a.lo, b.lo), np.minimum(a.hi, b.hi)

    def inside(self, X, Y, Z, m=0.0):
        return self.a.inside(X, Y, Z, m) & self.b.inside(X, Y, Z, m)


class _Sac(_Prim):
    """The dural sac: elliptic cylinder minus x'-prism indentations and the lateral-recess limit (see module doc)."""

    def __init__(self, a, b, yc, cuts: list[_EllYZ], recess: _EllYZ | None, c: float):
        self.a, self.b, self.yc, self.cuts, self.recess, self.c = float(a), float(b), float(yc), cuts, recess, float(c)
        self.lo = np.array([-self.a, self.yc - self.b, -_BIG])
        self.hi = np.array([self.a, self.yc + self.b, _BIG])

    def _ellipse(self, X, Y):
        return (X / self.a) ** 2 + ((Y - self.yc) / self.b) ** 2 <= 1.0

    def inside(self, X, Y, Z, m=0.0):
        ok = self._ellipse(X, Y)
        for cut in self.cuts:
            ok &= ~(((Y - cut.yc) / cut.ay) ** 2 + ((Z - cut.zc) / cut.az) ** 2 <= 1.0)
        if self.recess is not None:
            r = self.recess
            in_r = ((Y - r.yc) / r.ay) ** 2 + ((Z - r.zc) / r.az) ** 2 <= 1.0
            ok &= ~(in_r & (np.abs(X) > self.c))
        return ok


# ----------------------------------------------------------------------------------------------------- exact area
def _G(u):
    """Antiderivative of sqrt(1-u²)."""
    u = min(max(u, -1.0), 1.0)
    return 0.5 * (u * math.sqrt(max(0.0, 1.0 - u * u)) + math.asin(u))


def _line_ellipse_interval(y0, z0, ey, ez, yc, zc, ay, az):
    """Parameter interval [t1, t2] where (y0 + t ey, z0 + t ez) lies in the ellipse, or None."""
    dy, dz = (y0 - yc) / ay, (z0 - zc) / az
    py, pz = ey / ay, ez / az
    A = py * py + pz * pz
    B = 2 * (dy * py + dz * pz)
    C = dy * dy + dz * dz - 1.0
    disc = B * B - 4 * A * C
    if A <= 0 or disc <= 0:
        return None
    r = math.sqrt(disc)
    return ((-B - r) / (2 * A), (-B + r) / (2 * A))


# ----------------------------------------------------------------------------------------------------- truth
@dataclasses.dataclass
class ForamenTruth:
    """Exact L4-5 foramen measurements of one side (definitions in DEVELOPERS.md).

    Attributes
    ----------
    side : str
        ``"left"`` (+x LPS) or ``"right"``.
    height_mm : float
        Inferior border of the L4 pedicle to superior border of the L5 pedicle (parallel borders, along z').
    width_mm : float
        Posteroinferior corner of the L4 body to the anterior face of the L5 SAP (shortest distance).
    area_mm2 : float
        Area of the foramen outline on the lateral view.
    height_points_lps, width_points_lps : numpy.ndarray
        2×3 end points (LPS mm): [upper/L4 point, lower/L5 point] and [L4 corner, SAP point].
    outline_lps : numpy.ndarray
        N×3 closed outline (first point not repeated), on the parasagittal plane through the pedicle axis.
    outline_canal_yz : numpy.ndarray
        N×2 the same outline in lateral-view (y', z') canal coordinates.
    plane_x_mm : float
        x' of the parasagittal plane (pedicle axis); the lateral view is identical for
        |x'| in [pedicle_center - pedicle_width/2 + 2, pedicle_center + pedicle_width/2 - 2].
    """

    side: str
    height_mm: float
    width_mm: float
    area_mm2: float
    height_points_lps: np.ndarray
    width_points_lps: np.ndarray
    outline_lps: np.ndarray
    outline_canal_yz: np.ndarray
    plane_x_mm: float

    def to_dict(self) -> dict:
        return {
            "side": self.side,
            "height_mm": self.height_mm,
            "width_mm": self.width_mm,
            "area_mm2": self.area_mm2,
            "height_points_lps": np.round(self.height_points_lps, 6).tolist(),
            "width_points_lps": np.round(self.width_points_lps, 6).tolist(),
            "outline_lps": np.round(self.outline_lps, 5).tolist(),
            "plane_x_mm": self.plane_x_mm,
        }


@dataclasses.dataclass
class PhantomTruth:
    """Exact ground truth of a :class:`Phantom` (computed from the analytic geometry, never from a raster)."""

    foramen: dict[str, ForamenTruth]
    posterior_disc_height_mm: float
    posterior_disc_height_points_lps: np.ndarray
    tilt_deg: float
    canal_axis_lps: np.ndarray
    sac_area_unindented_mm2: float
    _phantom: Phantom = dataclasses.field(repr=False, default=None)

    def canal_point_lps(self, s_mm: float) -> np.ndarray:
        """LPS point of the canal (dural sac) centreline at arc length ``s_mm`` (0 = mid L4-5 disc, + superior)."""
        ph = self._phantom
        return ph.canal_to_lps(np.array([0.0, ph.params.sac_center_y_mm, float(s_mm)]))

    def dsca_plane_mm2(self, point_lps, normal_lps) -> float:
        """Exact dural sac area (mm²) on the plane through ``point_lps`` with normal ``normal_lps``.

        The plane must contain the left-right axis (normal ⟂ x): axial, gantry-tilted axial or canal-perpendicular
        planes. Raises ValueError otherwise or for planes parallel to the canal.
        """
        return self._phantom._sac_area_plane(point_lps, normal_lps)

    def dsca_axial_mm2(self, z_mm: float) -> float:
        """Exact dural sac area (mm²) on the axial scanner plane LPS z = ``z_mm``."""
        return self.dsca_plane_mm2((0.0, 0.0, float(z_mm)), (0.0, 0.0, 1.0))

    def dsca_perpendicular_mm2(self, s_mm: float) -> float:
        """Exact dural sac area (mm²) on the plane perpendicular to the canal at arc length ``s_mm`` (0 = mid-disc)."""
        return self.dsca_plane_mm2(self.canal_point_lps(s_mm), self.canal_axis_lps)

    def canal_s_on_plane(self, point_lps, normal_lps) -> float:
        """Arc length s (mm) where the canal centreline crosses the plane."""
        ph = self._phantom
        n = ph.R.T @ np.asarray(normal_lps, float)
        p = ph.lps_to_canal(np.asarray(point_lps, float))
        if abs(n[2]) < 1e-12:
            raise ValueError("plane is parallel to the canal axis")
        return float(p[2] - (n[0] * (0.0 - p[0]) + n[1] * (ph.params.sac_center_y_mm - p[1])) / n[2])

    def slice_table(self, grid: Volume) -> list[dict]:
        """Per-slice truth of an axial stack grid: slice index, position, exact axial and perpendicular DSCA, level.

        ``position_mm`` is the slice position along its normal (DICOM SliceLocation convention: normal · centre);
        ``z_mm`` the LPS z of the canal centreline on the slice; ``s_mm`` the canal arc length there.
        """
        rows = []
        n = grid.slice_normal()
        ni, nj = grid.size_ijk[0], grid.size_ijk[1]
        for k in range(grid.size_ijk[2]):
            c = grid.index_to_lps(((ni - 1) / 2, (nj - 1) / 2, k))
            s = self.canal_s_on_plane(c, n)
            cl = self.canal_point_lps(s)
            rows.append(
                {
                    "slice": k,
                    "position_mm": float(np.dot(c, n)),
                    "z_mm": float(cl[2]),
                    "s_mm": s,
                    "dsca_axial_mm2": self.dsca_plane_mm2(c, n),
                    "dsca_perpendicular_mm2": self.dsca_perpendicular_mm2(s),
                    "level": self._phantom.level_at(s),
                    "angle_to_canal_deg": float(np.degrees(np.arccos(min(1.0, abs(float(np.dot(n, self.canal_axis_lps))))))),
                }
            )
        return rows

    def to_dict(self) -> dict:
        return {
            "foramen": {k: v.to_dict() for k, v in self.foramen.items()},
            "posterior_disc_height_mm": self.posterior_disc_height_mm,
            "posterior_disc_height_points_lps": np.round(self.posterior_disc_height_points_lps, 6).tolist(),
            "tilt_deg": self.tilt_deg,
            "canal_axis_lps": np.round(self.canal_axis_lps, 12).tolist(),
            "sac_area_unindented_mm2": self.sac_area_unindented_mm2,
            "dsca_perpendicular_at_disc_mm2": self.dsca_perpendicular_mm2(0.0),
            "dsca_axial_at_disc_mm2": self.dsca_plane_mm2(self.canal_point_lps(0.0), (0.0, 0.0, 1.0)),
        }


# ----------------------------------------------------------------------------------------------------- body
@dataclasses.dataclass
class BodyOutline:
    """Skin surface: elliptic cylinder along the canal axis (canal-frame centre (0, center_y), semi-axes)."""

    center_y_mm: float
    half_width_mm: float
    half_depth_mm: float
    skin_thickness_mm: float
    subcutaneous_fat_mm: float
    _phantom: Phantom = dataclasses.field(repr=False, default=None)

    def contains(self, points_lps) -> np.ndarray:
        """Boolean: points (…, 3) inside the skin surface."""
        c = self._phantom.lps_to_canal(points_lps)
        return (c[..., 0] / self.half_width_mm) ** 2 + ((c[..., 1] - self.center_y_mm) / self.half_depth_mm) ** 2 <= 1.0

    def ray_exit_lps(self, origin_lps, direction_lps) -> np.ndarray:
        """Point where the ray from ``origin_lps`` (inside the body) along ``direction_lps`` crosses the skin."""
        ph = self._phantom
        o = ph.lps_to_canal(np.asarray(origin_lps, float))
        d = ph.R.T @ np.asarray(direction_lps, float)
        d = d / np.linalg.norm(d)
        a, b = self.half_width_mm, self.half_depth_mm
        oy = o[1] - self.center_y_mm
        A = (d[0] / a) ** 2 + (d[1] / b) ** 2
        B = 2 * (o[0] * d[0] / a**2 + oy * d[1] / b**2)
        C = (o[0] / a) ** 2 + (oy / b) ** 2 - 1.0
        if A <= 1e-15:
            raise ValueError("ray is parallel to the body axis; it never leaves the body outline")
        disc = B * B - 4 * A * C
        if disc < 0:
            raise ValueError("ray misses the body outline")
        t = (-B + math.sqrt(disc)) / (2 * A)
        if t < 0:
            raise ValueError("ray origin is outside the body and points away from it")
        return ph.canal_to_lps(o + t * d)

    def skin_points_lps(self, s_mm: float = 0.0, n: int = 360) -> np.ndarray:
        """``n`` points of the skin outline on the plane perpendicular to the canal at arc length ``s_mm``."""
        a = np.linspace(0, 2 * np.pi, n, endpoint=False)
        c = np.stack([self.half_width_mm * np.cos(a), self.center_y_mm + self.half_depth_mm * np.sin(a), np.full(n, float(s_mm))], -1)
        return self._phantom.canal_to_lps(c)


# ----------------------------------------------------------------------------------------------------- phantom
@dataclasses.dataclass
class _Part:
    prim: _Prim
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
        bone_parts: dict[str, list[_Prim]] = {n: [] for n in order}
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
            prims.append(_DBody(bw / 2, bd, z0, z1))
            for sgn in (1.0, -1.0):
                xsl = sorted((sgn * x_med, sgn * (x_lat + 1.0)))
                prims.append(_PedicleBox(sgn * pc, hw, zc, hh, -4.0, y_back))
                # pillar / pars interarticularis: from the SAP tip of the vertebra below up to the pedicle top
                prims.append(_Box(xsl[0], xsl[1], Wu, y_back, tip_below, zc + hh))
                # superior articular process: anterior face at y' = Wn (foramen width), up to its tip
                prims.append(_Box(xsl[0], xsl[1], Wn, Wn + tsapn, zc + hh - 2.0, tip_n))
                # inferior articular process: medial to the pedicle column, behind the SAP of the vertebra below
                xi = sorted((sgn * (x_med - 3.0), sgn * x_med))
                prims.append(_Box(xi[0], xi[1], Wu, y_back, tip_below - 8.0, zc - hh + 1.0))
                if below is not None:
                    # its lateral part, directly behind the SAP of the vertebra below (the facet joint): outside
                    # the foramen in the lateral view (y' >= W + SAP thickness >= upper foraminal width)
                    Wb, _, tsap_b = fw[below]
                    z_bot = max(tip_below - 10.0, ped[below][0] + ped[below][1] + 1.0)
                    xf = sorted((sgn * x_med, sgn * (x_lat + 1.0)))
                    prims.append(_Box(xf[0], xf[1], Wb + tsap_b, y_back + 2.0, z_bot, tip_below))
                # lamina: from the pillar to the midline, roof of the canal
                xl = sorted((0.0, sgn * (x_med + 1.0)))
                prims.append(_Box(xl[0], xl[1], cd, cd + 6.0, zc - hh - 6.0, zc + hh))
                # transverse process (thin, lateral, at pedicle level)
                xt = sorted((sgn * (x_lat - 1.0), sgn * (x_lat + (24.0 if n != "L5" else 14.0))))
                tz = 5.0 if n != "L5" else 7.0
                prims.append(_Box(xt[0], xt[1], Wu - 2.0, Wu + 6.0, zc - tz, zc + tz))
            # spinous process (midline)
            prims.append(_Box(-2.5, 2.5, cd + 3.0, cd + 36.0, zc - hh - 4.0, zc + hh - 2.0))
        # ---- soft tissues (painted first; later parts overwrite earlier ones)
        bc_y, bhw, bhd = p.body_center_y_mm, p.body_width_mm / 2, p.body_depth_mm / 2
        s1, s2 = p.skin_thickness_mm, p.skin_thickness_mm + p.subcutaneous_fat_mm
        inner = _EllXY(0.0, bc_y, bhw - s2, bhd - s2)
        parts.append(_Part(_EllXY(0.0, bc_y, bhw, bhd), SKIN))
        parts.append(_Part(_EllXY(0.0, bc_y, bhw - s1, bhd - s1), SUBCUT_FAT))
        parts.append(_Part(inner, SOFT))
        for sgn in (1.0, -1.0):
            parts.append(_Part(_And(_EllXY(sgn * 25.0, cd + 21.0, 25.5, 22.0), inner), MUSCLE))
            parts.append(_Part(_And(_EllXY(sgn * 36.0, -24.0, 14.0, 17.0), inner), PSOAS))
        # epidural / foraminal fat: canal and foramina
        parts.append(_Part(_EllXY(0.0, cd / 2, x_lat + 6.0, cd / 2 + 2.0), EPI_FAT))
        # ligamentum flavum at every interlaminar window; the L4-5 one carries the thickness parameter
        a, b, yc = p.sac_width_mm / 2, p.sac_depth_mm / 2, p.sac_center_y_mm
        cuts: list[_EllYZ] = []
        recess = None
        for idx, n in enumerate(order[:-1]):
            up = order[idx + 1]
            zlo = ped[n][0] + ped[n][1]  # top of lower lamina
            zhi = ped[up][0] - ped[up][1] - 6.0  # bottom of upper lamina
            zc_f, hz = (zlo + zhi) / 2, (zhi - zlo) / 2 + 3.0
            t = p.flavum_thickness_mm if n == "L5" else defaults.flavum_thickness_mm
            fl = _EllYZ(cd + 1.0, zc_f, 1.0 + t, hz, x_med - 0.5)
            parts.append(_Part(fl, LIGAMENT))
            if n == "L5":
                cuts.append(fl)
                if p.facet_hypertrophy_mm > 0:
                    c = a - p.facet_hypertrophy_mm
                    recess = _EllYZ(cd + 1.0, zc_f, cd + 1.0 - yc, hz, x_med - 0.5, xmin=c)
                    parts.append(_Part(recess, LIGAMENT))
                    self._recess_c = c
        # nerve roots exiting the L4-5 foramen (upper part, under the L4 pedicle), painted before bone and sac
        roof, tip = p.foramen_roof_mm(), p.sap_tip_mm()
        r_root = max(0.8, min(2.5, (roof - max(tip, d / 2)) / 2 - 0.3, p.upper_foraminal_width_mm / 2 - 0.5))
        for sgn in (1.0, -1.0):
            xr = sorted((sgn * (a - 1.5), sgn * (x_lat + 12.0)))
            parts.append(_Part(_CylX(min(p.upper_foraminal_width_mm / 2, yc), roof - r_root - 0.3, r_root, xr[0], xr[1]), NERVE))
        # discs: annulus + nucleus; L4-5 bulge (prism along x' behind the disc)
        for n, (z0, z1) in discs.items():
            hw_d = (min(p.l4_body_width_mm, p.l5_body_width_mm) if n == "L4-5" else p.l4_body_width_mm) / 2
            dep = p.l4_body_depth_mm
            parts.append(_Part(_DBody(hw_d, dep, z0, z1), ANNULUS, foramen=2 if n == "L4-5" else 0))
            h = z1 - z0
            parts.append(_Part(_Ellipsoid((0.0, -dep * 0.45, (z0 + z1) / 2), (hw_d * 0.55, dep * 0.3, h * 0.35)), NUCLEUS,
                               foramen=2 if n == "L4-5" else 0))
        if p.disc_bulge_mm > 0:
            bulge = _EllYZ(0.0, 0.0, p.disc_bulge_mm, d / 2, min(p.l4_body_width_mm, p.l5_body_width_mm) / 2 - 0.5)
            parts.append(_Part(bulge, ANNULUS, foramen=2))
            cuts.insert(0, bulge)
        # bones: per vertebra
        for n in order:
            for prim in bone_parts[n]:
                parts.append(_Part(prim, CORTEX, foramen=lab.get(n, 0), bone=True))
        # the dural sac last (nothing else overlaps it by construction)
        self._sac = _Sac(a, b, yc, cuts, recess, getattr(self, "_recess_c", a))
        parts.append(_Part(self._sac, CSF))
        # cauda equina rootlets (dorsal half of the sac, supine), clipped to the sac: the sac map = CSF ∪ rootlets
        for fx, fy in ((-0.5, 0.45), (0.5, 0.45), (-0.2, 0.62), (0.2, 0.62), (-0.68, 0.12), (0.68, 0.12), (0.0, 0.35),
                       (-0.35, 0.2), (0.35, 0.2)):
            parts.append(_Part(_And(_EllXY(fx * a, yc + fy * b, 0.9, 0.9), self._sac), CAUDA))
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
            iv = _line_ellipse_interval(y0, z0, ey, ez, cut.yc, cut.zc, cut.ay, cut.az)
            if iv:
                zero.append(iv)
        capped = None
        brk = {t_lo, t_hi}
        if sac.recess is not None:
            r = sac.recess
            capped = _line_ellipse_interval(y0, z0, ey, ez, r.yc, r.zc, r.ay, r.az)
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
                total += 2 * a * b / ey * (_G(u2) - _G(u1))
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
    def _parts_for(self, kind: str) -> list[tuple[_Prim, int, float]]:
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
        pending_bone: list[_Prim] = []

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
            lo = np.maximum(prim.lo, -_BIG)
            hi = np.minimum(prim.hi, _BIG)
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



# ============================================================================================ realistic foramen phantom
# A separate, compact L4-5 phantom for the foramen morphometry only (the presets above are unchanged). It exercises
# what real label maps do: a curved SAP leaning back to a pointed tip, oblique pedicles, a facet gap between the SAP
# tip and the L4 inferior articular process, different left and right sides, and optionally a disc bulging under the
# foramen. Coordinates: canal frame x' (left), y' (posterior), z' (superior), origin at the centre of the L4-5 disc;
# the vertebral bodies have a flat posterior wall at y' = -2 mm and the disc spans z' = -4..4 mm. In every parasagittal
# plane within the pedicle's full-coverage band the foramen has the same outline, so its truth is exact.


@dataclasses.dataclass(frozen=True)
class ForamenSide:
    """One side of :func:`realistic_foramen_phantom` (mm, degrees; canal frame)."""

    roof_z_mm: float  # inferior aspect of the L4 pedicle (L4 notch)
    floor_z_mm: float  # superior aspect of the L5 pedicle (L5 notch), below the disc (z' < -4)
    sap_face_y_mm: float  # y' of the SAP's anterior face at the floor
    sap_thickness_mm: float  # SAP thickness at the floor; its posterior face is vertical
    sap_height_mm: float  # tip above the floor; the anterior face y = W + k (z - floor)^2 meets the back at the tip
    facet_gap_mm: float  # vertical gap between the SAP tip and the L4 inferior articular process
    pedicle_x_mm: float  # |x'| of the pedicle centre at y' = 5 mm
    pedicle_obliquity_deg: float  # pedicle axis angle to y' in the axial plane
    pedicle_half_width_mm: float = 5.0

    @property
    def k(self) -> float:
        return self.sap_thickness_mm / self.sap_height_mm**2

    @property
    def tip_yz(self) -> np.ndarray:
        return np.array([self.sap_face_y_mm + self.sap_thickness_mm, self.floor_z_mm + self.sap_height_mm])


#: L4 posteroinferior body corner of the realistic phantom (y', z')
REALISTIC_CORNER_YZ = (-2.0, 4.0)
_R_DISC_Z = 4.0
_R_WALL_Y = -2.0

REALISTIC_PRESETS: dict[str, dict] = {
    # asymmetric sides, curved SAP, oblique pedicles, facet gaps; no disc bulge
    "realistic": {
        "left": ForamenSide(17.0, -5.0, 5.0, 6.0, 11.0, 3.0, 18.0, 12.0),
        "right": ForamenSide(15.5, -4.5, 3.0, 5.0, 10.0, 4.0, 17.0, -8.0),
        "disc_bulge_mm": 0.0,
    },
    # the same with the disc bulging 4 mm into the foramen under its apex (a vertical chord from the roof would end
    # on the disc), and a narrow, stenotic right side
    "realistic-disc-bulge": {
        "left": ForamenSide(18.0, -5.5, 6.0, 6.0, 12.0, 2.5, 18.0, 10.0),
        "right": ForamenSide(13.0, -5.0, 5.5, 5.0, 9.0, 3.5, 17.5, 15.0),
        "disc_bulge_mm": 4.0,
    },
    # the right SAP nearly touches the bulging disc (0.5 mm), which splits the foramen on every parasagittal slab:
    # the side can only be measured by a fallback, which must put it under review and never raise the clinical flag
    "realistic-disc-contact": {
        "left": ForamenSide(18.0, -5.5, 6.0, 6.0, 12.0, 2.5, 18.0, 10.0),
        "right": ForamenSide(13.0, -5.0, 2.5, 5.0, 9.0, 3.5, 17.5, 15.0),
        "disc_bulge_mm": 4.0,
    },
}


def _realistic_polygon(side: ForamenSide, bulge: float, n_curve: int = 4000) -> np.ndarray:
    """Exact foramen outline (y', z') of one side, closed at the facet by the segment SAP tip -> L4 IAP."""
    w, zf, roof = side.sap_face_y_mm, side.floor_z_mm, side.roof_z_mm
    tip = side.tip_yz
    iap_front = tip[0] - 1.0
    iap_bottom = tip[1] + side.facet_gap_mm
    z = np.linspace(tip[1], zf, n_curve)
    face = np.stack([w + side.k * (z - zf) ** 2, z], axis=1)
    pts = [(_R_WALL_Y, roof), (iap_front, roof), (iap_front, iap_bottom), (tip[0], iap_bottom)]
    pts += [tuple(p) for p in face]
    pts += [(_R_WALL_Y, zf), (_R_WALL_Y, -_R_DISC_Z)]
    if bulge > 0:
        pts += [(_R_WALL_Y + bulge, -_R_DISC_Z), (_R_WALL_Y + bulge, _R_DISC_Z), (_R_WALL_Y, _R_DISC_Z)]
    return np.asarray(pts, dtype=float)


def _realistic_truth(side: ForamenSide, bulge: float) -> dict:
    poly = _realistic_polygon(side, bulge)
    y, z = poly[:, 0], poly[:, 1]
    area = 0.5 * abs(float(np.sum(y * np.roll(z, -1) - np.roll(y, -1) * z)))
    zf = side.floor_z_mm
    zz = np.linspace(zf, side.tip_yz[1], 200001)
    face = np.stack([side.sap_face_y_mm + side.k * (zz - zf) ** 2, zz], axis=1)
    d = np.linalg.norm(face - np.asarray(REALISTIC_CORNER_YZ), axis=1)
    i = int(np.argmin(d))
    return {
        "height_mm": side.roof_z_mm - zf,
        "width_mm": float(d[i]),
        "area_mm2": area,
        "width_points_yz": np.array([REALISTIC_CORNER_YZ, face[i]]),
        "facet_gap_mm": side.facet_gap_mm,
        "outline_yz": poly,
    }


def _realistic_labels(X, Y, Z, sides: dict, bulge: float) -> np.ndarray:
    """Label (0, 1 L4, 2 disc, 3 L5) at canal-frame points."""
    out = np.zeros(X.shape, np.uint8)
    body_x = np.abs(X) <= 26.0
    body_y = (Y >= -34.0) & (Y <= _R_WALL_Y)
    out[body_x & body_y & (Z >= _R_DISC_Z) & (Z <= 30.0)] = 1
    out[body_x & body_y & (Z <= -_R_DISC_Z) & (Z >= -30.0)] = 3
    out[body_x & (Y >= -34.0) & (Y <= _R_WALL_Y + bulge) & (np.abs(Z) < _R_DISC_Z)] = 2
    for name, sd in sides.items():
        sg = 1.0 if name == "left" else -1.0
        xs = sg * X  # lateral positive
        tip = sd.tip_yz
        ybk = tip[0] + 6.0  # back of the articular pillars
        # oblique pedicle column (both vertebrae share its footprint)
        xc = sd.pedicle_x_mm + (Y - 5.0) * np.tan(np.radians(sd.pedicle_obliquity_deg))
        ped = (np.abs(xs - xc) <= sd.pedicle_half_width_mm) & (Y > _R_WALL_Y - 0.5) & (Y <= 12.0)
        pillar = (xs >= sd.pedicle_x_mm - 6.0) & (xs <= sd.pedicle_x_mm + 7.0)
        # L4: pedicle above the roof; pars / IAP behind it (down to the facet gap above the SAP tip)
        l4 = ped & (Z >= sd.roof_z_mm) & (Z <= 30.0)
        l4 |= pillar & (Y >= 12.0) & (Y <= ybk) & (Z >= sd.roof_z_mm) & (Z <= 30.0)
        l4 |= pillar & (Y >= tip[0] - 1.0) & (Y <= ybk) & (Z >= tip[1] + sd.facet_gap_mm) & (Z <= 30.0)
        # L5: pedicle below the floor, SAP (curved anterior face, vertical back) rising from it
        l5 = ped & (Z <= sd.floor_z_mm) & (Z >= -30.0)
        l5 |= pillar & (Y >= 12.0) & (Y <= ybk - 2.0) & (Z <= sd.floor_z_mm) & (Z >= -30.0)
        zr = np.clip(Z - sd.floor_z_mm, 0.0, None)
        sap = pillar & (Z >= sd.floor_z_mm - 1.0) & (Z <= tip[1]) & (Y >= sd.sap_face_y_mm + sd.k * zr**2) & (Y <= tip[0])
        l5 |= sap
        l5 |= pillar & (Y >= sd.sap_face_y_mm) & (Y <= tip[0]) & (Z <= sd.floor_z_mm) & (Z >= -30.0)
        out[l4 & (out == 0)] = 1
        out[l5 & (out == 0)] = 3
    # laminae joining both sides behind the canal
    lam_y = (Y >= 16.0) & (Y <= 22.0)
    out[(np.abs(X) <= 24.0) & lam_y & (Z >= 18.0) & (Z <= 30.0) & (out == 0)] = 1
    out[(np.abs(X) <= 24.0) & lam_y & (Z <= -8.0) & (Z >= -30.0) & (out == 0)] = 3
    return out


def realistic_foramen_phantom(
    preset: str = "realistic", spacing_mm: float = 0.5, rotation_deg=(0.0, 0.0, 0.0), supersample: int = 2
) -> tuple[Volume, dict]:
    """Label map (1 L4, 2 L4-5 disc, 3 L5) of a realistic L4-5 foramen phantom and its exact truth.

    Parameters
    ----------
    preset : str
        A key of :data:`REALISTIC_PRESETS`.
    spacing_mm : float
        Isotropic grid spacing.
    rotation_deg : (float, float, float)
        Rotation of the anatomy about LPS x, y, z (degrees), applied about the disc centre (the grid stays axial).
    supersample : int
        Points per voxel and axis; each voxel takes the label of most of its points.

    Returns
    -------
    (Volume, dict)
        The label map and ``{"left"|"right": {"height_mm", "width_mm", "area_mm2", "width_points_yz", ...},
        "rotation": 3×3 matrix (canal frame → LPS)}``. Height = L4 notch to L5 notch (roof to floor), width = L4
        posteroinferior corner to the nearest point of the SAP's anterior face, area = the outline closed at the
        facet by the segment from the SAP tip to the L4 inferior articular process.
    """
    if preset not in REALISTIC_PRESETS:
        raise InputError(f"unknown realistic foramen preset {preset!r}; choose one of {', '.join(REALISTIC_PRESETS)}")
    cfg = REALISTIC_PRESETS[preset]
    sides = {k: cfg[k] for k in ("left", "right")}
    bulge = float(cfg["disc_bulge_mm"])
    ax, ay, az = np.radians(rotation_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rot = rz @ ry @ rx
    half = np.array([42.0, 42.0, 36.0])
    n = np.ceil(2 * half / spacing_mm).astype(int) + 1
    origin = -half + np.array([0.0, -4.0, 0.0]) + 0.13  # no voxel centre on a boundary of the anatomy (ties)
    vol = Volume(np.zeros(n[::-1], np.uint8), (spacing_mm,) * 3, origin, np.eye(3))
    ss = max(1, int(supersample))
    offs = (np.arange(ss) + 0.5) / ss - 0.5
    counts = np.zeros((4, *n[::-1]), np.uint8)
    k_idx, j_idx, i_idx = np.meshgrid(*(np.arange(m) for m in n[::-1]), indexing="ij")
    for oz in offs:
        for oy in offs:
            for ox in offs:
                p = np.stack([origin[0] + (i_idx + ox) * spacing_mm, origin[1] + (j_idx + oy) * spacing_mm,
                              origin[2] + (k_idx + oz) * spacing_mm], axis=-1)
                q = p @ rot  # LPS -> canal frame (rot is orthonormal)
                lab = _realistic_labels(q[..., 0], q[..., 1], q[..., 2], sides, bulge)
                for v in range(4):
                    counts[v] += lab == v
    vol = vol.with_array(np.argmax(counts, axis=0).astype(np.uint8))
    truth = {name: _realistic_truth(sd, bulge) for name, sd in sides.items()}
    truth["rotation"] = rot
    return vol, truth
