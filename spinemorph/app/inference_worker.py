"""Segmentation in a separate process: the worker entry point and the line protocol the Slicer modules read.

3D Slicer runs the networks out of its own process (as SlicerTotalSegmentator, SlicerMONAIAuto3DSeg and SlicerNNUnet
do): the panel writes the input volume to a temporary folder, starts ::

    PythonSlicer -m spinemorph.inference_worker dsca|foramen --input IN.nrrd --output-dir DIR [--model M] [--device D]
                 [--l45-point=X,Y,Z]

and reads its standard output line by line while the GUI stays responsive; Cancel kills the process; a crash of torch
ends the worker, not Slicer; torch is imported only here. The same command works from any Python with the project
installed (``python -m spinemorph.inference_worker ...``).

Protocol (one line each, ``PREFIX <json>``; any other line is log text):

- ``SPINEMORPH_PID {"pid": 1234}`` first: the worker's own process id. ``PythonSlicer`` is a launcher (CTK AppLauncher)
  that starts the real interpreter as its child with the output channels forwarded, so killing the launched process
  does not stop the worker; Cancel kills this pid as well;
- ``SPINEMORPH_DEVICE {"device": "cpu", "warning": "..."}`` once the device is chosen;
- ``SPINEMORPH_PROGRESS {"fraction": 0.42, "message": "..."}`` during the run;
- ``SPINEMORPH_DONE {...result info...}`` after the outputs are written (exit status 0); for ``foramen`` the info also
  holds ``locator`` (``"manual point"`` / ``"level network"`` / ``"coarse model"`` / ``"disc count"``; ``""`` for a
  single-pass model), ``l45_centre_lps`` (the crop centre used, LPS mm, or null), ``locator_details`` (the level
  network's or the disc count's account, or null) and ``qc`` (a list of QC notes, possibly empty) — readers that do
  not know these keys ignore them;
- ``SPINEMORPH_ERROR {"message": "...", "cancelled": false}`` on a failure (exit status 1; usage errors: 2).

Outputs in ``--output-dir`` (written atomically; :func:`read_result` reads them back):

- ``dsca``: ``mask.nrrd`` (dural sac 0/1 on the input grid), ``table.pickle`` (the :class:`DuralSacSegLib.dsca.DscaTable`
  the core computed; read only by the process that started the worker, from its own temporary folder), ``result.json``;
- ``foramen``: ``labels.nrrd`` (0 background, 1 L4, 2 L4-5 disc, 3 L5 on the input grid), ``result.json``.

``--l45-point=X,Y,Z`` (``foramen`` only, optional): a hand-placed L4-5 disc centre in **LPS** millimetres (Slicer's
RAS: negate x and y); the fine model's crop is centred there instead of on the locator's answer. A malformed
point, a point outside the image or a point given to ``dsca`` ends the run with one ``SPINEMORPH_ERROR`` line.

This module imports only the standard library at import time (the Slicer glue imports it for the protocol helpers).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from spinemorph.argtypes import point_values_mm

TASKS = ("dsca", "foramen")
PROGRESS, DEVICE, DONE, ERROR = "SPINEMORPH_PROGRESS", "SPINEMORPH_DEVICE", "SPINEMORPH_DONE", "SPINEMORPH_ERROR"
PID = "SPINEMORPH_PID"
INPUT_NAME = "input.nrrd"
RESULT_NAME = "result.json"
OUTPUT_NAMES = {"dsca": ("mask.nrrd", "table.pickle", RESULT_NAME), "foramen": ("labels.nrrd", RESULT_NAME)}
#: smallest change of the progress fraction that is printed (keeps the pipe quiet)
PROGRESS_STEP = 0.005


# ---------------------------------------------------------------------------------------------------- protocol
@dataclass
class Message:
    """One parsed output line: ``kind`` is "pid", "progress", "device", "done", "error" or "log"."""

    kind: str
    data: dict = field(default_factory=dict)
    text: str = ""


def format_message(prefix: str, data: dict) -> str:
    return f"{prefix} {json.dumps(data, sort_keys=True)}"


def parse_line(line: str) -> Message:
    """Parse one line of the worker's output (a malformed protocol line is returned as log text)."""
    text = line.rstrip("\r\n")
    for prefix, kind in ((PID, "pid"), (PROGRESS, "progress"), (DEVICE, "device"), (DONE, "done"), (ERROR, "error")):
        if text.startswith(prefix + " "):
            try:
                data = json.loads(text[len(prefix) + 1:])
            except ValueError:
                break
            if isinstance(data, dict):
                return Message(kind, data, text)
            break
    return Message("log", {}, text)


