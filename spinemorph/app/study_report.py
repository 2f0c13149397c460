"""The study's self-contained HTML report, assembled from the outputs of the study's steps.

Sections (ids are stable; ``Testing/test_study.py`` checks them): ``notice``, ``series``, ``dsca``, ``foramen``,
``plan``, ``truth`` (synthetic study only), ``qc``, ``provenance``. Every figure is a base64 PNG inside the page.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from spinemorph.app.htmlreport import Figure, HtmlReport, png_bytes_from_matplotlib

NOT_A_DEVICE = (
    "Research software, not a medical device: the measurements have not been cleared or approved for clinical use. "
    "They must be checked by a qualified reader (edit the segmentation and the measurement points in 3D Slicer) before "
    "any clinical interpretation."
)

#: report section ids in page order
SECTIONS = ("notice", "series", "dsca", "foramen", "plan", "truth", "qc", "provenance")


def _load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _step_json(sec: list, rep, status: dict, step: str, path: Path, what: str) -> dict | None:
    """The JSON a study step wrote, or None after adding a flagged "not available" paragraph that says why."""
    st = status.get(step)
    if st is None:
        reason = "step not run"
    elif st.status != "ok":
        reason = st.message or f"step {st.status}"
    else:
        doc = _load_json(path)
        if doc is not None:
            return doc
        reason = f"{path.name} is missing or unreadable"
    sec.append(rep.paragraph(f"{what} not available: {reason}", "flag"))
    return None


def _png(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _fmt(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if not np.isfinite(v) else f"{v:.{nd}f}"
    return str(v)


def _scheme_lines(scheme: dict | None) -> list[tuple[float, str]]:
    """``(area_mm2, text)`` of every finite category bound of the DSCA table's ``stenosis_scheme`` (may be empty)."""
    lines = []
    for c in (scheme or {}).get("categories", []) or []:
        v = c.get("area_below_mm2") if isinstance(c, dict) else None
        if isinstance(v, (int, float)) and np.isfinite(v):
            lines.append((float(v), f"{v:g} mm² ({c.get('label', '')})".replace(" ()", "")))
    return sorted(lines, reverse=True)


def _dsca_plot_caption(scheme: dict | None, path3d: bool = False) -> str:
    lines = _scheme_lines(scheme)
    head = ("DSCA per plane perpendicular to the canal centreline (3D path), with the axial area through the same centre "
            "point for comparison; " if path3d else
            "DSCA per slice: axial area and area perpendicular to the canal centreline; ")
    if not lines:
        return head + "no threshold lines: the DSCA table names no stenosis categories."
    name = (scheme or {}).get("name", "")
    values = " and ".join(f"{v:g}" for v, _ in lines)
    return head + f"dotted lines at the {values} mm² category bounds of the stenosis scheme{' ' + name if name else ''}."


