"""Slicer glue: MRML nodes <-> the Slicer-free core (Volumes, label maps, meshes, markups, tables, reformats).

Geometry conversion (LPS core <-> RAS Slicer) is done by :mod:`spinemorph.gui_support` and
:mod:`FORAMEN3DLib.markup_model`; this file only moves arrays and matrices between MRML nodes and those helpers.
``spinemorph`` is imported inside the functions because it may be installed on first use (``slicer_dependencies``).
"""

import numpy as np
import slicer
import vtk
from DuralSacSegLib.slicer_nodes import (  # noqa: F401 - shared glue
    placeInStudy,
    setSegmentsFromLabelmap,
    useColumnTitlesAsHeader,
    volumeFromNode,
)

#: attribute holding a measurement markup's key (e.g. "left_height") on its markups node
MARKUP_KEY_ATTRIBUTE = "FORAMEN3D.MeasurementKey"


def labelsFromSegmentation(segmentationNode, referenceVolumeNode, segments, optionalIds=()):
    """Core label Volume (values of ``segments``) on the grid of ``referenceVolumeNode``, after manual edits too.

    Segments whose ID is in ``optionalIds`` may be missing (e.g. the dural sac of a 4-class segmentation)."""
    from spinemorph.errors import InputError

    reference = volumeFromNode(referenceVolumeNode)
    out = np.zeros(reference.array.shape, dtype=np.uint8)
    segmentation = segmentationNode.GetSegmentation() if segmentationNode else None
    for labelValue, segmentId, name, _rgb, _terminology in segments:
        if segmentation is not None and segmentation.GetSegment(segmentId) is None and segmentId in optionalIds:
            continue
        if segmentation is None or segmentation.GetSegment(segmentId) is None:
            raise InputError(f"segment '{name}' is missing; run Apply first (keep the segments L4, L4-5 disc, L5)")
        try:
            array = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolumeNode)
        except RuntimeError:  # an empty segment has nothing to export; the measurement reports the missing label
            continue
        out[np.asarray(array) > 0] = labelValue
    return reference.with_array(out)


def fillTableFromRows(tableNode, rows):
    """Replace the columns of ``tableNode`` by ``rows`` (list of dicts with the same keys; numbers -> double)."""
    wasModifying = tableNode.StartModify()
    tableNode.RemoveAllColumns()
    names = list(rows[0]) if rows else []
    for name in names:
        values = [row[name] for row in rows]
        numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values)
        array = vtk.vtkDoubleArray() if numeric else vtk.vtkStringArray()
        array.SetName(name)
        for value in values:
            array.InsertNextValue(float(value) if numeric else str(value))
        tableNode.AddColumn(array)
    useColumnTitlesAsHeader(tableNode)
    tableNode.EndModify(wasModifying)


def polyDataFromMesh(pointsRAS, triangles):
    """vtkPolyData from points ``(N, 3)`` (RAS) and triangles ``(M, 3)``."""
    from spinemorph.polydata import polydata_from_triangles

    return polydata_from_triangles(pointsRAS, np.asarray(triangles, dtype=np.int64).reshape(-1, 3))


def setModel(modelNode, name, polyData, color, opacity=1.0):
    """Create (when None) or update a model node showing ``polyData``; returns the node."""
    if modelNode is None:
        modelNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLModelNode", name)
    modelNode.SetAndObservePolyData(polyData)
    if modelNode.GetDisplayNode() is None:
        modelNode.CreateDefaultDisplayNodes()
    displayNode = modelNode.GetDisplayNode()
    displayNode.SetColor(*color)
    displayNode.SetOpacity(opacity)
    displayNode.SetVisibility2D(True)
    return modelNode


def setMarkupPoints(markupsNode, pointsRAS):
    """Replace the control points of ``markupsNode`` (RAS ``(N, 3)``)."""
    slicer.util.updateMarkupsControlPointsFromArray(markupsNode, np.asarray(pointsRAS, dtype=float))


def markupPointsRAS(markupsNode):
    """Control points of ``markupsNode`` as an RAS ``(N, 3)`` array."""
    return np.asarray(slicer.util.arrayFromMarkupsControlPoints(markupsNode), dtype=float).reshape(-1, 3)


def createMeasurementMarkup(spec):
    """Markups node (line or closed curve) for a ``markup_model.MarkupSpec``."""
    className = "vtkMRMLMarkupsLineNode" if spec.kind == "line" else "vtkMRMLMarkupsClosedCurveNode"
    node = slicer.mrmlScene.AddNewNodeByClass(className, spec.name)
    node.SetAttribute(MARKUP_KEY_ATTRIBUTE, spec.key)
    if spec.kind != "line":
        node.SetCurveTypeToLinear()
    setMarkupPoints(node, spec.points_ras)
    displayNode = node.GetDisplayNode()
    displayNode.SetSelectedColor(*spec.color)
    displayNode.SetColor(*spec.color)
    displayNode.SetPointLabelsVisibility(False)
    return node


def registerLayout(layoutId, layoutXml):
    """Register (once) and switch to a custom view layout."""
    layoutNode = slicer.app.layoutManager().layoutLogic().GetLayoutNode()
    if layoutNode.IsLayoutDescription(layoutId):
        layoutNode.SetLayoutDescription(layoutId, layoutXml)
    else:
        layoutNode.AddLayoutDescription(layoutId, layoutXml)
    slicer.app.layoutManager().setLayout(layoutId)
    slicer.app.processEvents()  # let the layout manager create the new slice views


def setReformat(viewName, sliceToRAS, backgroundVolume):
    """Orient slice view ``viewName`` by a 4×4 SliceToRAS and show ``backgroundVolume`` in it."""
    sliceWidget = slicer.app.layoutManager().sliceWidget(viewName)
    if sliceWidget is None:
        return
    sliceNode = sliceWidget.mrmlSliceNode()
    sliceNode.GetSliceToRAS().DeepCopy(slicer.util.vtkMatrixFromArray(np.asarray(sliceToRAS, dtype=float)))
    sliceNode.UpdateMatrices()
    compositeNode = sliceWidget.sliceLogic().GetSliceCompositeNode()
    compositeNode.SetBackgroundVolumeID(backgroundVolume.GetID() if backgroundVolume else None)
