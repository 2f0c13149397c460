"""Trajectory planning for transforaminal endoscopic discectomy at L4-5.

A *trajectory* is a straight working channel (a cylinder of diameter ``diameter_mm``, default 7.5 mm) from an
entry point on the skin to a target: the posterior third of the L4-5 disc or the centre of the intervertebral
foramen. For every trajectory the planner reports the entry's distance from the mid-sagittal plane, its medial
and craniocaudal angles, its length, the minimum clearance between the channel wall and bone (L4, L5), and the
volumes of L4, L5 and the L4-5 disc inside the channel. An angle sweep (medial × craniocaudal grid, per side)
finds the best channel by the criterion below and states when no bone-free channel exists (foraminoplasty
needed).

Coordinates and conventions
---------------------------
Everything is in LPS millimetres (x → patient left, y → posterior, z → superior). The *anatomical frame*
(:class:`AnatomicalFrame`) has its origin on the mid-sagittal plane at the level of the L4-5 disc centre and
axes ``x_axis`` (left, normal of the mid-sagittal plane), ``y_axis`` (posterior) and ``z_axis`` (cranial: the
normal of the L4-5 disc, i.e. its least-variance principal axis, or the L5 → L4 centroid line when the disc is
not clearly flat; made orthogonal to ``x_axis``). The axial plane of the frame is therefore the disc plane. The mid-sagittal plane is the mirror plane of the
labelled vertebrae and disc (best left-right reflection overlap), through their centroid and containing the
cranial axis.

Let ``u`` be the unit vector from the target towards the entry, with frame components ``(a, b, c)``:

* **medial angle** (axial plane, *from the sagittal plane*) = ``atan2(|a|, b)``: 0° is a straight posterior
  (vertical, prone patient) approach, 90° a purely lateral (horizontal) one. This is the convention of the cited
  MRI table (entry 140 mm from the midline at 61° for the posterior nucleus at L4-5: a larger angle means a more
  lateral entry). The complementary angle from the coronal plane (``90° - medial``) is reported as well.
* **craniocaudal angle** = ``asin(c)``, the angle between the channel and the axial plane of the frame;
  positive when the entry lies cranial to the target, i.e. the instrument is directed *caudally*. The angle of
  the channel's projection on the lateral (sagittal) view, ``atan2(c, b)``, is reported as well.
* side ``left`` places the entry at ``+x`` (patient left), ``right`` at ``-x``.

Best-trajectory criterion
-------------------------
1. A channel is *bone-free* when the volume of L4 + L5 inside it is at most ``bone_tolerance_mm3``.
2. Among bone-free channels: the largest clearance (distance from the channel wall to the nearest bone); ties
   (within 0.05 mm) go first to channels whose skin entry lies in the reference distance band (Kambin 10-12 cm),
   then to the shortest.
3. If no channel of the sweep is bone-free, **foraminoplasty is needed**; the reported channel is the one with the
   least bone volume (ties: largest clearance), and that volume (split into L4 and L5) is the minimal bone
   resection implied by the sweep.

Accuracy
--------
* Clearance = (distance from the channel axis to the nearest bone voxel *surface*) − radius, minimised over axis
  samples every ``axis_step_mm`` from the entry to one radius before the channel end (bone beyond the end cap
  does not count). Outside bone the distance is exact for the voxelised bone (nearest-voxel feature transform of
  ``scipy.ndimage.distance_transform_edt`` with the voxel spacing, distance to the voxel's box); inside bone it is
  a trilinearly interpolated signed distance (within about half a voxel). It is a distance to bone in any
  direction, so near the channel ends it may be smaller than the purely radial clearance.
* Intersection volumes are computed by sampling the cylinder in physical space (equal-area sunflower points on
  each cross-section, ``section_spacing_mm`` apart, the pattern turned by the golden angle from one section to
  the next; sections at the midpoints of ``axial_step_mm`` steps) and looking up the nearest voxel label.
  Against exact values (``Testing/test_planning.py``): a cylinder crossing a voxel slab within 1.5 %; the thin
  circular-segment slivers of a channel grazing two bone blocks within 2 % (sum) and 3 % (each block).

References (configurable values in :data:`REFERENCE_VALUES`; see ``docs/planning.md``)
----------------------------------------------------------------------------------------
* Entry 10-12 cm from the midline (Kambin), as cited by Patgaonkar et al., Asian J Neurosurg 2024;19(4):659-665,
  doi:10.1055/s-0044-1788680 (secondary citation).
* L4-5 MRI table of entry distance vs medial angle: 102 MRIs (abstract indexed in MyMedR under author
  "Rajagopal AR"; full bibliographic details not verified): lateral nucleus 45 mm / 20°, nucleus centre
  77 mm / 47°, posterior nucleus 140 mm / 61°, posterior annulus 355 mm / 80°; sagittal inclination 10° caudal.
* Working cannula 6-8 mm: Kumari et al., Anat Cell Biol 2021;54(1) (cadaveric Kambin's triangle; inscribed
  circle 7.26 mm right / 8.16 mm left at L4-5); Pairaiturkar et al., J Korean Neurosurg Soc 2019;62(4)
  (3D MRI: only 2 % of 427 bony Kambin's triangles admitted an 8 mm cannula).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from spinemorph.atomic import atomic_path, atomic_write_text
from spinemorph.errors import InputError
from spinemorph.labels import DISC_L45, L4, L5
from spinemorph.volume import Volume


class TargetOutsideBodyError(InputError):
    """The target lies outside the image's body mask: no channel reaches the skin (e.g. a field of view that cuts
    the body, or image and labels that do not overlap). Callers may plan again without the image
    (:func:`FORAMEN3DLib.markup_model.plan_with_skin_fallback`)."""


__all__ = [
    "REFERENCE_VALUES",
    "DIAMETER_RANGE_MM",
    "TARGETS",
    "BONE_SCOPES",
    "SIDES",
    "PlanningConfig",
    "AnatomicalFrame",
    "anatomical_frame",
    "direction_from_angles",
    "trajectory_angles",
    "disc_posterior_third_target",
    "foramen_centre_target",
    "PlanningScene",
    "TargetOutsideBodyError",
    "cylinder_intersection_mm3",
    "Trajectory",
    "SideSweep",
    "PlanResult",
    "plan",
    "evaluate_trajectory",
    "channel_mesh",
    "write_mesh",
    "reformat_planes",
    "sweep_rows",
    "write_sweep_csv",
    "write_heatmap_png",
    "report_dict",
    "report_markdown",
    "markups_json",
    "points_dict",
    "dumps",
]

#: side name -> sign of the frame x axis (LPS x = patient left)
SIDES = {"left": 1.0, "right": -1.0}

# ---------------------------------------------------------------------------------------------------------------
# Geometric thresholds of the foramen-centre target (:func:`foramen_centre_target`). Project design choices
# (heuristic, NOT from the literature), checked on the lumbar phantoms of Testing/test_planning.py
# (``test_phantom_foramen_centre_lies_in_the_true_foramen``); the cited planning values are in REFERENCE_VALUES.
#   search grid: laterally from 1/4 of the disc half-width to FORAMEN_SEARCH_LATERAL_MM beyond the disc;
#   FORAMEN_SEARCH_POSTERIOR_MM behind the disc
#   enclosure: L4 within ENCLOSE_L4_ABOVE_MM above, L5 within ENCLOSE_L5_BELOW_MM below, any structure within
#   ENCLOSE_FRONT_MM in front, bone within ENCLOSE_BEHIND_MM behind; at least MIN_ENCLOSED_MM3 enclosed
#   fallback: FALLBACK_BEHIND_DISC_MM behind the posterior disc margin at FALLBACK_LATERAL_FRACTION of the disc
#   half-width
# Other inline values: mid-sagittal symmetry search ±20° in 2° then ±2° in 0.25° steps (``anatomical_frame``);
# default crop margin 20 mm (PlanningConfig.crop_margin_mm).
# ---------------------------------------------------------------------------------------------------------------
FORAMEN_SEARCH_LATERAL_MM = 15.0
FORAMEN_SEARCH_POSTERIOR_MM = 45.0
ENCLOSE_L4_ABOVE_MM = 25.0
ENCLOSE_L5_BELOW_MM = 25.0
ENCLOSE_FRONT_MM = 15.0
ENCLOSE_BEHIND_MM = 20.0
MIN_ENCLOSED_MM3 = 5.0
FALLBACK_BEHIND_DISC_MM = 4.0
FALLBACK_LATERAL_FRACTION = 0.6
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


# ====================================================================== anatomical frame
@dataclasses.dataclass(frozen=True, eq=False)
class AnatomicalFrame:
    """Patient frame at L4-5 (LPS vectors): origin on the mid-sagittal plane at the disc centre.

    Attributes
    ----------
    origin_lps : (3,) array
    x_axis, y_axis, z_axis : (3,) arrays
        Unit vectors: left (mid-sagittal plane normal), posterior, cranial. Right-handed (x × y = z).
    symmetry_score : float
        Fraction of labelled voxels whose mirror image across the mid-sagittal plane carries the same label.
    """

    origin_lps: np.ndarray
    x_axis: np.ndarray
    y_axis: np.ndarray
    z_axis: np.ndarray
    symmetry_score: float = float("nan")

    @property
    def rotation(self) -> np.ndarray:
        """3×3 matrix whose rows are the frame axes (LPS → frame components)."""
        return np.stack([self.x_axis, self.y_axis, self.z_axis])

    def to_frame(self, points_lps) -> np.ndarray:
        """LPS points ``(..., 3)`` → frame coordinates (mm)."""
        return (np.asarray(points_lps, dtype=float) - self.origin_lps) @ self.rotation.T

    def to_lps(self, points_frame) -> np.ndarray:
        """Frame coordinates ``(..., 3)`` → LPS points (mm)."""
        return np.asarray(points_frame, dtype=float) @ self.rotation + self.origin_lps

    def midline_distance_mm(self, points_lps) -> np.ndarray:
        """Unsigned distance (mm) of LPS points from the mid-sagittal plane."""
        return np.abs(self.to_frame(points_lps)[..., 0])

    def as_dict(self) -> dict:
        return {
            "origin_lps": _r(self.origin_lps),
            "x_axis_left": _r(self.x_axis, 6),
            "y_axis_posterior": _r(self.y_axis, 6),
            "z_axis_cranial": _r(self.z_axis, 6),
            "symmetry_score": round(float(self.symmetry_score), 4),
        }


def _r(v, nd=3):
    return [round(float(x), nd) for x in np.asarray(v).ravel()]


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n == 0, 1.0, n)


def _label_points(labels: Volume, values, max_points: int | None = None, seed: int = 0) -> np.ndarray:
    """LPS centres of voxels whose label is in ``values`` (seeded random subsample to ``max_points``)."""
    a = np.asarray(labels.array)
    mask = np.isin(a, values)
    kji = np.argwhere(mask)
    if max_points is not None and len(kji) > max_points:
        keep = np.random.default_rng(seed).choice(len(kji), size=max_points, replace=False)
        kji = kji[np.sort(keep)]
    return labels.index_to_lps(kji[:, ::-1].astype(float))


def _centroid(labels: Volume, values) -> np.ndarray:
    """Exact LPS centroid of the voxels whose label is in ``values``."""
    kji = np.argwhere(np.isin(np.asarray(labels.array), values)).mean(axis=0)
    return labels.index_to_lps(kji[::-1])


def _lookup_nearest(labels: Volume, points_lps) -> np.ndarray:
    """Label at the nearest voxel of each LPS point (0 outside the image)."""
    a = np.asarray(labels.array)
    idx = np.rint(labels.lps_to_index(points_lps)).astype(np.int64)[..., ::-1]  # k, j, i
    shape = np.asarray(a.shape)
    ok = np.all((idx >= 0) & (idx < shape), axis=-1)
    out = np.zeros(idx.shape[:-1], dtype=a.dtype)
    out[ok] = a[tuple(idx[ok].T)]
    return out


def _check_labels(labels: Volume) -> None:
    a = np.asarray(labels.array)
    if a.ndim != 3:
        raise InputError(f"label map must be 3D, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise InputError("label map holds non-integer values; pass the L4 / L4-5 disc / L5 label map (1, 2, 3)")
    present = set(np.unique(a).tolist())
    missing = [name for v, name in ((L4, "L4"), (DISC_L45, "L4-5 disc"), (L5, "L5")) if v not in present]
    if missing:
        raise InputError(f"label map lacks {', '.join(missing)} (labels 1 L4, 2 L4-5 disc, 3 L5); segment the study first")
    extra = sorted(v for v in present - {0, L4, DISC_L45, L5})
    if extra:
        raise InputError(f"label map holds unexpected labels {extra[:6]}; expected 0 background, 1 L4, 2 L4-5 disc, 3 L5")


def _disc_normal(labels: Volume, l5_to_l4, max_points: int) -> np.ndarray:
    """Cranial axis: the normal of the L4-5 disc (its least-variance principal axis), oriented towards L4.

    Falls back to the L5 → L4 centroid direction when the disc is not clearly flat (smallest / middle principal
    variance > 0.5) or its normal deviates more than 30° from that direction.
    """
    fallback = _unit(l5_to_l4)
    pts = _label_points(labels, [DISC_L45], max_points)  # max_points None: every disc voxel
    if len(pts) < 20:
        return fallback
    w, v = np.linalg.eigh(np.cov((pts - pts.mean(axis=0)).T))
    n = v[:, 0] if v[:, 0] @ fallback >= 0 else -v[:, 0]
    if w[0] > 0.5 * w[1] or n @ fallback < math.cos(math.radians(30.0)):
        return fallback
    return n


def anatomical_frame(labels: Volume, midline: str = "symmetry", max_points: int = 12000) -> AnatomicalFrame:
    """Anatomical frame at L4-5 from a label map (1 L4, 2 disc, 3 L5).

    Parameters
    ----------
    labels : Volume
        Foramen-task label map, any orientation and spacing.
    midline : str
        ``"symmetry"``: the mid-sagittal plane contains the cranial axis (disc normal) and the centroid of the
        labelled voxels; its rotation about the cranial axis is the one whose mirror reflection best reproduces
        the labels (±20° in 2° steps, then ±2° in 0.25° steps, on ``max_points`` labelled voxels chosen at random
        with seed 0; among scores within 0.1 % of the best, the smallest rotation). ``"axis"``: plane through the centroid normal to LPS x.

    Returns
    -------
    AnatomicalFrame
    """
    _check_labels(labels)
    c4 = _centroid(labels, [L4])
    c5 = _centroid(labels, [L5])
    cd = _centroid(labels, [DISC_L45])
    centre = _centroid(labels, [L4, DISC_L45, L5])
    pts = _label_points(labels, [L4, DISC_L45, L5], max_points)
    lab = _lookup_nearest(labels, pts)
    if np.linalg.norm(c4 - c5) < 1e-6:
        raise InputError("L4 and L5 share one centroid; the label map cannot define the spine axis")
    spine = _disc_normal(labels, c4 - c5, None)
    n0 = np.array([1.0, 0.0, 0.0]) - spine[0] * spine
    if np.linalg.norm(n0) < 0.3:
        raise InputError("the L5→L4 axis runs left-right; the label map's orientation header is probably wrong")
    n0 = _unit(n0)
    y0 = _unit(np.cross(spine, n0))

    def score(normal):
        d = (pts - centre) @ normal
        refl = pts - 2.0 * d[:, None] * normal[None, :]
        return float(np.mean(_lookup_nearest(labels, refl) == lab))

    best_n, best_s = n0, score(n0)
    if midline == "symmetry":
        # the mid-sagittal plane contains the cranial axis: search its rotation (yaw) about that axis;
        # among near-best candidates (within 0.1 % of the points) take the smallest rotation
        psi0 = 0.0
        for half, step in ((20.0, 2.0), (2.0, 0.25)):
            psis = psi0 + np.arange(-half, half + 1e-9, step)
            cands = [math.cos(math.radians(p)) * n0 + math.sin(math.radians(p)) * y0 for p in psis]
            scores = np.array([score(n) for n in cands])
            near = np.flatnonzero(scores >= scores.max() - 1e-3)
            i = int(near[np.argmin(np.abs(psis[near]))])
            psi0 = float(psis[i])
            best_n, best_s = _unit(cands[i]), float(scores[i])
    x = best_n if best_n[0] >= 0 else -best_n
    z = _unit(spine - (spine @ x) * x)
    y = np.cross(z, x)
    origin = cd - ((cd - centre) @ x) * x
    return AnatomicalFrame(origin_lps=origin, x_axis=x, y_axis=y, z_axis=z, symmetry_score=best_s)


# ====================================================================== angles
def direction_from_angles(frame: AnatomicalFrame, side: str, medial_deg, craniocaudal_deg) -> np.ndarray:
    """Unit LPS vectors from the target towards the entry for given angles (broadcast).

    ``u = cos(cc) (s sin(m) x + cos(m) y) + sin(cc) z`` with ``s = +1`` for left, ``-1`` for right,
    ``m`` the medial angle from the sagittal plane and ``cc`` the craniocaudal angle (positive: entry cranial).
    """
    s = _side_sign(side)
    m = np.radians(np.asarray(medial_deg, dtype=float))[..., None]
    c = np.radians(np.asarray(craniocaudal_deg, dtype=float))[..., None]
    return np.cos(c) * (s * np.sin(m) * frame.x_axis + np.cos(m) * frame.y_axis) + np.sin(c) * frame.z_axis


def trajectory_angles(frame: AnatomicalFrame, entry_lps, target_lps) -> dict:
    """Angles (degrees) of the channel from ``target_lps`` to ``entry_lps`` in the anatomical frame.

    Returns
    -------
    dict
        ``medial_angle_deg`` (axial, from the sagittal plane), ``medial_angle_from_coronal_deg``,
        ``craniocaudal_angle_deg`` (elevation from the axial plane; + = entry cranial, channel directed caudally),
        ``lateral_view_angle_deg`` (projection on the sagittal plane, from the y axis), ``side`` of the entry.
    """
    u = _unit(np.asarray(entry_lps, dtype=float) - np.asarray(target_lps, dtype=float))
    a, b, c = frame.rotation @ u
    a, b, c = (0.0 if abs(v) < 1e-12 else float(v) for v in (a, b, c))  # no "-0°" from rounding noise
    medial = math.degrees(math.atan2(abs(a), b))
    return {
        "medial_angle_deg": medial,
        "medial_angle_from_coronal_deg": 90.0 - medial,
        "craniocaudal_angle_deg": math.degrees(math.asin(float(np.clip(c, -1.0, 1.0)))),
        "lateral_view_angle_deg": math.degrees(math.atan2(c, b)),
        "side": "left" if a >= 0 else "right",
    }


def _side_sign(side: str) -> float:
    if side not in SIDES:
        raise InputError(f"unknown side {side!r}; use left, right or both")
    return SIDES[side]


# ====================================================================== targets
def disc_posterior_third_target(labels: Volume, frame: AnatomicalFrame, side: str) -> np.ndarray:
    """Target in the posterior third of the L4-5 disc, ipsilateral half (LPS mm).

    The disc's antero-posterior extent is taken within 5 mm of the mid-sagittal plane (1st-99th percentile of
    the frame y coordinate); the target is the centroid of the disc voxels in the posterior third of that
    extent on the side's half (``s·x >= 0``), moved to the nearest such voxel if the centroid is not disc.
    """
    s = _side_sign(side)
    pts = _label_points(labels, [DISC_L45])
    f = frame.to_frame(pts)
    band = np.abs(f[:, 0]) <= 5.0
    yy = f[band, 1] if band.sum() >= 10 else f[:, 1]
    y_ant, y_post = np.percentile(yy, [1, 99])
    sel = (f[:, 1] >= y_ant + (2.0 / 3.0) * (y_post - y_ant)) & (s * f[:, 0] >= 0)
    if not sel.any():
        raise InputError("the L4-5 disc has no voxels in its posterior third on that side; check the label map")
    target = pts[sel].mean(axis=0)
    if _lookup_nearest(labels, target[None])[0] != DISC_L45:
        target = pts[sel][int(np.argmin(np.linalg.norm(pts[sel] - target, axis=1)))]
    return target


def _within(mask: np.ndarray, axis: int, n: int, forward: bool) -> np.ndarray:
    """True where ``mask`` has a True voxel within ``n`` steps along ``axis`` (excluding the voxel itself)."""
    m = np.moveaxis(mask, axis, -1).astype(np.int32)
    if not forward:
        m = m[..., ::-1]
    c = np.concatenate([np.zeros(m.shape[:-1] + (1,), np.int32), np.cumsum(m, axis=-1)], axis=-1)
    L = m.shape[-1]
    idx = np.arange(L)
    hi = np.minimum(idx + n, L)
    res = (c[..., hi] - c[..., idx + 1]) > 0
    if not forward:
        res = res[..., ::-1]
    return np.moveaxis(res, -1, axis)


def foramen_centre_target(labels: Volume, frame: AnatomicalFrame, side: str, step_mm: float = 0.5) -> tuple[np.ndarray, str]:
    """Centre of the L4-5 intervertebral foramen on one side (LPS mm) and the method used.

    The labels are resampled (nearest) on a frame-aligned grid spanning, laterally, from a quarter of the disc
    half-width to 15 mm beyond the disc; antero-posteriorly from the disc centre to 45 mm behind the disc;
    craniocaudally from the L5 centroid to the top of L4. A free (unlabelled) grid point belongs to the foramen
    as seen on the lateral view when it is enclosed on four sides within the frame's sagittal directions: L4
    within 25 mm above it (pedicle: roof), L5 within 25 mm below (pedicle: floor), disc or vertebra within 15 mm in
    front (anterior wall) and vertebra within 20 mm behind (articular processes: posterior wall). The target is
    the centroid of the largest connected set of such points (method ``"enclosed region"``); this tolerates gaps
    in the labelled walls (e.g. the facet joint line). If there is none, the fallback is the point 4 mm behind
    the posterior disc margin at 60 % of the disc half-width laterally, at the disc's mid-height (``"fallback"``).
    """
    s = _side_sign(side)
    dpts = frame.to_frame(_label_points(labels, [DISC_L45]))
    f4 = frame.to_frame(_label_points(labels, [L4]))
    f5 = frame.to_frame(_label_points(labels, [L5]))
    half_w = float(np.percentile(np.abs(dpts[:, 0]), 99))
    y_c = float(np.median(dpts[:, 1]))
    y_post = float(np.percentile(dpts[:, 1], 99))
    xs = s * np.arange(0.25 * half_w, half_w + FORAMEN_SEARCH_LATERAL_MM, step_mm)
    ys = np.arange(y_c, y_post + FORAMEN_SEARCH_POSTERIOR_MM, step_mm)
    zs = np.arange(float(np.mean(f5[:, 2])), float(np.percentile(f4[:, 2], 99.5)), step_mm)
    if len(xs) < 2 or len(ys) < 2 or len(zs) < 2:
        raise InputError("L4, disc and L5 are too small or mis-ordered to locate the foramen; check the label map")
    g = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), axis=-1)  # axes: x (lateral), y (posterior), z (cranial)
    lab = _lookup_nearest(labels, frame.to_lps(g))
    n = lambda mm: max(1, int(round(mm / step_mm)))  # noqa: E731
    bone = (lab == L4) | (lab == L5)
    enclosed = (
        (lab == 0)
        & _within(lab == L4, 2, n(ENCLOSE_L4_ABOVE_MM), True)
        & _within(lab == L5, 2, n(ENCLOSE_L5_BELOW_MM), False)
        & _within(lab > 0, 1, n(ENCLOSE_FRONT_MM), False)
        & _within(bone, 1, n(ENCLOSE_BEHIND_MM), True)
    )
    comp, k = ndimage.label(enclosed)
    if k and enclosed.sum() * step_mm**3 >= MIN_ENCLOSED_MM3:
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        region = comp == int(np.argmax(sizes))
        return frame.to_lps(g[region].mean(axis=0)), "enclosed region"
    zc = float(np.median(dpts[:, 2]))
    return frame.to_lps(np.array([s * FALLBACK_LATERAL_FRACTION * half_w, y_post + FALLBACK_BEHIND_DISC_MM, zc])), "fallback"


# ====================================================================== geometry engine
_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


def _sunflower(radius_mm: float, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Equal-area points filling a disc of radius ``radius_mm`` about ``spacing_mm`` apart: polar ``(rho, theta)``."""
    n = max(7, int(math.ceil(math.pi * radius_mm**2 / spacing_mm**2)))
    k = np.arange(n) + 0.5
    return radius_mm * np.sqrt(k / n), k * _GOLDEN_ANGLE


