"""Render the DuralSacSeg and FORAMEN3D module panels offscreen from their .ui files (no Slicer needed).

The .ui files are loaded with plain Qt (``Testing/ui_fallback.py`` replaces Slicer/CTK widgets by look-alike Qt
widgets) and filled with real results of the Slicer-free logic on the generated phantom study (the same logic the
panels call): the DSCA table of the phantom's dural sac mask, the foramen measurements of its L4 / disc / L5 label
map, and a planned left trajectory with its sweep heat-map. Writes ``Resources/Screenshots/DuralSacSeg_panel.png`` and
``Resources/Screenshots/FORAMEN3D_panel.png``.

Usage: ``python scripts/render_panels.py [--out DIR] [--study DIR] [--seed N]``
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[1]
PANEL_WIDTH = 460


def _load_ui_fallback():
    """Import ``Testing/ui_fallback.py`` by path (the Testing folder is not a package)."""
    spec = importlib.util.spec_from_file_location("ui_fallback", ROOT / "Testing" / "ui_fallback.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ui_fallback"] = module
    spec.loader.exec_module(module)
    return module


def _fill_combo(combo, items, current=0):
    combo.clear()
    for item in items:
        combo.addItem(item)
    combo.setCurrentIndex(current)


def _set_table(view, header, rows, highlight=()):
    """Fill a table view; rows in ``highlight`` get the panel's QC row colour (``slicer_nodes.QC_ROW_COLOR``)."""
    from PySide6.QtGui import QBrush, QColor, QStandardItem, QStandardItemModel

    model = QStandardItemModel(len(rows), len(header), view)
    model.setHorizontalHeaderLabels(header)
    brush = QBrush(QColor(255, 205, 205))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            text = f"{value:.2f}" if isinstance(value, float) else str(value)
            item = QStandardItem(text)
            if r in highlight:
                item.setBackground(brush)
            model.setItem(r, c, item)
    view.setModel(model)
    view.resizeColumnsToContents()
    view.verticalHeader().setVisible(False)
    view.verticalHeader().setDefaultSectionSize(22)


def _device_warning() -> str:
    from spinemorph.gui_support import resolve_device

    return resolve_device("auto")[1]


def _common(w, ui, input_name, model_items, status):
    from PySide6 import QtWidgets

    def child(cls, name):
        return w.findChild(cls, name)

    _fill_combo(child(QtWidgets.QComboBox, "inputSelector"), [input_name])
    _fill_combo(child(QtWidgets.QComboBox, "modelComboBox"), model_items)
    _fill_combo(child(QtWidgets.QComboBox, "deviceComboBox"), ["auto", "CUDA", "MPS", "CPU"])
    warning = _device_warning()
    label = child(QtWidgets.QLabel, "deviceWarningLabel")
    label.setText(warning)
    label.setVisible(bool(warning))
    child(QtWidgets.QLineEdit, "weightsPathLineEdit").setVisible(False)
    child(QtWidgets.QLabel, "weightsLabel").setVisible(False)
    _fill_combo(child(QtWidgets.QComboBox, "outputSegmentationSelector"), [f"{input_name} {ui['segmentation']}"])
    child(QtWidgets.QPushButton, "applyButton").setEnabled(True)
    child(QtWidgets.QProgressBar, "progressBar").setVisible(False)
    child(QtWidgets.QPushButton, "cancelButton").setVisible(False)
    child(QtWidgets.QLabel, "statusLabel").setText(status)


def _grab(widget, path: Path) -> Path:
    from PySide6 import QtWidgets
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice

    from spinemorph.atomic import atomic_write_bytes

    widget.resize(PANEL_WIDTH, 100)
    widget.adjustSize()
    widget.resize(PANEL_WIDTH, widget.sizeHint().height())
    widget.show()
    QtWidgets.QApplication.processEvents()
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.WriteOnly)
    widget.grab().save(buf, "PNG")
    buf.close()
    return atomic_write_bytes(path, bytes(data))


