"""Slicer-free tests of every piece of logic the DuralSacSeg / FORAMEN3D widgets call.

The Slicer glue (``*Lib/slicer_*.py``) only copies values between MRML nodes and these helpers, so testing them
here covers what the panels show: geometry conversion LPS <-> RAS, device fallback warnings, progress / cancel,
terminology strings, model choices, the DSCA table columns and slice jumps, editable foramen markups with live
recomputation, the view layout and reformat matrices, the sample study, the .ui files and their parameter bindings.
Known answers come from exact geometry (hand-computed matrices, the phantom's analytic truth).
"""

from __future__ import annotations

import ast
import json
import math
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from spinemorph import gui_support
from spinemorph.errors import InputError, SpineMorphError
from spinemorph.gui_support import (
    ProgressRelay,
    ijk_to_ras_matrix,
    is_cancelled,
    lps_to_ras,
    parse_terminology_entry,
    ras_to_lps,
    resolve_device,
    terminology_entry,
    user_message,
    volume_from_ijk_to_ras,
)
from spinemorph.volume import Volume

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("DuralSacSeg", "FORAMEN3D")


# ====================================================================== shared phantom fixtures
@pytest.fixture(scope="module")
def phantom():
    from spinemorph.phantom import make_phantom

    return make_phantom(seed=0)


@pytest.fixture(scope="module")
def foramen_labels(phantom):
    return phantom.rasterize_labels(phantom.space_grid(), kind="foramen")


@pytest.fixture(scope="module")
def morphometry(foramen_labels):
    from FORAMEN3DLib.morphometry import measure_foramen

    return measure_foramen(foramen_labels)


@pytest.fixture(scope="module")
def dsca_table(phantom):
    from DuralSacSegLib.dsca import compute_dsca_table

    grid = phantom.axial_grid()
    mask = phantom.rasterize_labels(grid, kind="dural_sac")
    return grid, compute_dsca_table(mask)


# ====================================================================== geometry
def test_ijk_to_ras_known_answer():
    vol = Volume(np.zeros((4, 5, 6)), spacing_mm=(0.5, 0.6, 2.0), origin_mm=(10.0, 20.0, 30.0))
    m = ijk_to_ras_matrix(vol)
    ras = m @ np.array([1.0, 2.0, 3.0, 1.0])
    np.testing.assert_allclose(ras[:3], [-10.5, -21.2, 36.0])
    np.testing.assert_allclose(m[:3, :3], np.diag([-0.5, -0.6, 2.0]))


@pytest.mark.parametrize(
    "direction",
    [
        np.eye(3),  # axial LPS
        np.array([[0.0, 0, -1], [1, 0, 0], [0, -1, 0]]),  # sagittal PIR (i -> P, j -> I, k -> R)
        None,  # oblique (gantry tilt 15 deg about x)
    ],
)
def test_volume_ijk_to_ras_round_trip(direction):
    if direction is None:
        t = math.radians(15)
        direction = np.array([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]])
    arr = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    vol = Volume(arr, spacing_mm=(0.8, 0.7, 3.0), origin_mm=(-5.0, 12.0, 40.0), direction=direction)
    back = volume_from_ijk_to_ras(arr, ijk_to_ras_matrix(vol))
    np.testing.assert_allclose(back.spacing_mm, vol.spacing_mm)
    np.testing.assert_allclose(back.origin_mm, vol.origin_mm)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-12)
    # any voxel: RAS from the matrix == flipped LPS from the core
    ijk = np.array([3.0, 1.0, 1.0])
    ras = (ijk_to_ras_matrix(vol) @ np.append(ijk, 1.0))[:3]
    np.testing.assert_allclose(ras, lps_to_ras(vol.index_to_lps(ijk)))


def test_volume_from_bad_matrix_raises():
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    with pytest.raises(SpineMorphError, match="sheared"):
        volume_from_ijk_to_ras(np.zeros((2, 2, 2)), sheared)
    flat = np.diag([1.0, 0.0, 1.0, 1.0])
    with pytest.raises(SpineMorphError, match="zero voxel spacing"):
        volume_from_ijk_to_ras(np.zeros((2, 2, 2)), flat)


def test_lps_ras_flip_is_an_involution():
    p = np.array([[1.0, -2.0, 3.0], [0.0, 5.0, -7.0]])
    np.testing.assert_allclose(lps_to_ras(p), [[-1, 2, 3], [0, -5, -7]])
    np.testing.assert_allclose(ras_to_lps(lps_to_ras(p)), p)
    with pytest.raises(ValueError):
        lps_to_ras([1.0, 2.0])


