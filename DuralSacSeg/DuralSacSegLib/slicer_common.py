"""Slicer glue shared by the DuralSacSeg and FORAMEN3D panels: module reload, the progress/cancel guard, the model
combo box and the device warning / cancellable run of the controllers."""

import importlib
import sys
import weakref

import slicer


def reloadGlue(packageName):
    """Reload the already imported glue modules ``packageName.slicer_*`` (so that "Reload" picks up edited glue).

    The Slicer-free core is not reloaded: its classes are shared with other modules (``isinstance`` checks)."""
    for name in sorted(n for n in sys.modules if n.startswith(packageName + ".slicer_")):
        importlib.reload(sys.modules[name])


def nodeInScene(node, scene=None):
    """True when ``node`` is a node of the scene now. A lookup by ID is not enough: after a scene close IDs restart
    and are reused, so ``GetNodeByID(cached.GetID())`` can return another node."""
    if node is None:
        return False
    scene = scene if scene is not None else slicer.mrmlScene
    return bool(scene.IsNodePresent(node))


class SceneCacheMixin:
    """For logics that cache nodes or results: ``clearCaches()`` runs when the scene is closed (EndCloseEvent).

    The observer holds the logic weakly (console users create logics freely) and removes itself once the logic is
    gone."""

    def observeSceneClose(self, scene=None):
        scene = scene if scene is not None else slicer.mrmlScene
        ref = weakref.ref(self)
        tag = []

        def onEndClose(caller, event):
            logic = ref()
            if logic is None:
                caller.RemoveObserver(tag[0])
                return
            logic.clearCaches()

        tag.append(scene.AddObserver(scene.EndCloseEvent, onEndClose))
        return tag[0]

    def clearCaches(self):
        raise NotImplementedError


class RunGuard:
    """Progress bar + Cancel button for one long computation; ``relay`` feeds the core's callbacks."""

    def __init__(self, ui):
        from spinemorph.gui_support import ProgressRelay

        self.ui = ui
        self.relay = ProgressRelay(self._onProgress, slicer.app.processEvents)

    def _onProgress(self, percent, message):
        self.ui.progressBar.value = percent
        self.ui.progressBar.setFormat(f"%p% {message}" if message else "%p%")

    def __enter__(self):
        self.ui.progressBar.value = 0
        self.ui.progressBar.visible = True
        self.ui.cancelButton.visible = True
        self.ui.cancelButton.enabled = True
        self.ui.applyButton.enabled = False
        self.ui.cancelButton.connect("clicked()", self.relay.request_cancel)
        return self

    def __exit__(self, excType, exc, tb):
        self.ui.cancelButton.disconnect("clicked()", self.relay.request_cancel)
        self.ui.cancelButton.visible = False
        self.ui.progressBar.visible = False
        self.ui.applyButton.enabled = True
        return False


def mrmlTableRowFromViewIndex(view, index):
    """Row of the MRML table shown by the qMRMLTableView ``view`` for a clicked (proxy) model ``index``; -1 for none.

    ``qMRMLTableModel.mrmlTableRowIndex`` is a plain C++ method that PythonQt does not expose, so its rule is applied
    here through the exposed API: ``sortFilterProxyModel().mapToSource(index).row()`` is the model row, and the model
    has an extra first row (the column names) unless the table node uses column titles as the header.
    """
    sourceIndex = view.sortFilterProxyModel().mapToSource(index)
    tableNode = view.mrmlTableNode()
    if tableNode is None or not sourceIndex.isValid():
        return -1
    if hasattr(tableNode, "GetUseColumnTitleAsColumnHeader"):
        titleHeader = tableNode.GetUseColumnTitleAsColumnHeader()
    else:
        titleHeader = tableNode.GetUseColumnNameAsColumnHeader()
    row = sourceIndex.row() if titleHeader else sourceIndex.row() - 1
    return row if 0 <= row < tableNode.GetNumberOfRows() else -1


#: combo-box value of the "Imported weights file…" entry (same value as ``DuralSacSegLib.table_model.IMPORTED_WEIGHTS``)
IMPORTED_WEIGHTS = "__weights_file__"


