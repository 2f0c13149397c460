"""GUI-level test of the DuralSacSeg panel inside Slicer: the widget's own handlers on the generated phantom."""

import unittest

import slicer


class DuralSacSegWidgetTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def test_panel_apply_click_recompute_cancel(self):
        from DuralSacSegLib import slicer_sampledata
        from DuralSacSegLib.slicer_parameters import ComputeDevice

        volumeNode, _study = slicer_sampledata.loadSample(slicer_sampledata.AXIAL_T1, requester="DuralSacSeg")
        slicer.util.selectModule("DuralSacSeg")
        widget = slicer.modules.DuralSacSegWidget
        pn = widget._parameterNode
        pn.inputVolume = volumeNode
        pn.device = ComputeDevice.CPU
        self.assertTrue(widget.ui.applyButton.enabled)
        self.assertEqual(widget.ui.modelComboBox.currentData, pn.model)

        widget.controller.onApply()
        nSlices = volumeNode.GetImageData().GetDimensions()[2]
        self.assertEqual(pn.outputTable.GetNumberOfRows(), nSlices)
        self.assertIs(widget.ui.tableView.mrmlTableNode(), pn.outputTable)
        self.assertFalse(widget.ui.progressBar.visible)
        self.assertTrue(widget.ui.editButton.enabled and widget.ui.recomputeButton.enabled)

        # clicking a row centres the slice views on that slice's dural sac
        row = nSlices // 2
        index = widget.ui.tableView.model().index(row, 0)
        widget.controller.onTableClicked(index)
        expected = widget.logic.sliceCentreRAS(row)
        red = slicer.app.layoutManager().sliceWidget("Red").sliceLogic()
        self.assertAlmostEqual(red.GetSliceOffset(), float(expected[2]), delta=3.0)

        # recompute from the (unchanged) segment gives the same number of rows
        widget.controller.onRecomputeTable()
        self.assertEqual(pn.outputTable.GetNumberOfRows(), nSlices)

        # cancelling: the core stops, the status says so, nothing is raised
        statusBefore = pn.outputTable.GetNumberOfRows()
        originalProcess = widget.logic.process

        def cancellingProcess(*args, **kwargs):
            kwargs["shouldCancel"] = lambda: True
            return originalProcess(*args, **kwargs)

        widget.logic.process = cancellingProcess
        try:
            widget.controller.onApply()
        finally:
            widget.logic.process = originalProcess
        self.assertTrue(widget.ui.statusLabel.text.startswith("Cancelled"))
        self.assertEqual(pn.outputTable.GetNumberOfRows(), statusBefore)
