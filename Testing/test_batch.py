"""Batch runs: N cases with k broken give N - k results, k reported failures with reasons, exit code 3; interrupted
batches resume; nothing half-written is left behind."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from spinemorph.app.batch import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PARTIAL,
    REPORT_CSV,
    REPORT_JSON,
    BatchCase,
    discover_cases,
    run_batch,
)
from spinemorph.errors import InputError, OutputError, SpineMorphError


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".partial-" in p.name or ".tmp" in p.name or ".old-" in p.name]


def _writer(case: BatchCase, out: Path) -> dict:
    """A case function: writes two files, or fails according to the case name."""
    (out / "result.txt").write_text(f"result of {case.name}\n")
    if case.name.startswith("bad"):
        raise InputError(f"{case.name} is broken on purpose; fix the input")
    if case.name.startswith("bug"):
        raise ZeroDivisionError("division by zero")
    (out / "more.txt").write_text("x\n")
    return {"value": len(case.name)}


def _cases(names) -> list[BatchCase]:
    return [BatchCase(n, Path(f"/inputs/{n}")) for n in names]


def test_partial_failure_report_and_no_half_written_results(tmp_path):
    names = ["a1", "bad1", "a2", "bug1", "a3"]
    rep = run_batch(_cases(names), _writer, tmp_path / "out", task="demo")
    out = tmp_path / "out"
    assert rep.exit_code == EXIT_PARTIAL == 3
    assert [r.case.name for r in rep.succeeded] == ["a1", "a2", "a3"]  # N - k results
    assert {r.case.name: r.error_kind for r in rep.failed} == {"bad1": "InputError", "bug1": "InternalError"}
    assert "broken on purpose" in rep.failed[0].message and "ZeroDivisionError" in rep.failed[1].message
    for n in ("a1", "a2", "a3"):
        assert (out / n / "result.txt").read_text() == f"result of {n}\n" and (out / n / "more.txt").is_file()
    for n in ("bad1", "bug1"):
        assert not (out / n).exists()  # the failed case's half-written folder is gone
    assert not _leftovers(out)
    doc = json.loads((out / REPORT_JSON).read_text())
    assert doc["n_cases"] == 5 and doc["n_succeeded"] == 3 and doc["n_failed"] == 2 and doc["exit_code"] == 3
    assert doc["cases"][0]["summary"] == {"value": 2}
    rows = list(csv.DictReader(io.StringIO((out / REPORT_CSV).read_text())))
    assert [(r["case"], r["status"]) for r in rows] == [("a1", "ok"), ("bad1", "failed"), ("a2", "ok"), ("bug1", "failed"), ("a3", "ok")]
    assert rows[1]["message"].startswith("bad1 is broken on purpose")
    # the report is not overwritten by a second batch without --overwrite / --resume
    with pytest.raises(OutputError, match="already exists"):
        run_batch(_cases(names), _writer, out)


def test_exit_codes_all_ok_and_all_failed(tmp_path):
    assert run_batch(_cases(["a", "b"]), _writer, tmp_path / "ok").exit_code == EXIT_OK
    assert run_batch(_cases(["bad_a", "bad_b"]), _writer, tmp_path / "ko").exit_code == EXIT_FAILURE
    assert run_batch([], _writer, tmp_path / "none").exit_code == EXIT_FAILURE
    with pytest.raises(InputError, match="unique"):
        run_batch(_cases(["a", "a"]), _writer, tmp_path / "dup")
    with pytest.raises(InputError, match="cannot be used"):
        run_batch(_cases([".hidden"]), _writer, tmp_path / "hid")


def test_interrupted_batch_resumes_where_it_stopped(tmp_path):
    names = ["c1", "c2", "c3", "c4"]
    calls = []

    def fn(case, out):
        calls.append(case.name)
        (out / "r.txt").write_text(case.name)
        if case.name == "c3" and len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of case c3
        return None

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_batch(_cases(names), fn, out)
    doc = json.loads((out / REPORT_JSON).read_text())
    assert doc["interrupted"] and [c["status"] for c in doc["cases"]] == ["ok", "ok", "not run", "not run"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["c1", "c2"] and not _leftovers(out)
    rep = run_batch(_cases(names), fn, out, resume=True)
    assert calls == ["c1", "c2", "c3", "c3", "c4"]  # c1, c2 not redone
    assert [r.status for r in rep.results] == ["skipped", "skipped", "ok", "ok"] and rep.exit_code == EXIT_OK
    # --overwrite redoes everything and replaces the old result folders atomically
    rep = run_batch(_cases(names), fn, out, overwrite=True)
    assert [r.status for r in rep.results] == ["ok"] * 4 and (out / "c1" / "r.txt").read_text() == "c1"
    assert not _leftovers(out)


def test_discover_cases(tmp_path):
    (tmp_path / "study_b").mkdir()
    (tmp_path / "a.nrrd").write_bytes(b"x")
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    (tmp_path / "c.mha").write_bytes(b"x")
    (tmp_path / "README.txt").write_text("notes")
    (tmp_path / ".DS_Store").write_bytes(b"")
    cases, ignored = discover_cases(tmp_path)
    assert [c.name for c in cases] == ["a.nii.gz", "a.nrrd", "c", "study_b"]
    assert ignored == ["README.txt"]
    with pytest.raises(InputError, match="does not exist"):
        discover_cases(tmp_path / "nope")
    with pytest.raises(InputError, match="not a folder"):
        discover_cases(tmp_path / "c.mha")


# ---------------------------------------------------------------------- the command line
def _axial_image(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    jj, ii = np.mgrid[0:48, 0:48]
    sac = ((jj - 24) / 9.0) ** 2 + ((ii - 24) / 12.0) ** 2 < 1
    a = (100 + 10 * rng.standard_normal((2, 48, 48)) + 300 * sac[None]).astype(np.int16)
    img = sitk.GetImageFromArray(a)
    img.SetSpacing((0.7, 0.7, 4.0))
    sitk.WriteImage(img, str(path))
    return path


@pytest.fixture(scope="module")
def dsca_weights(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    from DuralSacSegLib.models import save_weights
    from DuralSacSegLib.networks import build_network

    torch.manual_seed(0)
    return save_weights(tmp_path_factory.mktemp("w") / "attn.pt", build_network("attention_unet"), "attention_unet")


def _main(argv) -> tuple[int, str]:
    from spinemorph.app.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in argv])
    return code, err.getvalue()


def test_cli_batch_dsca_partial_failure(tmp_path, dsca_weights):
    """4 cases, 2 broken (NaN voxels, a corrupt file) -> 2 results, 2 reported failures, exit code 3 (default engine:
    a local Dask cluster sized to this machine)."""
    pytest.importorskip("torch")
    folder = tmp_path / "studies"
    folder.mkdir()
    _axial_image(folder / "p01.nrrd", 1)
    _axial_image(folder / "p02.mha", 2)
    bad = sitk.GetImageFromArray(np.full((2, 48, 48), np.nan, np.float32))
    sitk.WriteImage(bad, str(folder / "p03_nan.nrrd"))
    (folder / "p04_corrupt.nii.gz").write_bytes(b"\x1f\x8b garbage")
    out = tmp_path / "results"
    args = f"--model {dsca_weights} --device cpu --overlays 0"
    code, err = _main(["batch", "dsca", folder, "--out", out, "--args", args])
    assert code == 3, err
    assert "Traceback" not in err
    rows = {r["case"]: r for r in csv.DictReader(io.StringIO((out / REPORT_CSV).read_text()))}
    assert {k: v["status"] for k, v in rows.items()} == {"p01": "ok", "p02": "ok", "p03_nan": "failed", "p04_corrupt": "failed"}
    assert "NaN" in rows["p03_nan"]["message"] and "cannot read" in rows["p04_corrupt"]["message"]
    for case in ("p01", "p02"):
        table = (out / case / "dsca.csv").read_text().splitlines()
        assert len(table) == 3  # header + 2 slices
        assert (out / case / "dural_sac.seg.nrrd").is_file() and (out / case / "command_output.txt").is_file()
    assert not (out / "p03_nan").exists() and not (out / "p04_corrupt").exists() and not _leftovers(out)
    # the same result as the single-case command (same function, same files)
    single = tmp_path / "single"
    code1, _ = _main(["dsca", "segment", folder / "p01.nrrd", "--out", single, *args.split()])
    assert code1 == 0
    assert (single / "dsca.csv").read_bytes() == (out / "p01" / "dsca.csv").read_bytes()
    # rerun with --resume: the good cases are kept, the broken ones fail again with the same reasons
    # (in this process, --workers 0: the two engines share the output folder's conventions)
    code2, _ = _main(["batch", "dsca", folder, "--out", out, "--args", args, "--resume", "--workers", "0"])
    rows2 = {r["case"]: r["status"] for r in csv.DictReader(io.StringIO((out / REPORT_CSV).read_text()))}
    assert code2 == 3 and rows2 == {"p01": "skipped", "p02": "skipped", "p03_nan": "failed", "p04_corrupt": "failed"}


def test_cli_batch_foramen_label_maps(tmp_path):
    """Foramen measurement over label maps: the phantom's L4/disc/L5 map succeeds, a map without L4/L5 fails."""
    from spinemorph.phantom import make_phantom
    from spinemorph.volume import Volume, write_volume

    ph = make_phantom()
    c = np.asarray(ph.canal_to_lps(np.zeros(3)))
    size = np.array([100, 100, 70])
    grid = Volume(np.zeros(size[::-1], np.uint8), (1.0,) * 3, c - size / 2, np.eye(3))
    labels = ph.rasterize_labels(grid, kind="foramen")
    folder = tmp_path / "maps"
    write_volume(labels, folder / "phantom.nrrd")
    write_volume(labels.with_array((labels.array == 2).astype(np.uint8) * 2), folder / "disc_only.nrrd")
    out = tmp_path / "out"
    code, err = _main(["batch", "foramen", folder, "--out", out, "--args", "--labels-only --no-meshes", "--workers", "0"])
    assert code == 3, err
    rows = {r["case"]: r for r in csv.DictReader(io.StringIO((out / REPORT_CSV).read_text()))}
    assert rows["phantom"]["status"] == "ok" and rows["disc_only"]["status"] == "failed"
    assert "L4" in rows["disc_only"]["message"]
    measured = list(csv.DictReader(io.StringIO((out / "phantom" / "measurements.csv").read_text())))
    height = {r["Side"]: float(r["Value"]) for r in measured if r["Metric"] == "foraminal_height"}
    for side in ("left", "right"):
        assert height[side] == pytest.approx(ph.truth.foramen[side].height_mm, abs=1.0)
    # the summary table carries the same measurements, one row per case
    table = {r["case"]: r for r in csv.DictReader(io.StringIO((out / "batch_summary.csv").read_text()))}
    for side in ("left", "right"):
        assert float(table["phantom"][f"foramen_{side}_height_mm"]) == pytest.approx(height[side], abs=0.006)
        assert float(table["phantom"][f"foramen_{side}_area_mm2"]) > 0
    assert table["phantom"]["foramen_model"] == "(label map given)" and table["disc_only"]["status"] == "failed"
    assert table["disc_only"]["foramen_left_height_mm"] == ""


