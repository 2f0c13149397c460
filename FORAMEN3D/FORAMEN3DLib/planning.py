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


# The planner is split by responsibility into modules that import only those above them:
#   planning_config     settings, reference values, TargetOutsideBodyError
#   planning_geometry   vector and label-map point helpers
#   planning_frame      anatomical frame at L4-5, angle conventions
#   planning_targets    disc posterior third / foramen centre targets
#   planning_scene      cropped labels + distance to bone, cylinder sampling (geometry engine)
#   planning_trajectory one evaluated channel
#   planning_sweep      the angle sweep per side and the best channel (plan)
#   planning_channel    channel mesh (STL/VTP) and reformat planes
#   planning_report     sweep CSV, JSON/Markdown report, markups, points
#   planning_heatmap    sweep heat-map figure
# This module re-exports their public names (the import path FORAMEN3DLib.planning stays the API).
from FORAMEN3DLib.planning_channel import channel_mesh, reformat_planes, write_mesh
from FORAMEN3DLib.planning_config import (
    BONE_SCOPES,
    DIAMETER_RANGE_MM,
    REFERENCE_VALUES,
    SIDES,
    TARGETS,
    PlanningConfig,
    TargetOutsideBodyError,
)
from FORAMEN3DLib.planning_frame import AnatomicalFrame, anatomical_frame, direction_from_angles, trajectory_angles
from FORAMEN3DLib.planning_heatmap import write_heatmap_png
from FORAMEN3DLib.planning_report import (
    dumps,
    markups_json,
    points_dict,
    report_dict,
    report_markdown,
    sweep_rows,
    write_sweep_csv,
)
from FORAMEN3DLib.planning_scene import PlanningScene, cylinder_intersection_mm3
from FORAMEN3DLib.planning_sweep import PlanResult, SideSweep, plan
from FORAMEN3DLib.planning_targets import (  # noqa: F401 (foramen-search thresholds: module constants kept here)
    ENCLOSE_BEHIND_MM,
    ENCLOSE_FRONT_MM,
    ENCLOSE_L4_ABOVE_MM,
    ENCLOSE_L5_BELOW_MM,
    FALLBACK_BEHIND_DISC_MM,
    FALLBACK_LATERAL_FRACTION,
    FORAMEN_SEARCH_LATERAL_MM,
    FORAMEN_SEARCH_POSTERIOR_MM,
    MIN_ENCLOSED_MM3,
    disc_posterior_third_target,
    foramen_centre_target,
)
from FORAMEN3DLib.planning_trajectory import Trajectory, evaluate_trajectory

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
