"""Every bad / odd input of the corpus (``make_bad_inputs.py``) gets one clear ``error:`` line, no traceback, and leaves
no partial or temporary file behind; interrupted writes and interrupted training runs leave no corrupt file."""

from __future__ import annotations

import contextlib
import io
import json
import os
import traceback
from pathlib import Path

import numpy as np
import pytest
from make_bad_inputs import TEMP_MARKERS, BadInputCase, make_cases, run_case

from spinemorph.errors import SpineMorphError

N_CASES = 67  # the number README.md states


def _snapshot(path: Path | None) -> object:
    """Bytes of every file below ``path`` (or of the file itself); None when nothing is there."""
    if path is None or not (path.exists() or path.is_symlink()):
        return {}  # an absent --out and an empty one (created before the input was read) are the same: no output
    if path.is_file():
        return path.read_bytes()
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if not p.is_dir()}


def _temp_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if any(m in p.name for m in TEMP_MARKERS)]


def _check(case: BadInputCase) -> str | None:
    """Run ``case``; return a description of what is wrong, or None."""
    if case.out_dir is not None:
        case.prepare_out()
    before = _snapshot(case.out_dir)
    try:
        code, stderr = run_case(case)
    except SpineMorphError as exc:
        return f"the command line let a SpineMorphError escape: {exc}"
    except BaseException:  # noqa: BLE001 - any escape is the failure being tested for
        return "unhandled exception:\n" + traceback.format_exc()
    if case.argv is None and code == 0:
        return "the API call raised no SpineMorphError"
    want = case.exit_code if case.argv is not None else 1
    if code != want:
        return f"exit code {code}, expected {want}; stderr: {stderr.strip()[-400:]}"
    if "Traceback" in stderr:
        return f"traceback in stderr:\n{stderr}"
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    if len(errors) != 1:
        return f"expected exactly one 'error:' line, got {len(errors)}: {stderr.strip()[-400:]}"
    if "internal error" in errors[0]:
        return f"an unexpected exception reached the command line: {errors[0]}"
    missing = [w for w in case.expect if w.lower() not in errors[0].lower()]
    if missing:
        return f"message lacks {missing}: {errors[0]}"
    if len(errors[0]) > 600:
        return f"message too long ({len(errors[0])} characters): {errors[0][:200]}..."
    after = _snapshot(case.out_dir)
    if after != before:
        if isinstance(before, dict) and isinstance(after, dict):
            new = sorted(set(after) - set(before))
            changed = sorted(k for k in before if after.get(k) != before[k])
            return f"--out changed: new {new}, changed/removed {changed}"
        return f"--out changed ({type(before).__name__} -> {type(after).__name__})"
    return None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[BadInputCase]]:
    root = tmp_path_factory.mktemp("bad_inputs")
    return root, make_cases(root)


def test_corpus_is_large_and_named(corpus):
    _, cases = corpus
    names = [c.name for c in cases]
    assert len(cases) == N_CASES
    assert len(set(names)) == len(names)
    assert all(c.expect and all(c.expect) for c in cases)
    # the kinds the issue lists are all there
    for required in ("rgb", "four_d", "multiframe_dicom", "zero_spacing_nrrd", "missing_spacing_nrrd", "absurd_spacing_large",
                     "nonorthogonal_mha", "tiny_image", "huge_header", "nan_voxels", "constant_image", "truncated_dicom",
                     "corrupt_dicom", "mixed_series", "empty_folder", "labels_without_l4_l5", "empty_segmentation",
                     "weights_missing", "weights_truncated", "weights_incompatible", "weights_wrong_architecture",
                     "unwritable_out", "output_exists", "disk_full", "interrupted", "sagittal_thick_for_dsca",
                     "oblique_thick_for_dsca", "sagittal_multislice_for_foramen"):
        assert required in names, required


def test_every_case_gets_one_clear_error_and_no_partial_output(corpus):
    root, cases = corpus
    failures = {}
    for case in cases:
        problem = _check(case)
        if problem:
            failures[case.name] = problem
    leftovers = _temp_files(root)
    report = "\n".join(f"- {name}: {why}" for name, why in failures.items())
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n{report}"
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_failed_overwrite_keeps_the_previous_output(corpus):
    """A run refused for an existing output leaves the old file byte-identical (checked above) - and so does a disk
    that fills up while replacing it with --overwrite."""
    root, cases = corpus
    case = next(c for c in cases if c.name == "disk_full")
    out = case.out_dir
    out.mkdir(parents=True, exist_ok=True)
    old = {"synth_000_image.nrrd": b"previous image", "synth_params.json": b"{}\n"}
    for name, data in old.items():
        (out / name).write_bytes(data)
    code, stderr = run_case(BadInputCase(case.name, case.description, case.expect, argv=[*case.argv, "--overwrite"],
                                         out_dir=out, simulate=case.simulate))
    assert code == 1 and "no space left" in stderr
    for name, data in old.items():
        assert (out / name).read_bytes() == data
    assert not _temp_files(out)


