import slicer
import vtk
from FORAMEN3DLib import slicer_logic, slicer_widget
from FORAMEN3DLib.slicer_parameters import FORAMEN3DParameterNode
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


class FORAMEN3D(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("FORAMEN3D")
        self.parent.categories = ["Segmentation.SpineMorph"]  # extension category "Segmentation", submenu SpineMorph
        # DuralSacSeg provides the shared glue (dependency installation, the "SpineMorph" sample data)
        self.parent.dependencies = ["DuralSacSeg"]
        self.parent.contributors = ["SpineMorph developers (SpineMorph project)"]
        self.parent.helpText = _("""
3D segmentation of L4, the L4-5 disc and L5 (3D U-Net), surface models, L4-5 intervertebral foramen height, width
and area for both sides as editable markups with live values and flags, and transforaminal endoscopic trajectory
planning (entry/target, channel 6-8 mm, angle sweep). Research use only.
See <a href="https://github.com/spinemorph/SlicerSpineMorph#foramen3d">the documentation</a>.
""")
        self.parent.acknowledgementText = _("""
Models trained on images synthesised from the SPIDER lumbar spine MRI label maps (van der Graaf JW et al.,
Sci Data 11, 264 (2024), CC BY 4.0) and on procedural phantoms.
""")


class FORAMEN3DWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FORAMEN3D.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = FORAMEN3DLogic()
        self.controller = slicer_widget.FORAMEN3DController(self.ui, self.logic, lambda: self._parameterNode, self._observeMarkup)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        c = self.controller
        self.ui.applyButton.connect("clicked(bool)", lambda checked: c.onApply())
        self.ui.modelComboBox.connect("currentIndexChanged(int)", c.onModelChanged)
        self.ui.remeasureButton.connect("clicked(bool)", lambda checked: c.onRemeasure())
        self.ui.editButton.connect("clicked(bool)", lambda checked: c.onEditInSegmentEditor())
        self.ui.lateralViewsButton.connect("clicked(bool)", lambda checked: c.onLateralViews())
        self.ui.suggestButton.connect("clicked(bool)", lambda checked: c.onSuggest())
        self.ui.evaluateButton.connect("clicked(bool)", lambda checked: c.onEvaluate())
        self.initializeParameterNode()
        c.populateModels()

    def _observeMarkup(self, markupsNode):
        if not self.hasObserver(markupsNode, slicer.vtkMRMLMarkupsNode.PointModifiedEvent, self.controller.onMarkupModified):
            self.addObserver(markupsNode, slicer.vtkMRMLMarkupsNode.PointModifiedEvent, self.controller.onMarkupModified)

    def onReload(self):
        slicer_widget.reloadGlue("FORAMEN3DLib")
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self):
        self.controller.cancelRun()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event):
        self.controller.cancelRun()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self.controller.syncModelFromParameters()
            self.ui.measurementTableView.setMRMLTableNode(self._parameterNode.measurementTable)
            self.ui.trajectoryTableView.setMRMLTableNode(self._parameterNode.trajectoryTable)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None):
        # the device warning follows the parameter node (written by connectGui before this observer runs), never the
        # combo box signal, which can fire before connectGui has stored the new choice
        self.controller.onParameterNodeModified()
        pn = self._parameterNode
        running = getattr(self.controller, "currentProcess", None) is not None  # a segmentation process runs
        ready = bool(pn and pn.inputVolume) and not running
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = _("Segment L4 / disc / L5 and measure both foramina") if ready else _("Select an input volume")
        segmented = bool(ready and pn.outputSegmentation)
        for button in (self.ui.remeasureButton, self.ui.editButton, self.ui.lateralViewsButton, self.ui.suggestButton):
            button.enabled = segmented
        self.ui.evaluateButton.enabled = bool(segmented and pn.trajectoryLine)


class FORAMEN3DLogic(slicer_logic.FORAMEN3DLogicBase):
    """Batch use from the Python console: ``FORAMEN3DLogic().process(volumeNode)`` (see ``process``)."""

    def getParameterNode(self):
        return FORAMEN3DParameterNode(super().getParameterNode())

    def process(self, inputVolume, model="default", device="auto", outputSegmentation=None, measurementTable=None,
                progress=None, shouldCancel=None, showResult=True, measure=True, l45PointNode=None):
        """Segment L4 / L4-5 disc / L5, build the surface models and measure both foramina.

        Blocking. The network runs in a separate process (``spinemorph.inference_worker`` with Slicer's Python); torch
        is never imported into Slicer's process.

        :param inputVolume: vtkMRMLScalarVolumeNode (sagittal / 3D lumbar MRI; best 3D T2 SPACE).
        :param model: "default", another catalogue name, or a weights file path. :param device: auto/cuda/mps/cpu.
        :param outputSegmentation, measurementTable: nodes to fill (created when None).
        :param progress: ``progress(fraction, message)``; ``shouldCancel()`` returning True stops the run.
        :param measure: also measure the foramina (markups + Metric/Side/Value/Unit/Flag table).
        :param l45PointNode: optional point list whose first point is the L4-5 disc centre (when the model takes the
            wrong level); the locator used and the QC notes are logged.
        :return: ``(segmentationNode, measurementTableNode)``; ``self.measurementRows(case)`` gives the table rows.
        """
        return self._process(inputVolume, model, device, outputSegmentation, measurementTable, progress, shouldCancel,
                             showResult, measure, l45PointNode)


class FORAMEN3DTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_FORAMEN3D_phantom()

    def test_FORAMEN3D_phantom(self):
        """Generated phantom -> segments, models, measurements vs exact truth, live edit, trajectory planning."""
        from FORAMEN3DLib.slicer_selftest import run_self_test

        run_self_test(self, FORAMEN3DLogic())
