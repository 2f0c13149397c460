"""Slicer glue: the FORAMEN3D self-test (``FORAMEN3DTest``), run inside Slicer only.

Known answers come from the generated phantom study (``spinemorph.acquisition.make_study``): its ``truth.json``
holds the exact foraminal height, width and area of both sides, and its ``.seg.nrrd`` the exact label map.
"""

import numpy as np
import slicer
from DuralSacSegLib import slicer_sampledata
from DuralSacSegLib.slicer_selftest import skipUnlessDependencies

from FORAMEN3DLib import slicer_nodes

#: acceptance tolerances of the morphometry on rasterised phantoms (DEVELOPERS.md / issue 5)
HEIGHT_WIDTH_TOLERANCE_MM = 0.5
AREA_TOLERANCE = 0.05


def run_self_test(test, logic):
    """Load the phantom sample and check segmentation, measurements (vs exact truth), live edits and planning.

    Skipped (``test.skipTest``, with what is missing) when the dependencies are absent under ``--testing``.
    """
    skipUnlessDependencies(test, "FORAMEN3D")
    from FORAMEN3DLib import markup_model
    from FORAMEN3DLib.morphometry import measure_foramen
    from spinemorph.segio import read_seg_nrrd
    from spinemorph.volume import read_volume

    test.delayDisplay("Generating / loading the SpineMorph phantom (3D T2 SPACE)")
    slicer_sampledata.registerSampleData()
    volumeNode, study = slicer_sampledata.loadSample(slicer_sampledata.SPACE_T2, requester="FORAMEN3D")

    # 1. Node -> core Volume keeps the file's LPS geometry (sagittal PIR grid: the RAS<->LPS flip matters here).
    reference = read_volume(study["space_t2"])
    image = slicer_nodes.volumeFromNode(volumeNode)
    np.testing.assert_allclose(image.origin_mm, reference.origin_mm, atol=1e-3)
    np.testing.assert_allclose(image.direction, reference.direction, atol=1e-5)
    np.testing.assert_array_equal(image.array, reference.array)

    # 2. Apply with the embedded model: three segments and three surface models in the input's study.
    test.delayDisplay("Segmenting L4 / L4-5 disc / L5")
    segNode, _table = logic.process(volumeNode, device="auto", measure=False)
    segmentation = segNode.GetSegmentation()
    for _value, segmentId, _name, _rgb, _terminology in markup_model.SEGMENTS:
        test.assertIsNotNone(segmentation.GetSegment(segmentId))
    test.assertEqual(len(logic.surfaceModels), 3)

    # 2b. Accuracy of the embedded 3D model (run in the separate process) against the phantom's exact truth: Dice per
    # structure vs the true label map and the foramen measured on the predicted segments vs the exact values, within
    # spinemorph.phantom_acceptance's tolerances (measured outside Slicer: Dice L4 0.863 / disc 0.920 / L5 0.864;
    # height -2.4 mm, width +1.2 mm, area -25 % on both sides).
    from spinemorph import phantom_acceptance

    truthLabels, _segments = read_seg_nrrd(study["space_foramen_seg"])
    predicted = slicer_nodes.labelsFromSegmentation(segNode, volumeNode, markup_model.SEGMENTS,
                                                     markup_model.OPTIONAL_SEGMENT_IDS)
    logic.measure(volumeNode, segNode, showResult=False)
    failures = phantom_acceptance.foramen_failures(predicted.array, truthLabels.array, logic.measurementState.values,
                                                   study["truth"]["truth"]["foramen"])
    test.assertEqual(failures, [], "3D model accuracy on the phantom: " + "; ".join(failures))

    # 3. Known answer through the glue: the TRUE label map as segments, measure, compare with the exact truth.
    slicer_nodes.setSegmentsFromLabelmap(segNode, truthLabels, volumeNode, markup_model.SEGMENTS)
    tableNode = logic.measure(volumeNode, segNode)
    test.assertEqual(tableNode.GetNumberOfRows(), 7)
    test.assertEqual(len(logic.markupNodes), 6)
    core = measure_foramen(truthLabels)
    for side in markup_model.SIDES:
        values = logic.measurementState.values[side]
        truth = study["truth"]["truth"]["foramen"][side]
        test.assertAlmostEqual(values["height_mm"], core.sides[side].height.value, delta=1e-3)
        test.assertAlmostEqual(values["width_mm"], core.sides[side].width.value, delta=1e-3)
        test.assertAlmostEqual(values["area_mm2"], core.sides[side].area.value, delta=0.01 * core.sides[side].area.value)
        test.assertAlmostEqual(values["height_mm"], truth["height_mm"], delta=HEIGHT_WIDTH_TOLERANCE_MM)
        test.assertAlmostEqual(values["width_mm"], truth["width_mm"], delta=HEIGHT_WIDTH_TOLERANCE_MM)
        test.assertAlmostEqual(values["area_mm2"], truth["area_mm2"], delta=AREA_TOLERANCE * truth["area_mm2"])

    # 4. Live edit: moving the left height line's end 2 mm superior changes the height to the new point distance.
    node = logic.markupNodes[markup_model.MeasurementState.key("left", "height")]
    points = slicer_nodes.markupPointsRAS(node)
    points[1, 2] += 2.0
    slicer_nodes.setMarkupPoints(node, points)
    values = logic.onMarkupModified(node)
    test.assertAlmostEqual(values["height_mm"], float(np.linalg.norm(points[1] - points[0])), delta=1e-6)

    # 5. Planning: suggested left channel (2 points), evaluated channel model and trajectory numbers.
    test.delayDisplay("Planning a left transforaminal trajectory")
    line, result = logic.suggestTrajectory(volumeNode, segNode, side="left", diameterMm=7.5)
    test.assertEqual(len(slicer_nodes.markupPointsRAS(line)), 2)
    trajectory, channelModel, trajectoryTable = logic.evaluateTrajectory(volumeNode, segNode, line, 7.5)
    test.assertGreater(channelModel.GetPolyData().GetNumberOfPoints(), 0)
    test.assertGreater(trajectory.length_mm, 0.0)
    test.assertEqual(trajectoryTable.GetNumberOfRows(), len(markup_model.trajectory_rows(trajectory)))
    best = result.sides["left"].best
    test.assertAlmostEqual(trajectory.clearance_mm, best.clearance_mm, delta=1e-6)
    slicer.app.processEvents()
    test.delayDisplay("FORAMEN3D self-test passed")
