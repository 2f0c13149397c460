"""One evaluated working channel: :class:`Trajectory` (angles, length, clearance, bone / disc volumes, approach
part up to the docking point on the disc) and :func:`evaluate_trajectory`. Part of :mod:`FORAMEN3DLib.planning`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from FORAMEN3DLib.planning_config import PlanningConfig
from FORAMEN3DLib.planning_frame import AnatomicalFrame, trajectory_angles
from FORAMEN3DLib.planning_geometry import _r
from FORAMEN3DLib.planning_scene import PlanningScene
from spinemorph.errors import InputError
from spinemorph.labels import CANAL, DISC_L45, L4, L5


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
    dural_sac_mm3: float = 0.0  # volume of the dural sac (label 4) inside the channel; 0 when the map has no label 4

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
            "dural_sac_mm3": round(self.dural_sac_mm3, 2),
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
        dural_sac_mm3=float(m["vols"][CANAL]),
    )
