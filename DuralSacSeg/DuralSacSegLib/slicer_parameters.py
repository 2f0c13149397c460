"""Slicer glue: the DuralSacSeg parameter node (``@parameterNodeWrapper``), bound to the .ui by ``SlicerParameterName``."""

import enum
import pathlib

from slicer import vtkMRMLPlotChartNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import parameterNodeWrapper


class ComputeDevice(enum.Enum):
    """Device choices of the panel (values are those of ``spinemorph.device.select_device``)."""

    AUTO = "auto"
    CUDA = "cuda"
    MPS = "mps"
    CPU = "cpu"

    def label(self):
        return {"auto": "auto", "cuda": "CUDA", "mps": "MPS", "cpu": "CPU"}[self.value]


@parameterNodeWrapper
class DuralSacSegParameterNode:
    """Parameters of DuralSacSeg.

    inputVolume - axial (or any 3D) lumbar MR volume.
    model - catalogue name of the embedded model, or the "imported weights file" marker (set by the model combo box).
    weightsFile - user weights file (.pt) when the imported-file entry is chosen.
    device - compute device.
    wholeSlices - run the network on every whole 320 x 320 slice (the source method) instead of a window around the
        canal (default, about 3x faster on a CPU: docs/benchmark.md; see DuralSacSegLib.roi).
    outputSegmentation, outputTable, outputChart - results (created by Apply when empty).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    model: str = "dsca-multiresunet"
    weightsFile: pathlib.Path
    device: ComputeDevice = ComputeDevice.AUTO
    wholeSlices: bool = False
    outputSegmentation: vtkMRMLSegmentationNode
    outputTable: vtkMRMLTableNode
    outputChart: vtkMRMLPlotChartNode
