"""Tissue labels, anatomy parameters, presets and random variation of the procedural lumbar phantom.

:class:`PhantomParams` (units in the names, typical adult dimensions in :mod:`spinemorph.phantom`'s docstring),
:data:`PRESETS` / :func:`preset_params`, :func:`vary_params` (``make_phantom(..., vary=True)``). Re-exported by
:mod:`spinemorph.phantom`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from spinemorph.errors import InputError

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