# ====================================================================== device, progress, messages
def test_resolve_device_cpu_has_no_warning():
    device, warning = resolve_device("cpu")
    assert device.type == "cpu" and warning == ""


def test_resolve_device_fallback_warning_text():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: no fallback to test")
    device, warning = resolve_device("cuda")
    assert device.type == "cpu"
    assert "CPU" in warning
    with pytest.raises(SpineMorphError):
        resolve_device("tpu")


def test_progress_relay_clamps_and_cancels():
    seen, pumps = [], []
    relay = ProgressRelay(lambda pct, msg: seen.append((pct, msg)), lambda: pumps.append(1))
    relay.progress(0.5, "half")
    relay.progress(1.7, "over")
    relay.progress(float("nan"), "nan keeps the last value")
    relay.progress(-1, "under")
    assert seen == [(50, "half"), (100, "over"), (100, "nan keeps the last value"), (0, "under")]
    assert not relay.should_cancel()
    relay.request_cancel()
    assert relay.should_cancel()
    assert len(pumps) == 6  # 4 progress updates + 2 cancel checks processed GUI events
    relay.reset()
    assert not relay.cancel_requested and relay.fraction == 0.0


def test_progress_relay_cancels_the_real_dsca_pipeline():
    """The core stops at the relay's cancel and raises the error the panel recognises."""
    from DuralSacSegLib.segment import segment_volume

    vol = Volume(np.random.default_rng(0).normal(size=(12, 40, 40)).astype(np.float32), spacing_mm=(0.7, 0.7, 4.0))
    calls = []
    relay = ProgressRelay(lambda pct, msg: calls.append(pct))

    def predictor(batch):
        relay.request_cancel()  # the user clicks Cancel during the first batch
        return np.zeros(batch.shape, dtype=np.float32)

    with pytest.raises(SpineMorphError) as info:
        segment_volume(vol, predictor=predictor, batch_size=4, progress=relay.progress, should_cancel=relay.should_cancel)
    assert is_cancelled(info.value)
    assert user_message(info.value).startswith("Cancelled")
    assert calls and calls[0] == 0


def test_user_messages_say_what_to_do():
    assert user_message(InputError("bad file; use NRRD")) == "bad file; use NRRD"
    assert "Out of memory" in user_message(MemoryError())
    err = ModuleNotFoundError("No module named 'monai'", name="monai")
    assert "monai" in user_message(err) and "install" in user_message(err)
    generic = user_message(ValueError("boom\nsecond line"))
    assert "ValueError: boom" in generic and "second line" not in generic and "Python console" in generic


# ====================================================================== terminology
def test_terminology_entry_format_and_round_trip():
    code = gui_support.Code("SCT", "18545000", "Dura mater")
    entry = terminology_entry(code)
    assert entry == (
        "Segmentation category and type - DICOM master list~SCT^123037004^Anatomical Structure~SCT^18545000^Dura mater~^^~"
        "Anatomic codes - DICOM master list~^^~^^"
    )
    parsed = parse_terminology_entry(entry)
    assert parsed["type"] == code and parsed["category"].value == "123037004"
    with pytest.raises(ValueError):
        parse_terminology_entry("a~b")


def test_segment_terminologies():
    from DuralSacSegLib import table_model
    from FORAMEN3DLib import markup_model

    assert parse_terminology_entry(table_model.DURAL_SAC_TERMINOLOGY)["type"].value == "18545000"
    codes = {seg_id: parse_terminology_entry(t)["type"].value for _v, seg_id, _n, _c, t in markup_model.SEGMENTS}
    assert codes == {"L4": "11994002", "L4-5_disc": "360499006", "L5": "49668003", "Dural_sac": "18545000"}
    # the fine default model's dural sac (label 4) becomes a segment too, optional for older segmentations
    assert [v for v, *_ in markup_model.SEGMENTS] == [1, 2, 3, 4] and markup_model.OPTIONAL_SEGMENT_IDS == {"Dural_sac"}


# ====================================================================== DuralSacSeg panel logic
def _write_catalog(path: Path, default: str) -> Path:
    models = [{"name": n, "architecture": a} for n, a in
              (("unet", "unet"), ("multiresunet", "multiresunet"), ("attention_unet", "attention_unet"))]
    path.write_text(json.dumps({"format_version": 1, "default": default, "models": models}))
    return path


def test_model_choices_from_catalog(tmp_path):
    from DuralSacSegLib import table_model

    choices, error = table_model.model_choices(_write_catalog(tmp_path / "catalog.json", "multiresunet"))
    assert error == ""
    assert [c.value for c in choices] == ["multiresunet", "unet", "attention_unet", table_model.IMPORTED_WEIGHTS]
    assert [c.label for c in choices][:3] == ["MultiResUNet", "U-Net", "Attention U-Net"]
    choices, error = table_model.model_choices(tmp_path / "missing.json")
    assert [c.value for c in choices] == [table_model.IMPORTED_WEIGHTS]
    assert "missing" in error and "reinstall" in error