class ModelComboMixin:
    """Model combo box shared by both panels: fill it, follow the parameter node, show the weights-file row.

    The controller provides ``self.ui`` (``modelComboBox``, ``statusLabel``, ``weightsPathLineEdit``, ``weightsLabel``),
    ``self._parameterNode()`` and ``modelEntries() -> (list of (label, value), error text)``.
    """

    def populateModels(self):
        entries, error = self.modelEntries()
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for label, value in entries:
            combo.addItem(label, value)
        combo.blockSignals(wasBlocked)
        if error:
            self.ui.statusLabel.text = error
        self.syncModelFromParameters()

    def _showWeightsRow(self, value):
        self.ui.weightsPathLineEdit.visible = self.ui.weightsLabel.visible = value == IMPORTED_WEIGHTS

    def syncModelFromParameters(self):
        pn = self._parameterNode()
        combo = self.ui.modelComboBox
        index = combo.findData(pn.model) if pn else -1
        combo.currentIndex = index if index >= 0 else 0
        if pn and index < 0 and combo.currentData:
            pn.model = combo.currentData  # a stored name that is no longer in the catalogue: use the default
        self._showWeightsRow(combo.currentData)

    def onModelChanged(self, index):
        pn = self._parameterNode()
        value = self.ui.modelComboBox.itemData(index)
        if pn and value:
            pn.model = value
        self._showWeightsRow(value)


class ComputeControllerMixin:
    """Device warning and cancellable runs shared by both panels' controllers.

    The controller provides ``self.ui`` (``deviceWarningLabel``, ``statusLabel`` and what :class:`RunGuard` uses).
    """

    def onParameterNodeModified(self):
        """Parameter node changed (called from the widget's parameter-node observer, i.e. after ``connectGui`` has
        written the combo box's choice into the node): refresh the device warning when the device changed."""
        pn = self._parameterNode()
        device = pn.device.value if pn else None
        if device != getattr(self, "_warnedDevice", None):
            self._warnedDevice = device
            if device:
                self.updateDeviceWarning(device)

    def updateDeviceWarning(self, preference, warning=None):
        """Show the CPU-fallback warning next to the device combo box (empty when a GPU is used).

        ``warning`` is what a run reported (the inference process resolves the device). Without it the warning is
        computed only if torch is already imported in Slicer's process: building or using the panel never imports
        torch (inference runs in a separate process)."""
        if warning is None:
            warning = ""
            if "torch" in sys.modules:
                from spinemorph.gui_support import resolve_device

                _, warning = resolve_device(preference)
        self.ui.deviceWarningLabel.text = warning
        self.ui.deviceWarningLabel.visible = bool(warning)

    def startAsyncRun(self, process, finish, failureTitle="The segmentation failed."):
        """Start ``process`` (``slicer_process.InferenceProcess``) and return at once: a QTimer moves the progress bar,
        Cancel kills the process, and when it has ended ``finish(result)`` fills the nodes (its errors are shown).

        Returns the process (``self.currentProcess`` while it runs)."""
        from spinemorph.gui_support import is_cancelled, user_message

        ui = self.ui

        def onProgress(fraction, message):
            if process.deviceWarning and ui.deviceWarningLabel.text != process.deviceWarning:
                self.updateDeviceWarning(None, warning=process.deviceWarning)  # the worker chose its device
            ui.progressBar.value = int(round(100 * max(0.0, min(1.0, fraction))))
            ui.progressBar.setFormat(f"%p% {message}" if message else "%p%")

        def restorePanel():
            ui.cancelButton.disconnect("clicked()", process.cancel)
            ui.cancelButton.visible = False
            ui.progressBar.visible = False
            ui.applyButton.enabled = True
            self.currentProcess = None

        def onFinished(result, error):
            restorePanel()
            if process.deviceWarning:
                self.updateDeviceWarning(None, warning=process.deviceWarning)
            if error is not None:
                ui.statusLabel.text = user_message(error)
                if not is_cancelled(error):
                    slicer.util.errorDisplay(f"{failureTitle}\n\n{user_message(error)}")
                return
            with slicer.util.tryWithErrorDisplay(failureTitle):
                finish(result)

        ui.progressBar.value = 0
        ui.progressBar.setFormat("%p% starting the segmentation process")
        ui.progressBar.visible = True
        ui.cancelButton.visible = True
        ui.cancelButton.enabled = True
        ui.applyButton.enabled = False
        ui.cancelButton.connect("clicked()", process.cancel)
        self.currentProcess = process
        try:
            process.start(onProgress, onFinished)
        except Exception:
            restorePanel()
            raise
        return process

    def cancelRun(self):
        """Stop a running segmentation process (module cleanup, scene close)."""
        process = getattr(self, "currentProcess", None)
        if process is not None:
            process.cancel()

    def runCancellable(self, call):
        """Run ``call(progress, shouldCancel)`` with the progress bar and Cancel button.

        Returns what ``call`` returns, or None when the user cancelled (the status line then says so). Any other error
        is re-raised as ``RuntimeError`` with a one-line message for ``tryWithErrorDisplay``.
        """
        from spinemorph.gui_support import is_cancelled, user_message

        try:
            with RunGuard(self.ui) as guard:
                return call(guard.relay.progress, guard.relay.should_cancel)
        except Exception as exc:
            if is_cancelled(exc):
                self.ui.statusLabel.text = user_message(exc)
                return None
            raise RuntimeError(user_message(exc)) from exc
