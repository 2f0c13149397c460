"""Slicer glue: what the FORAMEN3D panel's buttons do (the module file's widget delegates here).

Decisions (markups, live values, layout, reformats, messages) come from the Slicer-free
``FORAMEN3DLib.markup_model`` and ``spinemorph.gui_support``; this controller only reads and writes widgets.
"""

import logging
import os

import qt
import slicer
from DuralSacSegLib.slicer_common import IMPORTED_WEIGHTS, ComputeControllerMixin, ModelComboMixin, reloadGlue  # noqa: F401 - reloadGlue is used by the module file


def catalogPath():
    """The embedded 3D models' catalogue (``FORAMEN3DLib.models3d.CATALOG_PATH``: ``Resources/Models`` next to the
    package, in the source tree and in the installed extension)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Resources", "Models",
                        "foramen3d_catalog.json")


class FORAMEN3DController(ModelComboMixin, ComputeControllerMixin):
    """Handlers of the FORAMEN3D panel."""

    def __init__(self, ui, logic, parameterNodeGetter, observeMarkup):
        self.ui = ui
        self.logic = logic
        self._parameterNode = parameterNodeGetter
        self._observeMarkup = observeMarkup
        self.ui.progressBar.visible = False
        self.ui.cancelButton.visible = False
        self.ui.deviceWarningLabel.visible = False

    # ------------------------------------------------------------------ model / device
    def modelEntries(self):
        """Embedded 3D models (catalogue; default first) + "Imported weights file…"; a catalogue error is returned so
        the panel shows it. The catalogue JSON is read here directly: ``FORAMEN3DLib.models3d`` imports torch, which
        building the panel must not do (inference runs in a separate process)."""
        import json

        entries, error = [], ""
        path = catalogPath()
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as fh:
                    catalog = json.load(fh)
                models = catalog["models"]
                default = catalog.get("default")
                models = sorted(models, key=lambda e: e.get("name") != default)  # default first
                for entry in models:
                    entries.append((f"{entry['name']} ({entry.get('description', '3D U-Net')})"[:80], entry["name"]))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                error = f"model catalogue {path} is unreadable ({exc}); reinstall the extension"
                entries = []
        if not entries:
            entries.append(("default (embedded 3D U-Net)", "default"))
        entries.append(("Imported weights file…", IMPORTED_WEIGHTS))
        return entries, error

    def resolvedModel(self):
        from spinemorph.errors import SpineMorphError

        pn = self._parameterNode()
        if pn.model != IMPORTED_WEIGHTS:
            return pn.model or "default"
        path = pn.weightsFile
        if str(path) in ("", ".") or not path.is_file():
            raise SpineMorphError("no weights file chosen; pick a .pt file written by 'spinemorph foramen train' or an embedded model")
        return str(path)

    # ------------------------------------------------------------------ apply / measure
    def onApply(self):
        """Start the 3D segmentation in a separate process; the panel stays responsive (progress bar, Cancel)."""
        pn = self._parameterNode()
        with slicer.util.tryWithErrorDisplay("FORAMEN3D failed.", waitCursor=True):
            self.logic.ensureDependencies()
            model = self.resolvedModel()
            inputVolume = pn.inputVolume
            process = self.logic.inferenceProcess(inputVolume, model=model, device=pn.device.value,
                                                  l45PointNode=pn.l45Point)
            self.ui.statusLabel.text = "Segmenting L4 / L4-5 disc / L5 in a separate process…"
            self.startAsyncRun(process, lambda result: self._showResult(inputVolume, result), "FORAMEN3D failed.")

    def _showResult(self, inputVolume, result):
        pn = self._parameterNode()
        segNode, tableNode = self.logic.showResult(inputVolume, result, pn.outputSegmentation, pn.measurementTable)
        pn.outputSegmentation, pn.measurementTable = segNode, tableNode
        self._afterMeasure()
        notes = self.logic.logSegmentationNotes(result)  # the locator used and the QC notes, also in the log
        if notes:
            self.ui.statusLabel.text = "\n".join([self.ui.statusLabel.text, *notes])

    def onRemeasure(self):
        pn = self._parameterNode()
        with slicer.util.tryWithErrorDisplay("Measuring the foramina failed.", waitCursor=True):
            if not pn.outputSegmentation:
                raise RuntimeError("there is no L4 / disc / L5 segmentation yet; run Apply first")
            pn.measurementTable = self.logic.measure(pn.inputVolume, pn.outputSegmentation, pn.measurementTable)
            self._afterMeasure()

    def _afterMeasure(self):
        for node in self.logic.markupNodes.values():
            self._observeMarkup(node)
        self.ui.measurementTableView.setMRMLTableNode(self._parameterNode().measurementTable)
        self.ui.statusLabel.text = self.logic.measurementState.summary_text()

    def onMarkupModified(self, caller, event=None):
        try:
            self.logic.onMarkupModified(caller)
        except Exception as exc:  # an outline dragged to < 3 points etc.: say it, keep the slot alive
            self.ui.statusLabel.text = str(exc)
            return
        if self.logic.measurementState is not None:
            self.ui.statusLabel.text = self.logic.measurementState.summary_text()

    def onEditInSegmentEditor(self):
        pn = self._parameterNode()
        with slicer.util.tryWithErrorDisplay("Cannot open the Segment Editor."):
            if not pn.outputSegmentation or not pn.inputVolume:
                raise RuntimeError("there is no segmentation yet; run Apply first")
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.SegmentEditorWidget.editor
            editor.setSegmentationNode(pn.outputSegmentation)
            editor.setSourceVolumeNode(pn.inputVolume)

    def onLateralViews(self):
        pn = self._parameterNode()
        with slicer.util.tryWithErrorDisplay("Cannot show the lateral views."):
            if self.logic.measurementState is None:
                raise RuntimeError("measure first (Apply or Re-measure)")
            self.logic.showLateralViews(pn.inputVolume)

    # ------------------------------------------------------------------ planning
    def onSuggest(self):
        pn = self._parameterNode()
        with slicer.util.tryWithErrorDisplay("Trajectory planning failed.", waitCursor=True):
            if not pn.outputSegmentation:
                raise RuntimeError("there is no L4 / disc / L5 segmentation yet; run Apply first")
            self.ui.statusLabel.text = f"Sweeping {pn.side.value} trajectories (medial x craniocaudal angles)…"
            slicer.app.processEvents()
            line, result = self.logic.suggestTrajectory(
                pn.inputVolume, pn.outputSegmentation, pn.side.value, pn.target.value, pn.diameterMm, pn.trajectoryLine)
            pn.trajectoryLine = line
            sweep = result.sides[pn.side.value]
            verdict = "foraminoplasty needed: no bone-free channel" if sweep.foraminoplasty_needed else "bone-free channel found"
            notes = "; ".join(result.warnings[:1])
            self.ui.statusLabel.text = f"{pn.side.value}: {verdict} ({sweep.criterion})" + (f". Note: {notes}" if notes else "")
            if self.logic.heatmapPath:
                pixmap = qt.QPixmap(self.logic.heatmapPath)
                self.ui.heatmapLabel.setPixmap(pixmap.scaledToWidth(max(200, self.ui.heatmapLabel.width)))
            self.onEvaluate()

    def onEvaluate(self):
        pn = self._parameterNode()
        with slicer.util.tryWithErrorDisplay("Evaluating the trajectory failed.", waitCursor=True):
            trajectory, model, table = self.logic.evaluateTrajectory(
                pn.inputVolume, pn.outputSegmentation, pn.trajectoryLine, pn.diameterMm, pn.channelModel, pn.trajectoryTable)
            pn.channelModel, pn.trajectoryTable = model, table
            self.ui.trajectoryTableView.setMRMLTableNode(table)
            logging.info(f"FORAMEN3D trajectory: clearance {trajectory.clearance_mm:.2f} mm, bone {trajectory.bone_mm3:.1f} mm3")
