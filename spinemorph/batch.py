"""Batch runs: one function over many cases, continuing past failures, with a report of what failed and why.

:func:`run_batch` calls ``fn(case, case_out_dir)`` for every :class:`BatchCase`. Each case writes into a hidden
staging folder ``<out_dir>/.<name>.partial-<random>`` that is renamed to ``<out_dir>/<name>`` only when the case
succeeds, so a failed or interrupted case leaves no half-written results (the staging folder is removed). A
:class:`~spinemorph.errors.SpineMorphError` raised by a case is recorded with its one-line message; any other
exception is recorded too (as an internal error, with its type) and the batch goes on. The report is written
atomically as ``batch_report.json`` and ``batch_report.csv``; :attr:`BatchReport.exit_code` is 0 (all cases
succeeded), 3 (partial: some failed, see the report) or 1 (every case failed / no cases).

``resume=True`` skips cases whose result folder already exists (complete by construction: it appears only by
the final rename), so a batch stopped half-way (Ctrl-C, power loss) continues where it stopped.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

from spinemorph.atomic import atomic_write_text, prepare_output_dir
from spinemorph.errors import InputError, OutputError, SpineMorphError
from spinemorph.volume import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

REPORT_JSON = "batch_report.json"
REPORT_CSV = "batch_report.csv"

#: exit codes (same values as :mod:`spinemorph.cli`)
EXIT_OK, EXIT_FAILURE, EXIT_PARTIAL = 0, 1, 3

#: statuses of a case in the report
OK, FAILED, SKIPPED, NOT_RUN = "ok", "failed", "skipped", "not run"

CSV_COLUMNS = ("case", "status", "error_kind", "message", "seconds", "input", "output")


@dataclasses.dataclass(frozen=True)
class BatchCase:
    """One input of a batch: a unique ``name`` (the result folder's name) and its input ``path``."""

    name: str
    path: Path


@dataclasses.dataclass
class CaseResult:
    """Outcome of one case.

    Attributes
    ----------
    case : BatchCase
    status : str
        ``"ok"``, ``"failed"``, ``"skipped"`` (result existed, ``resume``) or ``"not run"`` (batch interrupted).
    message : str
        The one-line error message (failed), or a note (ok: the ``"note"`` of the summary ``fn`` returned, e.g.
        ``"partial: ..."`` for a study that ended partial).
    error_kind : str
        Error class name (``InputError``, ``ModelError`` ...) for failures; ``""`` otherwise.
    seconds : float
        Wall time of the case.
    output : Path or None
        Result folder of a successful (or skipped) case.
    summary : dict
        Whatever ``fn`` returned (if a dict).
    """

    case: BatchCase
    status: str
    message: str = ""
    error_kind: str = ""
    seconds: float = 0.0
    output: Path | None = None
    summary: dict = dataclasses.field(default_factory=dict)

    def row(self) -> dict:
        return {
            "case": self.case.name,
            "status": self.status,
            "error_kind": self.error_kind,
            "message": self.message,
            "seconds": f"{self.seconds:.3f}",
            "input": str(self.case.path),
            "output": str(self.output) if self.output else "",
        }


@dataclasses.dataclass
class BatchReport:
    """All case results of a batch plus the files the report was written to."""

    results: list[CaseResult]
    out_dir: Path
    task: str = ""
    ignored: list[str] = dataclasses.field(default_factory=list)
    interrupted: bool = False
    paths: dict[str, Path] = dataclasses.field(default_factory=dict)

    @property
    def succeeded(self) -> list[CaseResult]:
        """Cases with a result (run now or kept from an earlier run with ``resume``)."""
        return [r for r in self.results if r.status in (OK, SKIPPED)]

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if r.status == FAILED]

    @property
    def exit_code(self) -> int:
        """0 all cases have results, 3 partial (some failed or not run), 1 none has."""
        if not self.results or not self.succeeded:
            return EXIT_FAILURE
        if len(self.succeeded) == len(self.results):
            return EXIT_OK
        return EXIT_PARTIAL

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "n_cases": len(self.results),
            "n_succeeded": len(self.succeeded),
            "n_failed": len(self.failed),
            "n_not_run": sum(r.status == NOT_RUN for r in self.results),
            "n_partial": sum(bool(r.summary.get("partial")) for r in self.results),
            "interrupted": self.interrupted,
            "exit_code": self.exit_code,
            "ignored": list(self.ignored),
            "cases": [{**r.row(), "seconds": round(r.seconds, 3), "summary": r.summary} for r in self.results],
        }

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in self.results:
            w.writerow(r.row())
        return buf.getvalue()

    def write(self) -> dict[str, Path]:
        """Write ``batch_report.json`` and ``batch_report.csv`` atomically into :attr:`out_dir`."""
        self.paths = {
            "json": atomic_write_text(self.out_dir / REPORT_JSON, json.dumps(self.to_dict(), indent=2, default=str) + "\n"),
            "csv": atomic_write_text(self.out_dir / REPORT_CSV, self.to_csv()),
        }
        return self.paths

    def summary_line(self) -> str:
        text = f"{len(self.succeeded)} of {len(self.results)} cases succeeded"
        n_partial = sum(bool(r.summary.get("partial")) for r in self.results)
        if n_partial:
            text += f" ({n_partial} partial)"
        if self.failed:
            text += f", {len(self.failed)} failed"
        n_not_run = sum(r.status == NOT_RUN for r in self.results)
        if n_not_run:
            text += f", {n_not_run} not run (interrupted)"
        return text


