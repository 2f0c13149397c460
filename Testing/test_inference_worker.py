"""Segmentation in a separate process: the Slicer-free worker (``spinemorph.inference_worker``) run for real on the
sample phantom with accuracy checked against its exact truth (``spinemorph.phantom_acceptance``), and the Slicer-side
controller (``DuralSacSegLib.slicer_process``) with a stand-in ``slicer``/``qt``: QTimer polling, progress, Cancel
(kills the process), blocking console runs, and no torch in the calling process."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest
from slicer_standin import StandIn, purge_glue

from spinemorph import phantom_acceptance as acc
from spinemorph.app import inference_worker as iw

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from spinemorph.gui_support import sample_study

    return sample_study(tmp_path_factory.mktemp("study"), seed=0)


def _run_worker(task, image, out, *extra):
    cmd = iw.worker_command(sys.executable, task, image, out, device="cpu") + ["--threads", "1", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=ENV)
    return done, [iw.parse_line(line) for line in done.stdout.splitlines()]


# ====================================================================== protocol
def test_protocol_lines_round_trip():
    line = iw.format_message(iw.PROGRESS, {"fraction": 0.25, "message": "segmenting"})
    msg = iw.parse_line(line + "\n")
    assert msg.kind == "progress" and msg.data == {"fraction": 0.25, "message": "segmenting"}
    assert iw.parse_line("SPINEMORPH_DONE {not json").kind == "log"
    assert iw.parse_line("SPINEMORPH_ERROR [1, 2]").kind == "log"
    assert iw.parse_line("Traceback (most recent call last):").kind == "log"
    cmd = iw.worker_command("py", "dsca", "in.nrrd", "out", model="dsca-unet", device="cpu", whole_slices=True)
    assert cmd == ["py", "-u", "-m", "spinemorph.inference_worker", "dsca", "--input", "in.nrrd", "--output-dir", "out",
                   "--device", "cpu", "--model", "dsca-unet", "--whole-slices"]
    with pytest.raises(ValueError):
        iw.worker_command("py", "segment", "a", "b")
    path = iw.python_path_for_worker(ROOT / "spinemorph", ROOT / "DuralSacSeg" / "DuralSacSegLib",
                                     existing=os.pathsep.join(["/x", str(ROOT)]))
    assert path.split(os.pathsep) == [str(ROOT), str(ROOT / "DuralSacSeg"), "/x"]


def test_worker_reports_a_bad_input_as_one_error_line(tmp_path):
    done, messages = _run_worker("dsca", tmp_path / "missing.nrrd", tmp_path / "out")
    assert done.returncode == 1
    errors = [m for m in messages if m.kind == "error"]
    assert len(errors) == 1 and "missing.nrrd" in errors[0].data["message"] and not errors[0].data["cancelled"]
    assert "\n" not in errors[0].data["message"]


# ====================================================================== the worker on the phantom, with accuracy
@pytest.mark.slow
def test_dsca_worker_on_the_phantom_meets_the_acceptance(study, tmp_path):
    from spinemorph.segio import read_seg_nrrd

    done, messages = _run_worker("dsca", study["axial_t1"], tmp_path / "out")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    kinds = [m.kind for m in messages]
    assert kinds[:2] == ["pid", "device"] and kinds[-1] == "done" and "progress" in kinds
    assert messages[0].data["pid"] > 0  # the worker's own pid, first (Cancel behind the PythonSlicer launcher)
    fractions = [m.data["fraction"] for m in messages if m.kind == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    result = iw.read_result("dsca", tmp_path / "out")
    exact = [row["dsca_axial_mm2"] for row in study["truth"]["axial_slices"]]
    true_mask, _ = read_seg_nrrd(study["axial_dural_sac_seg"])
    assert acc.dsca_failures(result.table.areas_mm2(), exact, result.mask.array, true_mask.array) == []
    assert result.mask.shape == true_mask.shape and result.device == "cpu"
    np.testing.assert_allclose(result.mask.origin_mm, true_mask.origin_mm, atol=1e-4)


@pytest.mark.slow
def test_foramen_worker_on_the_phantom_meets_the_acceptance(study, tmp_path):
    from FORAMEN3DLib import markup_model
    from FORAMEN3DLib.morphometry import measure_foramen

    from spinemorph.segio import read_seg_nrrd

    done, messages = _run_worker("foramen", study["space_t2"], tmp_path / "out")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = iw.read_result("foramen", tmp_path / "out")
    true_labels, _ = read_seg_nrrd(study["space_foramen_seg"])
    state = markup_model.MeasurementState(measure_foramen(result.labels))
    failures = acc.foramen_failures(result.labels.array, true_labels.array, state.values,
                                    study["truth"]["truth"]["foramen"])
    assert failures == []
    assert json.loads((tmp_path / "out" / iw.RESULT_NAME).read_text())["model"]


def test_acceptance_catches_a_broken_result():
    exact = [156.0] * 4
    assert acc.dsca_failures([150, 160, 170, 150], exact) == []
    assert acc.dsca_failures([0, 0, 0, 0], exact)  # empty masks
    assert acc.dsca_failures([156] * 3, exact) == ["3 table rows for 4 slices"]
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[:2] = 1
    labels[2] = 2
    labels[3] = 3
    truth = {"height_mm": 21.0, "width_mm": 9.0, "area_mm2": 200.0}
    values = {"left": dict(truth), "right": dict(truth)}
    assert acc.foramen_failures(labels, labels, values, {"left": truth, "right": truth}) == []
    swapped = np.where(labels == 1, 3, np.where(labels == 3, 1, labels))  # L4 <-> L5 label swap
    assert len(acc.foramen_failures(swapped, labels, values, {"left": truth, "right": truth})) == 2
    values["right"]["width_mm"] = 12.0
    assert acc.foramen_failures(labels, labels, values, {"left": truth, "right": truth}) == [
        "right width_mm 12.00 vs exact 9.00 (> 2.0 mm)"]


# ====================================================================== Slicer-side controller (stand-in slicer)
def _popen(args, env):
    return subprocess.Popen(args, env={**ENV, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def slicer_process(monkeypatch):
    standin = StandIn((5, 10)).install(monkeypatch)
    module = importlib.import_module("DuralSacSegLib.slicer_process")
    module._standin = standin
    yield module
    purge_glue()


def _standin_calls(module):
    return module._standin.calls


def _axial_image(study):
    from spinemorph.volume import read_volume

    return read_volume(study["axial_t1"])


@pytest.mark.slow
def test_panel_run_polls_with_a_timer_and_loads_the_result(slicer_process, study):
    process = slicer_process.InferenceProcess("foramen", _foramen_image(study), device="cpu", launcher=_popen,
                                              python=sys.executable)
    progress, finished = [], []
    process.start(lambda f, m: progress.append(f), lambda result, error: finished.append((result, error)))
    assert process.timer.active and process.timer.interval == slicer_process.POLL_INTERVAL_MS
    deadline = time.time() + 600
    while not finished and time.time() < deadline:
        process.timer.fire()  # what Qt does every 100 ms: the GUI thread is never blocked
        time.sleep(0.05)
    (result, error), = finished
    assert error is None and result.labels.shape == _foramen_image(study).shape
    assert progress and progress[-1] == 1.0 and not process.timer.active
    assert not os.path.exists(process.folder)  # the temporary folder is removed


def _foramen_image(study):
    from spinemorph.volume import read_volume

    return read_volume(study["space_t2"])


def test_cancel_kills_the_process(slicer_process, study):
    from spinemorph.gui_support import is_cancelled, user_message

    process = slicer_process.InferenceProcess("dsca", _axial_image(study), device="cpu", launcher=_popen,
                                              python=sys.executable)
    finished = []
    process.start(lambda f, m: None, lambda result, error: finished.append((result, error)))
    time.sleep(0.5)
    process.cancel()  # the Cancel button
    deadline = time.time() + 120
    while not finished and time.time() < deadline:
        process.timer.fire()
        time.sleep(0.05)
    (result, error), = finished
    assert result is None and is_cancelled(error) and user_message(error).startswith("Cancelled")
    assert process.proc.poll() is not None  # the worker is gone


def test_blocking_console_run_with_should_cancel(slicer_process, study):
    from spinemorph.errors import SpineMorphError

    process = slicer_process.InferenceProcess("dsca", _axial_image(study), device="cpu", launcher=_popen,
                                              python=sys.executable)
    t0 = time.time()
    with pytest.raises(SpineMorphError, match="cancelled"):
        process.run(progress=lambda f, m: None, shouldCancel=lambda: time.time() - t0 > 1.0)
    assert process.proc.poll() is not None


def test_worker_failure_becomes_the_error_message(slicer_process, tmp_path):
    from spinemorph.errors import SpineMorphError
    from spinemorph.volume import Volume

    tiny = Volume(np.zeros((1, 4, 4), np.float32), spacing_mm=(1.0, 1.0, 1.0))  # flat image: the core refuses it
    # default launcher: slicer.util.launchConsoleProcess (stand-in with 5.10's signature and behaviour)
    process = slicer_process.InferenceProcess("dsca", tiny, device="cpu", python=sys.executable)
    with pytest.raises(SpineMorphError) as info:
        process.run()
    assert "\n" not in str(info.value) and "status" not in str(info.value)  # the core's own one-line message
    (args, kwargs), = [(a, k) for n, a, k in _standin_calls(slicer_process) if n == "launchConsoleProcess"]
    assert args[0][1:5] == ["-u", "-m", "spinemorph.inference_worker", "dsca"]
    assert kwargs["useStartupEnvironment"] is False and str(ROOT) in kwargs["updateEnvironment"]["PYTHONPATH"]


@pytest.mark.slow
def test_calling_process_never_imports_torch(study, tmp_path):
    """The Slicer side (stand-in slicer) runs a whole segmentation with torch and MONAI unimportable in its process."""
    script = textwrap.dedent(f"""
        import os, subprocess, sys
        attempts = []
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "monai"):
                    attempts.append(name)
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from slicer_standin import StandIn
        StandIn((5, 12)).install_plain()
        from DuralSacSegLib import slicer_process
        from spinemorph.volume import read_volume
        launcher = lambda args, env: subprocess.Popen(args, env={{**os.environ, **env}}, stdout=subprocess.PIPE,
                                                      stderr=subprocess.STDOUT, text=True)
        image = read_volume({study["space_t2"]!r})
        result = slicer_process.InferenceProcess("foramen", image, device="cpu", launcher=launcher,
                                                 python=sys.executable).run()
        assert not attempts, attempts
        assert "torch" not in sys.modules and "monai" not in sys.modules
        print("ok", sorted(set(result.labels.array.ravel().tolist())))
    """)
    env = {**ENV, "PYTHONPATH": str(ROOT / "Testing")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stdout[-2000:] + done.stderr[-3000:]
    # the default FORAMEN3D model (foramen3d-fine-cpu) adds the dural sac (4) to L4 (1), the disc (2) and L5 (3)
    assert done.stdout.split("ok", 1)[1].strip() == "[0, 1, 2, 3, 4]"


# ====================================================================== the panel's asynchronous run (stand-in)
class _Widget:
    def __init__(self):
        self.visible, self.enabled, self.value, self.text, self.format, self.slots = False, True, 0, "", "", {}

    def setFormat(self, fmt):
        self.format = fmt

    def connect(self, signal, slot):
        self.slots[signal] = slot

    def disconnect(self, signal, slot):
        assert self.slots.pop(signal) == slot


class _FakeProcess:
    def __init__(self):
        self.deviceWarning, self.cancelled, self.callbacks = "", False, None

    def start(self, onProgress, onFinished):
        self.callbacks = (onProgress, onFinished)
        return self

    def cancel(self):
        self.cancelled = True


@pytest.fixture
def panel(monkeypatch):
    standin = StandIn((5, 10)).install(monkeypatch)
    common = importlib.import_module("DuralSacSegLib.slicer_common")
    controller = common.ComputeControllerMixin()
    controller.ui = types.SimpleNamespace(**{n: _Widget() for n in ("progressBar", "cancelButton", "applyButton",
                                                                    "statusLabel", "deviceWarningLabel")})
    yield controller, standin
    purge_glue()


def test_panel_async_run_progress_cancel_and_finish(panel):
    controller, standin = panel
    ui, process, finished = controller.ui, _FakeProcess(), []
    assert controller.startAsyncRun(process, finished.append) is process
    assert ui.progressBar.visible and ui.cancelButton.visible and not ui.applyButton.enabled
    onProgress, onFinished = process.callbacks
    process.deviceWarning = "CUDA not available: running on the CPU"  # the worker's SPINEMORPH_DEVICE line
    onProgress(0.5, "segmenting")
    assert ui.progressBar.value == 50 and ui.progressBar.format == "%p% segmenting"
    assert ui.deviceWarningLabel.visible and "CPU" in ui.deviceWarningLabel.text
    ui.cancelButton.slots["clicked()"]()  # the Cancel button is wired to the process
    assert process.cancelled
    process.deviceWarning = "CUDA not available: ran on the CPU"
    onFinished("result", None)
    assert finished == ["result"] and controller.currentProcess is None
    assert not ui.progressBar.visible and not ui.cancelButton.visible and ui.applyButton.enabled
    assert ui.cancelButton.slots == {} and ui.deviceWarningLabel.visible


def test_panel_async_run_errors(panel):
    from spinemorph.errors import InputError, SpineMorphError

    controller, standin = panel
    for error, shown in ((SpineMorphError("cancelled by the user"), False), (InputError("image must be 3D"), True)):
        process, finished = _FakeProcess(), []
        controller.startAsyncRun(process, finished.append, "DuralSacSeg failed.")
        process.callbacks[1](None, error)
        assert finished == [] and controller.ui.applyButton.enabled
        assert bool(standin.called("errorDisplay")) == shown
    assert controller.ui.statusLabel.text == "image must be 3D"

    class Broken(_FakeProcess):
        def start(self, onProgress, onFinished):
            raise SpineMorphError("PythonSlicer was not found on the PATH")

    with pytest.raises(SpineMorphError):
        controller.startAsyncRun(Broken(), finished.append)
    assert controller.ui.applyButton.enabled and not controller.ui.progressBar.visible and controller.currentProcess is None


@pytest.mark.parametrize("module", ["DuralSacSeg", "FORAMEN3D"])
def test_console_process_runs_the_worker_and_blocks(monkeypatch, module):
    """``logic.process(...)`` (console API) runs the separate process to the end, then fills the nodes."""
    StandIn((5, 12)).install(monkeypatch)
    logic_module = importlib.import_module(f"{module}Lib.slicer_logic")
    slicer_process = importlib.import_module("DuralSacSegLib.slicer_process")
    nodes = importlib.import_module(f"{module}Lib.slicer_nodes")
    monkeypatch.setattr(nodes, "volumeFromNode", lambda node: "image")
    runs, shown = [], []
    result = types.SimpleNamespace(device="cpu", locator="", l45_centre_lps=None, qc=())  # InferenceResult's fields

    def run(self, progress=None, shouldCancel=None):
        runs.append((self.task, self.image, self.model, self.device, self.wholeSlices, progress, shouldCancel))
        return result

    monkeypatch.setattr(slicer_process.InferenceProcess, "run", run)
    logic = getattr(logic_module, f"{module}LogicBase")()
    monkeypatch.setattr(logic, "ensureDependencies", lambda: None)
    monkeypatch.setattr(logic, "showResult", lambda *args: shown.append(args) or ("nodes",))
    progress, cancel = (lambda f, m: None), (lambda: False)
    if module == "DuralSacSeg":
        out = logic._process("volume", "dsca-unet", "cpu", None, None, None, progress, cancel, False, True)
        assert runs == [("dsca", "image", "dsca-unet", "cpu", True, progress, cancel)]
    else:
        out = logic._process("volume", "default", "cpu", None, None, progress, cancel, False, True)
        assert runs == [("foramen", "image", "default", "cpu", False, progress, cancel)]
    assert out == ("nodes",) and shown[0][:2] == ("volume", result)
    purge_glue()


def test_a_crashing_worker_is_an_error_not_a_crash(slicer_process, tmp_path):
    """A worker that dies (e.g. a segfault in torch: no protocol line, negative status) ends the run with a message
    naming the status and the last output; the calling process goes on."""
    from spinemorph.errors import SpineMorphError
    from spinemorph.volume import Volume

    def crashing(args, env):
        code = "import os, sys; print('loading model', flush=True); os.abort()"
        return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    image = Volume(np.zeros((4, 8, 8), np.float32), spacing_mm=(1.0, 1.0, 1.0))
    process = slicer_process.InferenceProcess("foramen", image, launcher=crashing, python=sys.executable)
    with pytest.raises(SpineMorphError, match=r"ended with status -?\d+ \(loading model\)"):
        process.run()
    assert process.finished and not os.path.exists(process.folder)


def _python_slicer_launcher(folder: Path) -> Path:
    """A ``PythonSlicer`` shaped like Slicer's: a launcher (CTK AppLauncher) that starts the real interpreter as its
    child with the output channels forwarded (QProcess::ForwardedChannels) and waits for it; it writes the child's
    pid into $SPINEMORPH_TEST_CHILD_PID."""
    path = folder / "PythonSlicer"
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent("""\
        import os, subprocess, sys
        child = subprocess.Popen([sys.executable, *sys.argv[1:]])
        with open(os.environ["SPINEMORPH_TEST_CHILD_PID"] + ".tmp", "w") as fh:
            fh.write(str(child.pid))
        os.replace(os.environ["SPINEMORPH_TEST_CHILD_PID"] + ".tmp", os.environ["SPINEMORPH_TEST_CHILD_PID"])
        sys.exit(child.wait())
        """))
    path.chmod(0o755)
    return path


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie has ended
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cancel_kills_the_worker_behind_the_python_slicer_launcher(slicer_process, study, tmp_path, monkeypatch):
    """Slicer's PythonSlicer is a launcher: Cancel must end the real worker (its child), not only the launcher, and
    the panel must hear of it at once (the worker holds the output pipe open while it runs: ~17 s here)."""
    from spinemorph.gui_support import is_cancelled

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _python_slicer_launcher(bin_dir)
    child_pid_file = tmp_path / "child.pid"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")  # found as Slicer finds it: on the PATH
    monkeypatch.setenv("SPINEMORPH_TEST_CHILD_PID", str(child_pid_file))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    process = slicer_process.InferenceProcess("dsca", _axial_image(study), device="cpu")  # default launcher
    finished = []
    process.start(lambda f, m: None, lambda result, error: finished.append((result, error)))
    deadline = time.time() + 60
    while not child_pid_file.exists() and time.time() < deadline:
        time.sleep(0.05)
    child = int(child_pid_file.read_text())
    assert child != process.proc.pid and _alive(child)
    process.cancel()  # the Cancel button
    deadline = time.time() + 10
    while not finished and time.time() < deadline:
        process.timer.fire()
        time.sleep(0.05)
    try:
        assert finished, "Cancel left the worker running behind the launcher"
        (result, error), = finished
        assert result is None and is_cancelled(error)
        assert not _alive(child)
    finally:
        if _alive(child):
            os.kill(child, 9)


def test_worker_error_line_survives_a_pipe_that_cannot_encode_the_message(tmp_path):
    """On Windows the worker's stdout pipe has the locale's encoding (cp1252): an error naming a path in a Cyrillic
    user folder must still end as one protocol error line, not as a UnicodeEncodeError while reporting it."""
    import io

    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="cp1252", newline="\n")
    missing = tmp_path / "Дмитрий" / "input.nrrd"
    code = iw.main(["dsca", "--input", str(missing), "--output-dir", str(tmp_path / "out")], stream=stream)
    stream.flush()
    lines = raw.getvalue().decode("cp1252").splitlines()
    errors = [m for m in map(iw.parse_line, lines) if m.kind == "error"]
    assert code == 1 and len(errors) == 1 and "input.nrrd" in errors[0].data["message"]


# ====================================================================== hand-placed L4-5 point (foramen)
def test_worker_command_carries_the_l45_point():
    cmd = iw.worker_command("py", "foramen", "in.nrrd", "out", device="cpu", l45_point=(-12.5, 3, 40.125))
    assert cmd[-1] == "--l45-point=-12.5,3.0,40.125"  # '=' form: the negative first value is not taken for an option
    args = iw.build_parser().parse_args(cmd[4:])
    assert args.l45_point == "-12.5,3.0,40.125"
    assert "--l45-point" not in " ".join(iw.worker_command("py", "foramen", "in.nrrd", "out"))  # old command kept
    with pytest.raises(ValueError, match="foramen task only"):
        iw.worker_command("py", "dsca", "in.nrrd", "out", l45_point=(1, 2, 3))
    for bad in ((1.0, 2.0), (1.0, float("nan"), 2.0), "1,x,3", "1,2"):
        with pytest.raises(ValueError, match="three finite numbers"):
            iw.worker_command("py", "foramen", "in.nrrd", "out", l45_point=bad)


def _fake_foramen_run(monkeypatch, tmp_path):
    """A tiny input image and a stand-in ``segment_volume`` that records its ``l45_point`` (no network)."""
    from FORAMEN3DLib import segment3d

    from spinemorph.volume import Volume, write_volume

    image = Volume(np.zeros((6, 8, 10), np.float32), spacing_mm=(1.0, 1.0, 1.0))
    write_volume(image, tmp_path / "in.nrrd")
    calls = []

    def fake_segment_volume(vol, model="default", device="auto", progress=None, l45_point=None, **kwargs):
        calls.append(l45_point)
        labels = vol.with_array(np.zeros(vol.shape, np.uint8))
        manual = l45_point is not None
        return segment3d.SegmentationResult(labels, labels, {"total": 0.1}, "fine-x", "cpu",
                                            ("level check: the dural sac ends 40 mm above",) if not manual else (),
                                            "manual point" if manual else "coarse model",
                                            tuple(l45_point) if manual else (1.5, 2.5, 3.5))

    monkeypatch.setattr(segment3d, "segment_volume", fake_segment_volume)
    return calls


def _main(argv):
    import io

    stream = io.StringIO()
    code = iw.main(argv, stream=stream)
    return code, [iw.parse_line(line) for line in stream.getvalue().splitlines()]


def test_worker_passes_the_l45_point_and_reports_locator_centre_and_qc(monkeypatch, tmp_path):
    calls = _fake_foramen_run(monkeypatch, tmp_path)
    out = tmp_path / "out"
    code, messages = _main(["foramen", "--input", str(tmp_path / "in.nrrd"), "--output-dir", str(out),
                            "--device", "cpu", "--l45-point=-10.5,20,30.25"])
    assert code == 0 and calls == [(-10.5, 20.0, 30.25)]  # LPS, as given: the worker does not flip it
    done, = [m for m in messages if m.kind == "done"]
    assert done.data["locator"] == "manual point" and done.data["l45_centre_lps"] == [-10.5, 20.0, 30.25]
    assert done.data["qc"] == []
    result = iw.read_result("foramen", out)
    assert result.locator == "manual point" and result.l45_centre_lps == (-10.5, 20.0, 30.25) and result.qc == ()
    # without a point: the coarse locator, its centre and the QC note come back the same way
    code, messages = _main(["foramen", "--input", str(tmp_path / "in.nrrd"), "--output-dir", str(out), "--device", "cpu"])
    result = iw.read_result("foramen", out)
    assert code == 0 and calls[-1] is None and result.locator == "coarse model"
    assert result.l45_centre_lps == (1.5, 2.5, 3.5) and result.qc == ("level check: the dural sac ends 40 mm above",)
    # a result.json of an older worker (no such keys) still reads
    old = iw.InferenceResult("foramen", None, None, {"model": "m", "device": "cpu"})
    assert (old.locator, old.l45_centre_lps, old.qc) == ("", None, ())


@pytest.mark.parametrize("argv_tail, words", [
    (["foramen", "--l45-point=1,2"], "three finite numbers"),
    (["foramen", "--l45-point=1,inf,2"], "three finite numbers"),
    (["dsca", "--l45-point=1,2,3"], "foramen task only"),
])
def test_worker_refuses_a_bad_l45_point_with_one_error_line(monkeypatch, tmp_path, argv_tail, words):
    calls = _fake_foramen_run(monkeypatch, tmp_path)
    task, option = argv_tail
    code, messages = _main([task, "--input", str(tmp_path / "in.nrrd"), "--output-dir", str(tmp_path / "out"), option])
    errors = [m for m in messages if m.kind == "error"]
    assert code == 1 and len(errors) == 1 and words in errors[0].data["message"] and "\n" not in errors[0].data["message"]
    assert not errors[0].data["cancelled"] and calls == [] and not any(m.kind == "done" for m in messages)


def _disc_centre_lps(labels_volume):
    """Centroid (LPS mm) of the L4-5 disc (label 2) of the phantom's exact label map."""
    ijk = np.argwhere(labels_volume.array == 2).mean(axis=0)[::-1]  # array axes are (k, j, i)
    return tuple(float(v) for v in labels_volume.index_to_lps(ijk))


