"""The short CI run of ``scripts/fuzz_loaders.py``: mutated NRRD / NIfTI / MHA / DICOM / seg.nrrd / weights files
either load or raise SpineMorphError; no other exception."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fuzz_loaders.py"


def test_fuzz_quick_no_unhandled_exception(tmp_path):
    pytest.importorskip("torch")
    summary_path = tmp_path / "summary.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--seed", "1", "--json", str(summary_path),
                           "--crash-dir", str(tmp_path / "crashes")],
                          capture_output=True, text=True, timeout=300, env=env)
    summary = json.loads(summary_path.read_text())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert summary["unhandled"] == 0 and not (tmp_path / "crashes").exists()
    assert summary["inputs"] == summary["ok"] + summary["clean"] >= 200
    # the mutations are not all trivially fatal: some inputs still load, most are refused with a message
    assert summary["ok"] > 0 and summary["clean"] > summary["ok"]
    kinds = {name.split(":")[0] for name in summary["per_loader"]}
    assert {"image", "dicom", "seg", "weights2d", "weights3d"} <= kinds


def test_fuzz_supervisor_survives_a_crashing_reader(tmp_path):
    """A reader that kills the process (segfault / abort in C++) is counted as a crash, its input saved, and the run
    goes on with the next input in a new worker."""
    pytest.importorskip("torch")
    summary_path = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--n", "6", "--quick", "--seed", "2", "--crash-at", "2",
                           "--json", str(summary_path), "--crash-dir", str(tmp_path / "crashes")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    summary = json.loads(summary_path.read_text())
    assert proc.returncode == 1
    assert summary["crashes"] == 1 and summary["worker_restarts"] == 1 and summary["inputs"] == 6
    assert [p.name.split("_")[1] for p in (tmp_path / "crashes").iterdir()] == ["000002"]
