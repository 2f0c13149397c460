"""GUI-level test of the DuralSacSeg panel inside Slicer: the widget's own handlers on the generated phantom.

Apply runs the segmentation in a separate process (the panel returns at once; a QTimer polls the process), so the
test processes events until the run has ended. A DSCA row is clicked through the real qMRMLTableView API path
(``sortFilterProxyModel()`` index of a sorted view -> ``mapToSource`` -> MRML row). Skipped with the list of what is
missing when the dependencies are absent under ``--testing`` (nothing is installed then).
"""

import unittest

import slicer


class DuralSacSegWidgetTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def test_panel_apply_click_recompute_cancel(self):
        from DuralSacSegLib import slicer_sampledata
        from DuralSacSegLib.slicer_selftest import openPanelOnSample, waitForRun

        widget, volumeNode, _study = openPanelOnSample(self, "DuralSacSeg", slicer_sampledata.AXIAL_T1)
        pn = widget._parameterNode
        self.assertTrue(widget.ui.applyButton.enabled)
        self.assertEqual(widget.ui.modelComboBox.currentData, pn.model)

        widget.controller.onApply()
        self.assertIsNotNone(widget.controller.currentProcess)  # returned at once: the worker runs
        self.assertTrue(widget.ui.progressBar.visible and widget.ui.cancelButton.visible)
        waitForRun(widget.controller)
        nSlices = volumeNode.GetImageData().GetDimensions()[2]
        self.assertEqual(pn.outputTable.GetNumberOfRows(), nSlices)
        self.assertIs(widget.ui.tableView.mrmlTableNode(), pn.outputTable)
        self.assertFalse(widget.ui.progressBar.visible)
        self.assertTrue(widget.ui.editButton.enabled and widget.ui.recomputeButton.enabled)

        # click a row of the view sorted by slice index, descending (the proxy sorts the cell texts): the first
        # visible row is not MRML row 0; the row reached through sortFilterProxyModel().mapToSource must be the one
        # whose slice_index the clicked cell shows
        view = widget.ui.tableView
        tableNode = view.mrmlTableNode()
        names = [tableNode.GetColumnName(c) for c in range(tableNode.GetNumberOfColumns())]
        proxy = view.sortFilterProxyModel()
        proxy.sort(names.index("slice_index"), 1)  # Qt.DescendingOrder
        slicer.app.processEvents()
        index = proxy.index(0, names.index("slice_index"))
        shownSlice = int(proxy.data(index))
        self.assertNotEqual(shownSlice, 0)
        self.assertEqual(proxy.mapToSource(index).row(), shownSlice)  # column titles are the header: no names row
        self.assertEqual(widget.logic.lastTable.rows[shownSlice].slice_index, shownSlice)
        widget.controller.onTableClicked(index)
        expected = widget.logic.sliceCentreRAS(shownSlice)
        red = slicer.app.layoutManager().sliceWidget("Red").sliceLogic()
        self.assertAlmostEqual(red.GetSliceOffset(), float(expected[2]), delta=3.0)

        # recompute from the (unchanged) segment gives the same number of rows
        widget.controller.onRecomputeTable()
        self.assertEqual(pn.outputTable.GetNumberOfRows(), nSlices)

        # Cancel kills the worker: the status says so, the table is unchanged, the panel is usable again
        rowsBefore = pn.outputTable.GetNumberOfRows()
        widget.controller.onApply()
        process = widget.controller.currentProcess
        widget.ui.cancelButton.click()
        waitForRun(widget.controller, timeout=120)
        self.assertIsNotNone(process.proc.poll())
        self.assertTrue(widget.ui.statusLabel.text.startswith("Cancelled"))
        self.assertEqual(pn.outputTable.GetNumberOfRows(), rowsBefore)
        self.assertTrue(widget.ui.applyButton.enabled)
