"""Slicer glue shared by the DuralSacSeg and FORAMEN3D panels: module reload and the progress/cancel guard."""

import importlib
import sys

import slicer


def reloadGlue(packageName):
    """Reload the already imported glue modules ``packageName.slicer_*`` (so that "Reload" picks up edited glue).

    The Slicer-free core is not reloaded: its classes are shared with other modules (``isinstance`` checks)."""
    for name in sorted(n for n in sys.modules if n.startswith(packageName + ".slicer_")):
        importlib.reload(sys.modules[name])


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
