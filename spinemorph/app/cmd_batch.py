"""``spinemorph batch``: run one task over every case of a folder, one Dask task per case, continuing past broken
cases.

Each case is processed by the very function of the single-case command (``dsca segment``, ``foramen measure``,
``study``): the command line ``<command> CASE --out <staging> [ARGS]`` is parsed by the ``spinemorph`` parser and
its ``func`` called (:class:`CaseCommand`, shipped to the Dask workers), so a case behaves exactly as when run alone.
By default the cases run on a local Dask cluster sized to this machine; ``--scheduler`` runs them on an existing Dask
cluster, ``--workers 0`` in this process without Dask. Results go to ``DIR/<case>/`` (renamed into place only when
the case succeeded), failures are listed with their one-line reason in ``DIR/batch_report.json`` and
``DIR/batch_report.csv``, measurements of all cases in ``DIR/batch_summary.csv`` (+ ``.parquet``). See
:mod:`spinemorph.app.batch` (also for the Slicer Python console) and :mod:`spinemorph.app.batch_summary`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import logging
import shlex
import sys
import time
from pathlib import Path

from spinemorph.app.batch import FAILED, BatchCase, discover_cases, run_batch
from spinemorph.atomic import atomic_write_text
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

where the cases run (Dask; one task per case, each worker one case at a time and each model loaded once per worker):
  default                 a local Dask cluster sized to this machine: workers x torch threads <= cores, and no more
                          workers than memory allows (about 2 GiB each); --workers N / --threads-per-worker T
                          choose them
  --scheduler ADDRESS     an existing Dask cluster (SLURM/PBS through dask-jobqueue, Kubernetes through
                          dask-kubernetes, or `dask scheduler` + `dask worker`); its workers need SpineMorph installed
                          and must see FOLDER and DIR under the same paths
  --workers 0             in this process, one case after the other, without Dask
a case whose worker process dies (killed, crashed, out of memory) is retried once on another worker, then reported
as failed ("WorkerDied"); the others go on.

outputs in DIR:
  <case>/                   the case's outputs (only for cases that succeeded; written to a hidden staging folder
                            first and renamed into place, so a failed or interrupted case leaves nothing behind)
  <case>/command_output.txt what the command printed for that case
  <case>/batch_row.json     the case's row of the summary table
  batch_report.json/.csv    one row per case: status (ok / failed / skipped / not run), error kind, the one-line
                            reason of a failure, seconds, input and output paths, worker; a study that ended partial
                            (exit code 3: report written, some step failed) is kept, status ok, message "partial: ..."
                            (rewritten every few seconds while the batch runs)
  batch_summary.csv/.parquet one row per case: DSCA minimum and per-level values, foramen height / width / area
                            both sides, QC flags, model names and SHA-256, timings, worker peak memory (.parquet
                            only with pyarrow installed)

--resume keeps the finished case folders and runs the rest: a batch stopped at any moment (Ctrl-C, killed) and
resumed ends with the results of an uninterrupted one.

exit codes: 0 every case succeeded, 3 partial (some cases failed; see batch_report.csv), 1 no case succeeded
(or the batch itself could not run, e.g. no scheduler at ADDRESS), 2 bad usage, 130 interrupted (Ctrl-C; the
report lists the cases not run; --resume continues).

examples:
  spinemorph batch dsca studies/ --out results/ --args "--model unet --device cpu"
  spinemorph batch foramen labelmaps/ --out measures/ --args "--labels-only"
  spinemorph batch study cohort/ --out results/ --workers 4 --threads-per-worker 2
  spinemorph batch study cohort/ --out /shared/results/ --scheduler tcp://10.0.0.5:8786
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
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes of the local Dask cluster (default: sized to this machine's cores and memory; "
                        "0 = run the cases one after the other in this process, without Dask)")
    p.add_argument("--threads-per-worker", type=int, default=None, metavar="T",
                   help="torch threads per worker (default: cores / workers, so that workers x threads <= cores)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on an existing Dask cluster: address of its scheduler (e.g. tcp://10.0.0.5:8786); the "
                        "workers must have SpineMorph installed and see FOLDER and DIR under the same paths")
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
    from spinemorph.app.cli import build_parser

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


#: DSCA predictors loaded in this process, by (model, device, weights mtime): each worker loads each model once
_PREDICTORS: dict[tuple, tuple] = {}
#: models loaded by this process (``{"dsca": n}``), for tests and the benchmark
MODEL_LOADS: dict[str, int] = {"dsca": 0}
_MAX_CACHED_PREDICTORS = 4


def _weights_mtime(model) -> float:
    with contextlib.suppress(OSError, TypeError, ValueError):
        p = Path(str(model)).expanduser()
        if p.is_file():
            return p.stat().st_mtime
    return 0.0


def install_model_cache() -> bool:
    """Keep the DSCA networks this process loads (per-worker model cache); returns True if the cache is active.

    ``DuralSacSegLib.segment.segment_volume`` loads its network through ``make_model_predictor`` on every call; in a
    batch process that function is wrapped once so that every (model, device) is loaded the first time only and
    then reused by the following cases (the predictor holds no per-case state). The 3D foramen models are already
    kept per process by ``FORAMEN3DLib.segment3d.get_model``.
    """
    try:
        from DuralSacSegLib import segment as seg
    except ImportError:
        return False
    original = getattr(seg, "make_model_predictor", None)
    if original is None:
        return False
    if getattr(original, "_spinemorph_batch_cache", False):
        return True

    default_model = getattr(seg, "DEFAULT_MODEL", None)

    def cached_predictor(model=default_model, device="auto"):
        key = (None if model is None else str(model), str(device), _weights_mtime(model))
        if key not in _PREDICTORS:
            predictor = original(model, device)  # raises ModelError for bad weights: nothing cached
            MODEL_LOADS["dsca"] += 1
            with contextlib.suppress(Exception):
                from spinemorph.app.batch_summary import LOADED_DSCA_SHA256

                info = predictor[1]
                LOADED_DSCA_SHA256[str(info.name)] = str(info.sha256)
            while len(_PREDICTORS) >= _MAX_CACHED_PREDICTORS:
                _PREDICTORS.pop(next(iter(_PREDICTORS)))
            _PREDICTORS[key] = predictor
        return _PREDICTORS[key]

    cached_predictor._spinemorph_batch_cache = True
    seg.make_model_predictor = cached_predictor
    return True


def model_loads() -> dict[str, int]:
    """Models loaded so far by this process: ``{"dsca": n, "foramen": n}`` (run on every worker by the tests)."""
    loads = dict(MODEL_LOADS)
    with contextlib.suppress(ImportError, AttributeError):
        from FORAMEN3DLib import segment3d

        loads["foramen"] = int(segment3d._cached_model.cache_info().misses)
    return loads


_PARSERS: dict[str, argparse.ArgumentParser] = {}


class CaseCommand:
    """``fn(case, out_dir)`` for :func:`spinemorph.app.batch.run_batch` / ``run_batch_dask`` running the single-case
    command of ``task`` with ``extra_args``.

    A plain picklable object (task name + arguments): Dask ships it to the workers, where the ``spinemorph`` parser is
    built once per process and the DSCA model cache installed (:func:`install_model_cache`). The command's console
    output (stdout and stderr) goes to ``<case>/command_output.txt``.
    """

    def __init__(self, task: str, extra_args: list[str] | tuple[str, ...] = ()):
        self.task = task
        self.extra_args = tuple(extra_args)

    def __repr__(self) -> str:
        return f"CaseCommand({self.task!r}, {list(self.extra_args)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, CaseCommand) and (self.task, self.extra_args) == (other.task, other.extra_args)

    def __hash__(self) -> int:
        return hash((self.task, self.extra_args))

    def _parser(self) -> tuple[argparse.ArgumentParser, tuple[str, ...]]:
        if "spinemorph" not in _PARSERS:
            _PARSERS["spinemorph"] = command_for(self.task)[0]
        return command_for(self.task, _PARSERS["spinemorph"])

    def check(self) -> None:
        """Refuse bad extra arguments before any case runs (a usage error exits 2)."""
        parser, prefix = self._parser()
        for forbidden in ("--out", "--overwrite"):
            if any(a == forbidden or a.startswith(forbidden + "=") for a in self.extra_args):
                raise InputError(f"--args must not contain {forbidden}; the batch sets it for every case")
        parser.parse_args([*prefix, "CASE", "--out", "OUT", *self.extra_args])

    def __call__(self, case: BatchCase, out_dir: Path) -> dict:
        install_model_cache()
        parser, prefix = self._parser()
        accepted = ACCEPTED_EXIT_CODES.get(self.task, (0,))
        args = parser.parse_args([*prefix, str(case.path), "--out", str(out_dir), *self.extra_args])
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
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


def make_case_function(task: str, extra_args: list[str], parser: argparse.ArgumentParser | None = None) -> CaseCommand:
    """Return ``fn(case, out_dir)`` running the single-case command of ``task`` (a :class:`CaseCommand`).

    The extra arguments are checked once here (a usage error exits 2 before any case runs).
    """
    command_for(task, parser)
    fn = CaseCommand(task, extra_args)
    fn.check()
    return fn


class _ProgressPrinter:
    """One line per finished case with live counts and ETA (and a tqdm bar over the cases on a terminal)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self.n_run = 0
        self.bar = None

    def start(self, n: int, to_run: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=n, desc="cases", unit="case", file=self.stream, disable=None, dynamic_ncols=True)
        self.t0 = time.monotonic()

    def eta(self, i: int, n: int) -> str:
        remaining = n - i
        if not remaining:
            return "0:00:00"
        if not self.n_run:
            return "?"
        s = (time.monotonic() - self.t0) / self.n_run * remaining
        return str(datetime.timedelta(seconds=int(round(s))))

    def __call__(self, i: int, n: int, res) -> None:
        key = res.status if res.status in self.counts else "failed"
        self.counts[key] += 1
        if res.status != "skipped":
            self.n_run += 1
        reason = f": {res.message}" if res.status == FAILED else ""
        counts = f"ok {self.counts['ok']}, failed {self.counts['failed']}" + (
            f", kept {self.counts['skipped']}" if self.counts["skipped"] else "")
        line = f"[{i}/{n}] {res.case.name}: {res.status}{reason} ({counts}; ETA {self.eta(i, n)})"
        if self.bar is not None and not self.bar.disable:
            self.bar.set_postfix_str(counts, refresh=False)
            self.bar.update(1)
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    """Run ``spinemorph batch``; returns 0, 3 (partial) or 1."""
    from spinemorph.app.batch_dask import run_batch_dask

    try:
        extra = shlex.split(args.args or "")
    except ValueError as exc:
        raise InputError(f"--args {args.args!r} cannot be split into options ({exc})") from None
    if args.scheduler and args.workers is not None:
        raise InputError("--workers sizes the local cluster; with --scheduler the cluster's own workers run the cases "
                         "(drop --workers)")
    if args.workers is not None and args.workers < 0:
        raise InputError(f"--workers must be >= 0, got {args.workers}")
    if args.threads_per_worker is not None and args.threads_per_worker < 1:
        raise InputError(f"--threads-per-worker must be >= 1, got {args.threads_per_worker}")
    fn = make_case_function(args.task, extra)
    cases, ignored = discover_cases(args.folder)
    out_abs, folder_abs = Path(args.out).resolve(), Path(args.folder).resolve()
    if out_abs == folder_abs or folder_abs in out_abs.parents:
        raise InputError(f"--out {args.out} is inside the batch folder {args.folder}; choose an output folder outside it")

    progress = _ProgressPrinter()

    def on_start(info: dict) -> None:
        for note in info.get("notes", []):
            print(f"warning: {note}", file=sys.stderr)
        where = f"Dask scheduler {args.scheduler}" if args.scheduler else "a local Dask cluster"
        threads = info.get("torch_threads") or "auto"
        print(f"{info['n_to_run']} case(s) to run on {where}: {info['workers']} worker(s), {threads} torch thread(s) "
              f"each" + (f"; dashboard {info['dashboard']}" if info.get("dashboard") else ""), file=sys.stderr)
        progress.start(len(cases), info["n_to_run"])

    try:
        if args.workers == 0:  # in this process, one case after the other (no Dask)
            progress.start(len(cases), len(cases))
            if args.threads_per_worker:
                import torch

                torch.set_num_threads(args.threads_per_worker)
            report = run_batch(cases, fn, args.out, overwrite=args.overwrite, resume=args.resume, task=args.task,
                               ignored=ignored, progress=progress)
        else:
            report = run_batch_dask(cases, fn, args.out, scheduler=args.scheduler, workers=args.workers,
                                    threads_per_worker=args.threads_per_worker, overwrite=args.overwrite,
                                    resume=args.resume, task=args.task, ignored=ignored, progress=progress,
                                    on_start=on_start)
    finally:
        progress.close()
    print(f"{report.summary_line()}; report: {report.paths['csv']}; table: {report.paths['summary_csv']}")
    if report.exit_code == 1:
        print(f"error: no case succeeded; the reasons are in {report.paths['csv']}", file=sys.stderr)
    elif report.failed:
        print(f"warning: {len(report.failed)} case(s) failed; see {report.paths['csv']}", file=sys.stderr)
    return report.exit_code
