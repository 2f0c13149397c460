"""``spinemorph batch``: run one task over every case of a folder, continuing past broken cases.

Each case is processed by the very function of the single-case command (``dsca segment``, ``foramen measure``,
``study``): the command line ``<command> CASE --out <staging> [ARGS]`` is parsed by the ``spinemorph`` parser and
its ``func`` called, so a case behaves exactly as when run alone. Results go to ``DIR/<case>/`` (renamed into place
only when the case succeeded), failures are listed with their one-line reason in ``DIR/batch_report.json`` and
``DIR/batch_report.csv``. See :mod:`spinemorph.batch`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import shlex
import sys
from pathlib import Path

from spinemorph.atomic import atomic_write_text
from spinemorph.batch import FAILED, BatchCase, discover_cases, run_batch
from spinemorph.errors import InputError, SpineMorphError

log = logging.getLogger(__name__)

#: task → the argv prefix of its single-case command
TASKS: dict[str, tuple[str, ...]] = {
    "dsca": ("dsca", "segment"),
    "foramen": ("foramen", "measure"),
    "study": ("study",),
}

#: captured console output of every case, kept in its result folder
CASE_LOG = "command_output.txt"

#: exit code of ``spinemorph study`` for a partial study (some step failed or was skipped; report.html written)
EXIT_PARTIAL_STUDY = 3

#: exit codes of the single-case command that count as a result to keep (default: only 0). A partial study (3) has
#: a report.html and the results of the steps that worked: it is kept and marked "partial" in the batch report.
ACCEPTED_EXIT_CODES: dict[str, tuple[int, ...]] = {"study": (0, EXIT_PARTIAL_STUDY)}

_EPILOG = """\
tasks (each case runs the same code as the single-case command):
  dsca      spinemorph dsca segment CASE --out DIR/CASE [ARGS]    axial DSCA table per case
  foramen   spinemorph foramen measure CASE --out DIR/CASE [ARGS] foraminal height / width / area per case
  study     spinemorph study CASE --out DIR/CASE [ARGS]           whole-study pipeline per case

cases: every sub-folder (a DICOM series or a study folder) and every image file (.nrrd, .nhdr, .nii, .nii.gz,
.mha, .mhd) of FOLDER; hidden entries are skipped, other files are listed as ignored in the report.

outputs in DIR:
  <case>/                   the case's outputs (only for cases that succeeded; written to a hidden staging folder
                            first and renamed into place, so a failed or interrupted case leaves nothing behind)
  <case>/command_output.txt what the command printed for that case
  batch_report.json/.csv    one row per case: status (ok / failed / skipped / not run), error kind, the one-line
                            reason of a failure, seconds, input and output paths; a study that ended partial
                            (exit code 3: report written, some step failed) is kept, status ok, message "partial: ..."

exit codes: 0 every case succeeded, 3 partial (some cases failed; see batch_report.csv), 1 no case succeeded
(or the batch itself could not run), 2 bad usage.

examples:
  spinemorph batch dsca studies/ --out results/ --args "--model unet --device cpu"
  spinemorph batch foramen labelmaps/ --out measures/ --args "--labels-only"
  spinemorph batch dsca studies/ --out results/ --resume      (continue a batch that was stopped)
