import slicer
import vtk
from DuralSacSegLib import slicer_logic, slicer_startup, slicer_widget
from DuralSacSegLib.slicer_parameters import DuralSacSegParameterNode
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


class DuralSacSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DuralSacSeg")
        self.parent.categories = ["Segmentation.SpineMorph"]  # extension category "Segmentation", submenu SpineMorph
        self.parent.dependencies = []
        self.parent.contributors = ["SpineMorph developers (SpineMorph project)"]
        self.parent.helpText = _("""
Per-slice dural sac cross-sectional area (DSCA) of lumbar MRI: a 2D network (MultiResUNet, U-Net or Attention U-Net)
segments the dural sac on every axial slice; the table lists axial and angle-corrected areas with stenosis categories.
Click a row to jump to its slice, edit the segment in the Segment Editor and recompute. Research use only.
See <a href="https://github.com/spinemorph/SlicerSpineMorph#duralsacseg">the documentation</a>.
""")
        self.parent.acknowledgementText = _("""
Models trained on images synthesised from the SPIDER lumbar spine MRI label maps (van der Graaf JW et al.,
Sci Data 11, 264 (2024), CC BY 4.0) and on procedural phantoms.
""")
        # Slicer version range check, "SpineMorph" sample data, segment terminology (DuralSacSegLib/slicer_startup.py)
        slicer.app.connect("startupCompleted()", slicer_startup.onStartupCompleted)


class DuralSacSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DuralSacSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DuralSacSegLogic()
        self.controller = slicer_widget.DuralSacSegController(self.ui, self.logic, lambda: self._parameterNode)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", lambda checked: self.controller.onApply())
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.controller.onModelChanged)
        self.ui.tableView.connect("clicked(QModelIndex)", self.controller.onTableClicked)
        self.ui.editButton.connect("clicked(bool)", lambda checked: self.controller.onEditInSegmentEditor())
        self.ui.recomputeButton.connect("clicked(bool)", lambda checked: self.controller.onRecomputeTable())
        self.ui.exportCsvButton.connect("clicked(bool)", lambda checked: self.controller.onExportCsv())
        self.initializeParameterNode()
        self.controller.populateModels()

    def onReload(self):
        slicer_widget.reloadGlue("DuralSacSegLib")
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
            self.controller.showTable(self._parameterNode.outputTable)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None):
        # the device warning follows the parameter node (written by connectGui before this observer runs), never the
        # combo box signal, which can fire before connectGui has stored the new choice
        self.controller.onParameterNodeModified()
        running = getattr(self.controller, "currentProcess", None) is not None  # a segmentation process runs
        ready = bool(self._parameterNode and self._parameterNode.inputVolume) and not running
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = _("Segment the dural sac and measure every slice") if ready else _("Select an input volume")
        hasResult = bool(self._parameterNode and self._parameterNode.outputSegmentation)
        self.ui.editButton.enabled = self.ui.recomputeButton.enabled = hasResult


class DuralSacSegLogic(slicer_logic.DuralSacSegLogicBase):
    """Batch use from the Python console: ``DuralSacSegLogic().process(volumeNode)`` (see ``process``)."""

    def getParameterNode(self):
        return DuralSacSegParameterNode(super().getParameterNode())

    def process(self, inputVolume, model=None, device="auto", outputSegmentation=None, outputTable=None,
                outputChart=None, progress=None, shouldCancel=None, showResult=True, wholeSlices=False):
        """Segment the dural sac on every axial slice of ``inputVolume`` and fill the per-slice DSCA table.

        Blocking. The network runs in a separate process (``spinemorph.inference_worker`` with Slicer's Python); torch
        is never imported into Slicer's process.

        :param inputVolume: vtkMRMLScalarVolumeNode (axial stack, or any 3D volume: resliced to axial planes).
        :param model: embedded model name (None: the catalogue default, dsca-unet), or a weights file path.
        :param device: "auto", "cuda", "mps" or "cpu".
        :param outputSegmentation, outputTable, outputChart: nodes to fill (created when None).
        :param progress: ``progress(fraction, message)``; ``shouldCancel()`` returning True stops the run.
        :param wholeSlices: run the network on whole slices (source method) instead of a window around the canal.
        :return: ``(segmentationNode, tableNode, chartNode)``; ``self.lastTable`` holds the core table.
        """
        return self._process(inputVolume, model, device, outputSegmentation, outputTable, outputChart, progress,
                             shouldCancel, showResult, wholeSlices)


class DuralSacSegTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_DuralSacSeg_phantom()

    def test_DuralSacSeg_phantom(self):
        """Generated phantom -> segmentation + table; table recomputed from the segment matches; CSV export."""
        from DuralSacSegLib.slicer_selftest import run_self_test

        run_self_test(self, DuralSacSegLogic())
