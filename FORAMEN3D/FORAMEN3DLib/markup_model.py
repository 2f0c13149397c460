"""Slicer-free logic behind the FORAMEN3D panel: measurement markups, live recomputation, layout and reformats.

The Slicer glue (``slicer_*.py``) copies what these functions return into MRML nodes (markups, tables, slice
nodes, models); everything that decides *what* is shown lives here and is tested without Slicer
(``Testing/test_slicer_glue.py``).

- :class:`MeasurementState` holds, per side, the 3D LPS points of the foraminal height line, width line and area
  outline (from :func:`FORAMEN3DLib.morphometry.measure_foramen`), turns them into markup specifications
  (:class:`MarkupSpec`, RAS points) and recomputes height / width / area / flags with
  :func:`FORAMEN3DLib.morphometry.measure_from_points` when the user moves a control point
  (:meth:`MeasurementState.update_from_ras`); :meth:`MeasurementState.rows` is the Metric / Side / Value / Unit /
  Flag / QC table (a value under QC review is never flagged; once the user edits it, its QC reads "edited").
- The area outline is simplified for editing (Douglas–Peucker on the lateral view, :data:`OUTLINE_TOLERANCE_MM`),
  which changes its area by far less than 1 %; the table always shows the values of the drawn points.
- :func:`layout_xml`: the FORAMEN3D view layout (3D view + one lateral reformat per side + the trajectory reformat).
- :func:`slice_to_ras`: 4×4 SliceToRAS of a reformat from an origin and two in-plane axes; :func:`lateral_view_plane`
  and :func:`trajectory_plane` give those for a side's lateral view and for a planned channel.
- :data:`SEGMENTS`: segment IDs, names, colours and standard terminology of L4, the L4-5 disc, L5 and the dural sac.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from spinemorph.errors import SpineMorphError
from spinemorph.gui_support import Code, lps_to_ras, ras_to_lps, terminology_entry
from spinemorph.labels import COLORS

SIDES = ("left", "right")
#: tolerance (mm) of the outline simplification used for the editable closed curve
OUTLINE_TOLERANCE_MM = 0.15
#: markup colours per metric (RGB 0..1)
METRIC_COLORS = {"height": (0.95, 0.35, 0.20), "width": (0.20, 0.75, 0.95), "area": (0.95, 0.85, 0.20)}
#: metric -> (table name, unit)
METRICS = {"height": ("foraminal_height", "mm"), "width": ("foraminal_width", "mm"), "area": ("foraminal_area", "mm2")}

# Terminology: SNOMED CT codes as used by Slicer's TotalSegmentator mapping (L4 vertebra 11994002, L5 vertebra 49668003);
# "Intervertebral disc" 360499006 is not in Slicer's bundled lists (taken from third-party mappings, less certain).
_L4 = Code("SCT", "11994002", "L4 vertebra")
_L5 = Code("SCT", "49668003", "L5 vertebra")
_DISC = Code("SCT", "360499006", "Intervertebral disc")
#: dural sac: the code DuralSacSeg uses (SCT 18545000 "Dura mater", in SpineMorph.term.json)
_SAC = Code("SCT", "18545000", "Dura mater")
#: (label value, segment ID, name, RGB, terminology); the dural sac (label 4) comes from the fine 5-class model and is
#: an obstacle for trajectory planning; it is optional (see OPTIONAL_SEGMENT_IDS)
SEGMENTS = (
    (1, "L4", "L4", COLORS["L4"], terminology_entry(_L4)),
    (2, "L4-5_disc", "L4-5 disc", COLORS["L4-5 disc"], terminology_entry(_DISC)),
    (3, "L5", "L5", COLORS["L5"], terminology_entry(_L5)),
    (4, "Dural_sac", "dural sac", COLORS["dural sac"], terminology_entry(_SAC)),
)
#: segments a segmentation may lack (made with the 4-class coarse model, or by hand): not an error when missing
OPTIONAL_SEGMENT_IDS = frozenset({"Dural_sac"})


@dataclasses.dataclass
class MarkupSpec:
    """A markup to create: ``kind`` is ``"line"`` or ``"closed_curve"``; points in RAS mm."""

    key: str
    side: str
    metric: str
    kind: str
    name: str
    points_ras: np.ndarray
    color: tuple


def simplify_outline(outline_lps, view, tolerance_mm: float = OUTLINE_TOLERANCE_MM) -> np.ndarray:
    """Douglas–Peucker simplification of a closed outline on its lateral view, back to LPS ``(M, 3)``.

    ``view`` is a :class:`FORAMEN3DLib.landmarks.LateralView` (its ``lps_to_yz`` / ``yz_to_lps``).
    """
    from skimage.measure import approximate_polygon

    yz = view.lps_to_yz(np.asarray(outline_lps, dtype=float))
    if len(yz) < 4:
        return np.asarray(outline_lps, dtype=float)
    closed = np.vstack([yz, yz[:1]])
    simple = approximate_polygon(closed, tolerance=float(tolerance_mm))
    if len(simple) > 1 and np.allclose(simple[0], simple[-1]):
        simple = simple[:-1]
    if len(simple) < 3:
        simple = yz
    return view.yz_to_lps(simple)


class MeasurementState:
    """Editable foramen measurements of both sides (LPS points) and their live values.

    Parameters
    ----------
    result : FORAMEN3DLib.morphometry.MorphometryResult
        Output of :func:`~FORAMEN3DLib.morphometry.measure_foramen`.
    thresholds : FORAMEN3DLib.morphometry.Thresholds, optional
        Flag thresholds (default: those of ``result``).
    """

    def __init__(self, result, thresholds=None):
        self.thresholds = thresholds or result.thresholds
        self.view_axis_lps = np.asarray(result.landmarks.frame.lateral_axis_lps, dtype=float)
        self.points: dict[str, dict[str, np.ndarray]] = {}
        self.views = {}
        #: side -> why it was not measured (no pedicle / no enclosed foramen); such a side has no points, no markups
        #: and no lateral view, its values are NaN with QC "not measured" (edit the segmentation and measure again)
        self.not_measured: dict[str, str] = {}
        for side in SIDES:
            r = result.sides[side]
            if not getattr(r, "measured", True):
                self.not_measured[side] = r.qc_reasons[0] if r.qc_reasons else "not measured"
                continue
            self.views[side] = r.view
            self.points[side] = {
                "height": np.asarray(r.height.points_lps, dtype=float).reshape(2, 3),
                "width": np.asarray(r.width.points_lps, dtype=float).reshape(2, 3),
                "area": simplify_outline(r.area.points_lps, r.view),
            }
        self.posterior_disc_height = result.posterior_disc_height
        #: QC per side and metric: "ok" / "review" from the measurement, "edited" once the user moved its points
        #: (a value under review never raises the flag; an edited one inside the plausibility band is the user's and is flagged normally)
        self.qc: dict[str, dict[str, str]] = {}
        self.qc_reasons: dict[str, list] = {}
        self.view_kind: dict[str, str] = {}
        for side in SIDES:
            r = result.sides[side]
            self.qc[side] = {m: getattr(getattr(r, m), "qc", "ok") for m in METRICS}
            self.qc_reasons[side] = list(getattr(r, "qc_reasons", []))
            self.view_kind[side] = getattr(r, "view_kind", "")
        self.values = {side: self._recompute(side) for side in SIDES}

    def _recompute(self, side: str) -> dict:
        from FORAMEN3DLib.morphometry import FLAG_TEXT, NOT_MEASURED, flags_for, measure_from_points

        if side in self.not_measured:
            nan = float("nan")
            return {"height_mm": nan, "width_mm": nan, "area_mm2": nan, "flagged": False, "flag": "",
                    "qc": {m: NOT_MEASURED for m in METRICS}, "qc_status": NOT_MEASURED}
        p = self.points[side]
        v = measure_from_points(p["height"], p["width"], p["area"], self.view_axis_lps, self.thresholds)
        q = self._effective_qc(side, v)
        v["qc"] = q
        fl = flags_for(v["height_mm"] if q["height"] != "review" else float("nan"),
                       v["width_mm"] if q["width"] != "review" else float("nan"), self.thresholds)
        v["flagged"] = bool(fl["side"])
        v["flag"] = FLAG_TEXT if v["flagged"] else ""
        v["qc_status"] = "review" if "review" in q.values() else ("edited" if "edited" in q.values() else "ok")
        return v

    def _effective_qc(self, side: str, v: dict) -> dict:
        """QC per metric: the measurement's, "edited" once moved; an edited value outside the plausibility band
        (:data:`FORAMEN3DLib.morphometry.PLAUSIBLE`) is "review" again, so that a mis-dragged point never flags."""
        from FORAMEN3DLib.morphometry import PLAUSIBLE

        q = dict(self.qc[side])
        for metric, key in (("height", "height_mm"), ("width", "width_mm"), ("area", "area_mm2")):
            lo, hi = PLAUSIBLE[METRICS[metric][0]]
            value = float(v[key])
            if q[metric] == "edited" and not (np.isfinite(value) and lo <= value <= hi):
                q[metric] = "review"
        return q

    # ------------------------------------------------------------------ markups
    @staticmethod
    def key(side: str, metric: str) -> str:
        return f"{side}_{metric}"

    @staticmethod
    def parse_key(key: str) -> tuple[str, str]:
        side, _, metric = str(key).partition("_")
        if side not in SIDES or metric not in METRICS:
            raise SpineMorphError(f"unknown measurement markup {key!r}")
        return side, metric

    def markup_specs(self) -> list[MarkupSpec]:
        """Two lines and one closed curve per side, in RAS (what the glue turns into markups nodes)."""
        specs = []
        for side in (s for s in SIDES if s not in self.not_measured):
            s = "L" if side == "left" else "R"
            for metric, kind in (("height", "line"), ("width", "line"), ("area", "closed_curve")):
                specs.append(
                    MarkupSpec(
                        key=self.key(side, metric), side=side, metric=metric, kind=kind,
                        name=f"{s} foraminal {metric}", points_ras=lps_to_ras(self.points[side][metric]),
                        color=METRIC_COLORS[metric],
                    )
                )
        return specs

    def update_from_ras(self, key: str, points_ras) -> dict:
        """A markup was edited: store its points (RAS) and return the side's new values.

        Raises
        ------
        SpineMorphError
            A line without exactly 2 points or an outline with fewer than 3.
        """
        side, metric = self.parse_key(key)
        if side in self.not_measured:
            raise SpineMorphError(f"the {side} foramen was not measured ({self.not_measured[side]}); edit the segmentation "
                                  "and measure again")
        p = ras_to_lps(np.asarray(points_ras, dtype=float).reshape(-1, 3))
        if metric in ("height", "width") and len(p) != 2:
            raise SpineMorphError(f"the {side} foraminal {metric} line needs exactly 2 points (it has {len(p)})")
        if metric == "area" and len(p) < 3:
            raise SpineMorphError(f"the {side} foramen outline needs at least 3 points (it has {len(p)})")
        self.points[side][metric] = p
        self.qc[side][metric] = "edited"
        self.values[side] = self._recompute(side)
        return self.values[side]

    # ------------------------------------------------------------------ table
    def rows(self) -> list[dict]:
        """Table rows ``Metric, Side, Value, Unit, Flag, QC`` (both sides, then the posterior disc height). QC is
        ``ok``, ``review`` (fallback / implausible / thick slices: never flagged) or ``edited`` (moved by the user)."""
        from FORAMEN3DLib.morphometry import flags_for

        out = []
        for side in SIDES:
            v = self.values[side]
            q = v.get("qc") or self.qc[side]
            fl = flags_for(v["height_mm"], v["width_mm"], self.thresholds)
            if side in self.not_measured:
                fl = {}
            for metric, value in (("height", v["height_mm"]), ("width", v["width_mm"]), ("area", v["area_mm2"])):
                name, unit = METRICS[metric]
                out.append({"Metric": name, "Side": side, "Value": round(float(value), 2), "Unit": unit,
                            "Flag": fl.get(metric, "") if q[metric] != "review" else "", "QC": q[metric]})
        pdh = self.posterior_disc_height
        value = float(pdh.value) if np.isfinite(pdh.value) else float("nan")
        out.append({"Metric": pdh.metric, "Side": pdh.side, "Value": round(value, 2), "Unit": pdh.unit, "Flag": pdh.flag,
                    "QC": getattr(pdh, "qc", "ok")})
        return out

    def flagged_sides(self) -> list[str]:
        return [s for s in SIDES if self.values[s]["flagged"]]

    def summary_text(self) -> str:
        parts = []
        for side in SIDES:
            v = self.values[side]
            if side in self.not_measured:
                parts.append(f"{side}: not measured ({self.not_measured[side]})")
                continue
            flag = " — enlargement likely needed" if v["flagged"] else ""
            review = " (QC: review)" if v.get("qc_status") == "review" else ""
            parts.append(f"{side}: height {v['height_mm']:.1f} mm, width {v['width_mm']:.1f} mm, area {v['area_mm2']:.0f} mm²{flag}{review}")
        return "; ".join(parts)


# ---------------------------------------------------------------------------------------------------- views
#: layout ID registered with the layout node (any unused integer above Slicer's built-in layouts)
LAYOUT_ID = 5401
#: slice view names of the layout
LATERAL_VIEW_NAMES = {"left": "ForamenLeft", "right": "ForamenRight"}
TRAJECTORY_VIEW_NAME = "ForamenTrajectory"


def layout_xml() -> str:
    """Layout description: 3D view on top; left lateral, right lateral and trajectory reformats below."""

    def slice_view(name, label, color):
        return (
            f'<item><view class="vtkMRMLSliceNode" singletontag="{name}">'
            f'<property name="orientation" action="default">Sagittal</property>'
            f'<property name="viewlabel" action="default">{label}</property>'
            f'<property name="viewcolor" action="default">{color}</property>'
            "</view></item>"
        )

    return (
        '<layout type="vertical" split="true">'
        '<item splitSize="600"><view class="vtkMRMLViewNode" singletontag="1">'
        '<property name="viewlabel" action="default">1</property></view></item>'
        '<item splitSize="400"><layout type="horizontal">'
        + slice_view(LATERAL_VIEW_NAMES["left"], "FL", "#E07A1F")
        + slice_view(LATERAL_VIEW_NAMES["right"], "FR", "#1F8FE0")
        + slice_view(TRAJECTORY_VIEW_NAME, "TR", "#8FCF3F")
        + "</layout></item></layout>"
    )


def slice_to_ras(origin_ras, x_axis_ras, y_axis_ras) -> np.ndarray:
    """4×4 SliceToRAS: columns = screen-right axis, screen-up axis, normal (x × y), origin.

    The axes are orthonormalised (``y`` made orthogonal to ``x``).

    Raises
    ------
    SpineMorphError
        Degenerate (zero or parallel) axes.
    """
    x = np.asarray(x_axis_ras, dtype=float)
    y = np.asarray(y_axis_ras, dtype=float)
    nx = np.linalg.norm(x)
    if nx < 1e-9:
        raise SpineMorphError("reformat axis has zero length")
    x = x / nx
    y = y - (y @ x) * x
    ny = np.linalg.norm(y)
    if ny < 1e-9:
        raise SpineMorphError("reformat axes are parallel")
    y = y / ny
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, np.cross(x, y), np.asarray(origin_ras, dtype=float)
    return m


def lateral_view_plane(state: MeasurementState, side: str) -> np.ndarray:
    """SliceToRAS of a side's lateral view: through the centre of its foramen outline, normal = the lateral axis,
    screen-right = posterior (y'), screen-up = superior (z') of the canal frame (like Slicer's sagittal view)."""
    if side in state.not_measured:
        raise SpineMorphError(f"the {side} foramen was not measured: it has no lateral view")
    frame = state.views[side].frame
    centre = np.asarray(state.points[side]["area"], dtype=float).mean(axis=0)
    y_axis = frame.axes_lps[:, 1]
    z_axis = frame.axes_lps[:, 2]
    return slice_to_ras(lps_to_ras(centre), lps_to_ras(y_axis), lps_to_ras(z_axis))


def trajectory_plane(planes: dict, which: str = "sagittal_oblique") -> np.ndarray:
    """SliceToRAS of a reformat from :func:`FORAMEN3DLib.planning.reformat_planes` (LPS) — ``which`` plane."""
    p = planes[which]
    return slice_to_ras(lps_to_ras(p["origin_lps"]), lps_to_ras(p["axis_u"]), lps_to_ras(p["axis_v"]))


def trajectory_rows(trajectory) -> list[dict]:
    """Rows ``Metric, Value, Unit`` describing a :class:`FORAMEN3DLib.planning.Trajectory` for the panel's table."""
    t = trajectory
    rows = [
        ("side", t.side, ""),
        ("channel diameter", t.diameter_mm, "mm"),
        ("entry distance from midline", t.entry_midline_distance_mm, "mm"),
        ("medial angle (from sagittal)", t.medial_angle_deg, "deg"),
        ("craniocaudal angle", t.craniocaudal_angle_deg, "deg"),
        ("length to target", t.length_mm, "mm"),
        ("minimum clearance to bone", t.clearance_mm, "mm"),
        ("largest bone-free diameter", t.max_free_diameter_mm, "mm"),
        ("L4 in channel", t.l4_mm3, "mm3"),
        ("L4-5 disc in channel", t.disc_mm3, "mm3"),
        ("L5 in channel", t.l5_mm3, "mm3"),
    ]
    out = []
    for name, value, unit in rows:
        if isinstance(value, (float, int, np.floating)):
            value = round(float(value), 2)
        out.append({"Metric": name, "Value": value, "Unit": unit})
    return out


def plan_with_skin_fallback(labels, image, side: str, config=None, frame=None):
    """:func:`FORAMEN3DLib.planning.plan` for one side, with the skin from ``image``; if no skin surface can be found
    around the target (e.g. a field of view that cuts the body), plan again without the image and say so in
    ``result.warnings`` (entries then lie ``config.max_length_mm`` from the target, not on the skin; bone volumes and
    clearances are unaffected)."""
    from FORAMEN3DLib.planning import TargetOutsideBodyError, plan

    try:
        return plan(labels, image=image, sides=(side,), config=config, frame=frame)
    except TargetOutsideBodyError as exc:
        result = plan(labels, image=None, sides=(side,), config=config, frame=frame)
        result.warnings.insert(0, f"skin not found in the image ({exc}); entries are not on the skin")
        return result


def surface_models_ras(labels) -> list[tuple]:
    """Surface models of L4, the disc and L5 for Slicer: ``[(segment ID, name, rgb, vtkPolyData in RAS, MeshInfo)]``.

    Meshes come from :func:`FORAMEN3DLib.meshes.structure_meshes` (LPS, volume-preserving smoothing) and are flipped
    to RAS with :func:`FORAMEN3DLib.meshes.to_ras`; absent structures are skipped.
    """
    from FORAMEN3DLib import meshes

    surfaces = meshes.structure_meshes(labels)
    out = []
    for _value, segment_id, name, rgb, _terminology in SEGMENTS:
        info = surfaces.get(name)
        if info is not None:
            out.append((segment_id, name, rgb, meshes.to_ras(info.polydata), info))
    return out