"""


def register(subparsers) -> None:
    """Add the ``batch`` command."""
    p = subparsers.add_parser(
        "batch",
        help="run dsca / foramen / study over every case of a folder; report failures, continue past them",
        description="Run one task over every sub-folder / image file of FOLDER. Broken cases are reported with their "
        "reason and do not stop the others; each result appears only when its case succeeded.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("task", choices=sorted(TASKS), help="what to run on each case")
    p.add_argument("folder", metavar="FOLDER", help="folder whose sub-folders / image files are the cases")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder: DIR/<case>/ per case plus the batch report")
    p.add_argument("--args", default="", metavar="'ARGS'",
                   help="extra options for the per-case command, as one quoted string (e.g. \"--model unet --device cpu\")")
    p.add_argument("--overwrite", action="store_true", help="replace existing case results and the report")
    p.add_argument("--resume", action="store_true", help="keep existing case results (skip those cases), run the rest")
    p.set_defaults(func=run)


def _available_commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_for(task: str, parser: argparse.ArgumentParser | None = None) -> tuple[argparse.ArgumentParser, tuple[str, ...]]:
    """The ``spinemorph`` parser and the argv prefix that run ``task`` on one case.

    Raises
    ------
    SpineMorphError
        ``task`` unknown or its command not installed in this version.
    """
    from spinemorph.cli import build_parser

    if task not in TASKS:
        raise InputError(f"unknown batch task {task!r}; choose one of {', '.join(sorted(TASKS))}")
    parser = parser or build_parser()
    prefix = TASKS[task]
    level = parser
    for word in prefix:
        choices = _available_commands(level)
        if word not in choices:
            raise SpineMorphError(
                f"the command 'spinemorph {' '.join(prefix)}' is not available in this installation; "
                "update SpineMorph or choose another batch task"
            )
        level = choices[word]
    return parser, prefix


def make_case_function(task: str, extra_args: list[str], parser: argparse.ArgumentParser | None = None):
    """Return ``fn(case, out_dir)`` running the single-case command of ``task`` (for :func:`spinemorph.batch.run_batch`).

    The extra arguments are checked once here (a usage error exits 2 before any case runs).
    """
    parser, prefix = command_for(task, parser)
    for forbidden in ("--out", "--overwrite"):
        if any(a == forbidden or a.startswith(forbidden + "=") for a in extra_args):
            raise InputError(f"--args must not contain {forbidden}; the batch sets it for every case")
    parser.parse_args([*prefix, "CASE", "--out", "OUT", *extra_args])  # usage errors now, not once per case

    accepted = ACCEPTED_EXIT_CODES.get(task, (0,))

    def run_case(case: BatchCase, out_dir: Path) -> dict:
        args = parser.parse_args([*prefix, str(case.path), "--out", str(out_dir), *extra_args])
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                code = int(args.func(args) or 0)
        finally:
            text = buf.getvalue()
        # the output first, so that it is part of the case folder whatever the exit code
        atomic_write_text(out_dir / CASE_LOG, text)
        if code not in accepted:
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            why = ([ln for ln in lines if "FAILED" in ln] or lines or [""])[-1]
            raise SpineMorphError(f"'spinemorph {' '.join(prefix)}' ended with exit code {code}"
                                  + (f" ({why})" if why else ""))
        if code == EXIT_PARTIAL_STUDY:
            return {"exit_code": code, "partial": True,
                    "note": "partial: some study step failed or was skipped; see report.html"}
        return {"exit_code": code}

    return run_case


def run(args: argparse.Namespace) -> int:
    """Run ``spinemorph batch``; returns 0, 3 (partial) or 1."""
    try:
        extra = shlex.split(args.args or "")
    except ValueError as exc:
        raise InputError(f"--args {args.args!r} cannot be split into options ({exc})") from None
    fn = make_case_function(args.task, extra)
    cases, ignored = discover_cases(args.folder)
    out_abs, folder_abs = Path(args.out).resolve(), Path(args.folder).resolve()
    if out_abs == folder_abs or folder_abs in out_abs.parents:
        raise InputError(f"--out {args.out} is inside the batch folder {args.folder}; choose an output folder outside it")

    def progress(i: int, n: int, res) -> None:
        reason = f": {res.message}" if res.status == FAILED else ""
        print(f"[{i}/{n}] {res.case.name}: {res.status}{reason}", file=sys.stderr)

    report = run_batch(cases, fn, args.out, overwrite=args.overwrite, resume=args.resume, task=args.task,
                       ignored=ignored, progress=progress)
    print(f"{report.summary_line()}; report: {report.paths['csv']}")
    if report.exit_code == 1:
        print(f"error: no case succeeded; the reasons are in {report.paths['csv']}", file=sys.stderr)
    elif report.failed:
        print(f"warning: {len(report.failed)} case(s) failed; see {report.paths['csv']}", file=sys.stderr)
    return report.exit_code
