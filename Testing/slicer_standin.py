"""A stand-in ``slicer`` (plus ``qt``, ``SampleData``, ``PyTorchUtils``) shaped like Slicer 5.10 or 5.12, for testing the
Slicer glue (``*Lib/slicer_*.py``) without Slicer.

Only what differs between the two versions and what the glue calls is modelled, with the signatures read from
Slicer's sources (tags v5.10.0 and v5.12.3):

- ``slicer.packaging`` exists only from 5.12 (``pip_ensure(requirements, ..., requester=None, skip_in_testing=True)``);
- ``slicer.util.pip_install(requirements)`` on 5.10, ``pip_install(requirements, **kwargs)`` on 5.12;
- ``SampleData.SampleDataLogic.registerCustomSampleDataCategory`` exists only from 5.12;
- ``slicer.app.testingEnabled()`` (both).

Every call the glue makes is recorded in ``StandIn.calls`` as ``(name, args, kwargs)``.
"""

from __future__ import annotations

import contextlib
import sys
import types

GLUE_PREFIXES = ("DuralSacSegLib.slicer_", "FORAMEN3DLib.slicer_")


def purge_glue():
    """Forget imported glue modules (they bind the ``slicer`` module at import)."""
    for name in [n for n in sys.modules if n.startswith(GLUE_PREFIXES)]:
        del sys.modules[name]
        package, _, attribute = name.rpartition(".")
        if package in sys.modules and hasattr(sys.modules[package], attribute):
            delattr(sys.modules[package], attribute)  # else ``from package import glue`` finds the stale module


class Scene:
    """vtkMRMLScene stand-in: nodes, observers, Clear() (IDs restart after a clear, as in Slicer)."""

    StartCloseEvent, EndCloseEvent = 66000, 66001

    def __init__(self):
        self.nodes, self.observers, self._next_tag, self._next_id = [], {}, 1, 1

    def AddNode(self, node):
        node._id = f"{type(node).__name__}{self._next_id}"
        self._next_id += 1
        self.nodes.append(node)
        return node

    def IsNodePresent(self, node):
        return int(any(n is node for n in self.nodes))

    def GetNodeByID(self, node_id):
        return next((n for n in self.nodes if n._id == node_id), None)

    def RemoveNode(self, node):
        self.nodes = [n for n in self.nodes if n is not node]

    def AddObserver(self, event, callback):
        tag, self._next_tag = self._next_tag, self._next_tag + 1
        self.observers[tag] = (event, callback)
        return tag

    def RemoveObserver(self, tag):
        self.observers.pop(tag, None)

    def Clear(self):
        for event, callback in list(self.observers.values()):
            if event == self.StartCloseEvent:
                callback(self, event)
        self.nodes, self._next_id = [], 1
        for event, callback in list(self.observers.values()):
            if event == self.EndCloseEvent:
                callback(self, event)


class Node:
    """A node with an ID (``GetID``)."""

    def GetID(self):
        return self._id