def test_cli_batch_usage_errors(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "x.nrrd").write_bytes(b"x")
    code, err = _main(["batch", "dsca", folder, "--out", folder / "inside"])
    assert code == 1 and "inside the batch folder" in err
    with pytest.raises(SystemExit) as exc:
        _main(["batch", "dsca", folder, "--out", tmp_path / "o", "--args", "--no-such-option"])
    assert exc.value.code == 2
    code, err = _main(["batch", "dsca", folder, "--out", tmp_path / "o", "--args", "'unbalanced"])
    assert code == 1 and "cannot be split" in err


def test_command_for_unknown_task():
    from spinemorph.app.cmd_batch import command_for

    with pytest.raises(SpineMorphError, match="unknown batch task"):
        command_for("nope")


def test_batch_help_and_study_task(capsys):
    """``--help`` documents tasks, outputs and exit codes; the ``study`` task runs ``spinemorph study`` or, where that
    command is not installed, refuses with one clear message."""
    from spinemorph.app.cli import build_parser
    from spinemorph.app.cmd_batch import command_for

    with pytest.raises(SystemExit):
        build_parser().parse_args(["batch", "--help"])
    text = capsys.readouterr().out
    for words in ("dsca", "foramen", "study", "batch_report.json", "exit codes", "--resume"):
        assert words in text
    _, prefix = command_for("study")
    assert prefix == ("study",)