def _dsca_plot(slices: list[dict], scheme: dict | None = None, path3d: bool = False) -> bytes:
    """Area per slice (per perpendicular plane on the 3D path), with a dotted line at every category bound of ``scheme``
    (the DSCA JSON's stenosis_scheme)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    # 0.0 is a valid position: only a missing value (None) becomes NaN
    pos = np.array([np.nan if s.get("position_mm") is None else s["position_mm"] for s in slices], dtype=float)
    area = np.array([s.get("area_mm2") if s.get("area_mm2") is not None else np.nan for s in slices], dtype=float)
    corr = np.array([s.get("corrected_area_mm2") if s.get("corrected_area_mm2") is not None else np.nan for s in slices], dtype=float)
    fig, ax = plt.subplots(figsize=(7.2, 3.4))
    if path3d:  # area_mm2 is the perpendicular area; axial_area_mm2 the axial plane through the same centre
        axial = np.array([s.get("axial_area_mm2") if s.get("axial_area_mm2") is not None else np.nan for s in slices],
                         dtype=float)
        ax.plot(pos, area, "o-", label="DSCA perpendicular to the centreline", color="#d62728", ms=3)
        ax.plot(pos, axial, "--", label="axial area (comparison)", color="#1f77b4")
    else:
        ax.plot(pos, area, "o-", label="axial DSCA", color="#1f77b4")
        ax.plot(pos, corr, "s--", label="angle-corrected DSCA", color="#d62728", ms=4)
    for y, lab in _scheme_lines(scheme):
        ax.axhline(y, color="0.5", lw=0.8, ls=":")
        ax.text(pos[np.isfinite(pos)].min() if np.isfinite(pos).any() else 0, y + 2, lab, fontsize=8, color="0.4")
    ax.set_xlabel("arc length along the canal centreline (mm)" if path3d else "slice position along the slice normal (mm)")
    ax.set_ylabel("area (mm²)")
    ax.set_title("Dural sac cross-sectional area per " + ("plane" if path3d else "slice"))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return png_bytes_from_matplotlib(fig)


def _mesh_snapshot(foramen_dir: Path) -> tuple[bytes | None, str]:
    from spinemorph.app.render3d import snapshot
    from spinemorph.labels import COLORS

    meshes = []
    for name in ("L4", "L4-5 disc", "L5"):
        p = foramen_dir / "meshes" / f"{name.replace(' ', '_')}.vtp"
        if p.exists():
            import vtk

            r = vtk.vtkXMLPolyDataReader()
            r.SetFileName(str(p))
            r.Update()
            meshes.append((r.GetOutput(), COLORS[name], 1.0 if name != "L4-5 disc" else 0.9))
    if not meshes:
        return None, ""
    return snapshot(meshes)


def build_report(out_dir: Path, selection, steps, *, truth_path: Path | None, models: dict, version: str) -> str:
    """HTML text of the study report built from the files in ``out_dir``."""
    out_dir = Path(out_dir)
    status = {s.name: s for s in steps}
    rep = HtmlReport("SpineMorph lumbar MRI study report", f"{out_dir.resolve()} · SpineMorph {version}")
    qc: list[str] = []

    # ---- notice
    sec = rep.section("notice", "Not a medical device")
    sec.append(rep.paragraph(NOT_A_DEVICE, "notice"))

    # ---- series
    sec = rep.section("series", "Series used")
    rows = []
    if selection is not None:
        rows.append(["DSCA (DuralSacSeg)", selection.dsca.label() if selection.dsca else "–", selection.dsca_reason])
        rows.append(["Foramen (FORAMEN3D) and planning", selection.foramen.label() if selection.foramen else "–", selection.foramen_reason])
        rows += [["skipped", s, r] for s, r in selection.skipped]
    sec.append(rep.table(["use", "series", "why"], rows, table_id="series-table"))
    sec.append(rep.table(
        ["step", "status", "time (s)", "message"],
        [[s.name, s.status, f"{s.seconds:.1f}", s.message] for s in steps],
        flags=[s.status == "failed" for s in steps], table_id="steps-table"))

    # ---- DSCA
    sec = rep.section("dsca", "Dural sac cross-sectional area (DSCA)")
    dsca_dir = out_dir / "dsca"
    dsca = _step_json(sec, rep, status, "dsca", dsca_dir / "dsca.json", "DSCA")
    if dsca is not None:
        slices = dsca.get("slices", [])
        scheme = dsca.get("stenosis_scheme") or {}
        dseg = dsca.get("segmentation") or {}
        path3d = dseg.get("path") == "3d"
        unit = "plane" if path3d else "slice"
        why = f" — {dseg['path_reason']}" if dseg.get("path_reason") else ""
        if path3d:
            sec.append(rep.paragraph(
                f"Path: 3D{why}; areas on {len(slices)} planes perpendicular to the canal centreline "
                f"({dsca.get('span', 'whole canal')}, every plane's position = arc length along the centreline).",
                "dsca-path"))
        else:
            sec.append(rep.paragraph(f"Path: 2D{why}; areas on {len(slices)} axial slices (2D network).", "dsca-path"))
        sec.append(rep.figure(Figure(_dsca_plot(slices, scheme, path3d), _dsca_plot_caption(scheme, path3d),
                                     fig_id="fig-dsca-plot")))
        for i in range(1, 9):
            png = _png(dsca_dir / f"overlay_{i}.png")
            if png:
                sec.append(rep.figure(Figure(png, f"smallest-area {unit} #{i}: dural sac outline and area", 360, f"fig-overlay-{i}")))
        levels = dsca.get("levels", [])
        if levels:
            sec.append(f"<h3>Per level (mid-disc {unit})</h3>")
            sec.append(rep.table(
                ["level", unit, "area (mm²)", "corrected area (mm²)", "AP (mm)", "LR (mm)", "category", "not graded because"],
                [[lv.get("level"), lv.get("slice_index"), _fmt(lv.get("area_mm2")), _fmt(lv.get("corrected_area_mm2")),
                  _fmt(lv.get("ap_diameter_mm")), _fmt(lv.get("lr_diameter_mm")), lv.get("stenosis") or "not graded",
                  _not_graded_reason(lv)] for lv in levels],
                flags=[_is_stenosis(lv.get("stenosis")) or bool(lv.get("stenosis_note")) for lv in levels],
                table_id="dsca-levels"))
        qc_dsca = dsca.get("qc") or {}
        if qc_dsca.get("summary"):
            sec.append(f"<h3>Quality control: {unit}s not graded</h3>")
            for line in qc_dsca["summary"]:
                sec.append(rep.paragraph("QC: " + line, "notice"))
            sec.append(rep.paragraph(
                f"A {unit} whose mask is implausible as one dural sac cross-section (area below "
                f"{_fmt(qc_dsca.get('min_area_mm2'))} mm², centroid more than {_fmt(qc_dsca.get('off_track_mm'))} mm off the "
                f"canal track, several pieces, solidity below {_fmt(qc_dsca.get('low_solidity'), 2)}, touching the image "
                "border) gets no stenosis category; its area is still listed. These limits are project design choices, "
                "not literature thresholds.", "muted"))
        sec.append(f"<h3>Per {unit}</h3>")
        sec.append(rep.table(
            [unit, "position (mm)", "area (mm²)", "corrected (mm²)", "AP (mm)", "LR (mm)", "solidity", "components",
             "category", "QC", "not graded because"],
            [[s.get("slice_index"), _fmt(s.get("position_mm")), _fmt(s.get("area_mm2")), _fmt(s.get("corrected_area_mm2")),
              _fmt(s.get("ap_diameter_mm")), _fmt(s.get("lr_diameter_mm")), _fmt(s.get("solidity"), 2), s.get("n_components"),
              s.get("stenosis") or ("not graded" if (s.get("area_mm2") or 0) > 0 else ""),
              ", ".join(s.get("qc_flags") or []), _not_graded_reason(s) if (s.get("area_mm2") or 0) > 0 else ""]
             for s in slices],
            flags=[_is_stenosis(s.get("stenosis")) or (bool(s.get("stenosis_note")) and (s.get("area_mm2") or 0) > 0)
                   for s in slices], table_id="dsca-table"))
        sec.append("<h3>Stenosis thresholds and sources</h3>")
        sec.append(rep.table(["category", "area below (mm²)", "source"],
                             [[c.get("label"), _fmt(c.get("area_below_mm2")), c.get("citation")] for c in scheme.get("categories", [])],
                             table_id="dsca-thresholds"))
        if scheme.get("note"):
            sec.append(rep.paragraph(scheme["note"], "muted"))
        for s in slices:
            for f in s.get("qc_flags") or []:
                qc.append(f"DSCA {unit} {s.get('slice_index')}: {f}")

    # ---- foramen
    sec = rep.section("foramen", "L4-5 intervertebral foramen (FORAMEN3D)")
    fdir = out_dir / "foramen"
    meas = _step_json(sec, rep, status, "foramen", fdir / "measurements.json", "Foramen measurements")
    if meas is not None:
        ms = meas.get("measurements", [])
        sec.extend(_foramen_tables(rep, meas))
        th, src = meas.get("thresholds", {}), meas.get("threshold_sources", {})
        sec.append("<h3>Thresholds and sources</h3>")
        sec.append(rep.table(["threshold", "value", "source"], [[k, _fmt(v), src.get(k, "")] for k, v in th.items()],
                             table_id="foramen-thresholds"))
        png = _png(fdir / "report.png")
        if png:
            sec.append(rep.figure(Figure(png, "Lateral views (left and right foramen): height and width lines, area outline.",
                                         fig_id="fig-lateral")))
        snap, renderer = _mesh_snapshot(fdir)
        if snap:
            sec.append(rep.figure(Figure(snap, f"3D surface meshes of L4, the L4-5 disc and L5 (rendered offscreen with {renderer}).",
                                         560, "fig-3d")))
        for m in ms:
            if m.get("flag"):
                qc.append(f"foramen {m.get('side')} {m.get('metric')}: {m.get('flag')}")
            if m.get("note"):
                qc.append(f"foramen {m.get('side')} {m.get('metric')}: {m.get('note')}")
            if m.get("qc") == "review":  # (a side "not measured" is listed once, below)
                qc.append(f"foramen {m.get('side')} {m.get('metric')}: {_qc_cell(m)}")
        for side, sd in (meas.get("sides") or {}).items():
            if sd.get("qc_status") in ("review", "not measured"):
                qc.append(f"foramen {side} side: {sd['qc_status']} ({'; '.join(sd.get('qc_reasons') or []) or 'no reason given'})")

    # ---- plan
    sec = rep.section("plan", "Transforaminal endoscopic trajectory (L4-5)")
    pdir = out_dir / "plan"
    plan = _step_json(sec, rep, status, "plan", pdir / "plan_report.json", "Trajectory plan")
    if plan is not None:
        rows = []
        for side, sd in plan.get("sides", {}).items():
            b = sd.get("best", {})
            rows.append([side, _fmt(b.get("medial_angle_deg")), _fmt(b.get("craniocaudal_angle_deg")),
                         _fmt(b.get("entry_midline_distance_mm")), _fmt(b.get("length_mm")), _fmt(b.get("min_clearance_mm")),
                         _fmt(b.get("bone_mm3")), sd.get("verdict", "")])
        sec.append(rep.table(["side", "medial angle (deg)", "craniocaudal angle (deg)", "entry from midline (mm)",
                              "length (mm)", "min clearance to bone (mm)", "bone in channel (mm³)", "verdict"], rows,
                             flags=[plan["sides"][s].get("foraminoplasty_needed", False) for s in plan.get("sides", {})],
                             table_id="plan-table"))
        png = _png(pdir / "plan_heatmap.png")
        if png:
            sec.append(rep.figure(Figure(png, "Angle sweep: bone intersected by the working channel and clearance to bone; "
                                         "the chosen trajectory is marked.", fig_id="fig-heatmap")))
        refs = plan.get("references") or plan.get("reference_values")
        if refs:
            sec.append("<h3>Reference values</h3>")
            items = refs.items() if isinstance(refs, dict) else enumerate(refs)
            sec.append(rep.table(["item", "value / source"], [[k, json.dumps(v) if not isinstance(v, str) else v] for k, v in items],
                                 table_id="plan-references"))

    # ---- truth (synthetic studies only)
    sec = rep.section("truth", "Exact ground truth (synthetic study)")
    truth_doc = _load_json(truth_path) if truth_path else None
    if truth_doc is None:
        sec.append(rep.paragraph("Not a synthetic study: no ground truth.", "muted"))
    else:
        truth = truth_doc.get("truth", {})
        sec.append(rep.paragraph("The input was generated by the SpineMorph phantom; its measurements are known exactly "
                                 "from the analytic geometry (not from a raster).", "muted"))
        rows = []
        fm = {(m.get("metric"), m.get("side")): m.get("value") for m in (meas or {}).get("measurements", [])}
        for side in ("left", "right"):
            t = truth.get("foramen", {}).get(side, {})
            for metric, key, unit in (("foraminal_height", "height_mm", "mm"), ("foraminal_width", "width_mm", "mm"),
                                      ("foraminal_area", "area_mm2", "mm²")):
                rows.append([f"{metric} ({side})", _fmt(t.get(key)), _fmt(fm.get((metric, side))), unit])
        pdh = next((m.get("value") for m in (meas or {}).get("measurements", []) if m.get("metric") == "posterior_disc_height"), None)
        rows.append(["posterior disc height", _fmt(truth.get("posterior_disc_height_mm")), _fmt(pdh), "mm"])
        sec.append(rep.table(["quantity", "exact", "measured", "unit"], rows, table_id="truth-table"))
        exact = {r.get("slice"): r for r in truth_doc.get("axial_slices", [])}
        if dsca and exact:
            rows, err_ax, err_pp = [], [], []
            for s in dsca.get("slices", []):
                e = exact.get(s.get("slice_index"))
                if e is None:
                    continue
                a, c = s.get("area_mm2"), s.get("corrected_area_mm2")
                rows.append([s.get("slice_index"), e.get("level", ""), _fmt(e.get("dsca_axial_mm2")), _fmt(a),
                             _fmt(e.get("dsca_perpendicular_mm2")), _fmt(c)])
                if a is not None:
                    err_ax.append(a - e["dsca_axial_mm2"])
                if c is not None:
                    err_pp.append(c - e["dsca_perpendicular_mm2"])
            if err_ax:
                sec.append(rep.paragraph(
                    f"DSCA vs exact: axial mean absolute error {np.mean(np.abs(err_ax)):.1f} mm² (bias {np.mean(err_ax):+.1f}); "
                    f"angle-corrected {np.mean(np.abs(err_pp)):.1f} mm² (bias {np.mean(err_pp):+.1f}) over {len(err_ax)} slices."))
            sec.append(rep.table(["slice", "level", "exact axial (mm²)", "measured axial (mm²)", "exact perpendicular (mm²)",
                                  "measured corrected (mm²)"], rows, table_id="truth-dsca-table"))

    # ---- QC
    sec = rep.section("qc", "Quality-control flags")
    failed = [s for s in steps if s.status != "ok"]
    for s in failed:
        qc.insert(0, f"step {s.name} {s.status}: {s.message}")
    sec.append(rep.raw("<ul>" + "".join(f"<li>{_esc(q)}</li>" for q in qc) + "</ul>") if qc else rep.paragraph("No QC flags.", "ok"))

    # ---- provenance
    sec = rep.section("provenance", "Models, software and timing")
    rows = [["SpineMorph", version], ["DSCA model", models.get("dsca", "default")], ["foramen model", models.get("foramen", "default")]]
    if dsca and dsca.get("segmentation"):
        seg = dsca["segmentation"]
        rows.append(["DSCA model (resolved)", f"{seg.get('model', '')} {seg.get('model_version', '') or ''}".strip()])
        rows.append(["DSCA device", str(seg.get("device", ""))])
        rows.append(["DSCA path", f"{(seg.get('path') or '2d').upper()}"
                                  f"{' — ' + seg['path_reason'] if seg.get('path_reason') else ''}"])
    if meas and meas.get("segmentation"):
        rows.append(["foramen segmentation", json.dumps(meas["segmentation"])[:300]])
    rows.append(["total time (s)", f"{sum(s.seconds for s in steps):.1f}"])
    sec.append(rep.table(["item", "value"], rows, table_id="provenance-table"))
    from spinemorph.spider import SPIDER_ATTRIBUTION

    sec.append(rep.paragraph(f"Real-data attribution where models were trained on SPIDER: {SPIDER_ATTRIBUTION}", "muted"))
    return rep.render()


def _qc_cell(item: dict, key: str = "qc") -> str:
    """QC cell of a foramen value / side: "ok", or "review: reason; reason" ("" when the file predates QC)."""
    status = item.get(key) or ""
    reasons = "; ".join(str(r) for r in item.get("qc_reasons") or [])
    return f"{status}: {reasons}" if status in ("review", "not measured") and reasons else status


def _foramen_tables(rep, meas: dict) -> list[str]:
    """The foramen section's tables: per value (with its QC: ok / review + reasons; a flagged or review row is
    highlighted) and per side (QC status and reasons, the lateral view used and its fallbacks)."""
    ms = meas.get("measurements", [])
    out = [rep.table(
        ["metric", "side", "value", "unit", "flag", "QC"],
        [[m.get("metric"), m.get("side"), _fmt(m.get("value")), m.get("unit"), m.get("flag") or "", _qc_cell(m)]
         for m in ms],
        flags=[bool(m.get("flag")) or m.get("qc") in ("review", "not measured") for m in ms], table_id="foramen-table")]
    sides = meas.get("sides") or {}
    if sides:
        out.append("<h3>Per side: lateral view and QC</h3>")
        rows = []
        for side, sd in sides.items():
            radius = sd.get("facet_closing_radius_mm")
            rows.append([side, _qc_cell(sd, "qc_status"), sd.get("view_kind") or "",
                         _fmt(sd.get("offset_from_midline_mm")), "–" if radius is None else _fmt(radius),
                         "; ".join(str(f) for f in sd.get("fallbacks") or []) or "none"])
        out.append(rep.table(["side", "QC", "view", "offset from midline (mm)", "facet closing radius (mm)", "fallbacks"],
                             rows, flags=[sd.get("qc_status") in ("review", "not measured") or bool(sd.get("fallbacks"))
                                          for sd in sides.values()], table_id="foramen-sides"))
    return out


def _not_graded_reason(row: dict) -> str:
    """The ``stenosis_note`` of a DSCA slice / level row without its "not graded: " prefix ('' when graded)."""
    note = str(row.get("stenosis_note") or "")
    return note[len("not graded: "):] if note.startswith("not graded: ") else note


def _is_stenosis(category) -> bool:
    """True for a stenosis category (``"absolute stenosis"``, ``"relative stenosis"``), not for ``"no stenosis"``."""
    c = str(category or "").lower()
    return "stenosis" in c and not c.startswith("no ")


def _esc(text: str) -> str:
    import html

    return html.escape(str(text))