def test_resolve_model(tmp_path):
    from DuralSacSegLib import table_model

    assert table_model.resolve_model("unet") == "unet"
    with pytest.raises(SpineMorphError, match="no weights file"):
        table_model.resolve_model(table_model.IMPORTED_WEIGHTS, Path("."))
    with pytest.raises(SpineMorphError, match="no weights file"):
        table_model.resolve_model(table_model.IMPORTED_WEIGHTS, tmp_path / "absent.pt")
    weights = tmp_path / "mine.pt"
    weights.write_bytes(b"x")
    assert table_model.resolve_model(table_model.IMPORTED_WEIGHTS, weights) == str(weights)
    with pytest.raises(SpineMorphError):
        table_model.resolve_model("")


def test_dsca_table_columns_plot_and_jump(phantom, dsca_table):
    from DuralSacSegLib import table_model
    from DuralSacSegLib.dsca import SLICE_COLUMNS

    grid, table = dsca_table
    cols = table_model.table_columns(table)
    assert [c.name for c in cols] == [name for name, _ in SLICE_COLUMNS]
    by_name = {c.name: c for c in cols}
    assert by_name["slice_index"].kind == "int" and by_name["area_mm2"].kind == "double"
    assert by_name["stenosis"].kind == "string" and by_name["qc_flags"].kind == "string"
    assert by_name["area_mm2"].unit == "mm2" and by_name["position_mm"].unit == "mm"
    assert all(len(c.values) == grid.size_ijk[2] for c in cols)
    # known answer: every slice area within 2 % of the phantom's exact analytic axial DSCA
    for row in table.rows:
        exact = phantom.truth.dsca_axial_mm2(row.centre_lps[2])
        assert row.area_mm2 == pytest.approx(exact, rel=0.02)
    # plot series and slice jump
    series = table_model.plot_series(table)
    np.testing.assert_allclose(series["area_mm2"], table.areas_mm2())
    k = len(table.rows) // 2
    np.testing.assert_allclose(table_model.row_centre_ras(table, k), lps_to_ras(table.rows[k].centroid_lps))
    # the jump point lies on slice k of the input grid
    ijk = grid.lps_to_index(ras_to_lps(table_model.row_centre_ras(table, k)))
    assert ijk[2] == pytest.approx(k, abs=1e-6)
    with pytest.raises(SpineMorphError):
        table_model.row_centre_ras(table, len(table.rows))


def test_dsca_summary_and_csv(dsca_table, tmp_path):
    from DuralSacSegLib import table_model

    _grid, table = dsca_table
    smallest = table.smallest(1)[0]
    text = table_model.summary_text(table)
    assert f"{smallest.area_mm2:.1f} mm²" in text and f"slice {smallest.slice_index}" in text
    written = table_model.export_csv(table, tmp_path / "out")
    assert written.suffix == ".csv"
    lines = written.read_text().strip().splitlines()
    assert len(lines) == len(table.rows) + 1 and lines[0].startswith("slice_index,")


# ====================================================================== FORAMEN3D panel logic
def test_measurement_state_markups_and_values(morphometry, phantom):
    from FORAMEN3DLib import markup_model

    state = markup_model.MeasurementState(morphometry)
    specs = state.markup_specs()
    assert [s.kind for s in specs].count("line") == 4 and [s.kind for s in specs].count("closed_curve") == 2
    for spec in specs:
        side, metric = markup_model.MeasurementState.parse_key(spec.key)
        np.testing.assert_allclose(spec.points_ras, lps_to_ras(state.points[side][metric]))
    for side in markup_model.SIDES:
        core = morphometry.sides[side]
        v = state.values[side]
        assert v["height_mm"] == pytest.approx(core.height.value, abs=1e-9)
        assert v["width_mm"] == pytest.approx(core.width.value, abs=1e-9)
        # the simplified editable outline keeps the area within 1 %
        assert v["area_mm2"] == pytest.approx(core.area.value, rel=0.01)
        assert len(state.points[side]["area"]) < len(core.area.points_lps)
        truth = phantom.truth.foramen[side]
        assert v["area_mm2"] == pytest.approx(truth.area_mm2, rel=0.05)
    rows = state.rows()
    assert len(rows) == 7 and {r["Unit"] for r in rows} == {"mm", "mm2"}
    assert [r["Side"] for r in rows] == ["left"] * 3 + ["right"] * 3 + ["midline"]


