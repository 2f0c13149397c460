"""Slicer glue: MRML nodes <-> the Slicer-free core (``spinemorph.volume.Volume``, DSCA tables).

Geometry conversion (LPS core <-> RAS Slicer) is done by :mod:`spinemorph.gui_support`; this file only moves
arrays and matrices between MRML nodes and those helpers. ``spinemorph`` is imported inside the functions because it
may be installed on first use (see ``slicer_dependencies``).
"""

import numpy as np
import slicer
import vtk

from DuralSacSegLib import slicer_terminology


def volumeFromNode(volumeNode):
    """:class:`spinemorph.volume.Volume` (LPS) with a copy of the voxels and the geometry of a scalar volume node."""
    from spinemorph.errors import InputError
    from spinemorph.gui_support import volume_from_ijk_to_ras

    if volumeNode is None or volumeNode.GetImageData() is None:
        raise InputError("the input volume has no voxels; load an image (DICOM, NRRD, NIfTI) and select it")
    if volumeNode.GetParentTransformNode() is not None:
        raise InputError(f"volume '{volumeNode.GetName()}' is transformed; harden the transform (Transforms module) first")
    ijkToRAS = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(ijkToRAS)
    matrix = slicer.util.arrayFromVTKMatrix(ijkToRAS)
    return volume_from_ijk_to_ras(np.array(slicer.util.arrayFromVolume(volumeNode)), matrix)


def ijkToRASFromVolume(volume):
    """vtkMatrix4x4 IJK-to-RAS of a core Volume."""
    from spinemorph.gui_support import ijk_to_ras_matrix

    return slicer.util.vtkMatrixFromArray(ijk_to_ras_matrix(volume))


def placeInStudy(node, referenceNode):
    """Put ``node`` under the same subject-hierarchy parent (study) as ``referenceNode``."""
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    referenceItem = shNode.GetItemByDataNode(referenceNode)
    item = shNode.GetItemByDataNode(node)
    if referenceItem and item:
        shNode.SetItemParent(item, shNode.GetItemParent(referenceItem))


def setSegmentsFromLabelmap(segmentationNode, labels, referenceVolumeNode, segments):
    """Fill ``segmentationNode`` with one segment per label value of the core Volume ``labels``.

    :param labels: core Volume on the grid of ``referenceVolumeNode`` (integer label values).
    :param segments: list of ``(labelValue, segmentId, name, rgb, terminologyString)``.
    Existing segments with these IDs are replaced; the reference geometry is set from the input volume.
    """
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
    if segmentationNode.GetDisplayNode() is None:
        segmentationNode.CreateDefaultDisplayNodes()
    segmentation = segmentationNode.GetSegmentation()
    array = np.asarray(labels.array)
    for labelValue, segmentId, name, rgb, terminology in segments:
        if segmentation.GetSegment(segmentId) is not None:
            segmentation.RemoveSegment(segmentId)
        segmentation.AddEmptySegment(segmentId, name, list(rgb))
        segment = segmentation.GetSegment(segmentId)
        if terminology:
            segment.SetTerminology(slicer_terminology.segmentTerminology(terminology))
        mask = (array == labelValue).astype(np.uint8)
        if mask.any():  # an empty structure stays an empty segment (nothing to import)
            slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentationNode, segmentId, referenceVolumeNode)


def maskFromSegment(segmentationNode, segmentId, referenceVolumeNode):
    """The segment as a 0/1 core Volume on the grid of ``referenceVolumeNode`` (after manual edits too)."""
    from spinemorph.errors import InputError

    if segmentationNode is None or segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
        raise InputError("the dural sac segment is missing; run Apply first (or keep the segment named 'dural sac')")
    reference = volumeFromNode(referenceVolumeNode)
    try:
        array = np.asarray(slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolumeNode)) > 0
    except RuntimeError as exc:  # Slicer raises when there is nothing to export: fine only for an empty segment
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        labelmap = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
        if labelmap is not None and not labelmap.IsEmpty():
            raise InputError(f"the dural sac segment could not be exported onto the input volume's grid ({exc})") from exc
        array = np.zeros(reference.array.shape, dtype=bool)
    return reference.with_array(array.astype(np.uint8))


def fillTableNode(tableNode, columns):
    """Replace the columns of ``tableNode`` by typed columns (``table_model.TableColumn``) with their units."""
    wasModifying = tableNode.StartModify()
    tableNode.RemoveAllColumns()
    for column in columns:
        if column.kind == "int":
            array = vtk.vtkIntArray()
        elif column.kind == "double":
            array = vtk.vtkDoubleArray()
        else:
            array = vtk.vtkStringArray()
        array.SetName(column.name)
        for value in column.values:
            array.InsertNextValue(value)
        tableNode.AddColumn(array)
        if column.unit:
            tableNode.SetColumnUnitLabel(column.name, column.unit)
    useColumnTitlesAsHeader(tableNode)
    tableNode.EndModify(wasModifying)


