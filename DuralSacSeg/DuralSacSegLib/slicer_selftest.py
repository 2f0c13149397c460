"""Slicer glue: the DuralSacSeg self-test (``DuralSacSegTest``), run inside Slicer only.

Known answers come from the generated phantom study (``spinemorph.acquisition.make_study``): its ``truth.json``
holds the exact analytic dural sac area of every axial slice.
"""

import os
import tempfile
import time

import numpy as np
import slicer

from DuralSacSegLib import slicer_dependencies, slicer_logic, slicer_nodes, slicer_sampledata

#: largest relative error of the per-slice area of the true mask vs the exact analytic area (rasterisation only)
TRUTH_AREA_TOLERANCE = 0.03


def skipUnlessDependencies(test, requester):
    """Skip ``test`` with a clear message when the dependencies are missing under ``--testing`` (never install)."""
    try:
        slicer_dependencies.ensureDependencies(slicer_dependencies.requirementsPath(), requester=requester)
    except slicer_dependencies.DependenciesUnavailable as exc:
        test.skipTest(str(exc))


#: longest wait for one segmentation process of a panel test (CPU)
RUN_TIMEOUT_S = 900


def openPanelOnSample(test, moduleName, sampleName):
    """The start of a panel (widget) test: skip ``test`` unless the dependencies are there, load the phantom sample
    ``sampleName`` (``slicer_sampledata.AXIAL_T1`` / ``SPACE_T2``), open module ``moduleName`` and select the volume
    and the CPU in its parameter node. Returns ``(widget, volumeNode, study)``."""
    from DuralSacSegLib.slicer_parameters import ComputeDevice  # shared by both modules' parameter nodes

    skipUnlessDependencies(test, moduleName)
    volumeNode, study = slicer_sampledata.loadSample(sampleName, requester=moduleName)
    slicer.util.selectModule(moduleName)
    widget = getattr(slicer.modules, moduleName + "Widget")
    widget._parameterNode.inputVolume = volumeNode
    widget._parameterNode.device = ComputeDevice.CPU
    return widget, volumeNode, study


def waitForRun(controller, timeout=RUN_TIMEOUT_S):
    """Process Qt events (the QTimer polls the worker) until the controller's run has ended; after ``timeout`` s the
    run is cancelled and an AssertionError raised."""
    deadline = time.time() + timeout
    while controller.currentProcess is not None:
        if time.time() > deadline:
            controller.cancelRun()
            raise AssertionError(f"the segmentation process did not end within {timeout} s")
        slicer.app.processEvents()
        time.sleep(0.02)


def run_self_test(test, logic):
    """Load the phantom sample, segment it, and check geometry, table, recompute, slice jump and CSV export.

    Skipped (``test.skipTest``, with the list of what is missing) when the dependencies are not installed and Slicer
    runs in testing mode, where nothing is installed.
    """
    skipUnlessDependencies(test, "DuralSacSeg")
    from DuralSacSegLib import table_model
    from spinemorph.segio import read_seg_nrrd
    from spinemorph.volume import read_volume

    test.delayDisplay("Generating / loading the SpineMorph phantom (axial T1)")
    slicer_sampledata.registerSampleData()
    volumeNode, study = slicer_sampledata.loadSample(slicer_sampledata.AXIAL_T1, requester="DuralSacSeg")
    test.assertIsNotNone(volumeNode)

    # 1. The node -> core Volume conversion gives back the file's LPS geometry and voxels.
    reference = read_volume(study["axial_t1"])
    image = slicer_nodes.volumeFromNode(volumeNode)
    np.testing.assert_allclose(image.spacing_mm, reference.spacing_mm, atol=1e-4)
    np.testing.assert_allclose(image.origin_mm, reference.origin_mm, atol=1e-3)
    np.testing.assert_allclose(image.direction, reference.direction, atol=1e-5)
    np.testing.assert_array_equal(image.array, reference.array)

    # 2. Apply with the embedded default model: one table row per slice, segment, chart, all in the input's study.
    test.delayDisplay("Segmenting the dural sac")
    segNode, tableNode, chartNode = logic.process(volumeNode, device="auto")
    nSlices = image.size_ijk[2]
    test.assertEqual(tableNode.GetNumberOfRows(), nSlices)
    test.assertIsNotNone(segNode.GetSegmentation().GetSegment(slicer_logic.SEGMENT_ID))
    test.assertEqual(chartNode.GetNumberOfPlotSeriesNodes(), 2)
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    parent = shNode.GetItemParent(shNode.GetItemByDataNode(volumeNode))
    test.assertEqual(shNode.GetItemParent(shNode.GetItemByDataNode(tableNode)), parent)

    # 2b. Accuracy of the embedded model (run in the separate process) against the phantom's exact truth: per-slice
    # DSCA vs the analytic area and Dice of the segment vs the true mask, within spinemorph.phantom_acceptance's
    # tolerances (measured outside Slicer: mean / max relative DSCA error 0.215 / 0.332, Dice 0.904).
    from spinemorph import phantom_acceptance

    truthMask, _segments = read_seg_nrrd(study["axial_dural_sac_seg"])
    exactAreas = [row["dsca_axial_mm2"] for row in study["truth"]["axial_slices"]]
    predicted = slicer_nodes.maskFromSegment(segNode, slicer_logic.SEGMENT_ID, volumeNode)
    failures = phantom_acceptance.dsca_failures(logic.lastTable.areas_mm2(), exactAreas, predicted.array, truthMask.array)
    test.assertEqual(failures, [], "DSCA accuracy on the phantom: " + "; ".join(failures))

    # 3. Known answer through the glue: the TRUE mask as the segment, Recompute table, compare with the exact areas.
    slicer_nodes.setSegmentsFromLabelmap(
        segNode, truthMask, volumeNode,
        [(1, slicer_logic.SEGMENT_ID, table_model.DURAL_SAC_SEGMENT_NAME, (1, 1, 0), table_model.DURAL_SAC_TERMINOLOGY)],
    )
    logic.recomputeTable(volumeNode, segNode, tableNode, chartNode)
    exact = np.array([row["dsca_axial_mm2"] for row in study["truth"]["axial_slices"]], dtype=float)
    measured = logic.lastTable.areas_mm2()
    test.assertEqual(len(measured), len(exact))
    relative = np.abs(measured / exact - 1.0)
    test.assertLess(float(relative.max()), TRUTH_AREA_TOLERANCE, f"per-slice area errors {np.round(relative, 4)}")

    # 4. Clicking a row jumps the slice views to that slice (Red view offset = the slice's S coordinate).
    row = nSlices // 2
    ras = logic.sliceCentreRAS(row)
    slicer_nodes.jumpSlicesTo(ras)
    redLogic = slicer.app.layoutManager().sliceWidget("Red").sliceLogic()
    test.assertAlmostEqual(redLogic.GetSliceOffset(), float(ras[2]), delta=0.6 * image.spacing_mm[2])

    # 5. CSV export has a header and one line per slice.
    path = os.path.join(tempfile.mkdtemp(prefix="DuralSacSegTest"), "dsca.csv")
    written = logic.exportCsv(path)
    with open(written, encoding="utf-8") as fh:
        lines = fh.read().strip().splitlines()
    test.assertEqual(len(lines), nSlices + 1)
    test.delayDisplay("DuralSacSeg self-test passed")
