"""DuralSacSeg panel shows the QC (issues 14 and 16: "bad news must be visible"), with the stand-in ``slicer``
(``Testing/slicer_standin.py``): a table with a flagged slice shows its ``stenosis_note`` and ``track_distance_mm``
columns, the flagged row is highlighted with the note as tooltip, and the QC line is shown under the table and in the
status text. The panel's default model comes from the catalogue JSON."""

from __future__ import annotations

import importlib
import json
import sys
import types

import numpy as np
import pytest
from DuralSacSegLib.dsca import compute_dsca_table
from slicer_standin import StandIn, purge_glue

from spinemorph.volume import Volume

N = 120


@pytest.fixture(autouse=True)
def _forget_glue():
    yield
    purge_glue()


@pytest.fixture(scope="module")
def flagged_table():
    """A straight canal (ellipse of ~150 mm² on 10 slices of 0.45 mm pixels); on slice 4 the only foreground is one
    pixel 26 mm from the canal (0.2 mm²): flagged, not graded (the issue-14 case)."""
    jj, ii = np.mgrid[:N, :N]
    sac = ((ii - 60) / 16) ** 2 + ((jj - 60) / 12) ** 2 <= 1.0
    a = np.zeros((10, N, N), np.uint8)
    a[:] = sac
    a[4] = 0
    a[4, 10, 105] = 1
    return compute_dsca_table(Volume(a, (0.45, 0.45, 4.0)))


class _Item:
    def __init__(self, model):
        self.model = model
        self.background = None
        self.tooltip = ""

    def setBackground(self, brush):
        # qMRMLTableModel writes a changed item back into the node unless its signals are blocked
        assert self.model.blocked, "item changed while the model's signals are live"
        self.background = brush

    def setToolTip(self, text):
        self.tooltip = text


class _Model:
    """qMRMLTableModel stand-in (a QStandardItemModel): ``item(row, column)``, ``columnCount()``."""

    def __init__(self, rows, columns):
        self.items = [[_Item(self) for _ in range(columns)] for _ in range(rows)]
        self.blocked = False

    def blockSignals(self, on):
        was, self.blocked = self.blocked, on
        return was

    def item(self, row, column):
        return self.items[row][column] if 0 <= row < len(self.items) else None

    def columnCount(self):
        return len(self.items[0]) if self.items else 0


class _TableNode:
    def __init__(self, titleHeader=True):
        self.titleHeader = titleHeader

    def GetUseColumnTitleAsColumnHeader(self):
        return self.titleHeader


class _TableView:
    """qMRMLTableView stand-in: ``setMRMLTableNode`` builds the model (an extra first row holds the column names
    unless the node uses column titles as the header, as in Slicer)."""

    def __init__(self, rows, columns):
        self.rows, self.columns, self.node, self.model = rows, columns, None, None
        self.repaints = 0

    def viewport(self):
        return types.SimpleNamespace(update=lambda: setattr(self, "repaints", self.repaints + 1))

    def setMRMLTableNode(self, node):
        self.node = node
        self.model = None if node is None else _Model(self.rows + (0 if node.titleHeader else 1), self.columns)

    def mrmlTableNode(self):
        return self.node

    def tableModel(self):
        return self.model


def _install(monkeypatch):
    StandIn((5, 10)).install(monkeypatch)
    qt = sys.modules["qt"]
    monkeypatch.setattr(qt, "QColor", lambda r, g, b: ("color", r, g, b), raising=False)
    monkeypatch.setattr(qt, "QBrush", lambda color: ("brush", color), raising=False)


def _controller(monkeypatch, table, tableNode):
    from DuralSacSegLib import table_model

    _install(monkeypatch)
    widget = importlib.import_module("DuralSacSegLib.slicer_widget")
    names = ("progressBar", "cancelButton", "deviceWarningLabel", "statusLabel", "applyButton", "qcLabel")
    columns = len(table_model.table_columns(table))
    ui = types.SimpleNamespace(tableView=_TableView(len(table.rows), columns),
                               **{n: types.SimpleNamespace(visible=True, text="") for n in names})
    logic = types.SimpleNamespace(lastTable=table, lastTableNode=tableNode)
    return widget.DuralSacSegController(ui, logic, lambda: None)


