"""Slicer glue: run a segmentation in a separate process (``spinemorph.inference_worker``) and read it back.

Slicer's own process never imports torch: the input volume is written to a temporary folder, the worker runs with
Slicer's Python (``PythonSlicer``, on the PATH of Slicer 5.10 and 5.12), its output lines are read by a background
thread into a queue, and

- in the panel (:meth:`InferenceProcess.start`) a ``qt.QTimer`` polls that queue every 100 ms: the progress bar moves,
  the GUI stays responsive, Cancel kills the process (:meth:`InferenceProcess.cancel`), and ``onFinished`` receives the
  result (or the error) when the process has ended;
- from the Python console (``logic.process(...)``, :meth:`InferenceProcess.run`) the same process is waited for,
  blocking, with the progress / cancel callbacks of the core API.

``PythonSlicer`` is a launcher (CTK AppLauncher: it starts the real interpreter, ``python-real``, as its child with
the output channels forwarded), so the process ``launchConsoleProcess`` returns is not the worker: killing it alone
leaves the worker computing and the output pipe open. The worker therefore reports its own pid first
(``SPINEMORPH_PID``), and Cancel kills both.

The process is started with ``slicer.util.launchConsoleProcess(args, useStartupEnvironment=False,
updateEnvironment=...)``, whose signature is the same in 5.10 and 5.12 (5.12 adds keyword arguments, not used here).
"""

import logging
import os
import queue
import shutil
import signal
import tempfile
import threading

import qt
import slicer

#: polling interval of the panel (ms)
POLL_INTERVAL_MS = 100
#: most output lines handled per poll
MAX_LINES_PER_POLL = 500


def pythonSlicerExecutable():
    """Slicer's Python interpreter (``PythonSlicer``), as ``slicer.util`` finds it for ``pip``."""
    path = shutil.which("PythonSlicer")
    if not path:
        from spinemorph.errors import SpineMorphError

        raise SpineMorphError("PythonSlicer was not found on the PATH; run the segmentation from Slicer's own application")
    return path


def workerEnvironment():
    """``PYTHONPATH`` for the worker: the folders holding ``spinemorph``, ``DuralSacSegLib`` and ``FORAMEN3DLib`` here
    (one ``qt-scripted-modules`` folder in an installed extension; the module folders of a source checkout)."""
    import DuralSacSegLib
    import spinemorph
    from spinemorph.app.inference_worker import python_path_for_worker

    dirs = [os.path.dirname(spinemorph.__file__), os.path.dirname(DuralSacSegLib.__file__)]
    try:
        import FORAMEN3DLib

        dirs.append(os.path.dirname(FORAMEN3DLib.__file__))
    except ImportError:
        pass
    return {"PYTHONPATH": python_path_for_worker(*dirs, existing=os.environ.get("PYTHONPATH"))}


