"""GUI-level test of the FORAMEN3D panel inside Slicer: the widget's own handlers on the generated phantom.

Apply runs the 3D segmentation in a separate process (QTimer polling); the test processes events until it has ended.
Skipped with the list of what is missing when the dependencies are absent under ``--testing``.
"""

import time
import unittest

import slicer


class FORAMEN3DWidgetTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def test_panel_apply_live_markups_and_planning(self):
        from DuralSacSegLib import slicer_sampledata
        from DuralSacSegLib.slicer_selftest import skipUnlessDependencies
        from FORAMEN3DLib import markup_model, slicer_nodes
        from FORAMEN3DLib.slicer_parameters import ComputeDevice

        skipUnlessDependencies(self, "FORAMEN3D")
        from spinemorph.segio import read_seg_nrrd

        volumeNode, study = slicer_sampledata.loadSample(slicer_sampledata.SPACE_T2, requester="FORAMEN3D")
        slicer.util.selectModule("FORAMEN3D")
        widget = slicer.modules.FORAMEN3DWidget
        pn = widget._parameterNode
        pn.inputVolume = volumeNode
        pn.device = ComputeDevice.CPU
        widget.controller.onApply()
        deadline = time.time() + 900
        while widget.controller.currentProcess is not None and time.time() < deadline:
            slicer.app.processEvents()  # the QTimer polls the worker
            time.sleep(0.02)
        self.assertIsNone(widget.controller.currentProcess)
        self.assertIsNotNone(pn.outputSegmentation)
        self.assertTrue(widget.ui.suggestButton.enabled)

        # measure the exact phantom labels through the panel (independent of the model's accuracy)
        truthLabels, _ = read_seg_nrrd(study["space_foramen_seg"])
        slicer_nodes.setSegmentsFromLabelmap(pn.outputSegmentation, truthLabels, volumeNode, markup_model.SEGMENTS)
        widget.controller.onRemeasure()
        self.assertEqual(pn.measurementTable.GetNumberOfRows(), 7)
        self.assertIs(widget.ui.measurementTableView.mrmlTableNode(), pn.measurementTable)
        layoutNode = slicer.app.layoutManager().layoutLogic().GetLayoutNode()
        self.assertEqual(layoutNode.GetViewArrangement(), markup_model.LAYOUT_ID)

        # moving a markup point updates the table through the widget's observer (live)
        node = widget.logic.markupNodes[markup_model.MeasurementState.key("left", "width")]
        points = slicer_nodes.markupPointsRAS(node)
        points[1] = points[0] + [0.0, 0.0, 5.0]
        slicer_nodes.setMarkupPoints(node, points)
        slicer.app.processEvents()
        self.assertAlmostEqual(widget.logic.measurementState.values["left"]["width_mm"], 5.0, places=6)
        table = pn.measurementTable.GetTable()
        widthRow = [r for r in range(table.GetNumberOfRows())
                    if table.GetValue(r, 0).ToString() == "foraminal_width" and table.GetValue(r, 1).ToString() == "left"][0]
        self.assertAlmostEqual(table.GetValue(widthRow, 2).ToDouble(), 5.0, places=2)

        # planning: Suggest places the best channel, Evaluate fills the table and the channel model
        widget.controller.onSuggest()
        self.assertIsNotNone(pn.trajectoryLine)
        self.assertEqual(pn.trajectoryLine.GetNumberOfControlPoints(), 2)
        self.assertIsNotNone(pn.channelModel)
        self.assertGreater(pn.trajectoryTable.GetNumberOfRows(), 5)
        self.assertFalse(widget.ui.heatmapLabel.pixmap.isNull())