def test_atomic_write_interrupted_keeps_old_file(tmp_path, monkeypatch):
    """Ctrl-C in the middle of an atomic write: the previous file is intact and no temp file remains."""
    from spinemorph import atomic

    target = tmp_path / "checkpoint.pt"
    atomic.atomic_write_bytes(target, b"old checkpoint")

    def boom(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write_bytes(target, b"new checkpoint " * 1000)
    monkeypatch.undo()
    assert target.read_bytes() == b"old checkpoint"
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


def _tiny_train_config(epochs: int) -> dict:
    from DuralSacSegLib.train import PAPER_CONFIG, load_config

    cfg = load_config(PAPER_CONFIG)
    cfg.update(architecture="unet", epochs=epochs, iterations_per_epoch=1, batch_size=2, folds=2, run_folds=[0],
               input_size=[64, 64], crop={"size": 32, "negative_fraction": 0.25}, augment={"flip_lr": False},
               device="cpu", num_threads=1)
    return cfg


def test_interrupted_training_resumes_and_corrupt_checkpoint_is_refused(tmp_path, monkeypatch):
    """DSCA training stopped (Ctrl-C) while writing its checkpoint: no corrupt or temp file, ``resume`` finishes the
    run; a checkpoint corrupted on disk is refused on resume with one clear message."""
    pytest.importorskip("torch")
    from DuralSacSegLib.evaluate import tiny_phantom_samples
    from DuralSacSegLib.train import run_training

    data = tiny_phantom_samples(6, seed=1)
    run = tmp_path / "run"
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst).name == "state.pt":
            raise KeyboardInterrupt
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        run_training(_tiny_train_config(1), run, train_samples=data, external_samples=[], progress=False)
    monkeypatch.undo()
    assert not _temp_files(run)
    assert not (run / "fold0" / "state.pt").exists()  # never half-written
    summary = run_training({}, run, resume=True, train_samples=data, external_samples=[], progress=False)
    assert summary["folds"][0]["best_epoch"] == 1
    assert (run / "fold0" / "state.pt").is_file() and not _temp_files(run)
    # corrupt the checkpoint, ask for one more epoch: a clear refusal, the broken file is left for the user to inspect
    state = run / "fold0" / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    cfg = json.loads((run / "config.json").read_text())
    cfg["epochs"] = 2
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SpineMorphError, match="cannot resume"):
        run_training({}, run, resume=True, train_samples=data, external_samples=[], progress=False)


def test_cli_never_prints_a_traceback_for_an_unreadable_levels_file(tmp_path, capsys):
    """A quick end-to-end check through ``spinemorph.cli.main`` with pytest's own capture."""
    from spinemorph.app.cli import main

    img = tmp_path / "in.nrrd"
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.arange(3 * 32 * 32, dtype=np.int16).reshape(3, 32, 32)), str(img))
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["dsca", "segment", str(img), "--out", str(tmp_path / "o"), "--levels", str(tmp_path / "nope.json")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")]


@pytest.mark.parametrize("exc,words", [
    (ValueError("unexpected value"), ["internal error", "ValueError", "report"]),
    (OSError(28, "No space left on device", "/data/out/x.nrrd"), ["no space left", "/data/out/x.nrrd"]),
    (PermissionError(13, "Permission denied", "/data/in"), ["permission denied", "/data/in"]),
])
def test_unexpected_exceptions_end_in_one_line(monkeypatch, capsys, tmp_path, exc, words):
    """Last resort of ``spinemorph.cli.main``: a bug or an unwrapped OS error is one ``error:`` line, exit code 1."""
    from spinemorph.app import cmd_synth
    from spinemorph.app.cli import main

    def boom(args, parser):
        raise exc

    monkeypatch.setattr(cmd_synth, "run", boom)
    assert main(["synth", "x.nrrd", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err
    assert all(w.lower() in lines[0].lower() for w in words)
