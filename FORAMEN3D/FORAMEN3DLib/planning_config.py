"""Planning settings: :class:`PlanningConfig`, the cited reference values, targets, bone scopes, sides, and
:class:`TargetOutsideBodyError`. Part of :mod:`FORAMEN3DLib.planning` (conventions in its docstring); imports no
other ``planning_*`` module.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from spinemorph.errors import InputError


class TargetOutsideBodyError(InputError):
    """The target lies outside the image's body mask: no channel reaches the skin (e.g. a field of view that cuts
    the body, or image and labels that do not overlap). Callers may plan again without the image
    (:func:`FORAMEN3DLib.markup_model.plan_with_skin_fallback`)."""


#: side name -> sign of the frame x axis (LPS x = patient left)
SIDES = {"left": 1.0, "right": -1.0}
#: target kinds understood by :func:`plan`
TARGETS = ("disc-posterior-third", "foramen-centre")
#: which part of the channel decides "bone-free": the whole channel (entry → target) or the approach (entry → disc)
BONE_SCOPES = ("channel", "approach")
#: supported working-channel diameters (mm), see REFERENCE_VALUES["cannula_diameter_mm"]
DIAMETER_RANGE_MM = (6.0, 8.0)

#: literature values used for defaults and for the report's comparison; all configurable through PlanningConfig
REFERENCE_VALUES: dict = {
    "entry_distance_from_midline_mm": {
        "value": [100.0, 120.0],
        "source": "Kambin: skin entry 10-12 cm from the midline, as cited by Patgaonkar P et al., Asian J Neurosurg "
        "2024;19(4):659-665, doi:10.1055/s-0044-1788680 (secondary citation; original not checked)",
        "certainty": "secondary citation",
    },
    "l45_mri_entry_vs_medial_angle": {
        "value": [
            {"target": "lateral nucleus", "entry_distance_mm": 45.0, "medial_angle_deg": 20.0},
            {"target": "nucleus centre", "entry_distance_mm": 77.0, "medial_angle_deg": 47.0},
            {"target": "posterior nucleus", "entry_distance_mm": 140.0, "medial_angle_deg": 61.0},
            {"target": "posterior annulus", "entry_distance_mm": 355.0, "medial_angle_deg": 80.0},
        ],
        "sagittal_inclination_deg": 10.0,
        "sagittal_inclination_direction": "caudal",
        "source": "MRI study of 102 patients, Kambin's triangle and trajectories at L3/4-L5/S1 (abstract indexed in "
        "MyMedR, author 'Rajagopal AR'); journal and year not verified. Medial angle interpreted as measured from the "
        "sagittal plane (larger angle = more lateral entry), which the listed distances imply; the sagittal "
        "inclination's measurement plane (3D elevation vs lateral-view projection) is not stated in the abstract",
        "certainty": "abstract only; bibliographic details and angle conventions uncertain",
    },
    "cannula_diameter_mm": {
        "value": [6.0, 8.0],
        "source": "Kumari A et al., Anat Cell Biol 2021;54(1): cannula external diameter 6-8 mm recommended through "
        "Kambin's triangle (inscribed circle at L4-5: 7.26 mm right, 8.16 mm left, cadaveric); Pairaiturkar PP et "
        "al., J Korean Neurosurg Soc 2019;62(4): only 2 % of 427 bony Kambin's triangles admitted an 8 mm cannula",
        "certainty": "abstracts read",
    },
    "target_posterior_third": {
        "value": "posterior third of the disc on the lateral view",
        "source": "e.g. PTES technique (J Orthop Surg Res 2017, doi:10.1186/s13018-017-0524-0, Fig. 5): needle tip in "
        "the posterior one third of the intervertebral space on the lateral view; 7.5 mm reamer through the cannula",
        "certainty": "figure legend read",
    },
}


# ====================================================================== configuration
@dataclasses.dataclass(frozen=True)
class PlanningConfig:
    """Settings of a planning run (all lengths in mm, angles in degrees).

    Attributes
    ----------
    diameter_mm : float
        Working-channel (cannula) outer diameter; must lie in ``diameter_range_mm``.
    target : str
        ``"disc-posterior-third"`` or ``"foramen-centre"``.
    medial_angles_deg, craniocaudal_angles_deg : tuple of float
        Sweep grid (conventions in the module docstring).
    bone_tolerance_mm3 : float
        Largest bone volume inside a channel still called bone-free (sampling noise of a graze).
    max_length_mm : float
        Longest channel searched for the skin; also the channel length used when no body mask is given.
    axial_step_mm, section_spacing_mm, axis_step_mm : float
        Sampling of the cylinder volume (along / across the axis) and of the clearance along the axis.
    crop_margin_mm : float
        Margin around the labelled structures within which distances to bone are computed; clearances beyond it
        are reported as this margin minus the radius.
    midline : str
        ``"symmetry"`` (mirror-plane fit, default) or ``"axis"`` (plane through the centroid normal to the
        image's left-right axis).
    bone_scope : str
        ``"channel"`` (default): bone anywhere in the channel from the entry to the target decides whether it is
        bone-free. ``"approach"``: only bone between the entry and the docking point (where the axis enters the
        disc) counts; endplate bone inside the disc space is reported separately (``intradiscal_bone_mm3``).
    reference_entry_distance_mm : tuple of float
        Entry-distance band the report compares against (Kambin 10-12 cm).
    diameter_range_mm : tuple of float
        Allowed channel diameters.
    """

    diameter_mm: float = 7.5
    target: str = "disc-posterior-third"
    medial_angles_deg: tuple = tuple(float(a) for a in np.arange(20.0, 90.1, 5.0))
    craniocaudal_angles_deg: tuple = tuple(float(a) for a in np.arange(-30.0, 40.1, 5.0))
    bone_tolerance_mm3: float = 0.5
    max_length_mm: float = 300.0
    axial_step_mm: float = 0.5
    section_spacing_mm: float = 0.4
    axis_step_mm: float = 0.25
    crop_margin_mm: float = 20.0
    midline: str = "symmetry"
    bone_scope: str = "channel"
    reference_entry_distance_mm: tuple = tuple(REFERENCE_VALUES["entry_distance_from_midline_mm"]["value"])
    diameter_range_mm: tuple = DIAMETER_RANGE_MM

    def __post_init__(self):
        lo, hi = self.diameter_range_mm
        if not (np.isfinite(self.diameter_mm) and lo <= self.diameter_mm <= hi):
            raise InputError(f"channel diameter {self.diameter_mm} mm is outside the supported {lo:g}-{hi:g} mm; choose a cannula size in that range")
        if self.target not in TARGETS:
            raise InputError(f"unknown target {self.target!r}; use one of {', '.join(TARGETS)}")
        if self.bone_scope not in BONE_SCOPES:
            raise InputError(f"unknown bone scope {self.bone_scope!r}; use one of {', '.join(BONE_SCOPES)}")
        if self.midline not in ("symmetry", "axis"):
            raise InputError(f"unknown midline method {self.midline!r}; use 'symmetry' or 'axis'")
        ma = np.asarray(self.medial_angles_deg, dtype=float)
        cc = np.asarray(self.craniocaudal_angles_deg, dtype=float)
        if ma.size == 0 or cc.size == 0:
            raise InputError("the angle sweep needs at least one medial and one craniocaudal angle")
        if np.any(ma < 0) or np.any(ma > 90):
            raise InputError("medial angles must lie in 0-90 degrees (from the sagittal plane)")
        if np.any(np.abs(cc) >= 90):
            raise InputError("craniocaudal angles must lie strictly between -90 and 90 degrees")
        for name in ("axial_step_mm", "section_spacing_mm", "axis_step_mm", "max_length_mm", "crop_margin_mm"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be positive")

    @property
    def radius_mm(self) -> float:
        return self.diameter_mm / 2.0


def _side_sign(side: str) -> float:
    if side not in SIDES:
        raise InputError(f"unknown side {side!r}; use left, right or both")
    return SIDES[side]
