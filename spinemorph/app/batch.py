"""Batch runs: one function over many cases, continuing past failures, with a report of what failed and why.

Two engines with one contract:

- :func:`spinemorph.app.batch_dask.run_batch_dask` (what ``spinemorph batch`` uses): one Dask task per case, on a
  local or an existing Dask cluster (see :mod:`spinemorph.app.batch_dask`);
- :func:`run_batch` (here): the cases one after the other in this process (``spinemorph batch --workers 0``).

This module holds the contract both engines share: the cases (:func:`discover_cases`), one case run
(:func:`execute_case`), the report (:class:`BatchReport`) and the output folder (lock, staging folders).

Each case runs :func:`execute_case` (in a worker process): ``fn(case, staging)`` writes into a hidden staging folder
``<out_dir>/.<name>.partial-<random>``, the case's summary row is added (``batch_row.json``, see
:mod:`spinemorph.app.batch_summary`) and the folder is renamed to ``<out_dir>/<name>`` only when the case succeeded: a
case folder is complete or absent. A :class:`~spinemorph.errors.SpineMorphError` raised by a case is recorded with its
one-line message; any other exception is recorded too (as an internal error, with its type); a worker process that
dies while running a case is handled by the Dask engine (retried, then recorded as ``WorkerDied``); in every case the
batch goes on.

The report is written atomically as ``batch_report.json`` / ``batch_report.csv`` plus the summary table
``batch_summary.csv`` (and ``batch_summary.parquet`` with pyarrow); a Dask batch rewrites it while it runs (cases not
finished yet: ``not run``), so even a batch killed outright leaves a report.
:attr:`BatchReport.exit_code` is 0 (all cases succeeded), 3 (partial: some failed, see the report) or 1 (every case
failed / no cases).

``resume=True`` skips cases whose result folder already exists (complete by construction: it appears only by the
final rename) and removes the staging folders a killed batch left behind, so a batch stopped at any moment (Ctrl-C,
a killed worker, power loss, the whole batch killed) continues where it stopped and ends with the results an
uninterrupted batch would have given.

Models: each worker process keeps the models it loaded (``spinemorph.app.cmd_batch.install_model_cache`` for DSCA, the
per-process cache of ``FORAMEN3DLib.segment3d.get_model`` for the 3D model): one load per worker, not per case.
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
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

from spinemorph.app.batch_summary import ROW_JSON, SUMMARY_CSV, SUMMARY_PARQUET, case_row, read_row, write_summary_table
from spinemorph.atomic import atomic_write_text, prepare_output_dir
from spinemorph.benchutil import peak_rss_mb
from spinemorph.commandline import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL  # exit codes of the batch
from spinemorph.errors import InputError, OutputError, SpineMorphError
from spinemorph.volume import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

REPORT_JSON = "batch_report.json"
REPORT_CSV = "batch_report.csv"

#: lock file of the output folder (one batch at a time per folder)
LOCK_FILE = ".batch.lock"

#: statuses of a case in the report
OK, FAILED, SKIPPED, NOT_RUN = "ok", "failed", "skipped", "not run"

CSV_COLUMNS = ("case", "status", "error_kind", "message", "seconds", "input", "output", "worker")


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
    worker: str = ""
    peak_rss_mb: float | None = None

    def row(self) -> dict:
        return {
            "case": self.case.name,
            "status": self.status,
            "error_kind": self.error_kind,
            "message": self.message,
            "seconds": f"{self.seconds:.3f}",
            "input": str(self.case.path),
            "output": str(self.output) if self.output else "",
            "worker": self.worker,
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
            "cases": [{**r.row(), "seconds": round(r.seconds, 3),
                       "summary": {k: v for k, v in r.summary.items() if k != "row"}} for r in self.results],
        }

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in self.results:
            w.writerow(r.row())
        return buf.getvalue()

    def write(self) -> dict[str, Path]:
        """Write ``batch_report.json``, ``batch_report.csv`` and the summary table (``batch_summary.csv`` and, with
        pyarrow, ``.parquet``; see :mod:`spinemorph.app.batch_summary`) atomically into :attr:`out_dir`."""
        table = write_summary_table([_table_row(r) for r in self.results], self.out_dir)
        self.paths = {
            "json": atomic_write_text(self.out_dir / REPORT_JSON, json.dumps(self.to_dict(), indent=2, default=str) + "\n"),
            "csv": atomic_write_text(self.out_dir / REPORT_CSV, self.to_csv()),
            **{f"summary_{k}": v for k, v in table.items()},
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


# ---------------------------------------------------------------------- running one case (in any process)
def _check_names(cases: list[BatchCase]) -> None:
    seen = set()
    reserved = {REPORT_JSON, REPORT_CSV, SUMMARY_CSV, SUMMARY_PARQUET}
    for c in cases:
        if not c.name or c.name.startswith(".") or "/" in c.name or os.sep in c.name or c.name in reserved:
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


def _discard(path: Path) -> None:
    """Remove a stale staging / replaced folder by renaming it away first, then deleting the renamed folder.

    A case can still be running where this batch cannot see it (an orphaned task of a killed batch on an external
    Dask cluster, or a task of a worker the scheduler lost touch with) and publish its staging folder while it is being
    deleted: deleting in place could then leave a half-deleted result folder that ``--resume`` keeps as complete.
    The rename is atomic: either the case published first (nothing left here to delete) or it can no longer publish
    (its case is run again)."""
    if path.is_dir() and not path.is_symlink():
        trash = path.with_name(f"{path.name}.del-{uuid.uuid4().hex[:8]}")  # still a stale name if this is cut short
        try:
            os.replace(path, trash)
        except OSError:
            return  # published or removed meanwhile
        path = trash
    _remove(path)


def remove_stale_staging(out: Path, name: str | None = None) -> list[str]:
    """Remove staging (``.<case>.partial-*``) and replaced (``.<case>.old-*``) folders left by a killed batch (and,
    for the whole batch, temporary files of report writes it cut short).

    Only call this while no case of this batch is running (they are the folders of running cases otherwise).
    """
    removed = []
    prefixes = (f".{name}.partial-", f".{name}.old-") if name else None
    reports = tuple(f".{f}." for f in (REPORT_JSON, REPORT_CSV, SUMMARY_CSV, SUMMARY_PARQUET))
    with contextlib.suppress(OSError):
        for p in out.iterdir():
            if prefixes:
                ours = p.name.startswith(prefixes)
            else:
                ours = p.name.startswith(".") and (".partial-" in p.name or ".old-" in p.name)
            report_tmp = name is None and p.name.startswith(reports) and ".tmp" in p.name  # an atomic write cut short
            if ours or report_tmp:
                _discard(p)
                removed.append(p.name)
    return removed


class _AlreadyDone(Exception):
    """The result folder appeared while the case ran (another run of the same batch finished it first)."""


def _publish(staging: Path, final: Path, overwrite: bool, keep_existing: bool = False) -> None:
    """Move a finished staging folder to ``final`` (replacing an old result only with ``overwrite``)."""
    old = None
    if final.exists() or final.is_symlink():
        if keep_existing and final.is_dir():
            raise _AlreadyDone
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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def _run_one(case: BatchCase, fn, out: Path, final: Path, overwrite: bool, keep_existing: bool = False,
             worker: str = "local") -> CaseResult:
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{case.name}.partial-", dir=out))
    except OSError as exc:
        return CaseResult(case, FAILED, f"cannot create a folder in {out}: {exc.strerror or exc}", "OutputError")
    t0 = time.perf_counter()
    try:
        summary = fn(case, staging)
        summary = summary if isinstance(summary, dict) else {}
        # the summary-table row lives inside the case folder, so that it is exactly as complete as the folder
        row = {"partial": bool(summary.get("partial")), "case_s": round(time.perf_counter() - t0, 3), "worker": worker,
               "worker_peak_rss_mb": round(peak_rss_mb(), 1), **case_row(staging), **dict(summary.get("row") or {})}
        atomic_write_text(staging / ROW_JSON, json.dumps(row, indent=1, default=str) + "\n")
        _publish(staging, final, overwrite, keep_existing)
    except _AlreadyDone:
        return CaseResult(case, SKIPPED, "result written meanwhile by another run of this batch (--resume)",
                          output=final, summary={"row": read_row(final)})
    except SpineMorphError as exc:
        return CaseResult(case, FAILED, _first_line(exc) or type(exc).__name__, type(exc).__name__)
    except OSError as exc:
        return CaseResult(case, FAILED, f"cannot write the results of {case.name}: {exc.strerror or exc}", "OutputError")
    except MemoryError:
        return CaseResult(case, FAILED, "out of memory; the input is too large", "MemoryError")
    except SystemExit as exc:  # an argparse usage error inside a case
        return CaseResult(case, FAILED, f"the command refused its arguments (exit code {exc.code})", "UsageError")
    except Exception as exc:  # noqa: BLE001 - a bug must not stop the other cases; it is reported with its type
        log.debug("case %s: unexpected error\n%s", case.name, traceback.format_exc())
        return CaseResult(case, FAILED, f"internal error {type(exc).__name__}: {_first_line(exc)} (please report this)",
                          "InternalError")
    finally:
        if staging.exists():
            _remove(staging)
    return CaseResult(case, OK, str(summary.get("note", "")), output=final, summary={**summary, "row": row})


#: one case at a time per process: the case functions capture the process-wide stdout/stderr and share cached models
_CASE_LOCK = threading.Lock()
_TORCH_THREADS: list[int] = []


def available_cores() -> int:
    """CPU cores this process may use (affinity / cgroup-aware where the OS tells)."""
    with contextlib.suppress(AttributeError, OSError):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _set_torch_threads(n: int) -> None:
    """``n`` compute threads in this process: torch's and SimpleITK's (ITK's default is every core of the machine, so
    each worker's resampling would otherwise use all cores and workers x threads exceed them)."""
    if _TORCH_THREADS and _TORCH_THREADS[-1] == n:
        return
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(n)
    with contextlib.suppress(ImportError):
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
    _TORCH_THREADS.append(n)


def _host_of(address: str) -> str:
    if "://" in address:
        return urlsplit(address).hostname or address
    return address.rsplit(":", 1)[0]


def _this_worker() -> tuple[str, int]:
    """(address, Dask threads) of the Dask worker running this code, or ("local", 1)."""
    try:
        from distributed import get_worker

        w = get_worker()
        return str(w.address), int(getattr(w.state, "nthreads", 1) or 1)
    except (ImportError, ValueError, AttributeError):
        return "local", 1


def execute_case(case: BatchCase, fn, out_dir: str | os.PathLike, *, overwrite: bool = False, resume: bool = False,
                 torch_threads: int | None = None, workers_per_host: dict[str, int] | None = None) -> CaseResult:
    """Run one case where this is called (a Dask worker, or this process): staging folder, ``fn``, atomic rename.

    Never raises for a failing case (the failure is the returned result); only the death of the process loses it,
    which the caller (Dask) sees. ``torch_threads`` is set once per process (None: this host's cores divided by
    the batch's workers on this host, ``workers_per_host``; 0: left as it is).
    """
    out = Path(out_dir)
    final = out / case.name
    with _CASE_LOCK:
        worker, _ = _this_worker()
        if torch_threads is None:
            n_here = (workers_per_host or {}).get(_host_of(worker), 1)
            torch_threads = max(1, available_cores() // max(1, n_here))
        if torch_threads:
            _set_torch_threads(int(torch_threads))
        t0 = time.perf_counter()
        if resume and final.is_dir():
            res = CaseResult(case, SKIPPED, "result exists from an earlier run (--resume)", output=final,
                             summary={"row": read_row(final)})
        else:
            res = _run_one(case, fn, out, final, overwrite, keep_existing=resume, worker=worker)
        res.seconds = time.perf_counter() - t0
        res.worker = worker
        res.peak_rss_mb = round(peak_rss_mb(), 1)
        return res


def _table_row(res: CaseResult) -> dict:
    """Summary-table row: the stored row of a case with a result (timings / worker of the run that made it)."""
    row = dict(res.summary.get("row") or {}) if res.status in (OK, SKIPPED) else {}
    if res.status == SKIPPED and not row and res.output is not None:
        row = read_row(res.output)
    return {**row, "case": res.case.name, "status": res.status, "message": res.message,
            "partial": bool(row.get("partial", False))}


# ---------------------------------------------------------------------- in-process engine
@contextlib.contextmanager
def _batch_folder(cases, out_dir, overwrite: bool, resume: bool):
    """Check the cases and the output folder, hold the folder's batch lock, remove what a killed batch left."""
    cases = list(cases)
    _check_names(cases)
    expected = [] if (overwrite or resume) else [REPORT_JSON, REPORT_CSV]
    out = prepare_output_dir(out_dir, overwrite or resume, expected)
    with _folder_lock(out):
        stale = remove_stale_staging(out)
        if stale:
            log.info("removed %d staging folder(s) of an interrupted batch: %s", len(stale), ", ".join(stale[:5]))
        yield cases, out


@contextlib.contextmanager
def _folder_lock(out: Path):
    """One batch at a time per output folder (an advisory ``flock`` on ``.batch.lock``, released by the OS if the
    batch is killed); where ``fcntl`` is missing (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        fh = open(out / LOCK_FILE, "a")  # noqa: SIM115 - held for the whole batch
    except OSError as exc:
        raise OutputError(f"cannot write in {out}: {exc.strerror or exc}; choose a writable --out folder") from None
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise OutputError(f"another batch is writing into {out}; wait for it to end or choose another --out "
                              "folder") from None
        yield
    finally:
        fh.close()


def _precheck(case: BatchCase, out: Path, overwrite: bool, resume: bool) -> CaseResult | None:
    """The result of a case decided without running it (kept with --resume, or refused), or None."""
    final = out / case.name
    if resume and final.is_dir():
        return CaseResult(case, SKIPPED, "result exists from an earlier run (--resume)", output=final,
                          summary={"row": read_row(final)})
    if (final.exists() or final.is_symlink()) and not overwrite:
        return CaseResult(case, FAILED, f"{final} already exists; pass --overwrite to replace it or --resume to keep it",
                          "OutputError")
    return None


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
    """Run ``fn(case, case_out_dir)`` for every case in this process, one after the other, continuing past failures.

    Parameters
    ----------
    cases : iterable of BatchCase
        The inputs; names must be unique (they name the result folders ``out_dir/<name>``).
    fn : callable
        ``fn(case, case_out_dir) -> dict | None``; writes the case's outputs into ``case_out_dir`` (an empty
        staging folder, renamed to ``out_dir/<name>`` on success) and raises on failure. A returned dict is kept
        in the report (``summary``); its ``"note"`` (if any) becomes the case's message, its ``"row"`` (if any)
        adds columns to the summary table.
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
        Write ``batch_report.json`` / ``.csv`` and the summary table (default True).

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
    with _batch_folder(cases, out_dir, overwrite, resume) as (cases, out):
        report = BatchReport([], out, task=task, ignored=list(ignored or []))
        n = len(cases)
        try:
            for i, case in enumerate(cases):
                t0 = time.perf_counter()
                res = _precheck(case, out, overwrite, resume)
                if res is None:
                    res = execute_case(case, fn, out, overwrite=overwrite, resume=resume, torch_threads=0)
                res.seconds = time.perf_counter() - t0
                report.results.append(res)
                if res.status == FAILED:  # the progress callback shows it, if there is one
                    log.log(logging.DEBUG if progress else logging.WARNING, "case %s failed: %s", case.name, res.message)
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
