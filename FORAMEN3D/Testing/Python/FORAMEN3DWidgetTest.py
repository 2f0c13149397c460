"""GUI-level test of the FORAMEN3D panel inside Slicer: the widget's own handlers on the generated phantom.

Apply runs the 3D segmentation in a separate process (QTimer polling); the test processes events until it has ended.
Skipped with the list of what is missing when the dependencies are absent under ``--testing``.
"""

import unittest

import slicer


class FORAMEN3DWidgetTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def test_panel_apply_live_markups_and_planning(self):
        from DuralSacSegLib import slicer_sampledata
        from DuralSacSegLib.slicer_selftest import openPanelOnSample, waitForRun

        widget, volumeNode, study = openPanelOnSample(self, "FORAMEN3D", slicer_sampledata.SPACE_T2)
        from FORAMEN3DLib import markup_model, slicer_nodes

        from spinemorph.segio import read_seg_nrrd

        pn = widget._parameterNode
        widget.controller.onApply()
        waitForRun(widget.controller)
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
