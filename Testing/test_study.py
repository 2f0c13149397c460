"""The ``study`` command end to end on the generated lumbar study: every report section and figure is present."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from spinemorph.app.cli import main
from spinemorph.app.study_report import SECTIONS
from spinemorph.series import discover, select_series


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.imgs, self.tables = set(), [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "table" and a.get("id"):
            self.tables.add(a["id"])


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    code = main(["study", "--out", str(out), "--device", "cpu"])
    return out, code


def test_study_runs_and_writes_summary(study_dir):
    out, code = study_dir
    summary = json.loads((out / "study_summary.json").read_text())
    assert summary["exit_code"] == code
    steps = {s["name"]: s for s in summary["steps"]}
    failed = {k: v["message"] for k, v in steps.items() if v["status"] != "ok"}
    assert code == 0, f"study not complete: {failed}"
    assert {"generate", "series", "foramen", "dsca", "plan", "report"} <= set(steps)
    assert "axial" in summary["dsca_series"] and "sagittal" in summary["foramen_series"]


def test_report_has_every_section_and_figure(study_dir):
    out, _ = study_dir
    html_text = (out / "report.html").read_text()
    c = _Collector()
    c.feed(html_text)
    for sid in SECTIONS:
        assert sid in c.ids, f"section {sid} missing"
    for fid in ("fig-dsca-plot", "fig-overlay-1", "fig-lateral", "fig-3d", "fig-heatmap"):
        assert fid in c.ids, f"figure {fid} missing"
    for tid in ("series-table", "dsca-table", "dsca-levels", "dsca-thresholds", "foramen-table", "foramen-thresholds",
                "plan-table", "truth-table", "provenance-table"):
        assert tid in c.tables, f"table {tid} missing"
    # self-contained: every image is an embedded PNG, nothing is loaded from elsewhere
    assert c.imgs and all(src.startswith("data:image/png;base64,") for src in c.imgs)
    assert not re.search(r'(src|href)="(https?:|file:|/)', html_text)
    assert "not a medical device" in html_text.lower()
    assert "mm²" in html_text and re.search(r"\d mm\b", html_text)


def test_series_selection_on_generated_study(study_dir):
    out, _ = study_dir
    sel = select_series(discover([out / "generated_study" / "dicom"]))
    assert sel.dsca.orientation == "axial" and sel.dsca.weighting == "T1"
    assert sel.foramen.is_3d_isotropic and sel.foramen.weighting == "T2"
    assert sel.skipped == []


def test_axial_tolerance_matches_dsca_segment():
    from DuralSacSegLib.segment import AXIAL_TOLERANCE_DEG

    from spinemorph.series import AXIAL_MAX_TILT_DEG

    assert AXIAL_MAX_TILT_DEG == AXIAL_TOLERANCE_DEG


def test_report_says_why_a_step_output_is_missing(tmp_path):
    import types

    from spinemorph.app.study_report import _step_json

    rep = types.SimpleNamespace(paragraph=lambda text, cls="": f"<p class='{cls}'>{text}</p>")
    ok = types.SimpleNamespace(status="ok", message="")
    failed = types.SimpleNamespace(status="failed", message="no axial series")
    (tmp_path / "good.json").write_text('{"a": 1}')
    (tmp_path / "bad.json").write_text("{not json")
    sec = []
    assert _step_json(sec, rep, {"dsca": ok}, "dsca", tmp_path / "good.json", "DSCA") == {"a": 1} and sec == []
    assert _step_json(sec, rep, {"dsca": ok}, "dsca", tmp_path / "bad.json", "DSCA") is None
    assert _step_json(sec, rep, {"dsca": failed}, "dsca", tmp_path / "good.json", "DSCA") is None
    assert _step_json(sec, rep, {}, "plan", tmp_path / "good.json", "Trajectory plan") is None
    assert sec == ["<p class='flag'>DSCA not available: bad.json is missing or unreadable</p>",
                   "<p class='flag'>DSCA not available: no axial series</p>",
                   "<p class='flag'>Trajectory plan not available: step not run</p>"]


def test_exit_code_counts_analysis_steps_only(tmp_path):
    """Known answer: generate/series always succeed, so they must not turn "nothing done" (1) into "partial" (3)."""
    from spinemorph.app.study import StepResult, StudyResult

    def result(statuses, report=True):
        steps = [StepResult("generate", "ok"), StepResult("series", "ok")]
        steps += [StepResult(name, st) for name, st in statuses.items()]
        steps.append(StepResult("report", "ok" if report else "failed"))
        return StudyResult(tmp_path, None, steps, tmp_path / "report.html" if report else None, None, 0.0)

    assert result({"foramen": "ok", "dsca": "ok", "plan": "ok"}).exit_code == 0
    assert result({"foramen": "failed", "dsca": "ok", "plan": "skipped"}).exit_code == 3
    assert result({"foramen": "skipped", "dsca": "skipped", "plan": "skipped"}).exit_code == 1
    assert result({"foramen": "failed", "dsca": "failed"}).exit_code == 1
    assert result({"foramen": "ok", "dsca": "ok", "plan": "ok"}, report=False).exit_code == 1


def _captured_dsca_plot(monkeypatch, slices, scheme):
    import spinemorph.app.study_report as sr

    figs = []
    monkeypatch.setattr(sr, "png_bytes_from_matplotlib", lambda fig: figs.append(fig) or b"")
    sr._dsca_plot(slices, scheme)
    ax = figs[0].axes[0]
    data = [ln for ln in ax.lines if ln.get_label() == "axial DSCA"][0]
    hlines = sorted(float(ln.get_ydata()[0]) for ln in ax.lines if ln.get_linestyle() == ":")
    return np.asarray(data.get_xdata(), float), hlines


def test_dsca_plot_keeps_position_zero_and_draws_scheme_bounds(monkeypatch):
    """Known answer: position 0.0 mm is a position (not NaN); the dotted lines are the scheme's category bounds."""
    from spinemorph.app.study_report import _dsca_plot_caption

    slices = [{"position_mm": -4.0, "area_mm2": 120.0}, {"position_mm": 0.0, "area_mm2": 90.0},
              {"position_mm": None, "area_mm2": 60.0}]
    scheme = {"name": "hamanishi1994", "categories": [{"label": "stenosis", "area_below_mm2": 100.0}]}
    x, lines = _captured_dsca_plot(monkeypatch, slices, scheme)
    assert x[0] == -4.0 and x[1] == 0.0 and np.isnan(x[2])
    assert lines == [100.0]
    assert "100 mm²" in _dsca_plot_caption(scheme) and "75" not in _dsca_plot_caption(scheme)
    two = {"categories": [{"label": "absolute stenosis", "area_below_mm2": 75.0},
                          {"label": "relative stenosis", "area_below_mm2": 100.0}]}
    assert _captured_dsca_plot(monkeypatch, slices, two)[1] == [75.0, 100.0]
    assert _captured_dsca_plot(monkeypatch, slices, {})[1] == []
    assert "no threshold lines" in _dsca_plot_caption({})