def useColumnTitlesAsHeader(tableNode):
    """Column titles (else names) as the header row, not a first data row.

    ``SetUseColumnTitleAsColumnHeader`` is the current name (Slicer 5.10 and 5.12); ``SetUseColumnNameAsColumnHeader``
    logs a deprecation warning on every call there and is used only by a Slicer that lacks the new name."""
    if hasattr(tableNode, "SetUseColumnTitleAsColumnHeader"):
        tableNode.SetUseColumnTitleAsColumnHeader(True)
    else:
        tableNode.SetUseColumnNameAsColumnHeader(True)


#: background of the rows of slices not graded for stenosis (blocking QC flag)
QC_ROW_COLOR = (255, 205, 205)


def highlightTableRows(tableView, rows, notes=None, color=QC_ROW_COLOR):
    """Colour the MRML table rows ``rows`` of the qMRMLTableView ``tableView`` (and give each cell the row's note as
    tooltip). Returns the number of rows coloured.

    The view's ``tableModel()`` is a QStandardItemModel updated from the node whenever the node changes (items are
    reused, but a refill may change which rows are flagged), so call this after every fill (``fillTableNode`` +
    ``setMRMLTableNode``). The model has an extra first row (the column names)
    unless the node uses column titles as the header (same rule as ``slicer_common.mrmlTableRowFromViewIndex``).
    """
    import qt

    model = tableView.tableModel()
    tableNode = tableView.mrmlTableNode()
    if model is None or tableNode is None:
        return 0
    if hasattr(tableNode, "GetUseColumnTitleAsColumnHeader"):
        titleHeader = tableNode.GetUseColumnTitleAsColumnHeader()
    else:
        titleHeader = tableNode.GetUseColumnNameAsColumnHeader()
    offset = 0 if titleHeader else 1
    brush = qt.QBrush(qt.QColor(*color))
    coloured = 0
    # qMRMLTableModel writes every changed item back into the node (itemChanged -> updateMRMLFromModel: the cell
    # text re-parsed, a node Modified per cell); a colour is no edit, so the model's signals are blocked meanwhile
    # (updateModelFromMRML reuses the items, so the colour stays until the next fill)
    wasBlocked = model.blockSignals(True)
    try:
        for i, row in enumerate(rows):
            note = notes[i] if notes is not None and i < len(notes) else ""
            cells = [model.item(int(row) + offset, column) for column in range(model.columnCount())]
            cells = [cell for cell in cells if cell is not None]
            for cell in cells:
                cell.setBackground(brush)
                if note:
                    cell.setToolTip(note)
            coloured += bool(cells)
    finally:
        model.blockSignals(wasBlocked)
    tableView.viewport().update()  # the view was not told (signals blocked): repaint it
    return coloured


def areaChart(tableNode, chartNode, xColumn, yColumns, colors):
    """Line chart of ``yColumns`` against ``xColumn`` of ``tableNode`` (series nodes are reused by name)."""
    if chartNode is None:
        chartNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotChartNode", tableNode.GetName() + " chart")
    chartNode.RemoveAllPlotSeriesNodeIDs()
    for yColumn, color in zip(yColumns, colors):
        seriesName = f"{tableNode.GetName()} {yColumn}"
        seriesNode = slicer.mrmlScene.GetFirstNodeByName(seriesName)
        if seriesNode is None or not seriesNode.IsA("vtkMRMLPlotSeriesNode"):
            seriesNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", seriesName)
        seriesNode.SetAndObserveTableNodeID(tableNode.GetID())
        seriesNode.SetXColumnName(xColumn)
        seriesNode.SetYColumnName(yColumn)
        seriesNode.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        seriesNode.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
        seriesNode.SetColor(*color)
        chartNode.AddAndObservePlotSeriesNodeID(seriesNode.GetID())
    chartNode.SetXAxisTitle(f"{xColumn} (slice position along the slice normal)")
    chartNode.SetYAxisTitle("dural sac area (mm2)")
    chartNode.SetTitle("Dural sac cross-sectional area per slice")
    return chartNode


def jumpSlicesTo(ras):
    """Centre all slice views on the RAS point ``ras``."""
    slicer.vtkMRMLSliceNode.JumpAllSlices(
        slicer.mrmlScene, float(ras[0]), float(ras[1]), float(ras[2]), slicer.vtkMRMLSliceNode.CenteredJumpSlice
    )
