"""``spinemorph dsca segment --path {auto,2d,3d}``: which DSCA path runs, and the 3d path end to end.

Known answer: a 5-class label map (0 background, 1 L4, 2 L4-5 disc, 3 L5, 4 canal) whose canal is a cylinder of radius
6 mm tilted 15° from LPS z; on every plane perpendicular to its axis the area is πr² = 113.1 mm².
"""

from __future__ import annotations

import csv
import json
import math
import types

import numpy as np
import pytest
from DuralSacSegLib import segment
from test_segment2d import cylinder, image_of, make_grid, true_mask_predictor

from spinemorph.app import cli
from spinemorph.labels import CANAL, DISC_L45, L4, L5
from spinemorph.volume import Volume, write_volume

R_MM, THETA_DEG, SP = 6.0, 15.0, 0.8
OUTPUTS = ("dural_sac.seg.nrrd", "dural_sac.nii.gz", "dsca.csv", "dsca.json", "dsca_levels.csv", "overlay_1.png")


def five_class_map() -> Volume:
    """Tilted cylinder canal (label 4) through (0, 8, 0) mm along (0, -sin θ, cos θ); L5 / disc / L4 boxes in front of
    it (8-30 mm anterior of the canal axis, |x| <= 12 mm), split at z = -12 and -2 mm; 0.8 mm voxels."""
    nz, ny, nx = 100, 70, 40
    kk, jj, ii = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    org = np.array([-(nx - 1) / 2, -(ny - 1) / 2 + 2, -(nz - 1) / 2]) * SP
    x, y, z = ii * SP + org[0], jj * SP + org[1], kk * SP + org[2]
    t = math.radians(THETA_DEG)
    ax = np.array([0.0, -math.sin(t), math.cos(t)])
    p = np.stack([x, y - 8.0, z], -1)
    d = p - (p @ ax)[..., None] * ax
    lab = np.zeros((nz, ny, nx), np.uint8)
    yc = 8.0 - z * math.tan(t)  # canal axis y at this z
    front = (y < yc - 8.0) & (y > yc - 30.0) & (np.abs(x) <= 12.0)
    lab[front & (z < -12.0)] = L5
    lab[front & (z >= -12.0) & (z < -2.0)] = DISC_L45
    lab[front & (z >= -2.0)] = L4
    lab[np.linalg.norm(d, axis=-1) <= R_MM] = CANAL
    return Volume(lab, (SP,) * 3, tuple(org), np.eye(3))


def test_path_3d_on_label_map_known_area(tmp_path, capsys):
    src = write_volume(five_class_map(), tmp_path / "labels.nrrd")
    out = tmp_path / "out"
    assert cli.main(["dsca", "segment", str(src), "--out", str(out), "--path", "3d", "--overlays", "2"]) == 0
    printed = capsys.readouterr().out
    assert "path: 3D - " in printed and "label map" in printed
    for name in OUTPUTS + ("overlay_2.png",):
        assert (out / name).is_file(), name
    doc = json.loads((out / "dsca.json").read_text())
    assert doc["segmentation"]["path"] == "3d" and "label map" in doc["segmentation"]["path_reason"]
    assert doc["segmentation"]["model"].startswith("none")
    rows = list(csv.DictReader((out / "dsca.csv").read_text().splitlines()))
    clean = [r for r in rows if not r["qc_flags"]]
    assert len(clean) >= 30
    area = np.array([float(r["area_mm2"]) for r in clean])
    exact = math.pi * R_MM**2
    # the voxelised canal's own mean cross-section: canal voxels between two z planes x voxel volume x cos θ / height
    # (111.1 mm²: the 0.8 mm voxelisation holds 1.8 % less than πr²)
    lab = np.asarray(five_class_map().array)
    voxel_area = np.count_nonzero(lab[20:80] == CANAL) * SP**3 * math.cos(math.radians(THETA_DEG)) / (60 * SP)
    # tolerance 0.12 x perimeter (37.7 mm) x voxel (0.8 mm) = 3.6 mm²: net error of a voxelised outline whose boundary
    # points move by up to a quarter voxel with alternating sign (docs/dsca3d.md); the mean within 1 mm²
    tol = 0.12 * 2 * math.pi * R_MM * SP
    assert np.all(np.abs(area - voxel_area) <= tol), (area.min(), area.max(), voxel_area)
    assert abs(area.mean() - voxel_area) <= 1.0 and abs(area.mean() - exact) <= 0.025 * exact
    # planes perpendicular to the canal: tilt vs LPS z = θ, axial area ≈ πr²/cos θ
    tilt = np.array([float(r["axial_tilt_deg"]) for r in clean])
    assert np.all(np.abs(tilt - THETA_DEG) < 1.0)
    assert {r["level"] for r in clean} >= {"L4", "L4-5", "L5"}
    lv = {r["level"]: r for r in csv.DictReader((out / "dsca_levels.csv").read_text().splitlines())}
    assert abs(float(lv["L4-5"]["area_mm2"]) - voxel_area) <= tol and lv["L4-5"]["stenosis"] == "no stenosis"
    # the NIfTI mask is the canal (0/1) on the input grid
    from spinemorph.volume import read_volume

    m = read_volume(out / "dural_sac.nii.gz")
    assert set(np.unique(m.array).tolist()) == {0, 1}
    assert np.count_nonzero(m.array) == np.count_nonzero(five_class_map().array == CANAL)


