"""Slicer glue: what the DuralSacSeg panel's buttons do (the module file's widget delegates here).

Decisions (model choices, table content, slice to jump to, messages) come from the Slicer-free
``DuralSacSegLib.table_model`` and ``spinemorph.gui_support``; this controller only reads and writes widgets.
"""

import logging

import qt
import slicer

from DuralSacSegLib.slicer_common import (  # noqa: F401 - reloadGlue is used by the module file
    IMPORTED_WEIGHTS,
    ComputeControllerMixin,
    ModelComboMixin,
    mrmlTableRowFromViewIndex,
    reloadGlue,
)

#: model entries shown before the dependencies (and so the catalogue reader) are installed: (label, value)
FALLBACK_MODEL_CHOICES = (
    ("U-Net (dsca-unet)", "dsca-unet"),
    ("MultiResUNet (dsca-multiresunet)", "dsca-multiresunet"),
    ("Attention U-Net (dsca-attention-unet)", "dsca-attention-unet"),
    ("Imported weights file…", IMPORTED_WEIGHTS),
)


class DuralSacSegController(ModelComboMixin, ComputeControllerMixin):
    """Handlers of the DuralSacSeg panel."""

    def __init__(self, ui, logic, parameterNodeGetter):
        self.ui = ui
        self.logic = logic
        self._parameterNode = parameterNodeGetter
        self.ui.progressBar.visible = False
        self.ui.cancelButton.visible = False
        self.ui.deviceWarningLabel.visible = False
        if hasattr(self.ui, "qcLabel"):  # absent only from a .ui older than the QC label
            self.ui.qcLabel.visible = False

    # ------------------------------------------------------------------ model / device
    def modelEntries(self):
        """Embedded catalogue (default first) + "Imported weights file…"; before the dependencies are installed (the
        catalogue reader needs them) the fixed list of embedded models is shown."""
        try:
            from DuralSacSegLib import table_model
        except ImportError:
            return list(FALLBACK_MODEL_CHOICES), ""
        choices, error = table_model.model_choices()
        return [(c.label, c.value) for c in choices], error

    # ------------------------------------------------------------------ apply
    def onApply(self):
        """Start the segmentation in a separate process; the panel stays responsive (progress bar, Cancel)."""
        pn = self._parameterNode()
        with slicer.util.tryWithErrorDisplay("DuralSacSeg failed.", waitCursor=True):
            self.logic.ensureDependencies()
            from DuralSacSegLib import table_model

            self.populateModels()
            model = table_model.resolve_model(pn.model, pn.weightsFile)
            inputVolume = pn.inputVolume
            process = self.logic.inferenceProcess(inputVolume, model=model, device=pn.device.value,
                                                  wholeSlices=pn.wholeSlices)
            self.ui.statusLabel.text = "Segmenting the dural sac in a separate process…"
            self.startAsyncRun(process, lambda result: self._showResult(inputVolume, result), "DuralSacSeg failed.")

    def _showResult(self, inputVolume, result):
        from DuralSacSegLib import table_model

        pn = self._parameterNode()
        segNode, tableNode, chartNode = self.logic.showResult(
            inputVolume, result, pn.outputSegmentation, pn.outputTable, pn.outputChart)
        pn.outputSegmentation, pn.outputTable, pn.outputChart = segNode, tableNode, chartNode
        self.showTable(tableNode)
        self.ui.statusLabel.text = self.statusText(table_model.summary_text(self.logic.lastTable))

    # ------------------------------------------------------------------ table + QC
    def statusText(self, summary):
        """The status text: the table summary (smallest graded area, slices not graded), then the QC lines (the status
        stays visible when the results section is collapsed)."""
        from DuralSacSegLib import table_model

        table = getattr(self.logic, "lastTable", None)
        lines = table_model.qc_lines(table) if table is not None else []
        return "\n".join([summary] + [f"QC: {line}" for line in lines])

    def showTable(self, tableNode):
        """Show ``tableNode`` in the table view; when it holds the last computed table, highlight the rows of slices
        not graded for stenosis (``table_model.qc_rows``, tooltip = their ``stenosis_note``) and list the QC lines
        (``table_model.qc_lines``) under the table. Returns the number of rows highlighted."""
        self.ui.tableView.setMRMLTableNode(tableNode)
        logic = self.logic
        table = getattr(logic, "lastTable", None)
        if tableNode is None or table is None or getattr(logic, "lastTableNode", None) is not tableNode:
            self.ui.qcLabel.text = ""
            self.ui.qcLabel.visible = False
            return 0
        from DuralSacSegLib import slicer_nodes, table_model

        lines = table_model.qc_lines(table)
        self.ui.qcLabel.text = "\n".join(f"QC: {line}" for line in lines)
        self.ui.qcLabel.visible = bool(lines)
        rows = table_model.qc_rows(table)
        try:
            return slicer_nodes.highlightTableRows(self.ui.tableView, rows, [table.rows[r].stenosis_note for r in rows])
        except Exception as exc:  # colouring is a help; the note column and the QC label already say it
            logging.warning(f"DuralSacSeg: cannot highlight the QC rows: {exc}")
            return 0

    # ------------------------------------------------------------------ results
    def onTableClicked(self, index):
        """Jump the slice views to the slice of the clicked table row."""
        row = mrmlTableRowFromViewIndex(self.ui.tableView, index)
        if row < 0 or self.logic.lastTable is None:
            return
        from DuralSacSegLib import slicer_nodes

        try:
            slicer_nodes.jumpSlicesTo(self.logic.sliceCentreRAS(row))
        except Exception as exc:  # a stale table after manual edits: tell, do not crash the slot
            logging.warning(f"DuralSacSeg: cannot jump to row {row}: {exc}")

    def onEditInSegmentEditor(self):
        pn = self._parameterNode()
        with slicer.util.tryWithErrorDisplay("Cannot open the Segment Editor."):
            if not pn.outputSegmentation or not pn.inputVolume:
                raise RuntimeError("there is no dural sac segmentation yet; run Apply first")
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.SegmentEditorWidget.editor
            editor.setSegmentationNode(pn.outputSegmentation)
            editor.setSourceVolumeNode(pn.inputVolume)
            editor.setCurrentSegmentID("dural_sac")

    def onRecomputeTable(self):
        pn = self._parameterNode()
        with slicer.util.tryWithErrorDisplay("Recomputing the table failed.", waitCursor=True):
            from DuralSacSegLib import table_model

            if not pn.outputSegmentation or not pn.inputVolume:
                raise RuntimeError("there is no dural sac segmentation yet; run Apply first")
            tableNode, chartNode = self.logic.recomputeTable(pn.inputVolume, pn.outputSegmentation, pn.outputTable, pn.outputChart)
            pn.outputTable, pn.outputChart = tableNode, chartNode
            self.showTable(tableNode)
            self.ui.statusLabel.text = self.statusText(
                "Recomputed from the edited segment: " + table_model.summary_text(self.logic.lastTable))

    def onExportCsv(self):
        with slicer.util.tryWithErrorDisplay("Exporting the table failed."):
            path = qt.QFileDialog.getSaveFileName(None, "Export DSCA table", "dsca.csv", "CSV files (*.csv)")
            if path:
                written = self.logic.exportCsv(path)
                self.ui.statusLabel.text = f"Table written to {written}"