def test_report_attribution_is_the_spider_constant(study_dir):
    import html

    from spinemorph.spider import SPIDER_ATTRIBUTION

    out, _ = study_dir
    assert SPIDER_ATTRIBUTION in html.unescape((out / "report.html").read_text())


def test_label_maps_in_a_folder_are_reported_as_skipped(tmp_path):
    """Label maps among the inputs are not silently dropped: they appear in selection.skipped with the reason."""
    from spinemorph.volume import Volume, write_volume

    img = Volume(np.zeros((5, 16, 16), np.float32), (0.7, 0.7, 4.0), (0.0, 0.0, 0.0), np.eye(3))
    write_volume(img, tmp_path / "axial_t1.nrrd")
    write_volume(img.with_array(np.zeros((5, 16, 16), np.uint8)), tmp_path / "axial_t1_labels.nrrd")
    (tmp_path / "dural_sac.seg.nrrd").write_bytes(b"not even read")
    excluded = []
    cands = discover([tmp_path], excluded)
    assert [c.source for c in cands] == [str(tmp_path / "axial_t1.nrrd")]
    sel = select_series(cands, excluded)
    reasons = {name: why for name, why in sel.skipped}
    for name in ("axial_t1_labels.nrrd", "dural_sac.seg.nrrd"):
        assert "looks like a label map" in reasons[str(tmp_path / name)]


def test_report_never_grades_a_flagged_dsca_slice_and_says_why(tmp_path):
    """Issue 16: a 0.2 mm² stray blob far from the canal is listed with its QC flags and 'not graded', never as
    'absolute stenosis', in the per-slice and per-level tables of the HTML report."""
    import numpy as np
    from DuralSacSegLib.dsca import compute_dsca_table

    from spinemorph.app.study import StepResult
    from spinemorph.app.study_report import build_report
    from spinemorph.volume import Volume

    a = np.zeros((8, 120, 120), np.uint8)
    jj, ii = np.mgrid[:120, :120]
    for k in range(8):
        a[k][((ii - 60) / 16) ** 2 + ((jj - 60) / 12) ** 2 <= 1] = 1
    a[4] = 0
    a[4, 10, 105] = 1  # 0.2 mm²
    vol = Volume(a, (0.45, 0.45, 4.0))
    table = compute_dsca_table(vol, levels={"L4-5": float(vol.index_to_lps((0, 0, 4))[2])})
    (tmp_path / "dsca").mkdir()
    table.to_json(tmp_path / "dsca" / "dsca.json")
    html = build_report(tmp_path, None, [StepResult("dsca", "ok")], truth_path=None, models={}, version="test")
    assert "not graded because" in html and "NOT graded" in html and "below the plausibility floor" in html
    assert "absolute stenosis" not in html.split('id="dsca-thresholds"')[0]
    assert "area_below_floor" in html and "off_canal_track" in html