def test_path_auto_on_label_map_with_canal_runs_3d_and_the_report_says_so(tmp_path, capsys):
    from spinemorph.app.study import StepResult
    from spinemorph.app.study_report import build_report

    src = write_volume(five_class_map(), tmp_path / "labels.nrrd")
    out = tmp_path / "study" / "dsca"
    assert cli.main(["dsca", "segment", str(src), "--out", str(out), "--overlays", "1"]) == 0
    assert "path: 3D" in capsys.readouterr().out
    doc = json.loads((out / "dsca.json").read_text())
    assert doc["segmentation"]["path"] == "3d"
    html = build_report(tmp_path / "study", None, [StepResult("dsca", "ok")], truth_path=None, models={}, version="t")
    dsca_html = html.split('id="dsca"')[1].split('id="foramen"')[0]
    assert "Path: 3D — input is a label map" in dsca_html
    assert f"areas on {len(doc['slices'])} planes perpendicular to the canal centreline" in dsca_html
    assert "<th>plane</th>" in dsca_html and "<th>slice</th>" not in dsca_html and "Per plane" in dsca_html
    assert "DSCA path" in html.split('id="provenance"')[1]


@pytest.fixture
def fake_2d_model(monkeypatch):
    calls = []

    def fake_make(model, device):
        import types

        calls.append(model)
        return true_mask_predictor, types.SimpleNamespace(name="fake", threshold=0.5), "cpu"

    monkeypatch.setattr(segment, "make_model_predictor", fake_make)
    return calls


def test_path_auto_keeps_2d_on_axial_series(tmp_path, fake_2d_model, capsys):
    truth = cylinder(make_grid((8, 80, 80), (0.6, 0.6, 1.5)), 10.0, 7.0)
    src = write_volume(image_of(truth), tmp_path / "axial.nrrd")
    out = tmp_path / "out"
    assert cli.main(["dsca", "segment", str(src), "--out", str(out), "--device", "cpu"]) == 0
    assert fake_2d_model == [None]
    assert "path: 2D - axial series" in capsys.readouterr().out
    seg = json.loads((out / "dsca.json").read_text())["segmentation"]
    assert seg["path"] == "2d" and "axial" in seg["path_reason"]
    rows = list(csv.DictReader((out / "dsca.csv").read_text().splitlines()))
    assert float(rows[4]["area_mm2"]) == pytest.approx(math.pi * 70.0, rel=0.03)
    from spinemorph.app.study import StepResult
    from spinemorph.app.study_report import build_report

    out.rename(tmp_path / "dsca")
    html = build_report(tmp_path, None, [StepResult("dsca", "ok")], truth_path=None, models={}, version="t")
    dsca_html = html.split('id="dsca"')[1].split('id="foramen"')[0]
    assert "Path: 2D — axial series" in dsca_html and "<th>slice</th>" in dsca_html


