"""The Dask engine of :mod:`spinemorph.app.batch`: one Dask task per case, continuing past failures.

:func:`run_batch_dask` (what ``spinemorph batch`` uses) runs every case with
:func:`spinemorph.app.batch.execute_case` on a :class:`distributed.LocalCluster` sized to the machine
(:func:`plan_local_cluster`: workers x torch threads <= cores, each worker one case at a time) or on an existing
cluster (``scheduler=`` address or ``client=``), with the contract of :func:`spinemorph.app.batch.run_batch`
(staging folders, report, ``resume``, ``overwrite``). A worker process that dies while running a case (killed,
crashed, over its memory limit) is replaced by Dask and the case retried once on another worker
(:data:`WORKER_DEATHS_RETRIED`), then recorded as ``WorkerDied``. While the batch runs the report is rewritten every
:data:`REPORT_EVERY_S` seconds.

From the Slicer Python console (or any Python), on the same Dask cluster the command line uses (``pip_install
('dask[distributed]')`` once in Slicer; the workers need SpineMorph installed and must see the folders under the
same paths)::

    import threading
    from distributed import Client
    from spinemorph.app.batch import discover_cases
    from spinemorph.app.batch_dask import run_batch_dask
    from spinemorph.app.cmd_batch import make_case_function

    client = Client("tcp://scheduler-host:8786")  # the scheduler `spinemorph batch --scheduler` would use
    cases, ignored = discover_cases("/data/cohort")
    fn = make_case_function("dsca", ["--device", "cpu"])  # or "foramen" / "study", with the command's options
    result = {}
    def work():  # in a thread, so that Slicer stays responsive; progress lines go to the console
        result["report"] = run_batch_dask(cases, fn, "/data/cohort_results", client=client, task="dsca",
                                          ignored=ignored, resume=True,
                                          progress=lambda i, n, r: print(f"[{i}/{n}] {r.case.name}: {r.status}"))
    threading.Thread(target=work, daemon=True).start()
    # later: result["report"].summary_line(); the table is /data/cohort_results/batch_summary.csv

(A ``LocalCluster`` started inside Slicer would spawn Slicer's own executable as workers: start the cluster outside
Slicer, e.g. ``dask scheduler`` and ``dask worker tcp://host:8786 --nworkers 2 --nthreads 1`` in SpineMorph's Python
environment, and connect to it.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from spinemorph.app.batch import (
    FAILED,
    NOT_RUN,
    BatchCase,
    BatchReport,
    CaseResult,
    _batch_folder,
    _first_line,
    _host_of,
    _precheck,
    available_cores,
    execute_case,
    remove_stale_staging,
)
from spinemorph.errors import InputError, SpineMorphError

log = logging.getLogger(__name__)

#: a case whose worker process dies is retried this many times on another worker, then reported as failed
WORKER_DEATHS_RETRIED = 1
#: memory one worker needs, for sizing the default local cluster: the heaviest task (study: 3D U-Net inference, meshes,
#: planning, report) peaked at 1.07 GB per worker on a generated study (docs/benchmark.md, "Batch"); twice that leaves
#: room for larger real series
WORKER_MEMORY_BYTES = 2 * 2**30
#: the report and summary table are rewritten at most this often while a Dask batch runs
REPORT_EVERY_S = 5.0
#: seconds to wait for an external scheduler
CONNECT_TIMEOUT_S = 30


@dataclasses.dataclass(frozen=True)
class ClusterPlan:
    """How a local cluster is sized: ``workers`` processes running one case each, ``torch_threads`` per worker."""

    workers: int
    torch_threads: int
    cores: int
    memory_limit_bytes: int | None
    notes: tuple[str, ...] = ()


def plan_local_cluster(workers: int | None = None, threads_per_worker: int | None = None, *, cores: int | None = None,
                       memory_bytes: int | None = None) -> ClusterPlan:
    """Size a :class:`distributed.LocalCluster` for this machine so that workers × torch threads ≤ cores.

    Default: as many one-thread workers as cores, but no more than memory allows
    (:data:`WORKER_MEMORY_BYTES` each); with ``workers`` given, the cores are shared among them. An explicit
    ``threads_per_worker`` that would oversubscribe the cores is lowered (noted in ``notes``).
    """
    cores = int(cores or available_cores())
    if memory_bytes is None:
        with contextlib.suppress(ImportError):
            import psutil

            memory_bytes = int(psutil.virtual_memory().total)
    notes = []
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be >= 1 for a Dask cluster, got {workers}")
    if threads_per_worker is not None and threads_per_worker < 1:
        raise InputError(f"--threads-per-worker must be >= 1, got {threads_per_worker}")
    if workers is None:
        workers = max(1, cores // (threads_per_worker or 1))
        if memory_bytes:
            by_memory = max(1, int(memory_bytes // WORKER_MEMORY_BYTES))
            if by_memory < workers:
                notes.append(f"{by_memory} workers instead of {workers}: each needs about "
                             f"{WORKER_MEMORY_BYTES / 2**30:.0f} GiB and this machine has {memory_bytes / 2**30:.0f} GiB")
                workers = by_memory
    if workers > cores:
        notes.append(f"{workers} workers on {cores} cores: cases will compete for the cores")
    fair = max(1, cores // workers)
    threads = threads_per_worker or fair
    if threads > fair:
        notes.append(f"--threads-per-worker {threads} lowered to {fair} so that {workers} workers x threads "
                     f"<= {cores} cores")
        threads = fair
    limit = int(memory_bytes // workers) if memory_bytes else None
    return ClusterPlan(workers, threads, cores, limit, tuple(notes))


def start_local_cluster(plan: ClusterPlan, dashboard: bool = False):
    """A :class:`distributed.LocalCluster` for ``plan``: one process per worker, one case at a time per worker.

    A case whose worker process dies (killed, crashed, over its memory limit) is retried once on another worker
    (``allowed_failures`` = :data:`WORKER_DEATHS_RETRIED`), then reported as failed.
    """
    from distributed import LocalCluster

    dash = None
    if dashboard:
        with contextlib.suppress(ImportError):
            import bokeh  # noqa: F401 - the dashboard needs it

            dash = ":0"
    return LocalCluster(
        n_workers=plan.workers, threads_per_worker=1, processes=True,
        memory_limit=plan.memory_limit_bytes or "auto", dashboard_address=dash,
        silence_logs=logging.ERROR, scheduler_kwargs={"allowed_failures": WORKER_DEATHS_RETRIED},
    )


class _QuietDask:
    """Dask's own INFO/WARNING logging (workers registering, nannies restarting) off the console while a batch runs;
    the batch reports what matters per case. Kept with ``spinemorph -v`` (debug logging)."""

    NAMES = ("distributed", "bokeh", "tornado")

    def __init__(self):
        self.levels = {}
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            for name in self.NAMES:
                lg = logging.getLogger(name)
                self.levels[name] = lg.level
                lg.setLevel(logging.ERROR)

    def restore(self) -> None:
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)


def _n_workers(client) -> int:
    try:
        return len(client.nthreads())
    except Exception:  # noqa: BLE001 - scheduler briefly unreachable: one case at a time until it answers
        return 1


def _workers_per_host(client) -> dict[str, int]:
    counts: dict[str, int] = {}
    with contextlib.suppress(Exception):
        for addr in client.scheduler_info().get("workers", {}):
            h = _host_of(str(addr))
            counts[h] = counts.get(h, 0) + 1
    return counts


def _lost_result(case: BatchCase, exc: BaseException, out: Path, memory_limit_bytes: int | None) -> CaseResult:
    name = type(exc).__name__
    if name == "KilledWorker":
        limit = f" of {memory_limit_bytes / 2**30:.1f} GiB" if memory_limit_bytes else ""
        tries = int(getattr(exc, "allowed_failures", WORKER_DEATHS_RETRIED)) + 1  # the scheduler's setting
        msg = (f"the worker process running this case died {tries} times (killed, crashed, or over its memory "
               f"limit{limit}); rerun it alone or with more memory per worker")
        res = CaseResult(case, FAILED, msg, "WorkerDied")
    elif name == "CancelledError":
        res = CaseResult(case, FAILED, "the Dask scheduler cancelled this case (scheduler or connection lost)",
                         "Cancelled")
    else:
        res = CaseResult(case, FAILED, f"the case could not run on the cluster ({name}: {_first_line(exc)})",
                         "ClusterError")
    remove_stale_staging(out, case.name)  # what its dead worker left behind
    return res


def run_batch_dask(
    cases: Iterable[BatchCase],
    fn: Callable[[BatchCase, Path], dict | None],
    out_dir: str | os.PathLike,
    *,
    client=None,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    task: str = "",
    ignored: list[str] | None = None,
    progress: Callable[[int, int, CaseResult], None] | None = None,
    on_start: Callable[[dict], None] | None = None,
    write_report: bool = True,
    report_every_s: float = REPORT_EVERY_S,
) -> BatchReport:
    """Run ``fn(case, case_out_dir)`` for every case as one Dask task per case, continuing past failures.

    Same contract as :func:`run_batch` (``fn``, staging folders, report, ``resume``, ``overwrite``), plus:

    Parameters
    ----------
    client : distributed.Client, optional
        Submit to this client (e.g. one made in the Slicer Python console); it is left open.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``) to connect to. Neither ``client`` nor
        ``scheduler``: a :class:`distributed.LocalCluster` sized by :func:`plan_local_cluster` is started and closed.
    workers, threads_per_worker : int, optional
        Local cluster size (see :func:`plan_local_cluster`); ``threads_per_worker`` is also the torch thread count of
        every worker of an external cluster (default there: the host's cores / its workers).
    on_start : callable, optional
        ``on_start(info)`` once connected: ``info`` has ``dashboard``, ``workers``, ``torch_threads``, ``notes``,
        ``n_to_run``.
    report_every_s : float
        The report and summary table are rewritten at most this often while the batch runs (and at its end), so a
        batch killed outright still leaves a report of the cases done so far.

    ``fn`` must be picklable (a module-level function or an object of an importable class) and importable where
    the workers run; ``out_dir`` must be a folder the workers see under the same path (a shared file system).
    """
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise SpineMorphError("Dask is not installed; install it with: pip install 'dask[distributed]' "
                              "(or run the batch in this process with --workers 0)") from None
    with _batch_folder(cases, out_dir, overwrite, resume) as (cases, out):
        report = BatchReport([], out, task=task, ignored=list(ignored or []))
        results: dict[str, CaseResult] = {}
        todo = []
        for case in cases:
            res = _precheck(case, out, overwrite, resume)
            if res is None:
                todo.append(case)
            else:
                results[case.name] = res

        def collect(final: bool) -> None:
            pending = "batch interrupted before this case" if final else "pending (batch still running)"
            report.results = [results.get(c.name) or CaseResult(c, NOT_RUN, pending) for c in cases]

        n, done = len(cases), 0
        cluster = None
        own_client = client is None
        plan = None
        quiet = _QuietDask()
        try:
            if client is None:
                if scheduler:
                    try:
                        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
                    except (OSError, TimeoutError) as exc:
                        raise SpineMorphError(f"cannot connect to the Dask scheduler at {scheduler} ({_first_line(exc)}); "
                                              "check the address and that the scheduler is running") from None
                    except ValueError as exc:  # a malformed address (no port, port not a number)
                        raise InputError(f"--scheduler {scheduler!r} is not a Dask scheduler address "
                                         f"({_first_line(exc)}); give it as tcp://HOST:PORT, e.g. "
                                         "tcp://scheduler-host:8786") from None
                else:
                    plan = plan_local_cluster(workers, threads_per_worker)
                    cluster = start_local_cluster(plan, dashboard=True)
                    client = Client(cluster)
            torch_threads = plan.torch_threads if plan else threads_per_worker
            per_host = _workers_per_host(client)
            if on_start is not None:
                dashboard = None
                with contextlib.suppress(Exception):  # a local cluster serves the dashboard only with bokeh installed
                    has_page = cluster is None or importlib.util.find_spec("bokeh") is not None
                    if has_page and "dashboard" in client.scheduler_info().get("services", {}):
                        dashboard = client.dashboard_link
                on_start({"dashboard": dashboard, "workers": sum(per_host.values()), "torch_threads": torch_threads,
                          "notes": list(plan.notes) if plan else [], "n_to_run": len(todo)})
            for case in cases:  # decided without running: reported first
                if case.name in results:
                    done += 1
                    if progress is not None:
                        progress(done, n, results[case.name])
            collect(False)
            if write_report:  # from now on a report exists, however the batch ends
                report.write()
            token = uuid.uuid4().hex[:8]
            waiting = list(enumerate(todo))
            futures: dict = {}
            running = as_completed()

            def submit_more() -> None:
                # no more cases in flight than the cluster has workers (each runs one case at a time): a worker
                # holds only the case it runs, so one that dies takes no innocent queued case with it, and the batch
                # follows a cluster that grows or shrinks
                slots = max(1, _n_workers(client))
                while waiting and len(futures) < slots:
                    i, case = waiting.pop(0)
                    fut = client.submit(execute_case, case, fn, out, overwrite=overwrite, resume=resume,
                                        torch_threads=torch_threads, workers_per_host=per_host,
                                        key=(f"spinemorph-case-{token}", i), pure=False)
                    futures[fut] = case
                    running.add(fut)

            submit_more()
            last_write = time.monotonic()
            try:
                for fut in running:
                    case = futures.pop(fut)
                    try:
                        res = fut.result()
                    except Exception as exc:  # noqa: BLE001 - worker death / cancellation: this case is lost, not the batch
                        res = _lost_result(case, exc, out, plan.memory_limit_bytes if plan else None)
                    fut.release()
                    submit_more()
                    results[case.name] = res
                    done += 1
                    if res.status == FAILED:  # the progress callback shows it, if there is one
                        log.log(logging.DEBUG if progress else logging.WARNING, "case %s failed: %s", case.name, res.message)
                    if progress is not None:
                        progress(done, n, res)
                    if write_report and time.monotonic() - last_write >= report_every_s:
                        collect(False)
                        report.write()
                        last_write = time.monotonic()
            except KeyboardInterrupt:
                report.interrupted = True
                with contextlib.suppress(Exception):
                    client.cancel(list(futures))
                raise
        except KeyboardInterrupt:
            report.interrupted = True
            collect(True)
            if write_report:
                report.write()
            raise
        finally:
            if own_client and client is not None:
                with contextlib.suppress(Exception):
                    client.close()
            if cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.close()
            quiet.restore()
        if not report.interrupted:
            remove_stale_staging(out)  # nothing runs any more: leftovers of dead workers only
        collect(True)
        if write_report:
            report.write()
        return report
