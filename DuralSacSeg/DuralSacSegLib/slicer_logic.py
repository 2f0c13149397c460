"""Slicer glue: the DuralSacSeg logic (usable from the Python console without the widget).

Computation is the Slicer-free core: ``DuralSacSegLib.segment.segment_volume`` (segmentation + per-slice table; run
in a separate process by ``spinemorph.inference_worker``, see ``slicer_process``),
``DuralSacSegLib.segment.recompute_table`` (table from an edited mask) and ``DuralSacSegLib.table_model`` (what is
shown). This file only converts nodes and fills MRML nodes.
"""

import logging
import time

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from DuralSacSegLib import slicer_dependencies, slicer_nodes, slicer_process
from DuralSacSegLib.slicer_common import SceneCacheMixin

#: segment ID of the dural sac in the output segmentation
SEGMENT_ID = "dural_sac"
#: chart colours (axial, angle-corrected)
SERIES_COLORS = ((0.95, 0.75, 0.10), (0.20, 0.55, 0.90))


class DuralSacSegLogicBase(ScriptedLoadableModuleLogic, SceneCacheMixin):
    """Implementation of ``DuralSacSegLogic`` (the module file's class derives from this one)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.clearCaches()
        self.observeSceneClose()

    def clearCaches(self):
        """Forget the last result (scene closed: its table node is gone)."""
        #: last ``SegmentationResult`` / ``DscaTable`` (for the widget's table clicks and CSV export)
        self.lastResult = None
        self.lastTable = None
        #: ID of the volume node ``lastTable`` was measured on ("Recompute table" carries its low-confidence flags)
        self.lastTableSource = None
        #: the table node ``lastTable`` was written into (the panel highlights its QC rows)
        self.lastTableNode = None

    def ensureDependencies(self):
        slicer_dependencies.ensureDependencies(slicer_dependencies.requirementsPath(), requester="DuralSacSeg")

    def inferenceProcess(self, inputVolume, model=None, device="auto", wholeSlices=False):
        """The segmentation of ``inputVolume`` as a separate process (``slicer_process.InferenceProcess``, not started):
        torch runs in the worker, never in Slicer's process."""
        from spinemorph.errors import InputError

        if inputVolume is None:
            raise InputError("no input volume selected; load a lumbar MR series and select it as Input volume")
        self.ensureDependencies()
        image = slicer_nodes.volumeFromNode(inputVolume)
        return slicer_process.InferenceProcess("dsca", image, model=model, device=device, wholeSlices=wholeSlices)

    def _process(self, inputVolume, model, device, outputSegmentation, outputTable, outputChart, progress, shouldCancel,
                 showResult, wholeSlices=False):
        startTime = time.time()
        result = self.inferenceProcess(inputVolume, model, device, wholeSlices).run(progress, shouldCancel)
        nodes = self.showResult(inputVolume, result, outputSegmentation, outputTable, outputChart, showResult)
        logging.info(f"DuralSacSeg: done in {time.time() - startTime:.1f} s")
        return nodes

    def showResult(self, inputVolume, result, outputSegmentation=None, outputTable=None, outputChart=None,
                   showResult=True):
        """Fill the segmentation, table and chart nodes from a finished run (``result.mask``, ``result.table``)."""
        from DuralSacSegLib import table_model
        from spinemorph.labels import COLORS

        if outputSegmentation is None:
            outputSegmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", inputVolume.GetName() + " dural sac")
        slicer_nodes.setSegmentsFromLabelmap(
            outputSegmentation, result.mask, inputVolume,
            [(1, SEGMENT_ID, table_model.DURAL_SAC_SEGMENT_NAME, COLORS["dural sac"], table_model.DURAL_SAC_TERMINOLOGY)],
        )
        outputTable, outputChart = self._showTable(result.table, inputVolume, outputTable, outputChart)
        for node in (outputSegmentation, outputTable, outputChart):
            slicer_nodes.placeInStudy(node, inputVolume)
        self.lastResult = result
        if showResult:
            slicer.util.setSliceViewerLayers(background=inputVolume, fit=True)
            slicer.modules.plots.logic().ShowChartInLayout(outputChart)
        logging.info(f"DuralSacSeg: {table_model.summary_text(result.table)} ({result.device})")
        for line in table_model.qc_lines(result.table):  # bad news is visible in the console too
            logging.warning(f"DuralSacSeg QC: {line}")
        return outputSegmentation, outputTable, outputChart

    def _showTable(self, table, inputVolume, outputTable, outputChart):
        from DuralSacSegLib import table_model

        if outputTable is None:
            outputTable = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", inputVolume.GetName() + " DSCA")
        slicer_nodes.fillTableNode(outputTable, table_model.table_columns(table))
        outputTable.SetAttribute("DuralSacSeg.Source", inputVolume.GetID())
        outputChart = slicer_nodes.areaChart(outputTable, outputChart, table_model.PLOT_X, table_model.PLOT_Y, SERIES_COLORS)
        self.lastTable = table
        self.lastTableSource = inputVolume.GetID()
        self.lastTableNode = outputTable
        return outputTable, outputChart

    def recomputeTable(self, inputVolume, segmentationNode, outputTable=None, outputChart=None):
        """Recompute the per-slice table from the (edited) dural sac segment; returns ``(tableNode, chartNode)``."""
        from DuralSacSegLib.segment import recompute_table

        self.ensureDependencies()
        image = slicer_nodes.volumeFromNode(inputVolume)
        mask = slicer_nodes.maskFromSegment(segmentationNode, SEGMENT_ID, inputVolume)
        # the last table of this volume: its low-confidence (bridged) slices stay flagged unless they were edited
        previous = self.lastTable if getattr(self, "lastTableSource", None) == inputVolume.GetID() else None
        table = recompute_table(mask, image, previous=previous)
        return self._showTable(table, inputVolume, outputTable, outputChart)

    def exportCsv(self, path):
        """Write the current per-slice table to ``path`` (.csv); returns the path written."""
        from DuralSacSegLib import table_model
        from spinemorph.errors import SpineMorphError

        if self.lastTable is None:
            raise SpineMorphError("there is no table yet; run Apply (or Recompute table) first")
        return str(table_model.export_csv(self.lastTable, path))

    def sliceCentreRAS(self, row):
        """RAS point of table row ``row`` (the slice's dural sac centroid, else the slice centre)."""
        from DuralSacSegLib import table_model
        from spinemorph.errors import SpineMorphError

        if self.lastTable is None:
            raise SpineMorphError("there is no table yet; run Apply first")
        return table_model.row_centre_ras(self.lastTable, row)
