"""Slicer glue: the FORAMEN3D logic (usable from the Python console without the widget).

Computation is the Slicer-free core: ``FORAMEN3DLib.segment3d.segment_volume`` (L4 / disc / L5),
``FORAMEN3DLib.meshes`` (surfaces), ``FORAMEN3DLib.morphometry`` (height / width / area per side),
``FORAMEN3DLib.planning`` (trajectories) and ``FORAMEN3DLib.markup_model`` (what is shown and the live
recomputation). This file only converts nodes and fills MRML nodes.
"""

import logging
import os
import tempfile
import time

import slicer
from DuralSacSegLib import slicer_dependencies, slicer_process
from DuralSacSegLib.slicer_common import SceneCacheMixin, nodeInScene
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from FORAMEN3DLib import slicer_nodes

#: colour of the working-channel model
CHANNEL_COLOR = (0.2, 0.9, 0.4)


def l45PointLPS(markupsNode):
    """The hand-placed L4-5 disc centre: the first control point of ``markupsNode`` (a point list; Slicer stores RAS)
    as LPS mm (x and y negated), or None when no node is selected (the locator then finds the level).

    A selected point list without a point is an ``InputError`` (the user meant to place one)."""
    from spinemorph.errors import InputError
    from spinemorph.gui_support import ras_to_lps

    if markupsNode is None:
        return None
    points = slicer_nodes.markupPointsRAS(markupsNode)
    if len(points) == 0:
        raise InputError(f"the L4-5 disc centre point list '{markupsNode.GetName()}' has no point; place one point at "
                         "the centre of the L4-5 disc, or set 'L4-5 disc centre' to None to let the model find it")
    if len(points) > 1:
        logging.info(f"FORAMEN3D: '{markupsNode.GetName()}' has {len(points)} points; the first one is the L4-5 centre")
    return tuple(float(v) for v in ras_to_lps(points[0]))


def segmentationNotes(result):
    """Lines saying where the fine crop was centred (the locator used, the centre in RAS mm as Slicer shows it) and
    the segmentation's QC notes (``result``: ``slicer_process`` ``InferenceResult``)."""
    from spinemorph.gui_support import lps_to_ras

    lines = []
    if result.locator:
        where = f"L4-5 level from the {result.locator}"
        if result.l45_centre_lps is not None:
            r, a, s = (float(v) for v in lps_to_ras(result.l45_centre_lps))
            where += f" (crop centre R {r:.1f}, A {a:.1f}, S {s:.1f} mm)"
        lines.append(where)
    lines += [f"QC: {note}" for note in result.qc]
    return lines