def _perpendicular_basis(u) -> tuple[np.ndarray, np.ndarray]:
    u = _unit(u)
    helper = np.array([0.0, 0.0, 1.0]) if abs(u[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = _unit(np.cross(u, helper))
    return e1, np.cross(u, e1)


class PlanningScene:
    """Labels cropped around L4-L5 with a signed distance to bone, for fast channel evaluation.

    Parameters
    ----------
    labels : Volume
        Foramen-task labels (1 L4, 2 disc, 3 L5); other structures are ignored.
    crop_margin_mm : float
        Margin kept around the labelled voxels.
    """

    def __init__(self, labels: Volume, crop_margin_mm: float = 20.0):
        a = np.asarray(labels.array)
        nz = np.argwhere(a > 0)
        if nz.size == 0:
            raise InputError("label map is empty; nothing to plan against")
        sp_kji = np.asarray(labels.spacing_mm, dtype=float)[::-1]
        pad = np.ceil(crop_margin_mm / sp_kji).astype(int)
        lo = np.maximum(nz.min(axis=0) - pad, 0)
        hi = np.minimum(nz.max(axis=0) + pad + 1, a.shape)
        crop = np.ascontiguousarray(a[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
        if crop.min() < 0 or crop.max() > 255:
            raise InputError(f"label map holds values outside 0-255 ({crop.min()}..{crop.max()}); expected 0 background, 1 L4, 2 L4-5 disc, 3 L5")
        crop = crop.astype(np.uint8)
        origin = labels.index_to_lps(lo[::-1].astype(float))
        self.labels = Volume(crop, labels.spacing_mm, tuple(origin), labels.direction)
        self.margin_mm = float(crop_margin_mm)
        self._distance_fields(crop, sp_kji)
        m = self.labels.direction * np.asarray(self.labels.spacing_mm)[None, :]
        self._inv = np.linalg.inv(m)
        self._origin = np.asarray(self.labels.origin_mm)
        self._flat = crop.ravel()
        self._shape = np.asarray(crop.shape)
        self._strides = np.array([crop.shape[1] * crop.shape[2], crop.shape[2], 1], dtype=np.int64)
        nz_c = nz - lo
        self._label_lo_ijk = nz_c.min(axis=0)[::-1].astype(float)
        self._label_hi_ijk = nz_c.max(axis=0)[::-1].astype(float)

    def _distance_fields(self, crop: np.ndarray, sp_kji: np.ndarray) -> None:
        """Nearest-bone-voxel map (outside bone) and signed distance (mm, + outside) to the bone voxel surfaces.

        Distances are to the nearest bone voxel's *box* (centre ± half a voxel), so faces lie where the voxel
        boundaries are, not at voxel centres.
        """
        bone = (crop == L4) | (crop == L5)
        self.signed_distance_mm = np.full(crop.shape, self.margin_mm, dtype=np.float32)
        self._nearest_bone = None
        if not bone.any():
            return
        grid = np.indices(crop.shape, dtype=np.int32)
        half = (sp_kji / 2).astype(np.float32)[:, None]
        spf = sp_kji.astype(np.float32)[:, None]
        _, ind = ndimage.distance_transform_edt(~bone, sampling=sp_kji, return_indices=True)
        out = ~bone
        gap = np.maximum(np.abs(ind[:, out] - grid[:, out]).astype(np.float32) * spf - half, 0.0)
        self.signed_distance_mm[out] = np.sqrt((gap**2).sum(axis=0))
        self._nearest_bone = ind.astype(np.int32, copy=False)
        if out.any():
            _, ind_in = ndimage.distance_transform_edt(bone, sampling=sp_kji, return_indices=True)
            gap = np.maximum(np.abs(ind_in[:, bone] - grid[:, bone]).astype(np.float32) * spf - half, 0.0)
            self.signed_distance_mm[bone] = -np.sqrt((gap**2).sum(axis=0))
            del ind_in
        else:
            self.signed_distance_mm[bone] = -self.margin_mm

    # ------------------------------------------------------------------ lookups
    def to_index(self, points_lps) -> np.ndarray:
        """Continuous (i, j, k) indices in the crop of LPS points."""
        return (np.asarray(points_lps, dtype=float) - self._origin) @ self._inv.T

    def labels_at(self, points_lps) -> np.ndarray:
        """Nearest-voxel labels (0 outside the crop)."""
        return self._labels_at_index(self.to_index(points_lps))

    def _labels_at_index(self, ijk) -> np.ndarray:
        kji = np.rint(ijk[..., ::-1]).astype(np.int64)
        ok = np.all((kji >= 0) & (kji < self._shape), axis=-1)
        out = np.zeros(kji.shape[:-1], dtype=np.uint8)
        out[ok] = self._flat[kji[ok] @ self._strides]
        return out

    def distance_at(self, points_lps) -> np.ndarray:
        """Signed distance (mm) from LPS points to the bone voxel surfaces; the crop margin outside the crop.

        Outside bone the distance is exact to the voxelised bone: the minimum distance from the point to the
        boxes of the nearest bone voxels of the 8 surrounding voxel centres. Inside bone it is the trilinear
        interpolation of the signed distance map (negative).
        """
        ijk = self.to_index(points_lps)
        shp = ijk.shape[:-1]
        ijk = ijk.reshape(-1, 3)
        kji = ijk[:, ::-1]
        interp = ndimage.map_coordinates(self.signed_distance_mm, kji.T, order=1, mode="constant", cval=self.margin_mm)
        if self._nearest_bone is None:
            return interp.reshape(shp)
        sp = np.asarray(self.labels.spacing_mm)[::-1]
        base = np.floor(kji).astype(np.int64)
        best = np.full(len(kji), np.inf)
        any_in = np.zeros(len(kji), dtype=bool)
        for corner in np.ndindex(2, 2, 2):
            nb = base + np.asarray(corner)
            ok = np.all((nb >= 0) & (nb < self._shape), axis=1)
            if not ok.any():
                continue
            any_in |= ok
            c = self._nearest_bone[:, nb[ok, 0], nb[ok, 1], nb[ok, 2]].T  # nearest bone voxel (k, j, i)
            gap = np.maximum(np.abs(kji[ok] - c) - 0.5, 0.0) * sp
            best[ok] = np.minimum(best[ok], np.sqrt((gap**2).sum(axis=1)))
        in_bone = self._labels_at_index(ijk)
        in_bone = (in_bone == L4) | (in_bone == L5)
        out = np.where(any_in, best, self.margin_mm)
        out = np.where(in_bone, np.minimum(interp, 0.0), out)
        return out.reshape(shp)

    # ------------------------------------------------------------------ channels
    def _segment_in_labels(self, start, u, t_lo, t_hi, radius):
        """Sub-range of [t_lo, t_hi] where the axis start + t u lies within the labels' box grown by ``radius``."""
        s_idx = self.to_index(start)
        d_idx = u @ self._inv.T
        grow = radius / np.asarray(self.labels.spacing_mm) + 1.0
        lo = self._label_lo_ijk - 0.5 - grow
        hi = self._label_hi_ijk + 0.5 + grow
        t0, t1 = float(t_lo), float(t_hi)
        for ax in range(3):
            if abs(d_idx[ax]) < 1e-12:
                if s_idx[ax] < lo[ax] or s_idx[ax] > hi[ax]:
                    return None
                continue
            ta = (lo[ax] - s_idx[ax]) / d_idx[ax]
            tb = (hi[ax] - s_idx[ax]) / d_idx[ax]
            t0 = max(t0, min(ta, tb))
            t1 = min(t1, max(ta, tb))
        return (t0, t1) if t1 > t0 else None

    def _cylinder_counts(self, start, u, t_lo, t_hi, radius_mm, axial_step_mm, section_spacing_mm) -> np.ndarray:
        """Volume (mm³) per label 0..3 of the cylinder part start + t u, t in [t_lo, t_hi]."""
        out = np.zeros(4)
        seg = self._segment_in_labels(start, u, t_lo, t_hi, radius_mm)
        if seg is None:
            return out
        t0, t1 = seg
        n_t = max(1, int(math.ceil((t1 - t0) / axial_step_mm)))
        dt = (t1 - t0) / n_t
        t = t0 + (np.arange(n_t) + 0.5) * dt
        rho, theta = _sunflower(radius_mm, section_spacing_mm)
        e1, e2 = _perpendicular_basis(u)
        # the pattern turns by the golden angle from one cross-section to the next (no axial aliasing)
        ang = theta[None, :] + (np.arange(n_t) * _GOLDEN_ANGLE)[:, None]
        s_idx = self.to_index(start)
        d_idx = u @ self._inv.T
        e1_idx, e2_idx = e1 @ self._inv.T, e2 @ self._inv.T
        rc, rs = rho * np.cos(ang), rho * np.sin(ang)  # (n_t, P)
        ijk = s_idx + t[:, None, None] * d_idx + rc[..., None] * e1_idx + rs[..., None] * e2_idx
        labs = self._labels_at_index(ijk).ravel()
        w = math.pi * radius_mm**2 / len(rho) * dt
        return np.bincount(labs, minlength=4)[:4] * w

    def channel_volumes_mm3(
        self,
        start_lps,
        end_lps,
        radius_mm: float,
        axial_step_mm: float = 0.5,
        section_spacing_mm: float = 0.4,
        split_mm: float | None = None,
    ) -> np.ndarray:
        """Volume (mm³) of each label 0..3 inside the cylinder of ``radius_mm`` from ``start_lps`` to ``end_lps``.

        With ``split_mm`` (distance from the start along the axis), returns a (2, 4) array: the part before the
        split (row 0) and after it (row 1), each sampled on its own so that the split is exact. Index 0
        (background) only counts sample points near the labels; use indices 1-3.
        """
        start = np.asarray(start_lps, dtype=float)
        vec = np.asarray(end_lps, dtype=float) - start
        length = float(np.linalg.norm(vec))
        if length <= 0:
            return np.zeros(4) if split_mm is None else np.zeros((2, 4))
        u = vec / length
        args = (radius_mm, axial_step_mm, section_spacing_mm)
        if split_mm is None:
            return self._cylinder_counts(start, u, 0.0, length, *args)
        sp = float(np.clip(split_mm, 0.0, length))
        return np.stack([self._cylinder_counts(start, u, 0.0, sp, *args), self._cylinder_counts(start, u, sp, length, *args)])

    def axis_clearance_mm(self, start_lps, end_lps, radius_mm: float, axis_step_mm: float = 0.25) -> tuple[float, np.ndarray]:
        """Minimum distance from the channel wall to bone along the axis, and where it occurs (LPS).

        Negative values mean the channel cuts into bone (by that depth at the axis's closest point).
        """
        start = np.asarray(start_lps, dtype=float)
        end = np.asarray(end_lps, dtype=float)
        length = float(np.linalg.norm(end - start))
        n = max(2, int(math.ceil(length / axis_step_mm)) + 1)
        pts = start + np.linspace(0.0, 1.0, n)[:, None] * (end - start)
        d = self.distance_at(pts)
        i = int(np.argmin(d))
        return float(d[i] - radius_mm), pts[i]


def cylinder_intersection_mm3(
    labels: Volume,
    start_lps,
    end_lps,
    diameter_mm: float,
    axial_step_mm: float = 0.5,
    section_spacing_mm: float = 0.4,
) -> dict:
    """Volume (mm³) of each non-zero label of ``labels`` inside a cylinder (sampling in physical space).

    Parameters
    ----------
    labels : Volume
        Any integer label map (values 1-3 are reported; others are ignored).
    start_lps, end_lps : (3,) array
        Axis end points (LPS mm).
    diameter_mm : float
        Cylinder diameter.

    Returns
    -------
    dict
        ``{1: mm3, 2: mm3, 3: mm3}``.
    """
    a = np.asarray(labels.array)
    kept = np.where(np.isin(a, (L4, DISC_L45, L5)), a, 0).astype(np.uint8)  # other labels are ignored, not folded into L5
    scene = PlanningScene(labels.with_array(kept), crop_margin_mm=diameter_mm)
    v = scene.channel_volumes_mm3(start_lps, end_lps, diameter_mm / 2.0, axial_step_mm, section_spacing_mm)
    return {1: float(v[1]), 2: float(v[2]), 3: float(v[3])}


# ====================================================================== trajectories
@dataclasses.dataclass
class Trajectory:
    """One evaluated working channel (LPS mm, degrees, mm³).

    The *approach* part runs from the entry to the docking point, where the channel axis first enters the L4-5
    disc (the whole channel when it never does); bone there is foraminal bone (foraminoplasty), bone beyond it is
    endplate inside the disc space.
    """

    side: str
    target_kind: str
    entry_lps: np.ndarray
    target_lps: np.ndarray
    diameter_mm: float
    entry_on_skin: bool
    entry_midline_distance_mm: float
    medial_angle_deg: float
    medial_angle_from_coronal_deg: float
    craniocaudal_angle_deg: float
    lateral_view_angle_deg: float
    length_mm: float
    clearance_mm: float
    closest_bone_point_lps: np.ndarray
    l4_mm3: float
    disc_mm3: float
    l5_mm3: float
    docking_point_lps: np.ndarray
    approach_length_mm: float
    approach_clearance_mm: float
    approach_l4_mm3: float
    approach_l5_mm3: float

    @property
    def bone_mm3(self) -> float:
        return self.l4_mm3 + self.l5_mm3

    @property
    def approach_bone_mm3(self) -> float:
        return self.approach_l4_mm3 + self.approach_l5_mm3

    @property
    def intradiscal_bone_mm3(self) -> float:
        return max(0.0, self.bone_mm3 - self.approach_bone_mm3)

    @property
    def max_free_diameter_mm(self) -> float:
        """Largest channel diameter that would stay clear of bone along the whole axis."""
        return max(0.0, self.diameter_mm + 2.0 * self.clearance_mm)

    @property
    def approach_max_free_diameter_mm(self) -> float:
        """Largest channel diameter clear of bone from the entry to the docking point."""
        return max(0.0, self.diameter_mm + 2.0 * self.approach_clearance_mm)

    def as_dict(self) -> dict:
        return {
            "side": self.side,
            "target_kind": self.target_kind,
            "entry_lps": _r(self.entry_lps),
            "target_lps": _r(self.target_lps),
            "diameter_mm": self.diameter_mm,
            "entry_on_skin": bool(self.entry_on_skin),
            "entry_midline_distance_mm": round(self.entry_midline_distance_mm, 2),
            "medial_angle_deg": round(self.medial_angle_deg, 2),
            "medial_angle_from_coronal_deg": round(self.medial_angle_from_coronal_deg, 2),
            "craniocaudal_angle_deg": round(self.craniocaudal_angle_deg, 2),
            "lateral_view_angle_deg": round(self.lateral_view_angle_deg, 2),
            "length_mm": round(self.length_mm, 2),
            "clearance_mm": round(self.clearance_mm, 3),
            "min_clearance_mm": round(self.clearance_mm, 3),  # alias (read by spinemorph.study_report)
            "max_free_diameter_mm": round(self.max_free_diameter_mm, 3),
            "closest_bone_point_lps": _r(self.closest_bone_point_lps),
            "intersection_mm3": {"L4": round(self.l4_mm3, 2), "L4-5 disc": round(self.disc_mm3, 2), "L5": round(self.l5_mm3, 2)},
            "bone_mm3": round(self.bone_mm3, 2),
            "approach": {
                "docking_point_lps": _r(self.docking_point_lps),
                "length_mm": round(self.approach_length_mm, 2),
                "clearance_mm": round(self.approach_clearance_mm, 3),
                "max_free_diameter_mm": round(self.approach_max_free_diameter_mm, 3),
                "intersection_mm3": {"L4": round(self.approach_l4_mm3, 2), "L5": round(self.approach_l5_mm3, 2)},
                "bone_mm3": round(self.approach_bone_mm3, 2),
            },
            "intradiscal_bone_mm3": round(self.intradiscal_bone_mm3, 2),
        }


def _channel_metrics(scene: PlanningScene, entry, target, cfg: PlanningConfig) -> dict:
    """Volumes, clearances and docking point of the channel entry → target (both parts)."""
    r = cfg.radius_mm
    length = float(np.linalg.norm(target - entry))
    n = max(2, int(math.ceil(length / cfg.axis_step_mm)) + 1)
    tt = np.linspace(0.0, length, n)
    pts = entry + (tt / length)[:, None] * (target - entry)
    dist = scene.distance_at(pts)
    in_disc = np.flatnonzero(scene.labels_at(pts) == DISC_L45)
    k_dock = int(in_disc[0]) if in_disc.size else n - 1
    t_dock = float(tt[k_dock])
    vols = scene.channel_volumes_mm3(entry, target, r, cfg.axial_step_mm, cfg.section_spacing_mm, split_mm=t_dock)
    # clearance: axis samples up to one radius before the end, so that bone beyond the end cap is not counted
    full = dist[tt <= max(length - r, 0.0) + 1e-9]
    i_min = int(np.argmin(full))
    approach = dist[tt <= max(t_dock - r, 0.0) + 1e-9]
    return {
        "vols": vols.sum(axis=0),
        "approach_vols": vols[0],
        "clearance": float(full[i_min] - r),
        "closest": pts[i_min],
        "approach_clearance": float(approach.min() - r),
        "dock": pts[k_dock],
        "approach_length": t_dock,
    }


def evaluate_trajectory(
    scene: PlanningScene,
    frame: AnatomicalFrame,
    entry_lps,
    target_lps,
    diameter_mm: float = 7.5,
    entry_on_skin: bool = True,
    target_kind: str = "custom",
    config: PlanningConfig | None = None,
) -> Trajectory:
    """Evaluate one channel from ``entry_lps`` to ``target_lps`` (e.g. a trajectory edited in the GUI)."""
    cfg = dataclasses.replace(config, diameter_mm=diameter_mm) if config is not None else PlanningConfig(diameter_mm=diameter_mm)
    entry = np.asarray(entry_lps, dtype=float)
    target = np.asarray(target_lps, dtype=float)
    if np.linalg.norm(entry - target) < 1e-6:
        raise InputError("entry and target coincide; a trajectory needs two distinct points")
    ang = trajectory_angles(frame, entry, target)
    m = _channel_metrics(scene, entry, target, cfg)
    return Trajectory(
        side=ang["side"],
        target_kind=target_kind,
        entry_lps=entry,
        target_lps=target,
        diameter_mm=float(diameter_mm),
        entry_on_skin=bool(entry_on_skin),
        entry_midline_distance_mm=float(frame.midline_distance_mm(entry)),
        medial_angle_deg=ang["medial_angle_deg"],
        medial_angle_from_coronal_deg=ang["medial_angle_from_coronal_deg"],
        craniocaudal_angle_deg=ang["craniocaudal_angle_deg"],
        lateral_view_angle_deg=ang["lateral_view_angle_deg"],
        length_mm=float(np.linalg.norm(entry - target)),
        clearance_mm=m["clearance"],
        closest_bone_point_lps=m["closest"],
        l4_mm3=float(m["vols"][L4]),
        disc_mm3=float(m["vols"][DISC_L45]),
        l5_mm3=float(m["vols"][L5]),
        docking_point_lps=m["dock"],
        approach_length_mm=m["approach_length"],
        approach_clearance_mm=m["approach_clearance"],
        approach_l4_mm3=float(m["approach_vols"][L4]),
        approach_l5_mm3=float(m["approach_vols"][L5]),
    )


@dataclasses.dataclass
class SideSweep:
    """Angle sweep on one side: arrays indexed ``[medial, craniocaudal]``.

    ``bone_free`` and the best channel follow ``bone_scope`` (``"channel"``: entry → target; ``"approach"``:
    entry → docking point on the disc).
    """

    side: str
    target_kind: str
    target_lps: np.ndarray
    target_method: str
    medial_angles_deg: np.ndarray
    craniocaudal_angles_deg: np.ndarray
    entry_lps: np.ndarray
    entry_on_skin: np.ndarray
    entry_midline_distance_mm: np.ndarray
    length_mm: np.ndarray
    clearance_mm: np.ndarray
    l4_mm3: np.ndarray
    disc_mm3: np.ndarray
    l5_mm3: np.ndarray
    approach_clearance_mm: np.ndarray
    approach_bone_mm3: np.ndarray
    bone_scope: str
    bone_free: np.ndarray
    best_index: tuple
    best: Trajectory
    foraminoplasty_needed: bool
    criterion: str

    @property
    def bone_mm3(self) -> np.ndarray:
        return self.l4_mm3 + self.l5_mm3

    @property
    def scope_bone_mm3(self) -> np.ndarray:
        """Bone volume of the scope the decision uses."""
        return self.approach_bone_mm3 if self.bone_scope == "approach" else self.bone_mm3

    @property
    def scope_clearance_mm(self) -> np.ndarray:
        return self.approach_clearance_mm if self.bone_scope == "approach" else self.clearance_mm


@dataclasses.dataclass
class PlanResult:
    """Result of :func:`plan`: the frame, the configuration and one sweep per side."""

    frame: AnatomicalFrame
    config: PlanningConfig
    sides: dict
    skin_available: bool
    warnings: list


def _choose_best(bone, clearance, length, bone_free, in_band=None) -> tuple[tuple, bool, str]:
    """Index of the best channel and whether foraminoplasty is needed (criterion in the module docstring)."""
    if in_band is None:
        in_band = np.zeros(bone.shape, dtype=bool)
    if bone_free.any():
        c = np.where(bone_free, clearance, -np.inf)
        top = c.max()
        tie = bone_free & (c >= top - 0.05)
        if (tie & in_band).any():
            tie = tie & in_band
        L = np.where(tie, length, np.inf)
        idx = np.unravel_index(int(np.argmin(L)), L.shape)
        return tuple(int(i) for i in idx), False, (
            "bone-free channel with the largest clearance (ties within 0.05 mm: skin entry inside the reference "
            "distance band first, then the shortest)"
        )
    bmin = bone.min()
    tie = bone <= bmin + 1e-9
    c = np.where(tie, clearance, -np.inf)
    idx = np.unravel_index(int(np.argmax(c)), c.shape)
    return tuple(int(i) for i in idx), True, "no bone-free channel: least bone volume in the channel (ties: largest clearance)"


def _cast_to_skin_any(bodies, target, u, max_length_mm, cast):
    """Skin exits from several body masks (e.g. a sagittal slab and an axial stack): per ray the first mask whose
    field of view contains the skin crossing; otherwise the furthest field-of-view edge."""
    best = None
    for m in bodies:
        e, L, on = cast(m, target, u, max_length_mm)
        if best is None:
            best = [e.copy(), L.copy(), on.copy()]
            continue
        take = (~best[2] & on) | (~best[2] & ~on & (L > best[1]))
        best[0][take], best[1][take], best[2][take] = e[take], L[take], on[take]
    return best


def plan(
    labels: Volume,
    image: Volume | None = None,
    body: Volume | None = None,
    sides=("left", "right"),
    config: PlanningConfig | None = None,
    frame: AnatomicalFrame | None = None,
) -> PlanResult:
    """Plan transforaminal L4-5 trajectories: an angle sweep per side and the best channel.

    Parameters
    ----------
    labels : Volume
        Label map (1 L4, 2 L4-5 disc, 3 L5), any orientation/spacing.
    image : Volume, optional
        MR image for the skin surface (:func:`FORAMEN3DLib.skin.body_mask`); ignored when ``body`` is given.
    body : Volume or list of Volume, optional
        Precomputed body mask(s) (1 inside). With several (e.g. a sagittal slab and an axial stack of the same
        session), each ray takes its skin crossing from the first mask whose field of view contains it.
    sides : iterable of str
        ``"left"`` and/or ``"right"``.
    config : PlanningConfig, optional
    frame : AnatomicalFrame, optional
        Override the frame estimated from the labels.

    Returns
    -------
    PlanResult
        Without a body mask (no image) every channel has length ``config.max_length_mm`` and
        ``entry_on_skin`` is False.
    """
    from FORAMEN3DLib.skin import body_mask, cast_to_skin

    cfg = config or PlanningConfig()
    sides = tuple(sides)
    for side in sides:
        _side_sign(side)
    scene = PlanningScene(labels, cfg.crop_margin_mm)
    cropped = scene.labels  # every labelled voxel, less background: faster frame and target searches
    _check_labels(cropped)
    frame = frame or anatomical_frame(cropped, cfg.midline)
    bodies = [] if body is None else (list(body) if isinstance(body, (list, tuple)) else [body])
    if not bodies and image is not None:
        bodies = [body_mask(image)]
    warnings: list[str] = []
    if not bodies:
        warnings.append(f"no image: entry points lie {cfg.max_length_mm:g} mm from the target, not on the skin")
    ma = np.asarray(cfg.medial_angles_deg, dtype=float)
    cc = np.asarray(cfg.craniocaudal_angles_deg, dtype=float)
    M, C = np.meshgrid(ma, cc, indexing="ij")
    shape = M.shape
    out = {}
    for side in sides:
        if cfg.target == "disc-posterior-third":
            target, method = disc_posterior_third_target(cropped, frame, side), "posterior-third centroid"
        else:
            target, method = foramen_centre_target(cropped, frame, side)
            if method == "fallback":
                warnings.append(f"{side}: no enclosed foramen found on the lateral views; target placed by the fallback rule")
        u = direction_from_angles(frame, side, M, C).reshape(-1, 3)
        if bodies:
            entries, lengths, on_skin = _cast_to_skin_any(bodies, target, u, cfg.max_length_mm, cast_to_skin)
            if np.all(lengths <= 0):
                raise TargetOutsideBodyError(f"{side}: the target lies outside the body mask of the image; check that image and labels overlap")
        else:
            lengths = np.full(len(u), cfg.max_length_mm)
            entries = target + lengths[:, None] * u
            on_skin = np.zeros(len(u), dtype=bool)
        n = len(u)
        vols = np.zeros((n, 4))
        app_vols = np.zeros((n, 4))
        clear = np.full(n, -np.inf)
        app_clear = np.full(n, -np.inf)
        for i in range(n):
            if lengths[i] <= 0:
                continue
            m = _channel_metrics(scene, entries[i], target, cfg)
            vols[i], app_vols[i] = m["vols"], m["approach_vols"]
            clear[i], app_clear[i] = m["clearance"], m["approach_clearance"]
        valid = (lengths > 0).reshape(shape)
        bone = (vols[:, L4] + vols[:, L5]).reshape(shape)
        app_bone = (app_vols[:, L4] + app_vols[:, L5]).reshape(shape)
        scope_bone = app_bone if cfg.bone_scope == "approach" else bone
        scope_clear = (app_clear if cfg.bone_scope == "approach" else clear).reshape(shape)
        bone_free = (scope_bone <= cfg.bone_tolerance_mm3) & valid
        dist = frame.midline_distance_mm(entries)
        lo, hi = cfg.reference_entry_distance_mm
        in_band = (on_skin & (dist >= lo) & (dist <= hi)).reshape(shape)
        best_idx, need, crit = _choose_best(np.where(valid, scope_bone, np.inf), scope_clear, lengths.reshape(shape), bone_free, in_band)
        flat = int(np.ravel_multi_index(best_idx, shape))
        best = evaluate_trajectory(scene, frame, entries[flat], target, cfg.diameter_mm, bool(on_skin[flat]), cfg.target, cfg)
        if bodies and not on_skin[flat]:
            warnings.append(f"{side}: the best channel leaves the image before reaching the skin; its entry is the field-of-view edge")
        out[side] = SideSweep(
            side=side,
            target_kind=cfg.target,
            target_lps=target,
            target_method=method,
            medial_angles_deg=ma,
            craniocaudal_angles_deg=cc,
            entry_lps=entries.reshape(shape + (3,)),
            entry_on_skin=on_skin.reshape(shape),
            entry_midline_distance_mm=dist.reshape(shape),
            length_mm=lengths.reshape(shape),
            clearance_mm=clear.reshape(shape),
            l4_mm3=vols[:, L4].reshape(shape),
            disc_mm3=vols[:, DISC_L45].reshape(shape),
            l5_mm3=vols[:, L5].reshape(shape),
            approach_clearance_mm=app_clear.reshape(shape),
            approach_bone_mm3=app_bone,
            bone_scope=cfg.bone_scope,
            bone_free=bone_free,
            best_index=best_idx,
            best=best,
            foraminoplasty_needed=need,
            criterion=crit + (" [bone counted from the entry to the disc surface]" if cfg.bone_scope == "approach" else " [bone counted along the whole channel to the target]"),
        )
    return PlanResult(frame=frame, config=cfg, sides=out, skin_available=bool(bodies), warnings=warnings)


# ====================================================================== geometry for the GUI
def channel_mesh(entry_lps, target_lps, diameter_mm: float, n_sides: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Closed triangle mesh of the channel cylinder (outward-facing triangles).

    Returns
    -------
    points_lps : (2 n_sides + 2, 3) array
        Ring at the entry, ring at the target, then the two cap centres.
    triangles : (4 n_sides, 3) int array
    """
    a = np.asarray(entry_lps, dtype=float)
    b = np.asarray(target_lps, dtype=float)
    if np.linalg.norm(b - a) <= 0:
        raise InputError("entry and target coincide; cannot build a channel mesh")
    u = _unit(b - a)
    e1, e2 = _perpendicular_basis(u)
    th = 2 * np.pi * np.arange(n_sides) / n_sides
    ring = (diameter_mm / 2.0) * (np.cos(th)[:, None] * e1 + np.sin(th)[:, None] * e2)
    pts = np.vstack([a + ring, b + ring, a[None], b[None]])
    i = np.arange(n_sides)
    j = (i + 1) % n_sides
    ca, cb = 2 * n_sides, 2 * n_sides + 1
    # e1 × e2 = u, so counter-clockwise rings seen from +u; side quads (a_i, a_j, b_j, b_i) face outwards
    side1 = np.stack([i, j, n_sides + j], axis=1)
    side2 = np.stack([i, n_sides + j, n_sides + i], axis=1)
    cap_a = np.stack([np.full(n_sides, ca), j, i], axis=1)  # faces -u
    cap_b = np.stack([np.full(n_sides, cb), n_sides + i, n_sides + j], axis=1)  # faces +u
    return pts, np.vstack([side1, side2, cap_a, cap_b]).astype(np.int64)


def _polydata(points, triangles):
    import vtk
    from vtk.util import numpy_support

    pd = vtk.vtkPolyData()
    vp = vtk.vtkPoints()
    vp.SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(points, dtype=np.float64), deep=True))
    pd.SetPoints(vp)
    tri = np.asarray(triangles, dtype=np.int64)
    offsets = np.arange(0, 3 * len(tri) + 1, 3, dtype=np.int64)
    ca = vtk.vtkCellArray()
    ca.SetData(
        numpy_support.numpy_to_vtkIdTypeArray(offsets, deep=True),
        numpy_support.numpy_to_vtkIdTypeArray(np.ascontiguousarray(tri.ravel()), deep=True),
    )
    pd.SetPolys(ca)
    return pd


def write_mesh(points_lps, triangles, path) -> Path:
    """Write a triangle mesh atomically as ``.stl`` (binary) or ``.vtp``; coordinates are LPS mm.

    The VTP also carries a field-data string array ``coordinate_system`` = ``"LPS"``. (Recent 3D Slicer versions
    read model files without a coordinate-system marker as LPS; check this in Slicer before relying on it.)
    """
    import vtk

    path = Path(path)
    pd = _polydata(points_lps, triangles)
    suffix = path.suffix.lower()
    if suffix == ".stl":
        w = vtk.vtkSTLWriter()
        w.SetFileTypeToBinary()
    elif suffix == ".vtp":
        sa = vtk.vtkStringArray()
        sa.SetName("coordinate_system")
        sa.InsertNextValue("LPS")
        pd.GetFieldData().AddArray(sa)
        w = vtk.vtkXMLPolyDataWriter()
    else:
        raise InputError(f"mesh file {path.name}: use .stl or .vtp")
    with atomic_path(path) as tmp:
        w.SetFileName(str(tmp))
        w.SetInputData(pd)
        if not w.Write():
            raise OSError(f"vtk could not write {tmp}")
    return path


def reformat_planes(frame: AnatomicalFrame, entry_lps, target_lps) -> dict:
    """Reformat planes along a trajectory (origin at the target, unit LPS vectors).

    Returns
    -------
    dict
        ``axial_oblique`` (contains the channel; closest to the axial plane, shows the medial angle),
        ``sagittal_oblique`` (contains the channel and the cranial direction, shows the craniocaudal angle),
        ``en_face`` (perpendicular to the channel, looking down it). Each: ``origin_lps``, ``normal``,
        ``axis_u`` and ``axis_v`` (in-plane, right-handed: ``axis_u × axis_v = normal``).
    """
    t = np.asarray(target_lps, dtype=float)
    u = _unit(np.asarray(entry_lps, dtype=float) - t)
    zc = frame.z_axis - (frame.z_axis @ u) * u
    if np.linalg.norm(zc) < 1e-6:
        zc = frame.y_axis - (frame.y_axis @ u) * u
    v = _unit(zc)
    w = np.cross(u, v)

    def plane(a1, a2):
        return {"origin_lps": _r(t), "normal": _r(np.cross(a1, a2), 6), "axis_u": _r(a1, 6), "axis_v": _r(a2, 6)}

    return {"axial_oblique": plane(u, w), "sagittal_oblique": plane(u, v), "en_face": plane(w, v)}


# ====================================================================== tables, figures, reports
_CSV_FIELDS = [
    "side", "medial_angle_deg", "craniocaudal_angle_deg", "entry_x_mm", "entry_y_mm", "entry_z_mm", "entry_on_skin",
    "entry_midline_distance_mm", "length_mm", "clearance_mm", "l4_mm3", "disc_mm3", "l5_mm3", "bone_mm3",
    "approach_clearance_mm", "approach_bone_mm3", "bone_free", "best",
]


def sweep_rows(result: PlanResult) -> list[dict]:
    """One dict per swept trajectory (all sides), with the columns of the sweep CSV."""
    rows = []
    for side, sw in result.sides.items():
        for i, m in enumerate(sw.medial_angles_deg):
            for j, c in enumerate(sw.craniocaudal_angles_deg):
                e = sw.entry_lps[i, j]
                rows.append({
                    "side": side,
                    "medial_angle_deg": round(float(m), 3),
                    "craniocaudal_angle_deg": round(float(c), 3),
                    "entry_x_mm": round(float(e[0]), 3),
                    "entry_y_mm": round(float(e[1]), 3),
                    "entry_z_mm": round(float(e[2]), 3),
                    "entry_on_skin": int(bool(sw.entry_on_skin[i, j])),
                    "entry_midline_distance_mm": round(float(sw.entry_midline_distance_mm[i, j]), 3),
                    "length_mm": round(float(sw.length_mm[i, j]), 3),
                    "clearance_mm": round(float(sw.clearance_mm[i, j]), 4),
                    "l4_mm3": round(float(sw.l4_mm3[i, j]), 3),
                    "disc_mm3": round(float(sw.disc_mm3[i, j]), 3),
                    "l5_mm3": round(float(sw.l5_mm3[i, j]), 3),
                    "bone_mm3": round(float(sw.bone_mm3[i, j]), 3),
                    "approach_clearance_mm": round(float(sw.approach_clearance_mm[i, j]), 4),
                    "approach_bone_mm3": round(float(sw.approach_bone_mm3[i, j]), 3),
                    "bone_free": int(bool(sw.bone_free[i, j])),
                    "best": int((i, j) == tuple(sw.best_index)),
                })
    return rows


def write_sweep_csv(result: PlanResult, path) -> Path:
    """Write the sweep table (one row per trajectory) atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(sweep_rows(result))
    return atomic_write_text(path, buf.getvalue())


def write_heatmap_png(result: PlanResult, path, dpi: int = 110) -> Path:
    """Heat maps (per side) of bone volume in the channel (mm³) and clearance (mm) over the sweep; best marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    sides = list(result.sides)
    fig, axes = plt.subplots(len(sides), 2, figsize=(11, 4.2 * len(sides)), squeeze=False)
    d = result.config.diameter_mm
    for row, side in enumerate(sides):
        sw = result.sides[side]
        ma, cc = sw.medial_angles_deg, sw.craniocaudal_angles_deg
        extent = _extent(ma, cc)
        bi, bj = sw.best_index
        scope = "entry to disc" if sw.bone_scope == "approach" else "entry to target"
        clr = sw.scope_clearance_mm
        for col, (data, title, cmap) in enumerate(
            (
                (sw.scope_bone_mm3, f"{side}: bone (L4+L5) in {d:g} mm channel ({scope}), mm³", "magma_r"),
                (np.where(np.isfinite(clr), clr, np.nan), f"{side}: clearance to bone ({scope}), mm", "RdYlGn"),
            )
        ):
            ax = axes[row, col]
            kw = {}
            if col == 1:
                lim = float(np.clip(np.nanmax(data), 1.0, 10.0)) if np.isfinite(data).any() else 1.0
                kw = {"vmin": -lim, "vmax": lim}  # clearance below -lim saturates
            im = ax.imshow(data.T, origin="lower", extent=extent, aspect="auto", cmap=cmap, interpolation="nearest", **kw)
            fig.colorbar(im, ax=ax)
            if col == 1 and np.isfinite(data).any() and np.nanmin(data) < 0 < np.nanmax(data) and min(data.shape) > 1:
                ax.contour(ma, cc, data.T, levels=[0.0], colors="k", linewidths=0.8)
            ax.plot([ma[bi]], [cc[bj]], marker="*", markersize=16, color="cyan", markeredgecolor="k")
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("medial angle from sagittal plane (deg)")
            ax.set_ylabel("craniocaudal angle (deg, + = caudally directed)")
        verdict = "foraminoplasty needed" if sw.foraminoplasty_needed else "bone-free channel found"
        axes[row, 0].text(0.01, 1.12, verdict, transform=axes[row, 0].transAxes, fontsize=10, fontweight="bold")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


def _extent(ma, cc):
    def edges(v):
        v = np.asarray(v, dtype=float)
        if len(v) == 1:
            return v[0] - 0.5, v[0] + 0.5
        step = np.diff(v).mean()
        return v[0] - step / 2, v[-1] + step / 2

    return (*edges(ma), *edges(cc))


def report_dict(result: PlanResult, inputs: dict | None = None) -> dict:
    """JSON-ready report: frame, configuration, references, and per side the target, best channel and verdict."""
    cfg = result.config
    lo, hi = cfg.reference_entry_distance_mm
    sides = {}
    for side, sw in result.sides.items():
        b = sw.best
        bone = sw.bone_mm3
        valid = np.isfinite(sw.clearance_mm)
        sides[side] = {
            "target_lps": _r(sw.target_lps),
            "target_method": sw.target_method,
            "best": b.as_dict(),
            "best_grid_index": list(sw.best_index),
            "criterion": sw.criterion,
            "foraminoplasty_needed": bool(sw.foraminoplasty_needed),
            "verdict": _verdict(sw, cfg),
            "bone_free_fraction": round(float(sw.bone_free.sum() / sw.bone_free.size), 4),
            "bone_scope": sw.bone_scope,
            "minimal_bone_mm3": round(float(np.min(np.where(valid, sw.scope_bone_mm3, np.inf))), 2),
            "minimal_channel_bone_mm3": round(float(np.min(np.where(valid, bone, np.inf))), 2),
            "minimal_approach_bone_mm3": round(float(np.min(np.where(valid, sw.approach_bone_mm3, np.inf))), 2),
            "entry_within_reference_band": bool(lo <= b.entry_midline_distance_mm <= hi) if b.entry_on_skin else None,
            "reformat_planes": reformat_planes(result.frame, b.entry_lps, b.target_lps),
        }
    return {
        "kind": "spinemorph transforaminal L4-5 trajectory plan",
        "coordinate_system": "LPS",
        "units": {"length": "mm", "angle": "deg", "volume": "mm3"},
        "inputs": inputs or {},
        "angle_conventions": {
            "medial_angle_deg": "axial plane, from the mid-sagittal plane (0 = straight posterior, 90 = lateral)",
            "medial_angle_from_coronal_deg": "90 - medial_angle_deg",
            "craniocaudal_angle_deg": "elevation of the channel from the axial plane; + = entry cranial to target (channel directed caudally)",
            "lateral_view_angle_deg": "angle of the channel's projection on the sagittal plane from the posterior axis",
        },
        "frame": result.frame.as_dict(),
        "config": {
            "diameter_mm": cfg.diameter_mm,
            "target": cfg.target,
            "medial_angles_deg": list(cfg.medial_angles_deg),
            "craniocaudal_angles_deg": list(cfg.craniocaudal_angles_deg),
            "bone_tolerance_mm3": cfg.bone_tolerance_mm3,
            "bone_scope": cfg.bone_scope,
            "max_length_mm": cfg.max_length_mm,
            "reference_entry_distance_mm": list(cfg.reference_entry_distance_mm),
        },
        "skin_from_image": bool(result.skin_available),
        "sides": sides,
        "references": REFERENCE_VALUES,
        "warnings": list(result.warnings),
    }


def _verdict(sw: SideSweep, cfg: PlanningConfig) -> str:
    b = sw.best
    approach = sw.bone_scope == "approach"
    scope = "from the entry to the disc" if approach else "from the entry to the target"
    where = (
        f"; of the channel's {b.bone_mm3:.1f} mm³ of bone, {b.approach_bone_mm3:.1f} mm³ lies before the disc (foraminal) "
        f"and {b.intradiscal_bone_mm3:.1f} mm³ inside the disc space (endplates)"
    )
    if sw.foraminoplasty_needed:
        least = b.approach_bone_mm3 if approach else b.bone_mm3
        l4, l5 = (b.approach_l4_mm3, b.approach_l5_mm3) if approach else (b.l4_mm3, b.l5_mm3)
        free = b.approach_max_free_diameter_mm if approach else b.max_free_diameter_mm
        return (
            f"no {cfg.diameter_mm:g} mm channel to the {sw.target_kind} target in the sweep is bone-free {scope}: "
            f"foraminoplasty needed; least bone {least:.1f} mm³ (L4 {l4:.1f}, L5 {l5:.1f}) at medial "
            f"{b.medial_angle_deg:.0f}°, craniocaudal {b.craniocaudal_angle_deg:.0f}°; largest bone-free diameter on that axis "
            f"{free:.1f} mm" + where
        )
    clr = b.approach_clearance_mm if approach else b.clearance_mm
    text = (
        f"bone-free {cfg.diameter_mm:g} mm channel {scope}: medial {b.medial_angle_deg:.0f}°, craniocaudal "
        f"{b.craniocaudal_angle_deg:.0f}°, clearance {clr:.1f} mm, entry {b.entry_midline_distance_mm:.0f} mm from the midline"
        + ("" if b.entry_on_skin else " (entry at the field-of-view edge, not on the skin)")
    )
    return text + (where if approach and b.intradiscal_bone_mm3 > 0 else "")


def report_markdown(report: dict) -> str:
    """Human-readable Markdown version of :func:`report_dict`."""
    cfg = report["config"]
    lines = [
        "# Transforaminal L4-5 trajectory plan",
        "",
        f"Channel diameter {cfg['diameter_mm']:g} mm, target: {cfg['target']}. Coordinates LPS (mm).",
        "",
        "Angle conventions: medial angle in the axial plane from the mid-sagittal plane (0° straight posterior, 90° lateral); "
        "craniocaudal angle from the axial plane, positive = entry cranial to the target (instrument directed caudally).",
        "",
        f"Bone scope of the decision: {cfg.get('bone_scope', 'channel')} (channel = entry to target; approach = entry to the disc surface).",
        "",
        "| side | verdict | medial (°) | craniocaudal (°) | entry from midline (mm) | length (mm) | clearance (mm) | L4 (mm³) | disc (mm³) | L5 (mm³) | bone before disc (mm³) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for side, s in report["sides"].items():
        b = s["best"]
        v = "foraminoplasty needed" if s["foraminoplasty_needed"] else "bone-free"
        lines.append(
            f"| {side} | {v} | {b['medial_angle_deg']:.1f} | {b['craniocaudal_angle_deg']:.1f} | "
            f"{b['entry_midline_distance_mm']:.1f}{'' if b['entry_on_skin'] else ' (FOV edge)'} | {b['length_mm']:.1f} | "
            f"{b['clearance_mm']:.2f} | {b['intersection_mm3']['L4']:.1f} | {b['intersection_mm3']['L4-5 disc']:.1f} | "
            f"{b['intersection_mm3']['L5']:.1f} | {b['approach']['bone_mm3']:.1f} |"
        )
    lines.append("")
    for side, s in report["sides"].items():
        b = s["best"]
        lines += [
            f"## {side}",
            "",
            f"- {s['verdict']}.",
            f"- Target {s['target_lps']} ({s['target_method']}); entry {b['entry_lps']}.",
            f"- Best-channel criterion: {s['criterion']}; bone-free fraction of the sweep {s['bone_free_fraction']:.2f}.",
            f"- Largest bone-free diameter along this axis: {b['max_free_diameter_mm']:.2f} mm.",
        ]
        if s["entry_within_reference_band"] is not None:
            lo, hi = cfg["reference_entry_distance_mm"]
            inside = "within" if s["entry_within_reference_band"] else "outside"
            lines.append(f"- Entry distance {b['entry_midline_distance_mm']:.0f} mm is {inside} the reference {lo:g}-{hi:g} mm (Kambin).")
        lines.append("")
    lines += ["## References", ""]
    for key, ref in report["references"].items():
        lines.append(f"- **{key}** ({ref['certainty']}): {ref['source']}.")
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    lines += ["", "Planning aid only; not a medical device. Check every trajectory on the images."]
    return "\n".join(lines) + "\n"


def markups_json(result: PlanResult) -> dict:
    """3D Slicer markups (``.mrk.json``) with one line (entry → target) per side, LPS coordinates."""
    markups = []
    for side, sw in result.sides.items():
        b = sw.best
        markups.append({
            "type": "Line",
            "coordinateSystem": "LPS",
            "coordinateUnits": "mm",
            "name": f"trajectory-{side}",
            "controlPoints": [
                {"id": "1", "label": f"entry-{side}", "position": _r(b.entry_lps)},
                {"id": "2", "label": f"target-{side}", "position": _r(b.target_lps)},
            ],
        })
    return {
        "@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#",
        "markups": markups,
    }


def points_dict(result: PlanResult) -> dict:
    """Entry/target points, midline frame and reformat planes of the best channel per side (JSON-ready)."""
    return {
        "coordinate_system": "LPS",
        "units": "mm",
        "frame": result.frame.as_dict(),
        "sides": {
            side: {
                "entry_lps": _r(sw.best.entry_lps),
                "target_lps": _r(sw.best.target_lps),
                "entry_on_skin": bool(sw.best.entry_on_skin),
                "diameter_mm": sw.best.diameter_mm,
                "reformat_planes": reformat_planes(result.frame, sw.best.entry_lps, sw.best.target_lps),
            }
            for side, sw in result.sides.items()
        },
    }


def dumps(obj) -> str:
    """JSON text (2-space indent) for report/points dicts."""
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