def test_cli_batch_study_partial_is_kept(tmp_path, monkeypatch):
    """A study that ends partial (exit code 3, report written) is a result: kept, marked "partial" in the report;
    one that ends 1 fails with the failed step's line in the message and leaves nothing behind."""
    import types

    import spinemorph.app.study

    def fake_run_study(inputs, out_dir, **kwargs):
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        code = 3 if Path(inputs[0]).name == "partial" else 1
        if code == 3:
            (out_dir / "report.html").write_text("<html>partial study</html>")
        else:
            print("      FAILED in 0.1 s: no usable series")
        return types.SimpleNamespace(exit_code=code, report_path=out_dir / "report.html" if code == 3 else None)

    monkeypatch.setattr(spinemorph.app.study, "run_study", fake_run_study)
    folder = tmp_path / "studies"
    for name in ("partial", "broken"):
        (folder / name).mkdir(parents=True)
    out = tmp_path / "out"
    code, err = _main(["batch", "study", folder, "--out", out, "--workers", "0"])  # in-process: the monkeypatch applies
    assert code == 3, err
    rows = {r["case"]: r for r in csv.DictReader(io.StringIO((out / REPORT_CSV).read_text()))}
    assert rows["partial"]["status"] == "ok" and rows["partial"]["message"].startswith("partial")
    assert (out / "partial" / "report.html").is_file() and (out / "partial" / "command_output.txt").is_file()
    assert rows["broken"]["status"] == "failed" and "exit code 1" in rows["broken"]["message"]
    assert "no usable series" in rows["broken"]["message"]
    assert not (out / "broken").exists() and not _leftovers(out)
    doc = json.loads((out / REPORT_JSON).read_text())
    assert doc["n_partial"] == 1
    assert {c["case"]: c["summary"].get("partial") for c in doc["cases"]} == {"partial": True, "broken": None}


