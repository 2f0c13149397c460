"""The ``study`` command end to end on the generated lumbar study: every report section and figure is present."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from spinemorph.cli import main
from spinemorph.series import discover, select_series
from spinemorph.study_report import SECTIONS


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
    for unit in ("mm²", "mm"):
        assert unit in html_text


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

    from spinemorph.study_report import _step_json

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