class FORAMEN3DLogicBase(ScriptedLoadableModuleLogic, SceneCacheMixin):
    """Implementation of ``FORAMEN3DLogic`` (the module file's class derives from this one)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.clearCaches()
        self.observeSceneClose()

    def clearCaches(self):
        """Forget every cached node and result (scene closed: the nodes are gone and their IDs will be reused)."""
        #: ``markup_model.MeasurementState`` of the last measurement, its markups nodes by key, last morphometry result
        self.measurementState = None
        self.markupNodes = {}
        self.morphometry = None
        self.surfaceModels = {}
        #: planning cache: (labels Volume, PlanningScene, AnatomicalFrame) and the last PlanResult / Trajectory
        self._planningInputs = None
        self.lastPlan = None
        self.lastTrajectory = None
        self.heatmapPath = None
        self.measurementTable = None

    def ensureDependencies(self):
        slicer_dependencies.ensureDependencies(slicer_dependencies.requirementsPath(), requester="FORAMEN3D")

    # ------------------------------------------------------------------ segmentation
    def inferenceProcess(self, inputVolume, model="default", device="auto", l45PointNode=None):
        """The segmentation of ``inputVolume`` as a separate process (``slicer_process.InferenceProcess``, not started):
        torch runs in the worker, never in Slicer's process. ``l45PointNode``: optional point list whose first point
        (RAS) is the L4-5 disc centre, passed to the worker in LPS (:func:`l45PointLPS`)."""
        from spinemorph.errors import InputError

        if inputVolume is None:
            raise InputError("no input volume selected; load a sagittal or 3D lumbar MR series (T2 SPACE) and select it")
        self.ensureDependencies()
        l45Point = l45PointLPS(l45PointNode)
        image = slicer_nodes.volumeFromNode(inputVolume)
        return slicer_process.InferenceProcess("foramen", image, model=model, device=device, l45Point=l45Point)

    def _process(self, inputVolume, model, device, outputSegmentation, measurementTable, progress, shouldCancel,
                 showResult, measure, l45PointNode=None):
        startTime = time.time()
        result = self.inferenceProcess(inputVolume, model, device, l45PointNode).run(progress, shouldCancel)
        nodes = self.showResult(inputVolume, result, outputSegmentation, measurementTable, showResult, measure)
        logging.info(f"FORAMEN3D: segmentation done in {time.time() - startTime:.1f} s on {result.device}")
        self.logSegmentationNotes(result)
        return nodes

    @staticmethod
    def logSegmentationNotes(result):
        """The locator used and the QC notes in the log; returns the lines (:func:`segmentationNotes`)."""
        lines = segmentationNotes(result)
        for line in lines:
            logging.info(f"FORAMEN3D: {line}")
        return lines

    def showResult(self, inputVolume, result, outputSegmentation=None, measurementTable=None, showResult=True,
                   measure=True):
        """Segments, surface models and (``measure``) the foramen measurements from a finished run (``result.labels``)."""
        from FORAMEN3DLib import markup_model

        if outputSegmentation is None:
            outputSegmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", inputVolume.GetName() + " L4-L5")
        slicer_nodes.setSegmentsFromLabelmap(outputSegmentation, result.labels, inputVolume, markup_model.SEGMENTS)
        slicer_nodes.placeInStudy(outputSegmentation, inputVolume)
        self._planningInputs = None
        self.updateSurfaceModels(inputVolume, result.labels)
        if measure:
            measurementTable = self.measure(inputVolume, outputSegmentation, measurementTable, labels=result.labels,
                                            showResult=showResult)
        return outputSegmentation, measurementTable

    def updateSurfaceModels(self, inputVolume, labels):
        """Surface models of L4, the disc and L5 (``FORAMEN3DLib.meshes``), placed in the input's study."""
        from FORAMEN3DLib import markup_model

        for segmentId, name, rgb, polyData, _info in markup_model.surface_models_ras(labels):
            node = self.surfaceModels.get(segmentId)
            if not nodeInScene(node):
                node = None
            node = slicer_nodes.setModel(node, f"{inputVolume.GetName()} {name} surface", polyData, rgb)
            slicer_nodes.placeInStudy(node, inputVolume)
            self.surfaceModels[segmentId] = node

    # ------------------------------------------------------------------ measurements
    def measure(self, inputVolume, segmentationNode, measurementTable=None, labels=None, showResult=True):
        """Measure both foramina from the segmentation (or ``labels``); creates the markups and fills the table.

        The segmentation may have been edited (Segment Editor) since Apply, so the cached planning inputs are
        dropped (Suggest / Evaluate then read the current segments) and, when the labels are read from the
        segmentation here, the surface models are rebuilt from them.
        """
        from FORAMEN3DLib import markup_model
        from FORAMEN3DLib.morphometry import measure_foramen

        self.ensureDependencies()
        self._planningInputs = None
        if labels is None:
            labels = slicer_nodes.labelsFromSegmentation(segmentationNode, inputVolume, markup_model.SEGMENTS,
                                                          markup_model.OPTIONAL_SEGMENT_IDS)
            self.updateSurfaceModels(inputVolume, labels)
        self.morphometry = measure_foramen(labels)
        self.measurementState = markup_model.MeasurementState(self.morphometry)
        self._createMarkups(inputVolume)
        if measurementTable is None:
            measurementTable = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", inputVolume.GetName() + " foramen")
            slicer_nodes.placeInStudy(measurementTable, inputVolume)
        self.measurementTable = measurementTable
        self.refreshMeasurementTable()
        if showResult:
            self.showLateralViews(inputVolume)
        return measurementTable

    def _createMarkups(self, inputVolume):
        for node in self.markupNodes.values():
            if nodeInScene(node):
                slicer.mrmlScene.RemoveNode(node)
        self.markupNodes = {}
        for spec in self.measurementState.markup_specs():
            node = slicer_nodes.createMeasurementMarkup(spec)
            slicer_nodes.placeInStudy(node, inputVolume)
            self.markupNodes[spec.key] = node

    def onMarkupModified(self, markupsNode):
        """A measurement markup was moved: recompute that side from the points and refresh the table."""
        key = markupsNode.GetAttribute(slicer_nodes.MARKUP_KEY_ATTRIBUTE)
        if not key or self.measurementState is None:
            return None
        values = self.measurementState.update_from_ras(key, slicer_nodes.markupPointsRAS(markupsNode))
        self.refreshMeasurementTable()
        return values

    def refreshMeasurementTable(self):
        if self.measurementState is not None and nodeInScene(getattr(self, "measurementTable", None)):
            slicer_nodes.fillTableFromRows(self.measurementTable, self.measurementState.rows())

    def measurementRows(self, case=""):
        """Current Metric / Side / Value / Unit / Flag rows (with a Case column) — for batch CSVs."""
        rows = self.measurementState.rows() if self.measurementState else []
        return [{"Case": case, **row} for row in rows]

    def showLateralViews(self, inputVolume):
        from FORAMEN3DLib import markup_model

        slicer_nodes.registerLayout(markup_model.LAYOUT_ID, markup_model.layout_xml())
        for side, viewName in markup_model.LATERAL_VIEW_NAMES.items():
            if side in self.measurementState.not_measured:  # no lateral view: the table says why
                continue
            slicer_nodes.setReformat(viewName, markup_model.lateral_view_plane(self.measurementState, side), inputVolume)

    # ------------------------------------------------------------------ planning
    def _planning(self, inputVolume, segmentationNode):
        from FORAMEN3DLib import markup_model
        from FORAMEN3DLib.planning import PlanningScene, anatomical_frame

        if self._planningInputs is None:
            labels = slicer_nodes.labelsFromSegmentation(segmentationNode, inputVolume, markup_model.SEGMENTS,
                                                          markup_model.OPTIONAL_SEGMENT_IDS)
            self._planningInputs = (labels, PlanningScene(labels), anatomical_frame(labels))
        return self._planningInputs

    def suggestTrajectory(self, inputVolume, segmentationNode, side="left", target="disc-posterior-third",
                          diameterMm=7.5, trajectoryLine=None, progress=None):
        """Angle sweep on one side (``FORAMEN3DLib.planning.plan``); puts the best channel into ``trajectoryLine``.

        :return: ``(trajectoryLine, planResult)``; the sweep heat-map PNG is at ``self.heatmapPath``.
        """
        from FORAMEN3DLib.markup_model import plan_with_skin_fallback
        from FORAMEN3DLib.planning import PlanningConfig, write_heatmap_png
        from spinemorph.gui_support import lps_to_ras

        self.ensureDependencies()
        self._planningInputs = None
        labels, _scene, frame = self._planning(inputVolume, segmentationNode)
        if progress:
            progress(0.1, f"sweeping {side} trajectories")
        config = PlanningConfig(diameter_mm=float(diameterMm), target=target)
        result = plan_with_skin_fallback(labels, slicer_nodes.volumeFromNode(inputVolume), side, config, frame)
        self.lastPlan = result
        best = result.sides[side].best
        if trajectoryLine is None:
            trajectoryLine = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", f"{side} trajectory")
            slicer_nodes.placeInStudy(trajectoryLine, inputVolume)
        slicer_nodes.setMarkupPoints(trajectoryLine, lps_to_ras([best.entry_lps, best.target_lps]))
        self.heatmapPath = os.path.join(tempfile.gettempdir(), f"FORAMEN3D_sweep_{side}.png")
        write_heatmap_png(result, self.heatmapPath)
        if progress:
            progress(1.0, "sweep done")
        return trajectoryLine, result

    def evaluateTrajectory(self, inputVolume, segmentationNode, trajectoryLine, diameterMm=7.5, channelModel=None,
                           trajectoryTable=None, showResult=True):
        """Evaluate the channel entry (point 1) -> target (point 2) of ``trajectoryLine``.

        Updates the channel model, the trajectory table and the trajectory reformat; returns
        ``(Trajectory, channelModel, trajectoryTable)``.
        """
        from FORAMEN3DLib import markup_model
        from FORAMEN3DLib.planning import PlanningConfig, channel_mesh, evaluate_trajectory, reformat_planes
        from spinemorph.errors import InputError
        from spinemorph.gui_support import lps_to_ras, ras_to_lps

        points = slicer_nodes.markupPointsRAS(trajectoryLine) if trajectoryLine else []
        if len(points) != 2:
            raise InputError("place the trajectory's entry (first point) and target (second point), or click Suggest")
        entry, target = ras_to_lps(points)
        _labels, scene, frame = self._planning(inputVolume, segmentationNode)
        config = PlanningConfig(diameter_mm=float(diameterMm))
        trajectory = evaluate_trajectory(scene, frame, entry, target, float(diameterMm), config=config)
        self.lastTrajectory = trajectory
        meshPoints, triangles = channel_mesh(entry, target, float(diameterMm))
        polyData = slicer_nodes.polyDataFromMesh(lps_to_ras(meshPoints), triangles)
        channelModel = slicer_nodes.setModel(channelModel, "working channel", polyData, CHANNEL_COLOR, opacity=0.6)
        slicer_nodes.placeInStudy(channelModel, inputVolume)
        if trajectoryTable is None:
            trajectoryTable = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "trajectory")
            slicer_nodes.placeInStudy(trajectoryTable, inputVolume)
        slicer_nodes.fillTableFromRows(trajectoryTable, markup_model.trajectory_rows(trajectory))
        if showResult:
            slicer_nodes.registerLayout(markup_model.LAYOUT_ID, markup_model.layout_xml())
            planes = reformat_planes(frame, entry, target)
            slicer_nodes.setReformat(markup_model.TRAJECTORY_VIEW_NAME, markup_model.trajectory_plane(planes), inputVolume)
        return trajectory, channelModel, trajectoryTable