class InferenceProcess:
    """One run of the worker on a core ``Volume``.

    :param task: "dsca" or "foramen". :param image: input ``spinemorph.volume.Volume`` (LPS).
    :param model, device, wholeSlices: worker options.
    :param l45Point: ``foramen`` only: a hand-placed L4-5 disc centre, three numbers in **LPS** mm (None: the coarse
        locator finds it); the result's ``locator``, ``l45_centre_lps`` and ``qc`` say what was used.
    :param launcher: ``launcher(args, env) -> Popen`` (default: ``slicer.util.launchConsoleProcess``); tests inject one.
    :param python: interpreter (default: :func:`pythonSlicerExecutable`).
    """

    def __init__(self, task, image, model=None, device="auto", wholeSlices=False, launcher=None, python=None,
                 l45Point=None):
        self.task, self.image, self.model, self.device, self.wholeSlices = task, image, model, device, wholeSlices
        self.l45Point = l45Point  # checked by worker_command (ValueError naming it)
        self.launcher = launcher or _launchConsoleProcess
        self.python = python
        self.proc = None
        self.folder = None
        self.queue = queue.Queue()
        self.timer = None
        self.cancelled = False
        self.finished = False
        self.deviceWarning = ""
        self.workerPid = None  # the worker's own pid (``SPINEMORPH_PID``), the launcher's child under PythonSlicer
        self.errorMessage = None
        self.log = []
        self._onProgress = self._onFinished = None

    # ------------------------------------------------------------------ launching
    def _launch(self):
        from spinemorph.app.inference_worker import INPUT_NAME, worker_command
        from spinemorph.volume import write_volume

        self.folder = tempfile.mkdtemp(prefix=f"SpineMorph-{self.task}-")
        try:
            inputPath = os.path.join(self.folder, INPUT_NAME)
            write_volume(self.image, inputPath)
            args = worker_command(self.python or pythonSlicerExecutable(), self.task, inputPath,
                                  os.path.join(self.folder, "out"), self.model, self.device, self.wholeSlices,
                                  l45_point=self.l45Point)
            logging.info(f"SpineMorph: starting {' '.join(args)}")
            self.proc = self.launcher(args, workerEnvironment())
        except BaseException:
            self.finished = True
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        thread = threading.Thread(target=self._readOutput, name=f"SpineMorph-{self.task}-reader", daemon=True)
        thread.start()

    def _readOutput(self):
        """Background thread: every output line, then ``None`` and the exit status."""
        from spinemorph.app.inference_worker import parse_line

        try:
            for line in iter(self.proc.stdout.readline, ""):
                if self.workerPid is None and line.startswith("SPINEMORPH_PID "):
                    message = parse_line(line)
                    if message.kind == "pid":
                        self.workerPid = int(message.data.get("pid", 0)) or None
                        if self.cancelled:  # Cancel came before the worker said who it is
                            self._killWorker()
                self.queue.put(line)
        except (OSError, ValueError, UnicodeDecodeError) as exc:  # pipe closed by a kill / undecodable bytes
            self.queue.put(f"(output not readable: {exc})\n")
        self.queue.put(None)
        self.queue.put(self.proc.wait())

    # ------------------------------------------------------------------ reading
    def _drain(self, onProgress, wait=0.0, maxLines=MAX_LINES_PER_POLL):
        """Handle the queued lines (waiting up to ``wait`` seconds for the first one, at most ``maxLines`` so that
        the GUI / the cancel check get their turn); returns the exit status once the process has ended, else None."""
        from spinemorph.app.inference_worker import parse_line

        first = True
        for _ in range(maxLines):
            try:
                item = self.queue.get(timeout=wait) if first and wait > 0 else self.queue.get_nowait()
            except queue.Empty:
                return None
            first = False
            if item is None:
                return self.queue.get()
            message = parse_line(item)
            if message.kind == "progress" and onProgress:
                onProgress(float(message.data.get("fraction", 0.0)), str(message.data.get("message", "")))
            elif message.kind == "device":
                self.deviceWarning = str(message.data.get("warning", ""))
            elif message.kind == "error":
                self.errorMessage = str(message.data.get("message", "the segmentation process failed"))
                self.cancelled = self.cancelled or bool(message.data.get("cancelled"))
            elif message.kind == "log" and message.text:
                self.log.append(message.text)
                logging.info(f"[{self.task}] {message.text}")
        return None

    def _result(self, returnCode):
        """The worker's result, or raise its error (``SpineMorphError("cancelled ...")`` after Cancel)."""
        from spinemorph.app.inference_worker import read_result
        from spinemorph.errors import SpineMorphError

        try:
            if self.cancelled:
                raise SpineMorphError("cancelled by the user; the segmentation process was stopped")
            if returnCode != 0:
                if self.errorMessage:
                    raise SpineMorphError(self.errorMessage)
                tail = " | ".join(self.log[-2:])
                raise SpineMorphError(f"the segmentation process ended with status {returnCode} ({tail}); see the "
                                      "Python console log")
            return read_result(self.task, os.path.join(self.folder, "out"))
        finally:
            self.finished = True
            shutil.rmtree(self.folder, ignore_errors=True)

    # ------------------------------------------------------------------ blocking (console API)
    def run(self, progress=None, shouldCancel=None):
        """Run to the end (blocking; Slicer's events are processed); returns ``InferenceResult``."""
        self._launch()
        try:
            while True:
                returnCode = self._drain(progress, wait=POLL_INTERVAL_MS / 1000.0)
                if returnCode is not None:
                    return self._result(returnCode)
                if shouldCancel is not None and shouldCancel() and not self.cancelled:
                    self.cancel()
                app = getattr(slicer, "app", None)
                if app is not None:
                    app.processEvents()
        except BaseException:
            self.cancel()  # an error in a callback (or Ctrl+C) must not leave the worker running
            raise

    # ------------------------------------------------------------------ non-blocking (panel)
    def start(self, onProgress, onFinished):
        """Start and return at once; ``onProgress(fraction, message)`` from a QTimer, then ``onFinished(result,
        error)`` (exactly one of them None) when the process has ended."""
        self._onProgress, self._onFinished = onProgress, onFinished
        self._launch()
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.poll)
        self.timer.start()
        return self

    def poll(self):
        """QTimer slot: forward progress; when the process has ended stop polling and call ``onFinished``."""
        if self.finished:
            return
        returnCode = self._drain(self._onProgress)
        if returnCode is None:
            return
        self.timer.stop()
        try:
            result, error = self._result(returnCode), None
        except Exception as exc:  # handed to the panel, which shows it
            result, error = None, exc
        self._onFinished(result, error)

    def cancel(self):
        """Kill the worker (Cancel button / ``shouldCancel``); the run then ends as cancelled."""
        self.cancelled = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self._killWorker()

    def _killWorker(self):
        """Kill the worker itself (under ``PythonSlicer`` the launched process is only its launcher)."""
        pid = self.workerPid
        if pid and self.proc is not None and pid != self.proc.pid and not self.finished:
            try:
                os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))  # SIGTERM: TerminateProcess on Windows
            except OSError:  # already ended
                pass

    @property
    def running(self):
        return self.proc is not None and not self.finished


def _launchConsoleProcess(args, env):
    """``slicer.util.launchConsoleProcess`` (5.10 and 5.12): Slicer's environment plus ``env``, output piped as text."""
    return slicer.util.launchConsoleProcess(args, useStartupEnvironment=False, updateEnvironment=env)