def test_measurement_state_live_update(morphometry):
    from FORAMEN3DLib import markup_model
    from FORAMEN3DLib.morphometry import Thresholds

    state = markup_model.MeasurementState(morphometry)
    key = state.key("right", "height")
    pts = lps_to_ras(state.points["right"]["height"])
    pts[1] = pts[0] + np.array([0.0, 0.0, 12.0])  # drag the second end to 12 mm from the first
    values = state.update_from_ras(key, pts)
    assert values["height_mm"] == pytest.approx(12.0)
    assert values["flagged"] and "enlargement" in values["flag"]
    row = next(r for r in state.rows() if r["Metric"] == "foraminal_height" and r["Side"] == "right")
    assert row["Value"] == 12.0 and row["Flag"].startswith("height <= 15 mm")
    assert state.flagged_sides() == ["right"]  # left stays above 15 mm / 8 mm
    # outline edit: a 10 x 10 mm square in the lateral plane has area 100 mm²
    view = state.views["left"]
    square = view.yz_to_lps(np.array([[0, 0], [10, 0], [10, 10], [0, 10]], dtype=float))
    assert state.update_from_ras(state.key("left", "area"), lps_to_ras(square))["area_mm2"] == pytest.approx(100.0)
    with pytest.raises(SpineMorphError, match="exactly 2 points"):
        state.update_from_ras(state.key("left", "width"), pts[:1])
    with pytest.raises(SpineMorphError, match="at least 3 points"):
        state.update_from_ras(state.key("left", "area"), pts[:2])
    with pytest.raises(SpineMorphError):
        markup_model.MeasurementState.parse_key("middle_height")
    strict = markup_model.MeasurementState(morphometry, thresholds=Thresholds(height_mm=100.0, width_mm=100.0))
    assert strict.flagged_sides() == ["left", "right"]


def test_layout_xml_views():
    from FORAMEN3DLib import markup_model

    root = ET.fromstring(markup_model.layout_xml())
    views = root.iter("view")
    tags = {(v.get("class"), v.get("singletontag")) for v in views}
    assert ("vtkMRMLViewNode", "1") in tags
    for name in (*markup_model.LATERAL_VIEW_NAMES.values(), markup_model.TRAJECTORY_VIEW_NAME):
        assert ("vtkMRMLSliceNode", name) in tags


def test_slice_to_ras_and_reformats(morphometry):
    from FORAMEN3DLib import markup_model

    m = markup_model.slice_to_ras([1, 2, 3], [2, 0, 0], [1, 1, 0])
    np.testing.assert_allclose(m[:3, 0], [1, 0, 0])
    np.testing.assert_allclose(m[:3, 1], [0, 1, 0])
    np.testing.assert_allclose(m[:3, 2], [0, 0, 1])
    np.testing.assert_allclose(m[:3, 3], [1, 2, 3])
    with pytest.raises(SpineMorphError):
        markup_model.slice_to_ras([0, 0, 0], [1, 0, 0], [2, 0, 0])
    state = markup_model.MeasurementState(morphometry)
    for side in markup_model.SIDES:
        plane = markup_model.lateral_view_plane(state, side)
        rot = plane[:3, :3]
        np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-9)
        normal_lps = ras_to_lps(plane[:3, 2])
        assert abs(normal_lps @ state.view_axis_lps) == pytest.approx(1.0)
        # the plane passes through the foramen outline's centre
        np.testing.assert_allclose(plane[:3, 3], lps_to_ras(state.points[side]["area"].mean(axis=0)))
    planes = {"sagittal_oblique": {"origin_lps": [1, 2, 3], "axis_u": [0, 1, 0], "axis_v": [0, 0, 1]}}
    t = markup_model.trajectory_plane(planes)
    np.testing.assert_allclose(t[:3, 3], [-1, -2, 3])
    np.testing.assert_allclose(t[:3, 0], [0, -1, 0])


def test_trajectory_rows():
    from FORAMEN3DLib import markup_model
    from FORAMEN3DLib.planning import Trajectory

    t = Trajectory(side="left", target_kind="disc-posterior-third", entry_lps=np.array([100.0, 50, 0]),
                   target_lps=np.zeros(3), diameter_mm=7.5, entry_on_skin=True, entry_midline_distance_mm=101.234,
                   medial_angle_deg=61.0, medial_angle_from_coronal_deg=29.0, craniocaudal_angle_deg=10.0,
                   lateral_view_angle_deg=11.0, length_mm=111.8, clearance_mm=-0.5, closest_bone_point_lps=np.zeros(3),
                   l4_mm3=1.25, disc_mm3=20.0, l5_mm3=0.0, docking_point_lps=np.array([20.0, 10, 0]),
                   approach_length_mm=90.0, approach_clearance_mm=0.4, approach_l4_mm3=0.0, approach_l5_mm3=0.0)
    rows = {r["Metric"]: (r["Value"], r["Unit"]) for r in markup_model.trajectory_rows(t)}
    assert rows["entry distance from midline"] == (101.23, "mm")
    assert rows["largest bone-free diameter"] == (6.5, "mm")
    assert rows["L4 in channel"] == (1.25, "mm3") and rows["side"] == ("left", "")