def worker_command(python: str, task: str, input_path, output_dir, model: str | None = None, device: str = "auto",
                   whole_slices: bool = False, l45_point=None) -> list[str]:
    """Command line that runs the worker with interpreter ``python`` (Slicer: the ``PythonSlicer`` executable).

    ``l45_point``: optional hand-placed L4-5 disc centre (LPS mm, ``foramen`` only), passed as ``--l45-point=X,Y,Z``
    (the ``=`` form: a negative first coordinate is not taken for an option)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    point = None
    if l45_point is not None:
        if task != "foramen":
            raise ValueError(f"an L4-5 point applies to the foramen task only, not {task!r}")
        point = point_values_mm(l45_point)
        if point is None:
            raise ValueError(f"the L4-5 point must be three finite numbers X,Y,Z (LPS mm), got {l45_point!r}")
    cmd = [str(python), "-u", "-m", "spinemorph.inference_worker", task, "--input", str(input_path),
           "--output-dir", str(output_dir), "--device", str(device)]
    if model:
        cmd += ["--model", str(model)]
    if whole_slices:
        cmd.append("--whole-slices")
    if point is not None:
        cmd.append("--l45-point=" + ",".join(repr(v) for v in point))
    return cmd


def python_path_for_worker(*package_dirs, existing: str | None = None) -> str:
    """``PYTHONPATH`` value that makes ``spinemorph``, ``DuralSacSegLib`` and ``FORAMEN3DLib`` importable in the
    worker: the parent folders of the given package folders (deduplicated, in order) before ``existing``."""
    parts: list[str] = []
    for d in package_dirs:
        parent = str(Path(d).resolve().parent)
        if parent not in parts:
            parts.append(parent)
    if existing:
        parts += [p for p in existing.split(os.pathsep) if p and p not in parts]
    return os.pathsep.join(parts)


@dataclass
class InferenceResult:
    """What :func:`read_result` returns: the labels (core ``Volume``), the DSCA table (``dsca`` only) and info."""

    task: str
    labels: object
    table: object | None
    info: dict

    # the names the Slicer glue uses for the in-process results of the two cores
    @property
    def mask(self):
        return self.labels

    @property
    def device(self) -> str:
        return str(self.info.get("device", ""))

    # ``foramen``: where the fine crop was centred, and the segmentation's QC notes (absent from older workers)
    @property
    def locator(self) -> str:
        return str(self.info.get("locator") or "")

    @property
    def l45_centre_lps(self) -> tuple | None:
        centre = self.info.get("l45_centre_lps")
        return tuple(float(v) for v in centre) if centre else None

    @property
    def qc(self) -> tuple:
        return tuple(str(n) for n in self.info.get("qc") or ())


def read_result(task: str, output_dir) -> InferenceResult:
    """Read the outputs the worker wrote into ``output_dir`` (raises ``OutputError`` naming a missing file)."""
    from spinemorph.errors import OutputError
    from spinemorph.volume import read_volume

    out = Path(output_dir)
    missing = [n for n in OUTPUT_NAMES[task] if not (out / n).is_file()]
    if missing:
        raise OutputError(f"the segmentation process wrote no {', '.join(missing)} in {out}; see the Python console log")
    info = json.loads((out / RESULT_NAME).read_text(encoding="utf-8"))
    labels = read_volume(out / OUTPUT_NAMES[task][0])
    table = None
    if task == "dsca":
        with open(out / "table.pickle", "rb") as fh:
            table = pickle.load(fh)  # written by our own worker into our own temporary folder
        labels = labels.with_array(labels.array.astype("uint8"))
    else:
        labels = labels.with_array(labels.array.astype("uint8"))
    return InferenceResult(task, labels, table, info)


# ---------------------------------------------------------------------------------------------------- worker
class _Emitter:
    """Prints protocol lines (flushed) and throttles progress."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stdout
        self.last = -1.0
        # a pipe's encoding is the locale's (cp1252 on many Windows machines): a path or message it cannot encode (a
        # Cyrillic user name in the temporary folder) must not raise while the error line is being written
        reconfigure = getattr(self.stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass

    def emit(self, prefix: str, data: dict) -> None:
        print(format_message(prefix, data), file=self.stream, flush=True)

    def progress(self, fraction: float, message: str = "") -> None:
        fraction = float(fraction)
        if fraction - self.last >= PROGRESS_STEP or fraction >= 1.0 or fraction < self.last:
            self.last = fraction
            self.emit(PROGRESS, {"fraction": round(fraction, 4), "message": str(message)})


def _run_dsca(args, image, emit: _Emitter) -> dict:
    from DuralSacSegLib.segment import segment_volume

    from spinemorph.atomic import atomic_path
    from spinemorph.volume import write_volume

    result = segment_volume(image, model=args.model, device=args.device,
                            crop_px=None if args.whole_slices else "auto", progress=emit.progress)
    out = Path(args.output_dir)
    write_volume(result.mask, out / "mask.nrrd")
    with atomic_path(out / "table.pickle") as tmp, open(tmp, "wb") as fh:
        pickle.dump(result.table, fh, protocol=pickle.HIGHEST_PROTOCOL)
    info = result.info()
    info["rows"] = len(result.table.rows)
    return info


def _run_foramen(args, image, emit: _Emitter) -> dict:
    from FORAMEN3DLib.segment3d import segment_volume

    from spinemorph.volume import write_volume

    result = segment_volume(image, model=args.model or "default", device=args.device, progress=emit.progress,
                            l45_point=args.l45_point)
    write_volume(result.labels, Path(args.output_dir) / "labels.nrrd")
    centre = result.l45_centre_lps
    return {"model": result.model_name, "device": result.device,
            "timings_s": {k: round(float(v), 4) for k, v in result.timings_s.items()},
            "locator": result.locator, "l45_centre_lps": None if centre is None else [float(v) for v in centre],
            "locator_details": getattr(result, "locator_details", None),
            "inference": getattr(result, "inference", None), "qc": [str(note) for note in result.qc]}


def _check_l45_point(args) -> None:
    """Replace the ``--l45-point`` text by three floats (``InputError``, one line, when it is not usable here)."""
    if args.l45_point is None:
        return
    from spinemorph.errors import InputError

    if args.task != "foramen":
        raise InputError(f"--l45-point applies to the foramen task only, not {args.task}")
    point = point_values_mm(args.l45_point)
    if point is None:
        raise InputError(f"--l45-point must be three finite numbers X,Y,Z in LPS mm, got {args.l45_point!r}")
    args.l45_point = point


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m spinemorph.inference_worker",
                                description="Run a SpineMorph segmentation in its own process (used by 3D Slicer).")
    p.add_argument("task", choices=TASKS)
    p.add_argument("--input", required=True, help="input image (NRRD / NIfTI / MHA / DICOM folder)")
    p.add_argument("--output-dir", required=True, help="folder for the outputs (created)")
    p.add_argument("--model", default=None, help="catalogue name or weights file (default: the catalogue default)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"))
    p.add_argument("--whole-slices", action="store_true", help="dsca: run every whole slice (no canal window)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--l45-point", default=None, metavar="X,Y,Z",
                   help="foramen: hand-placed L4-5 disc centre in LPS mm (write --l45-point=X,Y,Z)")
    return p