@pytest.mark.slow
def test_foramen_worker_with_a_hand_placed_point_on_the_phantom(slicer_process, study):
    """Real worker, real default model: the point (the exact disc centre, LPS) reaches ``segment_volume`` — the
    result says "manual point" and is centred there — and the segmentation still meets the phantom's acceptance;
    a point outside the image comes back as one clear error."""
    from FORAMEN3DLib import markup_model
    from FORAMEN3DLib.morphometry import measure_foramen

    from spinemorph.errors import SpineMorphError
    from spinemorph.segio import read_seg_nrrd

    true_labels, _ = read_seg_nrrd(study["space_foramen_seg"])
    point = _disc_centre_lps(true_labels)
    image = _foramen_image(study)
    process = slicer_process.InferenceProcess("foramen", image, device="cpu", launcher=_popen, python=sys.executable,
                                              l45Point=point)
    result = process.run()
    assert result.locator == "manual point"
    np.testing.assert_allclose(result.l45_centre_lps, point, atol=1e-3)
    state = markup_model.MeasurementState(measure_foramen(result.labels))
    assert acc.foramen_failures(result.labels.array, true_labels.array, state.values,
                                study["truth"]["truth"]["foramen"]) == []
    far = (point[0] + 1000.0, point[1], point[2])
    process = slicer_process.InferenceProcess("foramen", image, device="cpu", launcher=_popen, python=sys.executable,
                                              l45Point=far)
    with pytest.raises(SpineMorphError, match="outside the image") as info:
        process.run()
    assert "\n" not in str(info.value) and "LPS" in str(info.value)