# ====================================================================== sample data
def test_sample_study_generated_once(tmp_path):
    t0 = time.perf_counter()
    study = gui_support.sample_study(tmp_path / "study", seed=0)
    first = time.perf_counter() - t0
    for key in ("axial_t1", "space_t2", "axial_dural_sac_seg", "space_foramen_seg", "truth_path"):
        assert Path(study[key]).is_file(), key
    assert set(study["truth"]["truth"]["foramen"]) == {"left", "right"}
    assert len(study["truth"]["axial_slices"]) > 0
    t0 = time.perf_counter()
    again = gui_support.sample_study(tmp_path / "study", seed=0)
    assert time.perf_counter() - t0 < min(1.0, first)
    assert again["axial_t1"] == study["axial_t1"]


# ====================================================================== .ui files and bindings
def _wrapper_fields(module: str) -> set[str]:
    tree = ast.parse((ROOT / module / f"{module}Lib" / "slicer_parameters.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(getattr(d, "id", "") == "parameterNodeWrapper" for d in node.decorator_list):
            return {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError(f"no @parameterNodeWrapper class in {module}")


@pytest.mark.parametrize("module", MODULES)
def test_ui_loads_and_parameter_bindings_exist(module):
    pytest.importorskip("PySide6")
    from ui_fallback import load_ui_offscreen

    widget = load_ui_offscreen(ROOT / module / "Resources" / "UI" / f"{module}.ui")
    bound = {}
    for child in widget.findChildren(object):
        name = child.property("SlicerParameterName") if hasattr(child, "property") else None
        if name:
            bound[child.objectName()] = name
    fields = _wrapper_fields(module)
    assert bound, "no SlicerParameterName bindings survived loading"
    assert set(bound.values()) <= fields, f"bindings without a parameter: {set(bound.values()) - fields}"
    assert {"inputVolume", "device", "outputSegmentation", "weightsFile"} <= set(bound.values())


def test_ui_fallback_translation():
    from ui_fallback import translate_ui

    text = (ROOT / "DuralSacSeg" / "Resources" / "UI" / "DuralSacSeg.ui").read_text()
    xml, replaced = translate_ui(text)
    assert replaced["inputsCollapsibleButton"] == "ctkCollapsibleButton->QGroupBox"
    assert replaced["tableView"] == "qMRMLTableView->QTableView"
    root = ET.fromstring(xml)
    assert root.find("customwidgets") is None and root.find("connections") is None
    box = next(w for w in root.iter("widget") if w.get("name") == "inputsCollapsibleButton")
    assert box.find("property[@name='title']").findtext("string") == "Inputs"
    combo = next(w for w in root.iter("widget") if w.get("name") == "inputSelector")
    assert combo.find("property[@name='nodeTypes']") is None  # MRML-only property dropped
    assert combo.find("property[@name='SlicerParameterName']") is not None  # dynamic property kept


def test_requirements_file_single_and_safe():
    from DuralSacSegLib.slicer_dependencies import REQUIREMENTS_FILE_NAME, SAMPLE_DATA_PACKAGES
    from packaging.requirements import Requirement

    # one file, listed by DuralSacSeg only: both modules install into one qt-scripted-modules/Resources folder
    assert not any((ROOT / m / "Resources" / "requirements.txt").exists() for m in MODULES)
    assert not (ROOT / "FORAMEN3D" / "Resources" / REQUIREMENTS_FILE_NAME).exists()
    text = (ROOT / "DuralSacSeg" / "Resources" / REQUIREMENTS_FILE_NAME).read_text()
    names = {Requirement(line).name.lower() for line in text.splitlines() if line.strip() and not line.startswith("#")}
    assert {"monai", "scikit-image", "pynrrd", "slicerio", "pydicom"} <= names
    assert set(SAMPLE_DATA_PACKAGES) <= names
    # never pip-install what Slicer or the PyTorch extension provide
    assert not names & {"torch", "vtk", "numpy", "simpleitk", "scipy"}


def test_surface_models_are_ras(foramen_labels):
    from FORAMEN3DLib import markup_model
    from FORAMEN3DLib.meshes import mesh_points_lps
    from vtkmodules.util import numpy_support

    models = markup_model.surface_models_ras(foramen_labels)
    assert [m[0] for m in models] == ["L4", "L4-5_disc", "L5"]
    for _segment_id, _name, _rgb, polydata_ras, info in models:
        ras = numpy_support.vtk_to_numpy(polydata_ras.GetPoints().GetData())
        np.testing.assert_allclose(ras, lps_to_ras(mesh_points_lps(info.polydata)), atol=1e-4)
        assert info.volume_ratio == pytest.approx(1.0, abs=0.05)


# ====================================================================== FORAMEN3D: hand-placed L4-5 disc centre
class _PointList:
    """Stand-in vtkMRMLMarkupsFiducialNode: a name and RAS control points."""

    def __init__(self, name, points_ras):
        self.name, self.points_ras = name, points_ras

    def GetName(self):
        return self.name


class _Label:
    def __init__(self):
        self.visible, self.text = False, ""

    def setMRMLTableNode(self, node):
        self.table = node


@pytest.fixture
def foramen_glue(monkeypatch):
    """FORAMEN3D's Slicer glue on the stand-in ``slicer`` (Slicer 5.10), control points read from ``_PointList``."""
    import importlib
    import sys

    from slicer_standin import StandIn, purge_glue

    StandIn((5, 10)).install(monkeypatch)
    monkeypatch.setattr(sys.modules["slicer.util"], "arrayFromMarkupsControlPoints",
                        lambda node: np.array(node.points_ras, float).reshape(-1, 3), raising=False)
    yield importlib.import_module("FORAMEN3DLib.slicer_logic")
    purge_glue()


def test_l45_point_is_the_first_control_point_in_lps(foramen_glue):
    node = _PointList("L4-5 disc centre", [(10.0, -20.0, 30.5), (1.0, 2.0, 3.0)])
    assert foramen_glue.l45PointLPS(node) == (-10.0, 20.0, 30.5)  # RAS -> LPS: x and y negated, z kept
    assert foramen_glue.l45PointLPS(None) is None  # nothing selected: the coarse locator finds the level
    with pytest.raises(InputError, match="'empty list' has no point"):
        foramen_glue.l45PointLPS(_PointList("empty list", []))


def test_l45_point_reaches_the_worker_command(foramen_glue, monkeypatch):
    """Panel / console -> ``InferenceProcess`` -> the worker's command line, in LPS."""
    import subprocess
    import sys

    from DuralSacSegLib import slicer_process
    from FORAMEN3DLib import slicer_nodes

    image = Volume(np.zeros((4, 5, 6), np.float32), spacing_mm=(1.0, 1.0, 1.0))
    monkeypatch.setattr(slicer_nodes, "volumeFromNode", lambda node: image)
    launched = []

    def launcher(args, env):  # a worker that answers at once with one error line
        launched.append(args)
        code = "print('SPINEMORPH_ERROR {\"message\": \"stop here\", \"cancelled\": false}'); raise SystemExit(1)"
        return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    monkeypatch.setattr(slicer_process, "_launchConsoleProcess", launcher)
    monkeypatch.setattr(slicer_process, "pythonSlicerExecutable", lambda: "PythonSlicer")
    logic = foramen_glue.FORAMEN3DLogicBase()
    monkeypatch.setattr(logic, "ensureDependencies", lambda: None)
    process = logic.inferenceProcess("volume", "default", "cpu", _PointList("p", [(10.0, -20.0, 30.5)]))
    assert process.task == "foramen" and process.l45Point == (-10.0, 20.0, 30.5)
    with pytest.raises(SpineMorphError, match="stop here"):
        process.run()
    assert launched[0][-1] == "--l45-point=-10.0,20.0,30.5"
    with pytest.raises(SpineMorphError, match="stop here"):
        logic.inferenceProcess("volume", "default", "cpu").run()  # no point list selected
    assert not any(a.startswith("--l45-point") for a in launched[1])


def test_console_run_logs_the_locator_and_qc(foramen_glue, monkeypatch, caplog):
    import logging

    from DuralSacSegLib import slicer_process
    from FORAMEN3DLib import slicer_nodes

    from spinemorph.app.inference_worker import InferenceResult

    monkeypatch.setattr(slicer_nodes, "volumeFromNode", lambda node: "image")
    info = {"device": "cpu", "locator": "manual point", "l45_centre_lps": [-10.0, 20.0, 30.5],
            "qc": ["level check: the dural sac ends 41 mm above the lower face of the L4-5 crop"]}
    seen = []

    def run(self, progress=None, shouldCancel=None):
        seen.append(self.l45Point)
        return InferenceResult("foramen", None, None, info)

    monkeypatch.setattr(slicer_process.InferenceProcess, "run", run)
    logic = foramen_glue.FORAMEN3DLogicBase()
    monkeypatch.setattr(logic, "ensureDependencies", lambda: None)
    monkeypatch.setattr(logic, "showResult", lambda *args: ("segmentation", "table"))
    with caplog.at_level(logging.INFO):
        out = logic._process("volume", "default", "cpu", None, None, None, None, False, True,
                             l45PointNode=_PointList("p", [(10.0, -20.0, 30.5)]))
    assert out == ("segmentation", "table") and seen == [(-10.0, 20.0, 30.5)]
    assert "FORAMEN3D: L4-5 level from the manual point (crop centre R 10.0, A -20.0, S 30.5 mm)" in caplog.text
    assert "FORAMEN3D: QC: level check: the dural sac ends 41 mm" in caplog.text
    # an older worker's info (no locator / QC keys): nothing to add
    assert foramen_glue.segmentationNotes(InferenceResult("foramen", None, None, {"device": "cpu"})) == []


def test_panel_passes_the_point_and_shows_the_locator(foramen_glue, monkeypatch):
    import types

    from FORAMEN3DLib import slicer_widget

    from spinemorph.app.inference_worker import InferenceResult

    ui = types.SimpleNamespace(**{n: _Label() for n in ("progressBar", "cancelButton", "deviceWarningLabel",
                                                        "statusLabel", "measurementTableView")})
    point = _PointList("L4-5 disc centre", [(10.0, -20.0, 30.5)])
    pn = types.SimpleNamespace(model="default", device=types.SimpleNamespace(value="cpu"), inputVolume="volume",
                               l45Point=point, outputSegmentation=None, measurementTable=None)
    calls = []

    class Logic:
        markupNodes = {}
        measurementState = types.SimpleNamespace(summary_text=lambda: "left: ok; right: ok")
        logSegmentationNotes = staticmethod(foramen_glue.FORAMEN3DLogicBase.logSegmentationNotes)

        def ensureDependencies(self):
            pass

        def inferenceProcess(self, inputVolume, model="default", device="auto", l45PointNode=None):
            calls.append((inputVolume, model, device, l45PointNode))
            return "process"

        def showResult(self, inputVolume, result, segmentation, table):
            return "segmentation", "table"

    controller = slicer_widget.FORAMEN3DController(ui, Logic(), lambda: pn, lambda node: None)
    finishers = []
    monkeypatch.setattr(controller, "startAsyncRun", lambda process, finish, title: finishers.append(finish), raising=False)
    controller.onApply()
    assert calls == [("volume", "default", "cpu", point)]
    info = {"locator": "coarse model", "l45_centre_lps": [-10.0, 20.0, 30.5], "qc": ["check the level labels"]}
    finishers[0](InferenceResult("foramen", None, None, info))
    assert ui.statusLabel.text.split("\n") == [
        "left: ok; right: ok", "L4-5 level from the coarse model (crop centre R 10.0, A -20.0, S 30.5 mm)",
        "QC: check the level labels"]
    assert pn.outputSegmentation == "segmentation" and pn.measurementTable == "table"


def test_foramen_ui_has_the_optional_l45_point_selector():
    root = ET.parse(ROOT / "FORAMEN3D" / "Resources" / "UI" / "FORAMEN3D.ui").getroot()
    combo = next(w for w in root.iter("widget") if w.get("name") == "l45PointSelector")
    assert combo.get("class") == "qMRMLNodeComboBox"
    assert combo.find("property[@name='SlicerParameterName']").findtext("string") == "l45Point"
    assert [s.text for s in combo.find("property[@name='nodeTypes']").iter("string")] == ["vtkMRMLMarkupsFiducialNode"]
    assert combo.find("property[@name='noneEnabled']").findtext("bool") == "true"
    label = next(w for w in root.iter("widget") if w.get("name") == "l45PointLabel")
    assert label.find("property[@name='text']").findtext("string") == "L4-5 disc centre (optional):"
    connections = {(c.findtext("receiver"), c.findtext("slot")) for c in root.iter("connection")}
    assert {("l45PointSelector", "setMRMLScene(vtkMRMLScene*)"), ("l45PointPlaceWidget", "setMRMLScene(vtkMRMLScene*)"),
            ("l45PointPlaceWidget", "setCurrentNode(vtkMRMLNode*)")} <= connections  # the combo lists the scene's lists
    assert "l45Point" in _wrapper_fields("FORAMEN3D")
    text = (ROOT / "FORAMEN3D" / "FORAMEN3DLib" / "slicer_parameters.py").read_text()
    assert "l45Point: vtkMRMLMarkupsFiducialNode" in text


def test_labels_from_segmentation_takes_the_optional_dural_sac(foramen_glue, monkeypatch):
    """The dural sac segment (label 4 of the fine model) goes into the label map planning and measurement read; a
    segmentation without it (4-class model, older scene) still works; a missing required segment is one clear error."""
    import sys

    from FORAMEN3DLib import markup_model, slicer_nodes

    ref = Volume(np.zeros((4, 4, 5), np.uint8), (1.0, 1.0, 1.0))
    masks = {sid: np.zeros((4, 4, 5), np.uint8) for _v, sid, *_r in markup_model.SEGMENTS}
    for value, sid, *_r in markup_model.SEGMENTS:
        masks[sid][value - 1, 0, 0] = 1

    class _Segmentation:
        def __init__(self, ids):
            self.ids = set(ids)

        def GetSegment(self, sid):
            return object() if sid in self.ids else None

    class _SegNode:
        def __init__(self, ids):
            self.seg = _Segmentation(ids)

        def GetSegmentation(self):
            return self.seg

    monkeypatch.setattr(slicer_nodes, "volumeFromNode", lambda node: ref)
    monkeypatch.setattr(sys.modules["slicer.util"], "arrayFromSegmentBinaryLabelmap",
                        lambda node, sid, refnode: masks[sid], raising=False)
    all_ids = [sid for _v, sid, *_r in markup_model.SEGMENTS]
    args = (markup_model.SEGMENTS, markup_model.OPTIONAL_SEGMENT_IDS)
    full = slicer_nodes.labelsFromSegmentation(_SegNode(all_ids), None, *args)
    assert [int(full.array[k, 0, 0]) for k in range(4)] == [1, 2, 3, 4]
    no_sac = slicer_nodes.labelsFromSegmentation(_SegNode(all_ids[:3]), None, *args)
    assert set(np.unique(no_sac.array).tolist()) == {0, 1, 2, 3}
    with pytest.raises(InputError, match="L4-5 disc"):
        slicer_nodes.labelsFromSegmentation(_SegNode(["L4", "L5", "Dural_sac"]), None, *args)


# ====================================================================== DuralSacSeg: Recompute table keeps low confidence
class _VolumeNode:
    def __init__(self, node_id):
        self.node_id = node_id

    def GetID(self):
        return self.node_id


class _TableNode:
    def __init__(self):
        self.attributes = {}

    def SetAttribute(self, name, value):
        self.attributes[name] = value


def test_recompute_table_carries_the_bridged_flag_of_the_same_volume(monkeypatch):
    """The panel's "Recompute table" on an unedited mask: the low-confidence slice stays ungraded for the volume it was
    measured on, and nothing is carried over to another volume."""
    import importlib
    import sys

    from DuralSacSegLib import dsca as dsca_mod
    from slicer_standin import StandIn, purge_glue
    from test_dsca_qc import unsure_on_slice_3

    StandIn((5, 10)).install(monkeypatch)
    try:
        glue = importlib.import_module("DuralSacSegLib.slicer_logic")
        slicer_nodes = importlib.import_module("DuralSacSegLib.slicer_nodes")
        image, res = unsure_on_slice_3("track", n_px=60)
        assert dsca_mod.FLAG_BRIDGED in res.table.rows[3].qc_flags
        monkeypatch.setattr(slicer_nodes, "volumeFromNode", lambda node: image)
        monkeypatch.setattr(slicer_nodes, "maskFromSegment", lambda seg, sid, vol: res.mask)
        monkeypatch.setattr(slicer_nodes, "fillTableNode", lambda node, columns: None)
        monkeypatch.setattr(slicer_nodes, "areaChart", lambda *args: "chart")
        logic = glue.DuralSacSegLogicBase()
        monkeypatch.setattr(logic, "ensureDependencies", lambda: None)
        table = _TableNode()
        logic._showTable(res.table, _VolumeNode("vol1"), table, None)
        logic.recomputeTable(_VolumeNode("vol1"), "segmentation", table, None)
        assert dsca_mod.FLAG_BRIDGED in logic.lastTable.rows[3].qc_flags and not logic.lastTable.rows[3].graded
        logic._showTable(res.table, _VolumeNode("vol1"), table, None)
        logic.recomputeTable(_VolumeNode("vol2"), "segmentation", table, None)  # another volume: nothing carried
        assert dsca_mod.FLAG_BRIDGED not in logic.lastTable.rows[3].qc_flags
    finally:
        sys.modules.pop("DuralSacSegLib.slicer_logic", None)
        purge_glue()