def main(argv=None, stream=None) -> int:
    args = build_parser().parse_args(argv)
    emit = _Emitter(stream)
    emit.emit(PID, {"pid": os.getpid()})  # before anything slow: Cancel needs it (see the protocol above)
    start = time.perf_counter()
    try:
        from spinemorph.gui_support import resolve_device
        from spinemorph.volume import read_volume

        _check_l45_point(args)  # before anything slow
        if args.threads > 0:
            import torch

            torch.set_num_threads(int(args.threads))
        device, warning = resolve_device(args.device)
        emit.emit(DEVICE, {"device": str(device), "warning": warning})
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        image = read_volume(args.input)
        info = (_run_dsca if args.task == "dsca" else _run_foramen)(args, image, emit)
        info.update(task=args.task, device_warning=warning, worker_s=round(time.perf_counter() - start, 3))
        from spinemorph.atomic import atomic_write_text

        atomic_write_text(Path(args.output_dir) / RESULT_NAME, json.dumps(info, indent=1, sort_keys=True, default=str))
        emit.emit(DONE, info)
        return 0
    except Exception as exc:  # every failure becomes one protocol line the panel shows; details go to the log
        import traceback

        from spinemorph.gui_support import is_cancelled, user_message

        traceback.print_exc(file=emit.stream)
        emit.emit(ERROR, {"message": user_message(exc), "cancelled": is_cancelled(exc)})
        return 1


if __name__ == "__main__":
    sys.exit(main())
