"""Same input + same seed -> byte-identical tables and files (DSCA table, foramen measurements, synthesis)."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spinemorph.volume import write_volume


def _main(argv) -> int:
    from spinemorph.app.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main([str(a) for a in argv])


def _files(folder: Path, pattern: str = "*") -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob(pattern)) if p.is_file()}


@pytest.fixture(scope="module")
def phantom_labels(tmp_path_factory):
    """Foramen label map (1 L4, 2 disc, 3 L5) and dural sac mask of the normal phantom, written to files."""
    from spinemorph.phantom import make_phantom
    from spinemorph.volume import Volume

    ph = make_phantom(seed=0)
    c = np.asarray(ph.canal_to_lps(np.zeros(3)))
    size = np.array([100, 100, 70])
    grid = Volume(np.zeros(size[::-1], np.uint8), (1.0,) * 3, c - size / 2, np.eye(3))
    folder = tmp_path_factory.mktemp("phantom")
    foramen = write_volume(ph.rasterize_labels(grid, kind="foramen"), folder / "foramen.nrrd")
    axial = ph.axial_grid()
    sac = ph.rasterize_labels(axial, kind="dural_sac")
    return {"foramen": foramen, "dural_sac": sac, "phantom": ph}


DSCA_SCRIPT = """
import sys
from spinemorph.phantom import make_phantom
from DuralSacSegLib.dsca import compute_dsca_table
ph = make_phantom(seed=0)
sac = ph.rasterize_labels(ph.axial_grid(), kind="dural_sac")
sys.stdout.write(compute_dsca_table(sac, levels={"L4-5": [0.0, 0.0, 0.0]}).to_csv())
"""


def test_dsca_table_byte_identical_in_process_and_across_processes(phantom_labels):
    from DuralSacSegLib.dsca import compute_dsca_table

    sac = phantom_labels["dural_sac"]
    a = compute_dsca_table(sac, levels={"L4-5": [0.0, 0.0, 0.0]})
    b = compute_dsca_table(sac.with_array(sac.array.copy()), levels={"L4-5": [0.0, 0.0, 0.0]})
    assert a.to_csv() == b.to_csv() and a.to_json() == b.to_json() and a.levels_to_csv() == b.levels_to_csv()
    assert len(a.nonempty_rows()) > 3
    # a fresh interpreter (other hash seeds, other allocation order) writes the very same bytes
    out = subprocess.run([sys.executable, "-c", DSCA_SCRIPT], capture_output=True, text=True, timeout=120,
                         env={"PYTHONHASHSEED": "123", "OMP_NUM_THREADS": "1", "PATH": ""}, check=True).stdout
    assert out == a.to_csv()


def test_foramen_measurements_csv_byte_identical(phantom_labels, tmp_path):
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert _main(["foramen", "measure", phantom_labels["foramen"], "--labels-only", "--no-meshes", "--out", out,
                      "--case", "phantom"]) == 0
        outs.append(out)
    a, b = ((o / "measurements.csv").read_bytes() for o in outs)
    assert a == b and b"foraminal_height" in a


def test_synth_output_byte_identical_for_same_seed(phantom_labels, tmp_path):
    from spinemorph.volume import read_volume

    small = read_volume(phantom_labels["foramen"])
    small = small.with_array(np.ascontiguousarray(small.array))
    src = write_volume(small, tmp_path / "labels.nrrd")
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        assert _main(["synth", src, "--out", tmp_path / name, "--n", "2", "--seed", seed, "--contrast", "t2"]) == 0
        runs[name] = _files(tmp_path / name)
    assert set(runs["a"]) == {"synth_000_image.nrrd", "synth_000_labels.nrrd", "synth_001_image.nrrd",
                              "synth_001_labels.nrrd", "synth_params.json"}
    assert runs["a"] == runs["b"]  # every byte of every file
    assert runs["a"]["synth_000_image.nrrd"] != runs["c"]["synth_000_image.nrrd"]  # the seed matters


def test_batch_report_rows_deterministic(tmp_path):
    """The batch report's case order and messages do not depend on the file system's listing order."""
    from spinemorph.app.batch import discover_cases, run_batch
    from spinemorph.errors import InputError

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("zeta.nrrd", "alpha.mha", "mid"):
        (folder / name).mkdir() if name == "mid" else (folder / name).write_bytes(b"x")

    def fn(case, out):
        if case.name == "alpha":
            raise InputError("alpha is broken")
        (out / "r.txt").write_text(case.name)

    texts = []
    for run in ("r1", "r2"):
        cases, _ = discover_cases(folder)
        rep = run_batch(cases, fn, tmp_path / run)
        texts.append([(r.case.name, r.status, r.message) for r in rep.results])
    assert texts[0] == texts[1] == [("alpha", "failed", "alpha is broken"), ("mid", "ok", ""), ("zeta", "ok", "")]