class StandIn:
    """The installed stand-in modules and the record of calls."""

    def __init__(self, version=(5, 10), testing=False, confirm=True, cache_path="/tmp"):
        self.version = tuple(version)
        self.testing = testing
        self.confirm = confirm
        self.calls: list[tuple[str, tuple, dict]] = []
        self.modules: dict[str, types.ModuleType] = {}
        self._build(cache_path)

    # ------------------------------------------------------------------ helpers
    def record(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))

    def called(self, name):
        return [(a, k) for n, a, k in self.calls if n == name]

    def _build(self, cache_path):
        standin = self
        slicer = types.ModuleType("slicer")
        slicer.app = types.SimpleNamespace(
            majorVersion=self.version[0], minorVersion=self.version[1], cachePath=cache_path,
            testingEnabled=lambda: standin.testing, processEvents=lambda: None,
        )

        util = types.ModuleType("slicer.util")
        if self.version >= (5, 12):
            def pip_install(requirements, **kwargs):
                standin.record("pip_install", requirements, **kwargs)
        else:
            def pip_install(requirements):  # Slicer 5.10: no keyword arguments
                standin.record("pip_install", requirements)
        util.pip_install = pip_install

        def confirmOkCancelDisplay(text, windowTitle=None, parent=None, **kwargs):
            standin.record("confirmOkCancelDisplay", text, windowTitle=windowTitle, **kwargs)
            return standin.confirm

        util.confirmOkCancelDisplay = confirmOkCancelDisplay
        def launchConsoleProcess(args, useStartupEnvironment=True, updateEnvironment=None, cwd=None, **kwargs):
            """5.10's behaviour (5.12 adds blocking/logCallback/completedCallback keywords, default blocking)."""
            import os
            import subprocess

            allowed = {"blocking", "logCallback", "completedCallback"} if standin.version >= (5, 12) else set()
            if set(kwargs) - allowed:  # 5.12's extra keywords only; anything else is a TypeError as in Slicer
                raise TypeError(f"launchConsoleProcess() got unexpected keyword arguments {sorted(set(kwargs) - allowed)}")
            standin.record("launchConsoleProcess", args, useStartupEnvironment=useStartupEnvironment,
                           updateEnvironment=updateEnvironment)
            env = None
            if updateEnvironment:
                env = os.environ.copy()
                env.update(updateEnvironment)
            return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    universal_newlines=True, cwd=cwd)

        util.launchConsoleProcess = launchConsoleProcess
        util.errorDisplay = lambda text, windowTitle=None, **kwargs: standin.record("errorDisplay", text)
        util.warningDisplay = lambda text, windowTitle=None, **kwargs: standin.record("warningDisplay", text)

        @contextlib.contextmanager
        def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
            try:
                yield
            except Exception as exc:
                standin.record("errorDisplay", message, str(exc))

        util.tryWithErrorDisplay = tryWithErrorDisplay

        def loadVolume(path, properties=None):
            standin.record("loadVolume", path, properties)
            return types.SimpleNamespace(path=path, properties=properties)

        util.loadVolume = loadVolume
        slicer.util = util
        self.modules["slicer.util"] = util

        if self.version >= (5, 12):
            packaging = types.ModuleType("slicer.packaging")

            def pip_ensure(requirements, constraints=None, skip_packages=None, prompt_install=True,
                           prompt_restart=True, requester=None, skip_in_testing=True, show_progress=True):
                standin.record("pip_ensure", requirements, requester=requester)
                if skip_in_testing and standin.testing:
                    return None  # 5.12 skips silently under --testing

            packaging.pip_ensure = pip_ensure
            slicer.packaging = packaging
            self.modules["slicer.packaging"] = packaging

        slm = types.ModuleType("slicer.ScriptedLoadableModule")

        class ScriptedLoadableModuleLogic:
            def __init__(self, parent=None):
                self.parent = parent

        slm.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
        slicer.ScriptedLoadableModule = slm
        self.modules["slicer.ScriptedLoadableModule"] = slm
        slicer.mrmlScene = Scene()

        class vtkMRMLSliceNode:
            CenteredJumpSlice = 1

            @staticmethod
            def JumpAllSlices(scene, r, a, s, mode=0):
                standin.record("JumpAllSlices", r, a, s, mode)

        slicer.vtkMRMLSliceNode = vtkMRMLSliceNode
        self.modules["slicer"] = slicer

        qt = types.ModuleType("qt")
        qt.QFileDialog = types.SimpleNamespace(getSaveFileName=lambda *a, **k: "")

        class QTimer:
            """Timer stand-in: tests call the connected slot themselves (``fire``)."""

            def __init__(self):
                self.interval, self.active, self.slots = 0, False, []

            def setInterval(self, ms):
                self.interval = ms

            def connect(self, signal, slot):
                self.slots.append(slot)

            def start(self):
                self.active = True

            def stop(self):
                self.active = False

            def fire(self):
                for slot in list(self.slots):
                    slot()

        qt.QTimer = QTimer
        self.modules["qt"] = qt

        sample_data = types.ModuleType("SampleData")

        class SampleDataLogic:
            @staticmethod
            def registerCustomSampleDataSource(category="Custom", sampleName=None, uris=None, fileNames=None,
                                               nodeNames=None, customDownloader=None, thumbnailFileName=None,
                                               loadFileTypes=None, loadFiles=None, loadFileProperties=None,
                                               checksums=None, loadFileType=None):
                standin.record("registerCustomSampleDataSource", category=category, sampleName=sampleName,
                               customDownloader=customDownloader, thumbnailFileName=thumbnailFileName)

        if self.version >= (5, 12):
            def registerCustomSampleDataCategory(category, title):
                standin.record("registerCustomSampleDataCategory", category, title)

            SampleDataLogic.registerCustomSampleDataCategory = staticmethod(registerCustomSampleDataCategory)
        sample_data.SampleDataLogic = SampleDataLogic
        self.modules["SampleData"] = sample_data

        torch_utils = types.ModuleType("PyTorchUtils")

        class PyTorchUtilsLogic:
            @staticmethod
            def torchInstalled():
                return False

            def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
                             torchvisionVersionRequirement=None):
                standin.record("installTorch", askConfirmation=askConfirmation)
                return None

        torch_utils.PyTorchUtilsLogic = PyTorchUtilsLogic
        self.modules["PyTorchUtils"] = torch_utils

    def install_plain(self):
        """Put the stand-in modules into ``sys.modules`` for good (subprocesses)."""
        purge_glue()
        sys.modules.update(self.modules)
        return self

    def install(self, monkeypatch):
        """Put the stand-in modules into ``sys.modules`` (undone by ``monkeypatch``) and drop cached glue."""
        purge_glue()
        for name, module in self.modules.items():
            monkeypatch.setitem(sys.modules, name, module)
        if "slicer.packaging" not in self.modules:
            monkeypatch.delitem(sys.modules, "slicer.packaging", raising=False)
        return self