def test_summary_row_of_a_study_folder(tmp_path):
    """The summary row reads a study's dsca/ and foramen/ results and its step report: minimum and per-level DSCA,
    foramen both sides, QC flags (slice flags counted, flagged sides, failed steps), models, timings."""
    from spinemorph.app.batch_summary import case_row, columns_of

    (tmp_path / "dsca").mkdir()
    (tmp_path / "foramen").mkdir()
    slices = [{"slice_index": 0, "position_mm": 0.0, "area_mm2": 150.0, "corrected_area_mm2": 140.0,
               "stenosis": "no stenosis", "qc_flags": []},
              {"slice_index": 1, "position_mm": 4.0, "area_mm2": 70.5, "corrected_area_mm2": 66.0,
               "stenosis": "absolute stenosis", "qc_flags": ["touches_border"]},
              {"slice_index": 2, "position_mm": 8.0, "area_mm2": 0.0, "corrected_area_mm2": float("nan"),
               "stenosis": "", "qc_flags": ["empty", "touches_border"]}]
    levels = [{"level": "L4-5", "slice_index": 1, "area_mm2": 70.5, "corrected_area_mm2": 66.0,
               "stenosis": "absolute stenosis", "qc_flags": []},
              {"level": "L5-S1", "slice_index": -1, "area_mm2": float("nan"), "qc_flags": []}]
    slices.append({"slice_index": 3, "position_mm": 12.0, "area_mm2": 30.0, "stenosis": "",
                   "stenosis_note": "not graded: several separate pieces", "qc_flags": ["multiple_components"]})
    (tmp_path / "dsca" / "dsca.json").write_text(json.dumps({
        "segmentation": {"model": "dsca-multiresunet", "timings_s": {"total_s": 1.5, "model_load_s": 0.25}},
        "qc": {"blocking_flags": ["empty", "multiple_components", "touches_border"]},
        "slices": slices, "levels": levels}))
    meas = [{"metric": "foraminal_height", "side": s, "value": v, "unit": "mm"} for s, v in (("left", 14.2), ("right", 18.0))]
    meas += [{"metric": "foraminal_width", "side": "left", "value": 7.5}, {"metric": "foraminal_area", "side": "right",
             "value": 120.25}, {"metric": "posterior_disc_height", "side": "midline", "value": 3.9}]
    (tmp_path / "foramen" / "measurements.json").write_text(json.dumps({
        "measurements": meas, "input_qc": ["thick slices"],
        "sides": {"left": {"flagged": True, "flag": "foramen enlargement likely needed", "qc_status": "ok"},
                  "right": {"flagged": False, "flag": "", "qc_status": "review",
                            "qc_reasons": ["thick slices", "facet gap closed"]}},
        "timings_s": {"measure": 0.5}, "segmentation": {"model": "no-such-model", "timings_s": {"total": 2.0}}}))
    (tmp_path / "study_summary.json").write_text(json.dumps({
        "spinemorph_version": "9.9", "total_seconds": 12.5,
        "steps": [{"name": "foramen", "status": "ok"}, {"name": "plan", "status": "failed", "message": "no skin"}]}))
    row = case_row(tmp_path)
    # the smallest mask is an implausible one (not graded); the smallest graded slice is the first one
    assert (row["dsca_min_mm2"], row["dsca_min_slice"]) == (30.0, 3) and row["dsca_min_stenosis"].startswith("not graded")
    assert (row["dsca_min_graded_mm2"], row["dsca_min_graded_slice"], row["dsca_min_graded_stenosis"]) == (
        150.0, 0, "no stenosis")  # slice 1 (70.5) touches the border: blocking
    assert row["dsca_n_slices"] == 4 and row["dsca_n_slices_with_sac"] == 3 and row["dsca_n_slices_not_graded"] == 2
    assert row["dsca_L4-5_mm2"] == 70.5 and row["dsca_L5-S1_mm2"] is None
    assert row["foramen_left_height_mm"] == 14.2 and row["foramen_right_area_mm2"] == 120.25
    assert row["posterior_disc_height_mm"] == 3.9 and row["foramen_left_flag"].startswith("foramen enlargement")
    assert row["dsca_model"] == "dsca-multiresunet" and len(row["dsca_model_sha256"]) == 12
    assert (row["foramen_model"], row["foramen_model_sha256"]) == ("no-such-model", "")
    assert (row["dsca_s"], row["foramen_segment_s"], row["study_s"], row["spinemorph_version"]) == (1.5, 2.0, 12.5, "9.9")
    flags = row["qc_flags"].split(" | ")
    assert "dsca touches_border (2 slices)" in flags and "dsca empty (1 slice)" in flags
    assert "dsca multiple_components (1 slice)" in flags
    assert "dsca L5-S1: outside the imaged slices" in flags and "study plan failed: no skin" in flags
    assert "foramen left: foramen enlargement likely needed" in flags and "foramen input: thick slices" in flags
    assert "foramen right QC review: facet gap closed" in flags and (row["foramen_left_qc"], row["foramen_right_qc"]) == (
        "ok", "review")
    cols = columns_of([row])
    assert cols.index("dsca_n_slices_with_sac") < cols.index("dsca_L4-5_mm2") < cols.index("foramen_left_height_mm")


