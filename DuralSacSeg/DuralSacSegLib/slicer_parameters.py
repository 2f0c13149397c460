"""Slicer glue: the DuralSacSeg parameter node (``@parameterNodeWrapper``), bound to the .ui by ``SlicerParameterName``."""

import enum
import json
import os
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


def catalogPath():
    """The embedded models' catalogue (``DuralSacSegLib.models.CATALOG_PATH``: ``Resources/Models`` next to the package,
    in the source tree and in the installed extension)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Resources", "Models", "catalog.json")


def defaultModelName(path=None):
    """The catalogue's ``default`` model name, read as JSON (``DuralSacSegLib.models`` needs the dependencies that may
    not be installed yet, and building the panel must never import torch). ``""`` when the catalogue is missing or
    unreadable: the model combo box then selects its first entry and the panel shows the catalogue error."""
    try:
        with open(path or catalogPath(), encoding="utf-8") as fh:
            default = json.load(fh).get("default")
    except (OSError, ValueError, AttributeError):
        return ""
    return default if isinstance(default, str) else ""


@parameterNodeWrapper
class DuralSacSegParameterNode:
    """Parameters of DuralSacSeg.

    inputVolume - axial (or any 3D) lumbar MR volume.
    model - catalogue name of the embedded model (default: the catalogue's default), or the "imported weights file"
        marker (set by the model combo box).
    weightsFile - user weights file (.pt) when the imported-file entry is chosen.
    device - compute device.
    wholeSlices - run the network on every whole 320 x 320 slice (the source method) instead of a window around the
        canal (default, about 3x faster on a CPU: docs/benchmark.md; see DuralSacSegLib.roi).
    outputSegmentation, outputTable, outputChart - results (created by Apply when empty).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    model: str = defaultModelName()
    weightsFile: pathlib.Path
    device: ComputeDevice = ComputeDevice.AUTO
    wholeSlices: bool = False
    outputSegmentation: vtkMRMLSegmentationNode
    outputTable: vtkMRMLTableNode
    outputChart: vtkMRMLPlotChartNode
