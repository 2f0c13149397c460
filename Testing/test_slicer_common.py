"""The shared panel glue (DuralSacSegLib.slicer_common) with a stand-in ``slicer`` module and ``ui``: progress bar,
Cancel button, cancellation and error messages, device warning — what both controllers' Apply relies on."""

from __future__ import annotations

import importlib
import sys
import types

import pytest

from spinemorph.errors import InputError, SpineMorphError


class _Widget:
    def __init__(self):
        self.visible = False
        self.enabled = True
        self.value = 0
        self.text = ""
        self.format = ""
        self.slots = {}

    def setFormat(self, fmt):
        self.format = fmt

    def connect(self, signal, slot):
        self.slots[signal] = slot

    def disconnect(self, signal, slot):
        assert self.slots.pop(signal) == slot


@pytest.fixture
def common(monkeypatch):
    fake = types.ModuleType("slicer")
    fake.app = types.SimpleNamespace(processEvents=lambda: None)
    monkeypatch.setitem(sys.modules, "slicer", fake)
    monkeypatch.delitem(sys.modules, "DuralSacSegLib.slicer_common", raising=False)
    mod = importlib.import_module("DuralSacSegLib.slicer_common")
    yield mod
    sys.modules.pop("DuralSacSegLib.slicer_common", None)


@pytest.fixture
def controller(common):
    ui = types.SimpleNamespace(**{n: _Widget() for n in ("progressBar", "cancelButton", "applyButton", "statusLabel",
                                                           "deviceWarningLabel")})
    ctl = common.ComputeControllerMixin()
    ctl.ui = ui
    return ctl


def test_run_shows_progress_and_restores_the_panel(controller):
    ui = controller.ui
    seen = []

    def call(progress, should_cancel):
        assert ui.progressBar.visible and ui.cancelButton.visible and not ui.applyButton.enabled
        progress(0.5, "half way")
        seen.append((ui.progressBar.value, ui.progressBar.format, should_cancel()))
        return "nodes"

    assert controller.runCancellable(call) == "nodes"
    assert seen == [(50, "%p% half way", False)]
    assert not ui.progressBar.visible and not ui.cancelButton.visible and ui.applyButton.enabled
    assert ui.cancelButton.slots == {}  # the Cancel slot is disconnected again


def test_cancel_button_stops_the_run_quietly(controller):
    ui = controller.ui

    def call(progress, should_cancel):
        ui.cancelButton.slots["clicked()"]()  # the user presses Cancel
        if should_cancel():
            raise SpineMorphError("cancelled")
        return "not reached"

    assert controller.runCancellable(call) is None
    assert "cancel" in ui.statusLabel.text.lower() and ui.applyButton.enabled and not ui.progressBar.visible


def test_errors_become_one_line_messages(controller):
    def call(progress, should_cancel):
        raise InputError("image must be 3D, got shape (4, 5)")

    with pytest.raises(RuntimeError, match="image must be 3D") as info:
        controller.runCancellable(call)
    assert "\n" not in str(info.value) and controller.ui.applyButton.enabled


def test_device_warning_label(controller, monkeypatch):
    """With torch already imported in the process the panel shows the fallback warning (it never imports torch)."""
    from spinemorph import gui_support

    monkeypatch.setitem(sys.modules, "torch", sys.modules.get("torch") or types.ModuleType("torch"))

    monkeypatch.setattr(gui_support, "resolve_device", lambda pref: ("cpu", "no GPU available: running on the CPU"))
    controller.updateDeviceWarning("auto")
    assert controller.ui.deviceWarningLabel.visible and "CPU" in controller.ui.deviceWarningLabel.text
    monkeypatch.setattr(gui_support, "resolve_device", lambda pref: ("cuda", ""))
    controller.updateDeviceWarning("cuda")
    assert not controller.ui.deviceWarningLabel.visible and controller.ui.deviceWarningLabel.text == ""