def test_path_3d_with_coarse_model_is_one_error_line(tmp_path, fake_2d_model, capsys):
    img = image_of(cylinder(make_grid((60, 40, 40), (1.0, 1.0, 1.0)), 10.0, 7.0))
    sag = Volume(np.ascontiguousarray(np.transpose(img.array, (2, 1, 0))), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0),
                 np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]).T)
    src = write_volume(sag, tmp_path / "space.nrrd")
    out = tmp_path / "out"
    code = cli.main(["dsca", "segment", str(src), "--out", str(out), "--path", "3d", "--model-3d", "foramen3d-budget-cpu"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: ")
    assert "canal class" in err and "foramen3d-budget-cpu" in err
    assert not out.exists() or not any(out.iterdir())
    # auto on the same sagittal 3D volume: the coarse model has no canal class -> the 2d path, saying why
    code = cli.main(["dsca", "segment", str(src), "--out", str(out), "--model-3d", "foramen3d-budget-cpu",
                     "--device", "cpu", "--overlays", "0"])
    printed = capsys.readouterr().out
    assert code == 0 and "path: 2D" in printed and "no dural sac / canal class" in printed
    seg = json.loads((out / "dsca.json").read_text())["segmentation"]
    assert seg["path"] == "2d" and "foramen3d-budget-cpu" in seg["path_reason"] and seg["resliced_to_axial"]


def test_path_3d_from_a_model_records_its_locator_and_canal_decision(monkeypatch):
    """The 3D path run on a fine model's segmentation records how the crop was placed and the sac decided
    (``dsca.json`` ``segmentation.model_settings``); the areas are those of the model's canal."""
    from DuralSacSegLib import segment3d_path as sp
    from FORAMEN3DLib import segment3d

    labels = five_class_map()

    def fake_segment(vol, model="default", device="auto", progress=None, **k):
        return segment3d.SegmentationResult(labels, labels, {"total": 0.1}, "fine-x", "cpu", (), "manual point",
                                            (1.0, 2.0, 3.0), 0.6, inference={"backend": "torch", "threads": 1})

    monkeypatch.setattr(segment3d, "segment_volume", fake_segment)
    src = sp.CanalSource("model", CANAL, "test model with a canal class", model="fine-x")
    res = sp.run_3d(labels.with_array(np.asarray(labels.array, np.float32)), src, "test")
    info = res.info()
    assert info["model"] == "fine-x"
    assert info["model_settings"] == {"locator": "manual point", "l45_centre_lps": [1.0, 2.0, 3.0], "canal_threshold": 0.6,
                                      "inference": {"backend": "torch", "threads": 1}}
    clean = [r for r in res.table.rows if not r.qc_flags]
    assert clean and abs(np.median([r.area_mm2 for r in clean]) - math.pi * R_MM**2) < 3.6


def test_path_3d_prints_the_segmentation_qc_notes(tmp_path, monkeypatch, capsys):
    """The 3D model's QC notes (SegmentationResult.qc) reach dsca.json and the console, one "QC:" line each."""
    from DuralSacSegLib import segment3d_path
    from FORAMEN3DLib import segment3d

    notes = ("level check: the dural sac ends 30 mm above the lower face of the L4-5 crop (test note)",
             "second note (test)")
    labels = five_class_map()
    calls = []

    def fake_segment_volume(vol, model="default", device="auto", progress=None, **kwargs):
        calls.append(model)
        return types.SimpleNamespace(labels=labels, model_name="fake-fine", device="cpu", qc=notes)

    monkeypatch.setattr(segment3d, "segment_volume", fake_segment_volume)
    # a model with a canal class (the embedded fine model is marked not usable for DSCA in the catalogue for now)
    monkeypatch.setattr(segment3d_path, "model_canal_status", lambda model: ("fake-fine", True, "fake canal class"))
    img = image_of(cylinder(make_grid((60, 40, 40), (1.0, 1.0, 1.0)), 10.0, 7.0))
    sag = Volume(np.ascontiguousarray(np.transpose(img.array, (2, 1, 0))), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0),
                 np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]).T)
    src = write_volume(sag, tmp_path / "space.nrrd")
    out = tmp_path / "out"
    assert cli.main(["dsca", "segment", str(src), "--out", str(out), "--path", "3d", "--overlays", "0"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(calls) == 1
    assert [line for line in printed if line.startswith("QC: ") and "test" in line] == [f"QC: {n}" for n in notes]
    assert json.loads((out / "dsca.json").read_text())["segmentation"]["segmentation_qc"] == list(notes)