def test_report_foramen_section_shows_qc_view_and_fallbacks(tmp_path):
    """Issues 14/16: the foramen table has a QC column (ok / review + reasons per value, review rows highlighted), a
    per-side table gives the QC status, the lateral view kind, its offset and the fallbacks, and the QC section lists
    the values and sides under review. Values are ``FORAMEN3DLib.morphometry.Measurement.to_dict()`` entries."""
    import numpy as np
    from FORAMEN3DLib.morphometry import Measurement

    from spinemorph.app.study import StepResult
    from spinemorph.app.study_report import build_report

    pts = np.zeros((2, 3))
    ms = [Measurement("foraminal height", "left", 19.2, "mm", pts),
          Measurement("foraminal width", "left", 2.1, "mm", pts, qc="review",
                      qc_reasons=["2.1 mm is outside the plausible 3.0-12.0 mm", "fallback: width to the L5 margin"]),
          Measurement("foraminal height", "right", 18.7, "mm", pts)]
    side = {"qc_status": "ok", "qc_reasons": [], "view_kind": "searched offset", "offset_from_midline_mm": 21.5,
            "facet_closing_radius_mm": 1.5, "fallbacks": []}
    meas = {"measurements": [m.to_dict() for m in ms],
            "sides": {"left": {**side, "qc_status": "review", "view_kind": "hull", "facet_closing_radius_mm": None,
                               "qc_reasons": ["fallback: foramen closed by a straight posterior wall (convex hull)"],
                               "fallbacks": ["foramen closed by a straight posterior wall (convex hull)"]},
                      "right": side},
            "thresholds": {}, "threshold_sources": {}}
    (tmp_path / "foramen").mkdir()
    (tmp_path / "foramen" / "measurements.json").write_text(json.dumps(meas))
    html = build_report(tmp_path, None, [StepResult("foramen", "ok")], truth_path=None, models={}, version="test")
    table = html.split('id="foramen-table"')[1].split("</table>")[0]
    assert "<th>QC</th>" in table
    rows = table.split("<tr")[2:]
    assert len(rows) == 3
    assert rows[0].startswith(">") and "<td>ok</td>" in rows[0]  # plain row
    assert rows[1].startswith(' class="flag"') and "review: 2.1 mm is outside the plausible" in rows[1]
    assert "fallback: width to the L5 margin" in rows[1]
    sides = html.split('id="foramen-sides"')[1].split("</table>")[0]
    left, right = sides.split("<tr")[2:]
    assert left.startswith(' class="flag"') and "review: fallback: foramen closed" in left and "<td>hull</td>" in left
    assert ">–</td>" in left  # no facet closing radius
    assert right.startswith(">") and "<td>searched offset</td>" in right and "21.5" in right and "<td>none</td>" in right
    qc = html.split('id="qc"')[1]
    assert "foramen left foraminal width: review: 2.1 mm is outside" in qc and "foramen left side: review" in qc
    assert "foramen right" not in qc


def test_report_foramen_side_not_measured(tmp_path):
    """Issue 14: a side the rules could not measure (no pedicle / no enclosed foramen) is listed as "not measured" with
    its reason in the value table, the per-side table and the QC section; the measured side is reported as usual."""
    import numpy as np
    from FORAMEN3DLib.morphometry import NOT_MEASURED, Measurement

    from spinemorph.app.study import StepResult
    from spinemorph.app.study_report import build_report

    why = "no posterior arch found behind the L5 body on the right side"
    ms = [Measurement("foraminal_height", "left", 19.2, "mm", np.zeros((2, 3))),
          Measurement("foraminal_height", "right", float("nan"), "mm", np.zeros((0, 3)), qc=NOT_MEASURED, qc_reasons=[why])]
    meas = {"measurements": [m.to_dict() for m in ms],
            "sides": {"left": {"qc_status": "ok", "qc_reasons": [], "view_kind": "searched offset", "fallbacks": []},
                      "right": {"qc_status": NOT_MEASURED, "qc_reasons": [why], "view_kind": "", "fallbacks": [],
                                "offset_from_midline_mm": None, "facet_closing_radius_mm": None}},
            "thresholds": {}, "threshold_sources": {}}
    (tmp_path / "foramen").mkdir()
    (tmp_path / "foramen" / "measurements.json").write_text(json.dumps(meas))
    html = build_report(tmp_path, None, [StepResult("foramen", "ok")], truth_path=None, models={}, version="test")
    rows = html.split('id="foramen-table"')[1].split("</table>")[0].split("<tr")[2:]
    assert rows[1].startswith(' class="flag"') and f"not measured: {why}" in rows[1]
    sides = html.split('id="foramen-sides"')[1].split("</table>")[0].split("<tr")[2:]
    assert sides[1].startswith(' class="flag"') and f"not measured: {why}" in sides[1]
    qc = html.split('id="qc"')[1]
    assert f"foramen right side: not measured ({why})" in qc and "foramen left" not in qc
