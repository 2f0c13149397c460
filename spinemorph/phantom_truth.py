"""Exact ground truth of the procedural phantom: foramen measurements, dural sac areas, the body outline.

Computed from the analytic geometry of a :class:`spinemorph.phantom.Phantom`, never from a raster (definitions in
DEVELOPERS.md). Re-exported by :mod:`spinemorph.phantom`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from spinemorph.volume import Volume


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
    """Exact ground truth of a :class:`~spinemorph.phantom.Phantom` (computed from the analytic geometry, never from a raster)."""

    foramen: dict[str, ForamenTruth]
    posterior_disc_height_mm: float
    posterior_disc_height_points_lps: np.ndarray
    tilt_deg: float
    canal_axis_lps: np.ndarray
    sac_area_unindented_mm2: float
    #: the :class:`spinemorph.phantom.Phantom` this belongs to (not imported here: the phantom module imports this one)
    _phantom: object = dataclasses.field(repr=False, default=None)

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
    #: the :class:`spinemorph.phantom.Phantom` this belongs to (not imported here: the phantom module imports this one)
    _phantom: object = dataclasses.field(repr=False, default=None)

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