def render_duralsacseg(fallback, study: dict, out: Path) -> Path:
    from DuralSacSegLib import table_model
    from DuralSacSegLib.segment import recompute_table
    from PySide6 import QtWidgets

    from spinemorph.segio import read_seg_nrrd
    from spinemorph.volume import read_volume

    w = fallback.load_ui_offscreen(ROOT / "DuralSacSeg" / "Resources" / "UI" / "DuralSacSeg.ui")
    image = read_volume(study["axial_t1"])
    mask, _ = read_seg_nrrd(study["axial_dural_sac_seg"])
    table = recompute_table(mask, image)
    choices, _error = table_model.model_choices()
    qc_lines = [f"QC: {line}" for line in table_model.qc_lines(table)]  # as DuralSacSegController.showTable/statusText
    _common(w, {"segmentation": "dural sac"}, "SpineMorphPhantom_axialT1", [c.label for c in choices],
            "\n".join([table_model.summary_text(table)] + qc_lines))
    qc_label = w.findChild(QtWidgets.QLabel, "qcLabel")
    qc_label.setText("\n".join(qc_lines))
    qc_label.setVisible(bool(qc_lines))
    _fill_combo(w.findChild(QtWidgets.QComboBox, "outputTableSelector"), ["SpineMorphPhantom_axialT1 DSCA"])
    columns = {c.name: c for c in table_model.table_columns(table)}
    shown = ["slice_index", "position_mm", "area_mm2", "corrected_area_mm2", "ap_diameter_mm", "stenosis", "qc_flags",
             "stenosis_note", "track_distance_mm"]
    rows = [[columns[n].values[i] for n in shown] for i in range(len(table.rows))]
    _set_table(w.findChild(QtWidgets.QTableView, "tableView"), shown, rows, set(table_model.qc_rows(table)))
    for name in ("editButton", "recomputeButton"):
        w.findChild(QtWidgets.QPushButton, name).setEnabled(True)
    return _grab(w, out / "DuralSacSeg_panel.png")


def render_foramen3d(fallback, study: dict, out: Path) -> Path:
    from FORAMEN3DLib import markup_model
    from FORAMEN3DLib.morphometry import measure_foramen
    from FORAMEN3DLib.planning import PlanningConfig, write_heatmap_png
    from PySide6 import QtWidgets
    from PySide6.QtGui import QPixmap

    from spinemorph.segio import read_seg_nrrd
    from spinemorph.volume import read_volume

    w = fallback.load_ui_offscreen(ROOT / "FORAMEN3D" / "Resources" / "UI" / "FORAMEN3D.ui")
    image = read_volume(study["space_t2"])
    labels, _ = read_seg_nrrd(study["space_foramen_seg"])
    state = markup_model.MeasurementState(measure_foramen(labels))
    model_items = ["default (embedded 3D U-Net)", "Imported weights file…"]
    _common(w, {"segmentation": "L4-L5"}, "SpineMorphPhantom_T2SPACE", model_items, state.summary_text())
    _fill_combo(w.findChild(QtWidgets.QComboBox, "measurementTableSelector"), ["SpineMorphPhantom_T2SPACE foramen"])
    header = ["Metric", "Side", "Value", "Unit", "Flag", "QC"]  # the Slicer table's columns (MeasurementState.rows)
    state_rows = state.rows()
    rows = [[r.get(h, "") for h in header] for r in state_rows]
    _set_table(w.findChild(QtWidgets.QTableView, "measurementTableView"), header, rows,
               {i for i, r in enumerate(state_rows) if r.get("QC") == "review"})
    _fill_combo(w.findChild(QtWidgets.QComboBox, "sideComboBox"), ["left", "right"])
    _fill_combo(w.findChild(QtWidgets.QComboBox, "targetComboBox"), ["posterior third of the L4-5 disc", "foramen centre"])
    _fill_combo(w.findChild(QtWidgets.QComboBox, "trajectorySelector"), ["left trajectory"])
    result = markup_model.plan_with_skin_fallback(labels, image, "left", PlanningConfig(diameter_mm=7.5))
    best = result.sides["left"].best
    trows = [[r["Metric"], r["Value"], r["Unit"]] for r in markup_model.trajectory_rows(best)]
    _set_table(w.findChild(QtWidgets.QTableView, "trajectoryTableView"), ["Metric", "Value", "Unit"], trows)
    with tempfile.TemporaryDirectory() as tmp:
        png = write_heatmap_png(result, Path(tmp) / "sweep.png")
        pixmap = QPixmap(str(png))
    heatmap = w.findChild(QtWidgets.QLabel, "heatmapLabel")
    heatmap.setPixmap(pixmap.scaledToWidth(PANEL_WIDTH - 40))
    for name in ("remeasureButton", "editButton", "lateralViewsButton", "suggestButton", "evaluateButton"):
        w.findChild(QtWidgets.QPushButton, name).setEnabled(True)
    return _grab(w, out / "FORAMEN3D_panel.png")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "Resources" / "Screenshots"), help="output folder")
    parser.add_argument("--study", default=None, help="phantom study folder (generated there if missing; default: temp)")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from spinemorph.gui_support import sample_study

    t0 = time.perf_counter()
    fallback = _load_ui_fallback()
    fallback.ensure_app()
    study_dir = args.study or os.path.join(tempfile.gettempdir(), f"spinemorph_panels_seed{args.seed}")
    study = sample_study(study_dir, seed=args.seed)
    out = Path(args.out)
    for path in (render_duralsacseg(fallback, study, out), render_foramen3d(fallback, study, out)):
        print(f"wrote {path}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
