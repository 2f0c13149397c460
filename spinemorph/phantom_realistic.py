"""Realistic L4-5 foramen phantom: curved SAP, oblique pedicles, facet gaps, asymmetric sides, optional disc bulge.

Label map (1 L4, 2 L4-5 disc, 3 L5) with exact foramen truth for the morphometry tests
(:func:`realistic_foramen_phantom`, :data:`REALISTIC_PRESETS`). Re-exported by :mod:`spinemorph.phantom`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from spinemorph.errors import InputError
from spinemorph.volume import Volume

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