def test_one_batch_at_a_time_per_output_folder(tmp_path):
    """A second batch into the same folder is refused while the first runs (its staging folders would be removed as
    stale); the lock goes with the batch."""
    pytest.importorskip("fcntl")
    from spinemorph.app.batch import _folder_lock

    out = tmp_path / "out"
    out.mkdir()
    with _folder_lock(out):
        with pytest.raises(OutputError, match="another batch is writing into"):
            run_batch(_cases(["a"]), _writer, out)
    assert run_batch(_cases(["a"]), _writer, out, resume=True).exit_code == EXIT_OK


def test_a_case_runs_with_the_planned_threads_in_torch_and_simpleitk(tmp_path):
    """workers x threads <= cores holds for SimpleITK's filters as well (ITK's default is every core)."""
    import torch

    from spinemorph.app import batch

    seen = {}

    def case_fn(case, out):
        seen.update(torch=torch.get_num_threads(), sitk=sitk.ProcessObject.GetGlobalDefaultNumberOfThreads())
        (out / "x.txt").write_text("x\n")

    old = torch.get_num_threads(), sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(), list(batch._TORCH_THREADS)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(2, old[1]))  # as ITK starts: all cores (>= 2 here)
    batch._TORCH_THREADS.clear()  # a fresh worker process
    try:
        res = batch.execute_case(_cases(["a"])[0], case_fn, tmp_path, torch_threads=1)
        assert res.status == "ok" and seen == {"torch": 1, "sitk": 1}
    finally:
        torch.set_num_threads(old[0])
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(old[1])
        batch._TORCH_THREADS[:] = old[2]


def test_stale_staging_removal_never_leaves_a_half_deleted_result(tmp_path, monkeypatch):
    """--resume removes the staging folders a killed batch left; a case of that batch still running elsewhere (an
    orphaned task on an external cluster) may publish its staging folder at that very moment. The result folder is
    then complete or absent, never half-deleted (which --resume would keep as complete)."""
    import os
    import shutil

    from spinemorph.app import batch

    out = tmp_path / "out"
    out.mkdir()
    staging = out / ".p1.partial-orphan"
    staging.mkdir()
    for name in ("dsca.csv", "dsca.json", batch.ROW_JSON):
        (staging / name).write_text("x\n")
    final = out / "p1"
    real_rmtree = shutil.rmtree

    def rmtree_racing_a_publish(path, *args, **kwargs):
        victim = sorted(Path(path).iterdir())[0]
        victim.unlink()  # the deletion has begun ...
        with contextlib.suppress(OSError):
            os.replace(staging, final)  # ... when the orphaned task publishes its staging folder
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree_racing_a_publish)
    batch.remove_stale_staging(out)
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    if final.exists():
        assert sorted(p.name for p in final.iterdir()) == sorted(["dsca.csv", "dsca.json", batch.ROW_JSON])
    assert not [p.name for p in out.iterdir() if p.name != "p1"]  # nothing stale left either
