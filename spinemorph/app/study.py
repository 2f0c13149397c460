"""One lumbar MRI study end to end: series selection, DSCA, foramen segmentation + morphometry, trajectory planning,
and one self-contained HTML report.

Each step runs the very command a user would run alone (``dsca segment``, ``foramen measure``, ``plan``) in-process,
into its own sub-folder, so the study's numbers are by construction those of the single commands. A failed step is
reported (one line, in the console and the HTML report) and the study goes on with what does not depend on it.

Exit codes (over the analysis steps foramen, DSCA and plan only): 0 all done, 3 partial (some analysis step failed or
was skipped for lack of a usable series), 1 nothing could be done (no analysis step succeeded, e.g. no usable series,
or the report could not be written).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import sys
import time
from pathlib import Path

from spinemorph import __version__
from spinemorph.atomic import atomic_write_text, prepare_output_dir
from spinemorph.errors import SpineMorphError
from spinemorph.series import SeriesSelection, discover, select_series
from spinemorph.volume import write_volume

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
SUMMARY_JSON = "study_summary.json"
GENERATED_DIR = "generated_study"
#: the steps that produce results; the exit code is computed over these only
ANALYSIS_STEPS = ("foramen", "dsca", "plan")


@dataclasses.dataclass
class StepResult:
    """Outcome of one step of the study."""

    name: str
    status: str  # "ok", "failed", "skipped"
    message: str = ""
    seconds: float = 0.0
    out_dir: str = ""


@dataclasses.dataclass
class StudyResult:
    out_dir: Path
    selection: SeriesSelection | None
    steps: list[StepResult]
    report_path: Path | None
    truth_path: Path | None
    seconds: float

    @property
    def exit_code(self) -> int:
        """0 all analysis steps ok, 3 partial, 1 no analysis step ok or no report.

        Only the analysis steps (:data:`ANALYSIS_STEPS`) count: "generate" and "series" always succeed when they
        return, so counting them would make "nothing could be done" (1) unreachable.
        """
        statuses = [s.status for s in self.steps if s.name in ANALYSIS_STEPS]
        if self.report_path is None or not any(s == "ok" for s in statuses):
            return 1
        return 0 if all(s == "ok" for s in statuses) else 3


def _run_cli(argv: list[str]) -> tuple[int, str]:
    """Run ``spinemorph <argv>`` in-process; return (exit code, last error line)."""
    from spinemorph.app.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:") or ": error:" in ln]
    message = (errors or lines or [""])[-1]
    if message.startswith("error: "):
        message = message[len("error: "):]
    return code, message


def _disc_centre_lps(labels_path: Path) -> list[float] | None:
    """Centre (LPS mm) of the L4-5 disc label, for the DSCA per-level summary."""
    import numpy as np

    from spinemorph.labels import DISC_L45
    from spinemorph.volume import read_volume

    vol = read_volume(labels_path)
    idx = np.argwhere(np.asarray(vol.array) == DISC_L45)
    if idx.size == 0:
        return None
    kji = idx.mean(axis=0)
    return [float(v) for v in vol.index_to_lps(kji[::-1])]


class _Progress:
    def __init__(self, total: int, stream=None):
        self.total, self.i, self.stream = total, 0, stream or sys.stdout
        self.t0 = time.perf_counter()

    def step(self, text: str) -> None:
        self.i += 1
        print(f"[{self.i}/{self.total}] {text} ...", file=self.stream, flush=True)

    def done(self, step: StepResult) -> None:
        mark = {"ok": "done", "failed": "FAILED", "skipped": "skipped"}[step.status]
        tail = f": {step.message}" if step.message and step.status != "ok" else ""
        print(f"      {mark} in {step.seconds:.1f} s{tail}", file=self.stream, flush=True)


def run_study(
    inputs: list[str] | None,
    out_dir: str | Path,
    *,
    seed: int = 0,
    preset: str = "normal",
    dsca_model: str | None = None,
    foramen_model: str = "default",
    device: str = "auto",
    channel_diameter_mm: float = 7.5,
    overwrite: bool = False,
    plan: bool = True,
) -> StudyResult:
    """Run the whole study.

    Parameters
    ----------
    inputs : list of path, optional
        DICOM folders and/or image files of one study. None or empty: a synthetic lumbar study (phantom, DICOM)
        is generated into ``out_dir/generated_study`` with ``seed`` and ``preset`` and used as input; its exact
        ground truth is shown next to the measurements in the report.
    out_dir : path
        Output folder: ``dsca/``, ``foramen/``, ``plan/``, ``inputs/``, ``report.html``, ``study_summary.json``.
    dsca_model, foramen_model : str
        Model names (catalogue) or weights files; None/"default" = the embedded defaults.
    device : {"auto", "cuda", "mps", "cpu"}
    channel_diameter_mm : float
        Working-channel diameter for the trajectory planner.
    overwrite : bool
        Replace earlier outputs in ``out_dir``.
    plan : bool
        Run the trajectory planner.
    """
    t_start = time.perf_counter()
    out = prepare_output_dir(out_dir, overwrite, [REPORT_HTML, SUMMARY_JSON])
    steps: list[StepResult] = []
    n_steps = (1 if not inputs else 0) + 4 + (1 if plan else 0)
    progress = _Progress(n_steps)
    truth_path = None
    ow = ["--overwrite"] if overwrite else []

    if not inputs:
        from spinemorph.acquisition import make_study

        progress.step(f"generating a synthetic lumbar study (phantom, preset {preset!r}, seed {seed})")
        t0 = time.perf_counter()
        gen = make_study(out / GENERATED_DIR, seed=seed, preset=preset, formats=("dicom",), overwrite=overwrite)
        truth_path = Path(gen["files"].get("truth", out / GENERATED_DIR / "truth.json"))
        inputs = [str(out / GENERATED_DIR / "dicom")]
        steps.append(StepResult("generate", "ok", f"phantom study in {out / GENERATED_DIR}", time.perf_counter() - t0))
        progress.done(steps[-1])

    progress.step("finding the series")
    t0 = time.perf_counter()
    excluded: list[tuple[str, str]] = []  # label maps found among the inputs: reported as skipped
    selection = select_series(discover(inputs, excluded), excluded)
    in_dir = out / "inputs"
    dsca_input = foramen_input = None
    if selection.dsca is not None:
        dsca_input = write_volume(selection.dsca.read(), in_dir / "dsca_series.nrrd")
    if selection.foramen is not None:
        foramen_input = write_volume(selection.foramen.read(), in_dir / "foramen_series.nrrd")
    msg = f"DSCA: {selection.dsca.label() if selection.dsca else 'none'}; foramen: {selection.foramen.label() if selection.foramen else 'none'}"
    steps.append(StepResult("series", "ok", msg, time.perf_counter() - t0))
    progress.done(steps[-1])
    print(f"      DSCA series: {selection.dsca.label() if selection.dsca else '-'} — {selection.dsca_reason}")
    print(f"      foramen series: {selection.foramen.label() if selection.foramen else '-'} — {selection.foramen_reason}")
    for label, why in selection.skipped:
        print(f"      skipped: {label} — {why}")

    def run_step(name: str, text: str, argv: list[str] | None, skip_reason: str = "") -> StepResult:
        progress.step(text)
        t0 = time.perf_counter()
        if argv is None:
            res = StepResult(name, "skipped", skip_reason, 0.0)
        else:
            code, message = _run_cli(argv)
            res = StepResult(name, "ok" if code == 0 else "failed", message if code else "", time.perf_counter() - t0,
                             str(out / name))
        steps.append(res)
        progress.done(res)
        return res

    # 1) foramen first: its L4-5 disc centre gives DSCA its per-level summary
    foramen_dir = out / "foramen"
    fargv = None
    if foramen_input is not None:
        fargv = ["foramen", "measure", str(foramen_input), "--out", str(foramen_dir), "--model", foramen_model,
                 "--device", device, "--case", "study", *ow]
    fstep = run_step("foramen", "FORAMEN3D: L4 / L4-5 disc / L5 segmentation, meshes, foraminal morphometry", fargv,
                     selection.foramen_reason)
    labels_path = foramen_dir / "labels.nrrd"

    # 2) DSCA
    dargv = None
    if dsca_input is not None:
        dargv = ["dsca", "segment", str(dsca_input), "--out", str(out / "dsca"), "--device", device, *ow]
        if dsca_model:
            dargv += ["--model", dsca_model]
        if fstep.status == "ok" and labels_path.exists():
            centre = _disc_centre_lps(labels_path)
            if centre is not None:
                dargv += ["--levels", json.dumps({"L4-5": centre})]
    run_step("dsca", "DuralSacSeg: dural sac segmentation and per-slice DSCA", dargv, selection.dsca_reason)

    # 3) trajectory planning
    if plan:
        pargv = None
        reason = "no foramen segmentation"
        if fstep.status == "ok" and labels_path.exists() and foramen_input is not None:
            pargv = ["plan", str(foramen_input), "--labels", str(labels_path), "--out", str(out / "plan"),
                     "--diameter-mm", str(channel_diameter_mm), *ow]
            if dsca_input is not None:  # the axial stack reaches the lateral skin, the sagittal slab usually does not
                pargv += ["--skin-image", str(dsca_input)]
        run_step("plan", "trajectory planning (transforaminal endoscopic access to L4-5)", pargv, reason)

    # 4) report
    progress.step("writing the HTML report")
    t0 = time.perf_counter()
    report_path = None
    try:
        from spinemorph.app.study_report import build_report

        html_text = build_report(out, selection, steps, truth_path=truth_path, models={"dsca": dsca_model or "default",
                                 "foramen": foramen_model}, version=__version__)
        report_path = atomic_write_text(out / REPORT_HTML, html_text)
        steps.append(StepResult("report", "ok", str(report_path), time.perf_counter() - t0))
    except SpineMorphError as exc:
        steps.append(StepResult("report", "failed", str(exc), time.perf_counter() - t0))
    progress.done(steps[-1])

    result = StudyResult(out, selection, steps, report_path, truth_path, time.perf_counter() - t_start)
    summary = {
        "spinemorph_version": __version__,
        "inputs": inputs,
        "dsca_series": selection.dsca.label() if selection.dsca else None,
        "dsca_reason": selection.dsca_reason,
        "foramen_series": selection.foramen.label() if selection.foramen else None,
        "foramen_reason": selection.foramen_reason,
        "skipped_series": [{"series": s, "reason": r} for s, r in selection.skipped],
        "steps": [dataclasses.asdict(s) for s in steps],
        "exit_code": result.exit_code,
        "total_seconds": round(result.seconds, 2),
    }
    atomic_write_text(out / SUMMARY_JSON, json.dumps(summary, indent=2))
    return result
