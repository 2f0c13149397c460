"""Slicer glue: the FORAMEN3D parameter node (``@parameterNodeWrapper``), bound to the .ui by ``SlicerParameterName``."""

import enum
import pathlib
from typing import Annotated

from DuralSacSegLib.slicer_parameters import ComputeDevice  # noqa: F401 - shared with DuralSacSeg
from slicer import (
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLMarkupsLineNode,
    vtkMRMLModelNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper


class PlanningSide(enum.Enum):
    LEFT = "left"
    RIGHT = "right"

    def label(self):
        return self.value


class PlanningTarget(enum.Enum):
    """Targets of ``FORAMEN3DLib.planning.plan``."""

    DISC_POSTERIOR_THIRD = "disc-posterior-third"
    FORAMEN_CENTRE = "foramen-centre"

    def label(self):
        return {"disc-posterior-third": "posterior third of the L4-5 disc", "foramen-centre": "foramen centre"}[self.value]


@parameterNodeWrapper
class FORAMEN3DParameterNode:
    """Parameters of FORAMEN3D.

    inputVolume - sagittal / 3D lumbar MR volume (best: 3D T2 SPACE).
    model - catalogue name of the embedded 3D model ("default") or the imported-file marker; weightsFile - user .pt file.
    device - compute device.
    l45Point - optional point list: its first point is the L4-5 disc centre placed by hand (when the model takes the
    wrong level); None: the locator (level network) finds it.
    outputSegmentation - L4 / L4-5 disc / L5 segments; measurementTable - Metric / Side / Value / Unit / Flag.
    trajectoryLine - entry (point 1) and target (point 2) of the working channel; channelModel - its cylinder.
    side, target, diameterMm - trajectory planning settings (channel 6-8 mm, default 7.5 mm).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    model: str = "default"
    weightsFile: pathlib.Path
    device: ComputeDevice = ComputeDevice.AUTO
    l45Point: vtkMRMLMarkupsFiducialNode
    outputSegmentation: vtkMRMLSegmentationNode
    measurementTable: vtkMRMLTableNode
    trajectoryLine: vtkMRMLMarkupsLineNode
    trajectoryTable: vtkMRMLTableNode
    channelModel: vtkMRMLModelNode
    side: PlanningSide = PlanningSide.LEFT
    target: PlanningTarget = PlanningTarget.DISC_POSTERIOR_THIRD
    diameterMm: Annotated[float, WithinRange(6.0, 8.0)] = 7.5
