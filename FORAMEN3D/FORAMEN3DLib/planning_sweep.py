"""The angle sweep and the best channel: :func:`plan` (skin casting of every swept direction, channel metrics,
best-trajectory criterion), :class:`SideSweep` and :class:`PlanResult`. Part of :mod:`FORAMEN3DLib.planning`
(criterion in its docstring).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from FORAMEN3DLib.planning_config import PlanningConfig, TargetOutsideBodyError, _side_sign
from FORAMEN3DLib.planning_frame import AnatomicalFrame, anatomical_frame, direction_from_angles
from FORAMEN3DLib.planning_geometry import _check_labels
from FORAMEN3DLib.planning_scene import N_COUNTED, PlanningScene
from FORAMEN3DLib.planning_targets import disc_posterior_third_target, foramen_centre_target
from FORAMEN3DLib.planning_trajectory import Trajectory, _channel_metrics, evaluate_trajectory
from spinemorph.labels import CANAL, DISC_L45, L4, L5
from spinemorph.volume import Volume


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
    dural_sac_mm3: np.ndarray | None = None  # per channel; None when the label map has no dural sac (label 4)

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
    has_sac = bool(np.any(np.asarray(cropped.array) == CANAL))
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
        vols = np.zeros((n, N_COUNTED))
        app_vols = np.zeros((n, N_COUNTED))
        clear = np.full(n, -np.inf)
        app_clear = np.full(n, -np.inf)
        for i in range(n):
            if lengths[i] <= 0:
                continue
            m = _channel_metrics(scene, entries[i], target, cfg)
            vols[i], app_vols[i] = m["vols"], m["approach_vols"]
            clear[i], app_clear[i] = m["clearance"], m["approach_clearance"]
        valid = (lengths > 0).reshape(shape)
        sac = vols[:, CANAL].reshape(shape) if has_sac else None
        sac_note = ""
        if has_sac:
            # a channel through the dural sac is never the best one (nor bone-free): the sac is not a corridor
            through_sac = sac > cfg.bone_tolerance_mm3
            if np.any(valid & ~through_sac):
                valid = valid & ~through_sac
                sac_note = f" [{int(through_sac.sum())} channels through the dural sac excluded]"
            else:
                warnings.append(f"{side}: every swept channel crosses the dural sac (label 4); the best one is shown only "
                                "for review")
                sac_note = " [every channel crosses the dural sac]"
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
            criterion=crit + (" [bone counted from the entry to the disc surface]" if cfg.bone_scope == "approach" else " [bone counted along the whole channel to the target]") + sac_note,
            dural_sac_mm3=sac,
        )
    return PlanResult(frame=frame, config=cfg, sides=out, skin_available=bool(bodies), warnings=warnings)