def test_table_columns_carry_the_note_and_the_track_distance(flagged_table):
    from DuralSacSegLib import table_model

    columns = {c.name: c for c in table_model.table_columns(flagged_table)}
    assert columns["stenosis_note"].kind == "string" and columns["track_distance_mm"].kind == "double"
    assert columns["track_distance_mm"].unit == "mm"
    assert columns["stenosis"].values[4] == ""
    note = columns["stenosis_note"].values[4]
    assert note.startswith("not graded: ") and "below the plausibility floor" in note and "canal track" in note
    assert columns["track_distance_mm"].values[4] > 20.0  # the blob is ~26 mm from the canal
    assert all(columns["stenosis_note"].values[k] == "" for k in range(10) if k != 4)
    assert table_model.qc_rows(flagged_table) == [4]


@pytest.mark.parametrize("titleHeader", [True, False])
def test_panel_highlights_the_flagged_row_and_shows_the_qc_line(monkeypatch, flagged_table, titleHeader):
    from DuralSacSegLib import table_model

    node = _TableNode(titleHeader)
    controller = _controller(monkeypatch, flagged_table, node)
    assert controller.ui.qcLabel.visible is False  # hidden until a table is shown
    assert controller.showTable(node) == 1
    offset = 0 if titleHeader else 1
    model = controller.ui.tableView.model
    flagged = model.items[4 + offset]
    assert all(cell.background == ("brush", ("color", 255, 205, 205)) for cell in flagged)
    assert all(cell.tooltip == flagged_table.rows[4].stenosis_note for cell in flagged)
    others = [cell for r, row in enumerate(model.items) if r != 4 + offset for cell in row]
    assert all(cell.background is None for cell in others)
    assert model.blocked is False and controller.ui.tableView.repaints == 1  # signals restored, view repainted
    label = controller.ui.qcLabel
    assert label.visible is True
    assert label.text.startswith("QC: 1 of 10 slices with a mask were NOT graded") and "slice 4" in label.text
    status = controller.statusText(table_model.summary_text(flagged_table))
    first, *qc = status.split("\n")
    assert "smallest graded" in first and "1 slices NOT graded" in first
    assert qc == label.text.split("\n")


def test_another_table_node_shows_no_stale_qc(monkeypatch, flagged_table):
    controller = _controller(monkeypatch, flagged_table, _TableNode())
    controller.showTable(controller.logic.lastTableNode)
    assert controller.ui.qcLabel.visible
    assert controller.showTable(_TableNode()) == 0  # e.g. a table node from an older run selected in the panel
    assert controller.ui.qcLabel.visible is False and controller.ui.qcLabel.text == ""
    assert controller.showTable(None) == 0


def test_a_table_without_flags_shows_no_qc(monkeypatch):
    from DuralSacSegLib import table_model

    jj, ii = np.mgrid[:N, :N]
    a = np.zeros((6, N, N), np.uint8)
    a[:] = ((ii - 60) / 16) ** 2 + ((jj - 60) / 12) ** 2 <= 1.0
    table = compute_dsca_table(Volume(a, (0.45, 0.45, 4.0)))
    node = _TableNode()
    controller = _controller(monkeypatch, table, node)
    assert controller.showTable(node) == 0
    assert controller.ui.qcLabel.visible is False
    assert controller.statusText(table_model.summary_text(table)) == table_model.summary_text(table)


def _parameters_module(monkeypatch):
    _install(monkeypatch)
    slicer = sys.modules["slicer"]
    for name in ("vtkMRMLPlotChartNode", "vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode", "vtkMRMLTableNode"):
        monkeypatch.setattr(slicer, name, type(name, (), {}), raising=False)
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", wrapper)
    return importlib.import_module("DuralSacSegLib.slicer_parameters")


def test_default_model_comes_from_the_catalogue(monkeypatch, tmp_path):
    params = _parameters_module(monkeypatch)
    catalog = json.loads(open(params.catalogPath(), encoding="utf-8").read())
    assert params.DuralSacSegParameterNode.model == catalog["default"]
    assert catalog["default"] in {m["name"] for m in catalog["models"]}
    other = tmp_path / "catalog.json"
    other.write_text(json.dumps({"default": "dsca-unet", "models": []}))
    assert params.defaultModelName(other) == "dsca-unet"
    assert params.defaultModelName(tmp_path / "missing.json") == ""
    (tmp_path / "bad.json").write_text("{not json")
    assert params.defaultModelName(tmp_path / "bad.json") == ""
    (tmp_path / "list.json").write_text("[]")
    assert params.defaultModelName(tmp_path / "list.json") == ""
