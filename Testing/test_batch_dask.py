"""Batch on Dask: one task per case on a LocalCluster with 2 workers. Broken inputs are reported, a case that kills its
worker is reported, a worker killed by pid mid-case is replaced and its case retried, each worker loads the model once;
a batch killed outright (driver, scheduler and workers at once) resumes to the same results as an uninterrupted one.

The cases are generated axial images (1 slice, 48 x 48: one network pass each) segmented by a randomly initialised network: every number is
deterministic, so runs can be compared exactly.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from spinemorph.app.batch import REPORT_CSV, REPORT_JSON, discover_cases
from spinemorph.app.batch_dask import plan_local_cluster, run_batch_dask
from spinemorph.app.batch_summary import ROW_JSON, SUMMARY_CSV, SUMMARY_PARQUET
from spinemorph.app.cmd_batch import CaseCommand, model_loads

pytest.importorskip("distributed")
pytest.importorskip("torch")

#: columns that depend on the run (timings, worker), not on the case
RUN_COLUMNS = {"case_s", "worker", "worker_peak_rss_mb", "dsca_s", "dsca_model_load_s", "status", "message"}


def _axial_image(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    jj, ii = np.mgrid[0:48, 0:48]
    sac = ((jj - 24) / 9.0) ** 2 + ((ii - 24) / 12.0) ** 2 < 1
    a = (100 + 10 * rng.standard_normal((1, 48, 48)) + 300 * sac[None]).astype(np.int16)
    img = sitk.GetImageFromArray(a)
    img.SetSpacing((0.7, 0.7, 4.0))
    sitk.WriteImage(img, str(path))
    return path


def _study_folder(folder: Path, good: list[str], bad: bool = True) -> Path:
    folder.mkdir(parents=True)
    for i, name in enumerate(good):
        _axial_image(folder / f"{name}.nrrd", i + 1)
    if bad:
        sitk.WriteImage(sitk.GetImageFromArray(np.full((1, 48, 48), np.nan, np.float32)), str(folder / "q_nan.nrrd"))
        (folder / "q_corrupt.nii.gz").write_bytes(b"\x1f\x8b garbage")
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    import torch
    from DuralSacSegLib.models import save_weights
    from DuralSacSegLib.networks import build_network

    torch.manual_seed(0)
    return save_weights(tmp_path_factory.mktemp("w") / "attn.pt", build_network("attention_unet"), "attention_unet")


@pytest.fixture(scope="module")
def client():
    """A LocalCluster with 2 one-case-at-a-time worker processes, as ``spinemorph batch --workers 2`` starts it."""
    from distributed import Client

    from spinemorph.app.batch_dask import start_local_cluster

    plan = plan_local_cluster(2, 1)
    cluster = start_local_cluster(plan)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def _args(weights: Path) -> list[str]:
    return ["--model", str(weights), "--device", "cpu", "--overlays", "0", "--crop-px", "0"]


class ChaosCommand(CaseCommand):
    """The ``dsca`` case command with two misbehaviours, steered by files in ``control``:

    - a case named ``crash*`` ends its worker process (``os._exit``) while ``control/crash`` exists;
    - the case named ``victim`` writes its worker's pid into ``control/victim.pid`` and a half-written file, then waits
      (to be killed by the test) - once; its retry runs normally.
    """

    def __init__(self, task, extra_args, control: Path):
        super().__init__(task, extra_args)
        self.control = str(control)

    def __call__(self, case, out_dir):
        ctl = Path(self.control)
        if case.name.startswith("crash") and (ctl / "crash").exists():
            (out_dir / "half.txt").write_text("half-written")
            os._exit(17)
        if case.name == "victim" and not (ctl / "victim.pid").exists():
            (out_dir / "half.txt").write_text("half-written")
            (ctl / "victim.tmp").write_text(str(os.getpid()))
            os.replace(ctl / "victim.tmp", ctl / "victim.pid")
            time.sleep(300)
        return super().__call__(case, out_dir)


def _rows(path: Path) -> dict[str, dict]:
    return {r["case"]: r for r in csv.DictReader(io.StringIO(path.read_text()))}


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".partial-" in p.name or ".tmp" in p.name or ".old-" in p.name]


def _complete(case_dir: Path) -> bool:
    return all((case_dir / f).is_file() for f in ("dsca.csv", "dsca.json", "command_output.txt", ROW_JSON)) and not (
        case_dir / "half.txt").exists()


def _main(argv) -> tuple[int, str]:
    from spinemorph.app.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in argv])
    return code, err.getvalue()


@pytest.mark.slow
def test_broken_cases_and_killed_workers_then_resume(tmp_path, weights, client):
    good = ["p01", "p02", "p03", "p04"]
    folder = _study_folder(tmp_path / "studies", good + ["victim", "crash_me"])
    control = tmp_path / "control"
    control.mkdir()
    (control / "crash").write_text("")
    out = tmp_path / "out"
    cases, _ = discover_cases(folder)

    killed = []

    def killer():  # kills the worker running "victim" by its pid, once, mid-case
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (control / "victim.pid").exists():
            time.sleep(0.2)
        if (control / "victim.pid").exists():
            pid = int((control / "victim.pid").read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    seen = []
    rep = run_batch_dask(cases, ChaosCommand("dsca", _args(weights), control), out, client=client, task="dsca",
                         progress=lambda i, n, r: seen.append((i, n, r.case.name, r.status)))
    t.join(5)
    assert killed, "the victim case never started"
    status = {r.case.name: r for r in rep.results}
    assert {k: r.status for k, r in status.items()} == {
        **dict.fromkeys(good + ["victim"], "ok"), "crash_me": "failed", "q_corrupt": "failed", "q_nan": "failed"}
    assert rep.exit_code == 3
    assert status["crash_me"].error_kind == "WorkerDied" and "died 2 times" in status["crash_me"].message
    assert "NaN" in status["q_nan"].message and "cannot read" in status["q_corrupt"].message
    assert [s[0] for s in seen] == list(range(1, 9)) and all(s[1] == 8 for s in seen)  # progress over all cases
    for name in good + ["victim"]:
        assert _complete(out / name), name  # the victim's retry rewrote it from scratch (no half.txt)
    for name in ("crash_me", "q_nan", "q_corrupt"):
        assert not (out / name).exists()
    assert not _leftovers(out)  # the staging folders of the killed workers are gone
    rows = _rows(out / REPORT_CSV)
    assert rows["crash_me"]["error_kind"] == "WorkerDied" and rows["p01"]["worker"].startswith("tcp://")
    # each worker process loads the model once: only the first case on a worker pays the load time
    loads = client.run(model_loads)
    assert all(v["dsca"] <= 1 for v in loads.values()), loads
    table = _rows(out / SUMMARY_CSV)
    # pyarrow is in the test extra, so CI checks the Parquet table too; without pyarrow only the CSV is written
    assert len(table) == 8
    assert (out / SUMMARY_PARQUET).is_file() == (importlib.util.find_spec("pyarrow") is not None)
    ok_rows = [table[n] for n in good + ["victim"]]
    n_workers_used = len({r["worker"] for r in ok_rows})
    assert sum(float(r["dsca_model_load_s"]) > 0.05 for r in ok_rows) <= n_workers_used < len(ok_rows)
    for r in ok_rows:
        assert float(r["dsca_min_mm2"]) > 0 and r["dsca_model"] == "attn.pt" and len(r["dsca_model_sha256"]) == 12
        assert int(r["dsca_n_slices"]) == 1
    assert table["crash_me"]["status"] == "failed" and table["crash_me"]["dsca_min_mm2"] == ""
    before = {n: (out / n / "dsca.csv").read_bytes() for n in good}

    # the crashing input is "repaired"; the command line resumes on the same cluster: only the missing cases run
    (control / "crash").unlink()
    code, err = _main(["batch", "dsca", folder, "--out", out, "--resume", "--scheduler", client.scheduler.address,
                       "--args", " ".join(_args(weights))])
    assert code == 3, err
    rows = _rows(out / REPORT_CSV)
    assert {k: r["status"] for k, r in rows.items()} == {
        **dict.fromkeys(good + ["victim"], "skipped"), "crash_me": "ok", "q_corrupt": "failed", "q_nan": "failed"}
    assert _complete(out / "crash_me") and not _leftovers(out)
    assert {n: (out / n / "dsca.csv").read_bytes() for n in good} == before  # kept, not redone
    table2 = _rows(out / SUMMARY_CSV)
    for n in good:  # the kept cases keep their row (values and the timings of the run that made them)
        assert table2[n] | {"status": "ok", "message": ""} == table[n] | {"status": "ok", "message": ""}
    assert float(table2["crash_me"]["dsca_min_mm2"]) > 0
    assert "ETA" in err and "ok 1, failed 2, kept 5" in err


def _comparable(table: dict[str, dict]) -> dict[str, dict]:
    return {c: {k: v for k, v in r.items() if k not in RUN_COLUMNS} for c, r in table.items()}


@pytest.mark.slow
def test_batch_killed_outright_resumes_to_the_same_result(tmp_path, weights, client):
    """SIGKILL to the whole batch (command, scheduler and its workers) mid-run; --resume completes it; the result is
    that of an uninterrupted batch."""
    good = [f"s{i:02d}" for i in range(1, 6)]
    folder = _study_folder(tmp_path / "studies", good)
    out = tmp_path / "out"
    args = " ".join(_args(weights))
    log = (tmp_path / "log.txt").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "spinemorph.cli", "batch", "dsca", str(folder), "--out", str(out),
                             "--workers", "2", "--args", args], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        done = []
        while time.monotonic() < deadline and proc.poll() is None:
            done = [p for p in out.glob("s*") if p.is_dir()] if out.is_dir() else []
            if done:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the batch ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    time.sleep(0.5)
    present = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert 1 <= len(present) < len(good), present  # killed mid-run
    for name in present:
        assert _complete(out / name), name  # a case folder is complete or absent
    doc = json.loads((out / REPORT_JSON).read_text())  # the report written while it ran
    assert doc["n_cases"] == len(good) + 2 and doc["exit_code"] != 0  # nothing claims to be complete

    code, err = _main(["batch", "dsca", folder, "--out", out, "--resume", "--scheduler", client.scheduler.address,
                       "--args", args])
    assert code == 3, err
    assert not _leftovers(out)
    ref = tmp_path / "ref"
    code_ref, err_ref = _main(["batch", "dsca", folder, "--out", ref, "--scheduler", client.scheduler.address,
                               "--args", args])
    assert code_ref == 3, err_ref
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(p.name for p in ref.iterdir() if p.is_dir())
    for name in good:
        assert _complete(out / name)
        assert (out / name / "dsca.csv").read_bytes() == (ref / name / "dsca.csv").read_bytes(), name
    has_result = {"ok", "skipped"}
    rows, rows_ref = _rows(out / REPORT_CSV), _rows(ref / REPORT_CSV)
    assert {k: r["status"] in has_result for k, r in rows.items()} == {
        k: r["status"] in has_result for k, r in rows_ref.items()}
    assert _comparable(_rows(out / SUMMARY_CSV)) == _comparable(_rows(ref / SUMMARY_CSV))


def test_plan_local_cluster_never_oversubscribes():
    p = plan_local_cluster(cores=16, memory_bytes=64 * 2**30)
    assert (p.workers, p.torch_threads) == (16, 1)
    p = plan_local_cluster(workers=4, cores=16, memory_bytes=64 * 2**30)
    assert (p.workers, p.torch_threads) == (4, 4) and p.memory_limit_bytes == 16 * 2**30
    p = plan_local_cluster(workers=4, threads_per_worker=8, cores=16, memory_bytes=64 * 2**30)
    assert p.torch_threads == 4 and "lowered to 4" in p.notes[0]
    p = plan_local_cluster(cores=16, memory_bytes=4 * 2**30)  # memory-bound: fewer workers, more threads each
    assert (p.workers, p.torch_threads) == (2, 8) and "GiB" in p.notes[0]
    p = plan_local_cluster(threads_per_worker=2, cores=16, memory_bytes=4 * 2**30)
    assert (p.workers, p.torch_threads) == (2, 2)  # an explicit thread count that fits is kept
    assert plan_local_cluster(cores=2, memory_bytes=23 * 2**30).workers == 2
    from spinemorph.errors import InputError

    with pytest.raises(InputError, match="--workers"):
        plan_local_cluster(workers=0)


def test_cli_usage_for_clusters(tmp_path, monkeypatch):
    import spinemorph.app.batch_dask

    monkeypatch.setattr(spinemorph.app.batch_dask, "CONNECT_TIMEOUT_S", 2)
    folder = _study_folder(tmp_path / "f", ["a"], bad=False)
    code, err = _main(["batch", "dsca", folder, "--out", tmp_path / "o", "--scheduler", "tcp://x:1", "--workers", "2"])
    assert code == 1 and "drop --workers" in err
    code, err = _main(["batch", "dsca", folder, "--out", tmp_path / "o", "--scheduler", "tcp://127.0.0.1:9"])
    assert code == 1 and "cannot connect to the Dask scheduler at tcp://127.0.0.1:9" in err
    assert not (tmp_path / "o" / REPORT_CSV).exists()  # nothing ran: no report claiming otherwise


def test_a_malformed_scheduler_address_is_a_usage_error_not_a_bug(tmp_path):
    folder = _study_folder(tmp_path / "f", ["a"], bad=False)
    for address in ("notanaddress", "tcp://127.0.0.1:notaport"):
        code, err = _main(["batch", "dsca", folder, "--out", tmp_path / "o", "--scheduler", address])
        assert code != 0 and f"--scheduler {address!r} is not a Dask scheduler address" in err, err
        assert "internal error" not in err and "bug" not in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "o" / REPORT_CSV).exists()