# ---------------------------------------------------------------------- discovering cases
def _case_name(path: Path) -> str:
    name = path.name
    low = name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return name


def discover_cases(folder: str | os.PathLike) -> tuple[list[BatchCase], list[str]]:
    """Every sub-folder and image file (``.nrrd``, ``.nii(.gz)``, ``.mha`` ...) of ``folder`` is one case.

    Returns
    -------
    (list of BatchCase, list of str)
        Cases sorted by name, and the names of other entries that were ignored (hidden files, non-image files).

    Raises
    ------
    InputError
        ``folder`` missing, not a folder, or holding no case.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"batch folder {folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give a folder whose sub-folders or image files are the cases")
    cases, ignored = [], []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir() or (p.is_file() and any(p.name.lower().endswith(s) for s in IMAGE_SUFFIXES)):
            cases.append(p)
        else:
            ignored.append(p.name)
    if not cases:
        raise InputError(f"batch folder {folder} holds no cases (sub-folders or .nrrd/.nii/.nii.gz/.mha files)")
    names = [_case_name(p) for p in cases]
    out = []
    for p, n in zip(cases, names):
        out.append(BatchCase(p.name if names.count(n) > 1 else n, p))  # a.nrrd + a.nii.gz: keep full names
    return out, ignored


# ---------------------------------------------------------------------- running
def _check_names(cases: list[BatchCase]) -> None:
    seen = set()
    for c in cases:
        if not c.name or c.name.startswith(".") or "/" in c.name or os.sep in c.name or c.name in (REPORT_JSON, REPORT_CSV):
            raise InputError(f"case name {c.name!r} cannot be used as a result folder name")
        if c.name in seen:
            raise InputError(f"two cases are named {c.name!r}; case names must be unique")
        seen.add(c.name)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _publish(staging: Path, final: Path, overwrite: bool) -> None:
    """Move a finished staging folder to ``final`` (replacing an old result only with ``overwrite``)."""
    old = None
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise OutputError(f"{final} already exists; pass --overwrite to replace it or --resume to keep it")
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(final, old)
    try:
        os.replace(staging, final)
    except OSError:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        _remove(old)


def run_batch(
    cases: Iterable[BatchCase],
    fn: Callable[[BatchCase, Path], dict | None],
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    resume: bool = False,
    task: str = "",
    ignored: list[str] | None = None,
    progress: Callable[[int, int, CaseResult], None] | None = None,
    write_report: bool = True,
) -> BatchReport:
    """Run ``fn(case, case_out_dir)`` for every case, continuing past failures.

    Parameters
    ----------
    cases : iterable of BatchCase
        The inputs; names must be unique (they name the result folders ``out_dir/<name>``).
    fn : callable
        ``fn(case, case_out_dir) -> dict | None``; writes the case's outputs into ``case_out_dir`` (an empty
        staging folder, renamed to ``out_dir/<name>`` on success) and raises on failure. A returned dict is kept
        in the report (``summary``); its ``"note"`` (if any) becomes the case's message.
    out_dir : path
        Batch output folder (created).
    overwrite : bool
        Replace existing result folders and report files.
    resume : bool
        Skip cases whose result folder already exists (status ``"skipped"``).
    task : str
        Name stored in the report.
    ignored : list of str
        Entries of the input folder that were not cases (listed in the report).
    progress : callable, optional
        ``progress(i, n, result)`` after every case.
    write_report : bool
        Write ``batch_report.json`` / ``.csv`` (default True).

    Returns
    -------
    BatchReport
        Also when cases failed; :attr:`BatchReport.exit_code` tells. A ``KeyboardInterrupt`` writes the report
        (remaining cases ``"not run"``) and is raised again.

    Raises
    ------
    SpineMorphError
        Unusable ``out_dir``, duplicate case names, or an existing report without ``overwrite`` / ``resume``.
    """
    cases = list(cases)
    _check_names(cases)
    expected = [] if (overwrite or resume) else [REPORT_JSON, REPORT_CSV]
    out = prepare_output_dir(out_dir, overwrite or resume, expected)
    report = BatchReport([], out, task=task, ignored=list(ignored or []))
    n = len(cases)
    try:
        for i, case in enumerate(cases):
            final = out / case.name
            t0 = time.perf_counter()
            if resume and final.is_dir():
                res = CaseResult(case, SKIPPED, "result exists from an earlier run (--resume)", output=final)
            elif final.exists() and not overwrite:
                res = CaseResult(case, FAILED, f"{final} already exists; pass --overwrite to replace it or --resume to keep it",
                                 "OutputError")
            else:
                res = _run_one(case, fn, out, final, overwrite)
            res.seconds = time.perf_counter() - t0
            report.results.append(res)
            if res.status == FAILED:
                log.warning("case %s failed: %s", case.name, res.message)
            if progress is not None:
                progress(i + 1, n, res)
    except KeyboardInterrupt:
        report.interrupted = True
        done = {r.case.name for r in report.results}
        report.results += [CaseResult(c, NOT_RUN, "batch interrupted before this case") for c in cases if c.name not in done]
        if write_report:
            report.write()
        raise
    if write_report:
        report.write()
    return report


def _run_one(case: BatchCase, fn, out: Path, final: Path, overwrite: bool) -> CaseResult:
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{case.name}.partial-", dir=out))
    except OSError as exc:
        return CaseResult(case, FAILED, f"cannot create a folder in {out}: {exc.strerror or exc}", "OutputError")
    try:
        summary = fn(case, staging)
        _publish(staging, final, overwrite)
    except SpineMorphError as exc:
        return CaseResult(case, FAILED, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                          type(exc).__name__)
    except OSError as exc:
        return CaseResult(case, FAILED, f"cannot write the results of {case.name}: {exc.strerror or exc}", "OutputError")
    except MemoryError:
        return CaseResult(case, FAILED, "out of memory; the input is too large", "MemoryError")
    except SystemExit as exc:  # an argparse usage error inside a case
        return CaseResult(case, FAILED, f"the command refused its arguments (exit code {exc.code})", "UsageError")
    except Exception as exc:  # noqa: BLE001 - a bug must not stop the other cases; it is reported with its type
        log.debug("case %s: unexpected error\n%s", case.name, traceback.format_exc())
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return CaseResult(case, FAILED, f"internal error {type(exc).__name__}: {first} (please report this)",
                          "InternalError")
    finally:
        if staging.exists():
            _remove(staging)
    summary = summary if isinstance(summary, dict) else {}
    return CaseResult(case, OK, str(summary.get("note", "")), output=final, summary=summary)
