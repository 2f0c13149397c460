"""The Slicer glue on Slicer 5.10 and 5.12 (issue 17), with stand-in ``slicer`` modules shaped like each version
(``Testing/slicer_standin.py``; signatures read from Slicer's sources at v5.10.0 and v5.12.3).

Each test names the issue item it covers; each fails on the code before the fix (e.g. ``import slicer.packaging`` on
5.10, ``pip_install(..., requester=...)`` on 5.10, ``registerCustomSampleDataCategory`` on 5.10,
``tableModel().mrmlTableRowIndex`` which PythonQt does not expose, installs under ``--testing``).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
from slicer_standin import StandIn, purge_glue

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = [(5, 10), (5, 12)]
ABSENT = "spinemorph-absent-test-package>=1.0"


@pytest.fixture(autouse=True)
def _forget_glue():
    yield
    purge_glue()


def _standin(monkeypatch, version, **kwargs):
    return StandIn(version, **kwargs).install(monkeypatch)


def _requirements(tmp_path, *lines):
    path = tmp_path / "SpineMorph-requirements.txt"
    path.write_text("# comment\n" + "\n".join(lines) + "\n")
    return path


# ====================================================================== item 1 + 3: dependency installation
@pytest.mark.parametrize("version", VERSIONS)
def test_nothing_missing_installs_nothing(monkeypatch, tmp_path, version):
    standin = _standin(monkeypatch, version)
    deps = importlib.import_module("DuralSacSegLib.slicer_dependencies")
    deps.ensureDependencies(_requirements(tmp_path, "numpy>=1.0", "packaging"), requester="DuralSacSeg")
    assert standin.calls == []


def test_slicer_510_installs_with_pip_install_list_only(monkeypatch, tmp_path):
    """Slicer 5.10 has no slicer.packaging and pip_install(requirements) has no keyword arguments (items 1, 3)."""
    standin = _standin(monkeypatch, (5, 10))
    assert "slicer.packaging" not in sys.modules
    deps = importlib.import_module("DuralSacSegLib.slicer_dependencies")
    deps.ensureDependencies(_requirements(tmp_path, "numpy>=1.0", ABSENT), requester="DuralSacSeg")
    assert [name for name, *_ in standin.calls] == ["confirmOkCancelDisplay", "pip_install"]
    (args, kwargs), = standin.called("pip_install")
    assert args == ([ABSENT],) and kwargs == {}  # only the missing requirement, as a list, no requester=


def test_slicer_510_declined_installation_is_an_error(monkeypatch, tmp_path):
    standin = _standin(monkeypatch, (5, 10), confirm=False)
    deps = importlib.import_module("DuralSacSegLib.slicer_dependencies")
    with pytest.raises(deps.DependencyError, match="declined"):
        deps.ensureDependencies(_requirements(tmp_path, ABSENT), requester="FORAMEN3D")
    assert standin.called("pip_install") == []


def test_slicer_512_installs_with_pip_ensure(monkeypatch, tmp_path):
    standin = _standin(monkeypatch, (5, 12))
    deps = importlib.import_module("DuralSacSegLib.slicer_dependencies")
    deps.ensureDependencies(_requirements(tmp_path, "numpy>=1.0", ABSENT), requester="FORAMEN3D")
    (args, kwargs), = standin.called("pip_ensure")
    assert args == ([ABSENT],) and kwargs == {"requester": "FORAMEN3D"}
    assert standin.called("pip_install") == []


@pytest.mark.parametrize("version", VERSIONS)
def test_source_checkout_core_installed_without_requester(monkeypatch, tmp_path, version):
    """The editable install of a source checkout's core uses the one pip_install signature both versions accept."""
    standin = _standin(monkeypatch, version)
    deps = importlib.import_module("DuralSacSegLib.slicer_dependencies")
    monkeypatch.setattr(deps, "_importable", lambda name: name != "spinemorph")
    with pytest.raises(deps.DependencyError, match="restart Slicer"):
        deps.ensureDependencies(_requirements(tmp_path, "numpy"), requester="DuralSacSeg", needTorch=False)
    (args, kwargs), = standin.called("pip_install")
    assert args == (["--no-deps", "-e", str(ROOT)],) and kwargs == {}


def test_requirement_check_is_version_aware(tmp_path):
    """missingRequirements (importlib.metadata + packaging, available on 5.10) compares versions, not only names."""
    from DuralSacSegLib.slicer_dependencies import missingRequirements, readRequirements

    assert missingRequirements(["numpy>=1.0", "numpy>=999", ABSENT, 'numpy>=999; python_version < "3"']) == \
        ["numpy>=999", ABSENT]
    path = _requirements(tmp_path, "monai>=1.3", "pydicom>=2.4  # trailing comment", "slicerio>=1.1")
    assert readRequirements(path, packages=("pydicom", "SLICERIO")) == ["pydicom>=2.4", "slicerio>=1.1"]


# ====================================================================== item 6: nothing installed under --testing
@pytest.mark.parametrize("version", VERSIONS)
def test_testing_mode_never_installs(monkeypatch, tmp_path, version):
    standin = _standin(monkeypatch, version, testing=True)
    deps = importlib.import_module("DuralSacSegLib.slicer_dependencies")
    monkeypatch.setattr(deps, "_importable", lambda name: name != "torch")  # torch absent: PyTorchUtils would install
    with pytest.raises(deps.DependenciesUnavailable, match="testing mode") as info:
        deps.ensureDependencies(_requirements(tmp_path, ABSENT), requester="DuralSacSeg")
    assert "torch" in str(info.value) and ABSENT in str(info.value)
    assert standin.calls == []  # no pip_ensure, no pip_install, no installTorch


@pytest.mark.parametrize("module", ["DuralSacSeg", "FORAMEN3D"])
def test_self_tests_skip_with_a_message_when_dependencies_are_absent(monkeypatch, module):
    _standin(monkeypatch, (5, 10), testing=True)
    deps = importlib.import_module("DuralSacSegLib.slicer_dependencies")
    selftest = importlib.import_module(f"{module}Lib.slicer_selftest")

    def unavailable(*args, **kwargs):
        raise deps.DependenciesUnavailable("DuralSacSeg: Python packages missing (monai>=1.3); testing mode")

    monkeypatch.setattr(deps, "ensureDependencies", unavailable)

    class Test:
        skipped = None

        def delayDisplay(self, message):
            pass

        def skipTest(self, reason):
            Test.skipped = reason
            raise SkipRaised(reason)

    class SkipRaised(Exception):
        pass

    with pytest.raises(SkipRaised):
        selftest.run_self_test(Test(), logic=types.SimpleNamespace())
    assert "monai" in Test.skipped and "testing" in Test.skipped


# ====================================================================== item 2: sample data on 5.10 and 5.12
@pytest.mark.parametrize("version", VERSIONS)
def test_sample_data_registered_on_both_versions(monkeypatch, version):
    standin = _standin(monkeypatch, version)
    sampledata = importlib.import_module("DuralSacSegLib.slicer_sampledata")
    sampledata.registerSampleData()
    sources = [k for _a, k in standin.called("registerCustomSampleDataSource")]
    assert [s["sampleName"] for s in sources] == [sampledata.AXIAL_T1, sampledata.SPACE_T2]
    assert {s["category"] for s in sources} == {sampledata.CATEGORY}
    assert all(Path(s["thumbnailFileName"]).is_file() for s in sources)
    categories = standin.called("registerCustomSampleDataCategory")
    assert categories == ([((sampledata.CATEGORY, "SpineMorph"), {})] if version >= (5, 12) else [])


# ====================================================================== item 12: sample data needs no torch / MONAI
def test_loading_sample_data_does_not_install_torch_or_monai(monkeypatch, tmp_path):
    standin = _standin(monkeypatch, (5, 10), cache_path=str(tmp_path))
    deps = importlib.import_module("DuralSacSegLib.slicer_dependencies")
    sampledata = importlib.import_module("DuralSacSegLib.slicer_sampledata")
    seen = {}
    real_missing = deps.missingDependencies

    def spy(requirementsFile, packages=None, needTorch=True):
        seen.update(packages=packages, needTorch=needTorch,
                    requirements=deps.readRequirements(requirementsFile, packages))
        return real_missing(requirementsFile, packages, needTorch)

    monkeypatch.setattr(deps, "missingDependencies", spy)
    from spinemorph import gui_support

    monkeypatch.setattr(gui_support, "sample_study", lambda folder, seed=0: {"axial_t1": f"{folder}/axial.nrrd"})
    node, study = sampledata.loadSample(sampledata.AXIAL_T1)
    assert seen["needTorch"] is False
    names = {r.split(">")[0].split("=")[0] for r in seen["requirements"]}
    assert names == {"pydicom", "pynrrd", "slicerio"} and "monai" not in names
    assert standin.called("loadVolume")[0][0][0] == study["axial_t1"]


def test_phantom_study_generation_imports_neither_torch_nor_monai(tmp_path):
    """The generator behind the sample data runs with torch, MONAI, scikit-image and matplotlib unimportable."""
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "monai", "skimage", "matplotlib"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from spinemorph.gui_support import sample_study
        study = sample_study({str(tmp_path / "study")!r}, seed=0)
        assert study["truth"]["axial_slices"]
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


# ====================================================================== item 4: DSCA table row click
class _Index:
    def __init__(self, row, valid=True):
        self._row, self._valid = row, valid

    def row(self):
        return self._row

    def isValid(self):
        return self._valid


class _Proxy:
    """A sorted view: proxy row r shows source row order[r]."""

    def __init__(self, order):
        self.order = order

    def mapToSource(self, index):
        return _Index(self.order[index.row()]) if index.isValid() else _Index(-1, False)


class _TableNode:
    def __init__(self, rows, titleHeader=True):
        self.rows, self.titleHeader = rows, titleHeader

    def GetNumberOfRows(self):
        return self.rows

    def GetUseColumnTitleAsColumnHeader(self):
        return self.titleHeader


class _TableModel:
    """What PythonQt exposes of qMRMLTableModel: no mrmlTableRowIndex (a plain C++ method)."""


class _View:
    def __init__(self, order, tableNode):
        self._proxy, self._node = _Proxy(order), tableNode

    def sortFilterProxyModel(self):
        return self._proxy

    def mrmlTableNode(self):
        return self._node

    def tableModel(self):
        return _TableModel()


def _dsca_controller(standin_version, monkeypatch, view):
    _standin(monkeypatch, standin_version)
    widget = importlib.import_module("DuralSacSegLib.slicer_widget")
    names = ("progressBar", "cancelButton", "deviceWarningLabel", "statusLabel", "applyButton")
    ui = types.SimpleNamespace(tableView=view, **{n: types.SimpleNamespace(visible=True, text="") for n in names})
    logic = types.SimpleNamespace(lastTable=object(), sliceCentreRAS=lambda row: np.array([1.0, 2.0, 10.0 * row]))
    return widget.DuralSacSegController(ui, logic, lambda: None)


@pytest.mark.parametrize("version", VERSIONS)
def test_table_click_jumps_to_the_clicked_row_through_the_exposed_api(monkeypatch, version):
    view = _View(order=[4, 3, 2, 1, 0], tableNode=_TableNode(rows=5))  # sorted descending
    controller = _dsca_controller(version, monkeypatch, view)
    standin = sys.modules["slicer"]
    jumps = []
    standin.vtkMRMLSliceNode.JumpAllSlices = staticmethod(lambda scene, r, a, s, mode=0: jumps.append((r, a, s)))
    controller.onTableClicked(_Index(1))  # second visible row = MRML row 3
    assert jumps == [(1.0, 2.0, 30.0)]
    controller.onTableClicked(_Index(0, valid=False))  # click outside the rows: nothing
    assert len(jumps) == 1


def test_table_row_with_a_names_row(monkeypatch):
    """Without column titles as header the model's first row holds the names: MRML row = model row - 1."""
    _standin(monkeypatch, (5, 10))
    from DuralSacSegLib.slicer_common import mrmlTableRowFromViewIndex

    view = _View(order=[0, 1, 2, 3], tableNode=_TableNode(rows=3, titleHeader=False))
    assert [mrmlTableRowFromViewIndex(view, _Index(r)) for r in range(4)] == [-1, 0, 1, 2]
    view = _View(order=[0, 1, 2], tableNode=None)
    assert mrmlTableRowFromViewIndex(view, _Index(0)) == -1


# ====================================================================== item 8: no deprecated table call
class _RecordingTable:
    def __init__(self, new_api=True):
        self.calls = []
        if new_api:
            self.SetUseColumnTitleAsColumnHeader = lambda on: self.calls.append(("title", on))

    def SetUseColumnNameAsColumnHeader(self, on):  # deprecated: logs a warning on every call in 5.10 / 5.12
        self.calls.append(("name", on))

    def StartModify(self):
        return 0

    def EndModify(self, was):
        pass

    def RemoveAllColumns(self):
        pass

    def AddColumn(self, array):
        self.calls.append(("column", array.GetName()))

    def SetColumnUnitLabel(self, name, unit):
        pass


@pytest.mark.parametrize("module", ["DuralSacSeg", "FORAMEN3D"])
def test_tables_use_the_current_header_api(monkeypatch, module):
    pytest.importorskip("vtk")
    _standin(monkeypatch, (5, 10))
    nodes = importlib.import_module(f"{module}Lib.slicer_nodes")
    table = _RecordingTable()
    if module == "DuralSacSeg":
        column = types.SimpleNamespace(name="area_mm2", kind="double", values=[1.5], unit="mm2")
        nodes.fillTableNode(table, [column])
    else:
        nodes.fillTableFromRows(table, [{"Metric": "height", "Value": 12.0}])
    assert ("title", True) in table.calls and not any(c[0] == "name" for c in table.calls)
    older = _RecordingTable(new_api=False)  # a Slicer without the new name: the old one still works
    nodes.useColumnTitlesAsHeader(older)
    assert older.calls == [("name", True)]


# ====================================================================== item 11: DICOM writer on pydicom 2.4 and 3.x
@pytest.mark.filterwarnings("ignore:'Dataset.is_:DeprecationWarning")  # the 2.4 path run under pydicom 3
def test_dicom_writer_uses_the_installed_pydicom_api(monkeypatch, tmp_path):
    """Slicer 5.10 ships pydicom 2.4.4, whose ``save_as`` has no ``enforce_file_format`` and needs the encoding set on
    the dataset. A stand-in with 2.4's ``save_as`` signature and checks wraps the real writer; the series must still be
    written and read back. (Real pydicom 2.4.4 run: ``pip install --target /tmp/pyd24 pydicom==2.4.4`` then
    ``PYTHONPATH=/tmp/pyd24 python -m pytest Testing/test_dicomio.py``: 9 passed.)"""
    import pydicom
    from pydicom.dataset import Dataset

    from spinemorph import dicomio
    from spinemorph.volume import Volume

    real_save_as = Dataset.save_as

    def save_as_24(self, filename, write_like_original=True):  # pydicom 2.4.4's signature
        if getattr(self, "is_little_endian", None) is None or getattr(self, "is_implicit_VR", None) is None:
            raise AttributeError("'Dataset.is_little_endian' and 'Dataset.is_implicit_VR' must be set")
        assert write_like_original is False  # else 2.4 writes no preamble / file meta for a new dataset
        return real_save_as(self, filename, enforce_file_format=True)

    if int(pydicom.__version__.split(".")[0]) >= 3:
        monkeypatch.setattr(Dataset, "save_as", save_as_24)
        monkeypatch.setattr(dicomio, "PYDICOM_MAJOR", 2)
    volume = Volume(np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5), spacing_mm=(0.5, 0.6, 3.0))
    files = dicomio.write_dicom_series(volume, tmp_path / "series", series_description="t")
    assert len(files) == 3
    headers = dicomio.read_dicom_headers(tmp_path / "series")
    assert [int(h.InstanceNumber) for h in headers] == [1, 2, 3]
    assert headers[0].file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


# ====================================================================== item 7: device warning, no torch for the panel
class _Label:
    def __init__(self):
        self.text, self.visible = "", False


def _compute_controller(monkeypatch, pn):
    _standin(monkeypatch, (5, 10))
    common = importlib.import_module("DuralSacSegLib.slicer_common")
    controller = common.ComputeControllerMixin()
    controller.ui = types.SimpleNamespace(deviceWarningLabel=_Label())
    controller._parameterNode = lambda: pn
    return controller


def test_device_warning_follows_the_parameter_node(monkeypatch):
    """The warning is refreshed from the parameter node after connectGui stored the choice, so it names the choice
    just made, not the previous one."""
    from spinemorph import gui_support

    monkeypatch.setitem(sys.modules, "torch", sys.modules.get("torch") or types.ModuleType("torch"))
    monkeypatch.setattr(gui_support, "resolve_device",
                        lambda pref: ("cpu", "" if pref == "cpu" else f"{pref} not available: running on the CPU"))
    pn = types.SimpleNamespace(device=types.SimpleNamespace(value="auto"))
    controller = _compute_controller(monkeypatch, pn)
    controller.onParameterNodeModified()
    assert controller.ui.deviceWarningLabel.text.startswith("auto")
    pn.device.value = "cuda"  # the user picks CUDA: connectGui writes it, then the node's observer runs
    controller.onParameterNodeModified()
    assert controller.ui.deviceWarningLabel.text.startswith("cuda") and controller.ui.deviceWarningLabel.visible
    pn.device.value = "cpu"
    controller.onParameterNodeModified()
    assert controller.ui.deviceWarningLabel.text == "" and not controller.ui.deviceWarningLabel.visible


def test_device_warning_never_imports_torch(monkeypatch):
    pn = types.SimpleNamespace(device=types.SimpleNamespace(value="cuda"))
    controller = _compute_controller(monkeypatch, pn)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    controller.onParameterNodeModified()
    assert "torch" not in sys.modules and not controller.ui.deviceWarningLabel.visible
    controller.updateDeviceWarning("cuda", warning="CUDA not available: ran on the CPU")  # what a run reported
    assert controller.ui.deviceWarningLabel.visible and "CPU" in controller.ui.deviceWarningLabel.text


def test_building_both_panels_imports_neither_torch_nor_monai():
    """Controllers, model lists and device warnings of both panels, in a process where importing torch is recorded."""
    script = textwrap.dedent("""
        import sys, types
        attempts = []
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "monai"):
                    attempts.append(name)
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from slicer_standin import StandIn
        StandIn((5, 10)).install_plain()
        class W:
            visible = True; text = ""; enabled = True
        names = ("progressBar", "cancelButton", "deviceWarningLabel", "statusLabel", "applyButton")
        pn = types.SimpleNamespace(device=types.SimpleNamespace(value="auto"))
        from DuralSacSegLib import slicer_widget as dsw
        from FORAMEN3DLib import slicer_widget as fw
        for ctl in (dsw.DuralSacSegController(types.SimpleNamespace(**{n: W() for n in names}), None, lambda: pn),
                    fw.FORAMEN3DController(types.SimpleNamespace(**{n: W() for n in names}), None, lambda: pn, None)):
            entries, error = ctl.modelEntries()
            assert len(entries) >= 2 and error == "", (entries, error)
            ctl.onParameterNodeModified()
        assert not attempts, attempts
        print("ok", len(fw.FORAMEN3DController.modelEntries(ctl)[0]))
    """)
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT / "Testing")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stdout + done.stderr[-3000:]
    # the catalogue's models are listed (default first) without models3d
    assert int(done.stdout.split()[1]) >= 2


# ====================================================================== item 9: SpineMorph terminology
def _term_document():
    import json

    return json.loads((ROOT / "DuralSacSeg" / "Resources" / "SpineMorph.term.json").read_text())


def test_terminology_file_holds_every_segment_type():
    from DuralSacSegLib import table_model
    from FORAMEN3DLib import markup_model

    from spinemorph.gui_support import (
        SPINEMORPH_TERMINOLOGY_CONTEXT,
        parse_terminology_entry,
        terminology_file_types,
    )

    doc = _term_document()
    # the two schema URLs Slicer 5.10 / 5.12 accept (vtkSlicerTerminologiesModuleLogic.cxx, TERMINOLOGY_CONTEXT_SCHEMA*)
    assert doc["@schema"] in ("https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/segment-context-schema.json#",
                              "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/schemas/segment-context-schema.json#")
    assert doc["SegmentationCategoryTypeContextName"] == SPINEMORPH_TERMINOLOGY_CONTEXT
    types_in_file = terminology_file_types(doc)
    entries = [t for *_x, t in markup_model.SEGMENTS] + [table_model.DURAL_SAC_TERMINOLOGY]
    for entry in entries:
        parsed = parse_terminology_entry(entry)
        category = (parsed["category"].scheme, parsed["category"].value)
        assert (parsed["type"].scheme, parsed["type"].value) in types_in_file[category], entry
    codes = {t["CodeMeaning"]: t["CodeValue"] for c in doc["SegmentationCodes"]["Category"] for t in c["Type"]}
    assert codes == {"L4 vertebra": "11994002", "L5 vertebra": "49668003", "Intervertebral disc": "360499006",
                     "Dura mater": "18545000"}
    for category in doc["SegmentationCodes"]["Category"]:
        for t in category["Type"]:
            assert len(t["recommendedDisplayRGBValue"]) == 3 and t["3dSlicerLabel"]


class _TerminologiesLogic:
    def __init__(self):
        self.loaded, self.calls = set(), []

    def IsTerminologyContextLoaded(self, name):
        return name in self.loaded

    def LoadTerminologyFromFile(self, path):
        import json

        self.calls.append(path)
        name = json.loads(Path(path).read_text())["SegmentationCategoryTypeContextName"]
        self.loaded.add(name)
        return name


def test_segment_terminology_uses_the_loaded_spinemorph_context(monkeypatch):
    from FORAMEN3DLib import markup_model

    from spinemorph.gui_support import SPINEMORPH_TERMINOLOGY_CONTEXT, parse_terminology_entry

    _standin(monkeypatch, (5, 10))
    logic = _TerminologiesLogic()
    sys.modules["slicer"].modules = types.SimpleNamespace(terminologies=types.SimpleNamespace(logic=lambda: logic))
    terminology = importlib.import_module("DuralSacSegLib.slicer_terminology")
    entry = markup_model.SEGMENTS[0][4]
    out = terminology.segmentTerminology(entry)
    assert parse_terminology_entry(out)["context"] == SPINEMORPH_TERMINOLOGY_CONTEXT
    assert parse_terminology_entry(out)["type"] == parse_terminology_entry(entry)["type"]
    terminology.segmentTerminology(entry)
    assert logic.calls == [terminology.terminologyPath()]  # loaded once
    sys.modules["slicer"].modules = types.SimpleNamespace()  # Terminologies module disabled: entry kept as is
    assert terminology.segmentTerminology(entry) == entry


# ====================================================================== item 10: cached nodes and scene close
def test_cached_nodes_checked_by_presence_and_cleared_on_scene_close(monkeypatch):
    from slicer_standin import Node

    standin = _standin(monkeypatch, (5, 10))
    scene = sys.modules["slicer"].mrmlScene
    common = importlib.import_module("DuralSacSegLib.slicer_common")
    logic_module = importlib.import_module("FORAMEN3DLib.slicer_logic")
    logic = logic_module.FORAMEN3DLogicBase()
    old = scene.AddNode(Node())
    logic.surfaceModels["L4"] = old
    logic.measurementTable = old
    logic._planningInputs = ("labels", "scene", "frame")
    assert common.nodeInScene(old)
    scene.Clear()  # File > Close scene
    new = scene.AddNode(Node())
    assert new.GetID() == old.GetID()  # IDs are reused after a clear ...
    assert not common.nodeInScene(old)  # ... so presence, not the ID, decides
    assert logic.surfaceModels == {} and logic.measurementTable is None and logic._planningInputs is None
    dsca_logic = importlib.import_module("DuralSacSegLib.slicer_logic").DuralSacSegLogicBase()
    dsca_logic.lastTable = "table"
    scene.Clear()
    assert dsca_logic.lastTable is None
    del standin


def test_scene_observer_does_not_keep_the_logic_alive(monkeypatch):
    import gc

    _standin(monkeypatch, (5, 10))
    scene = sys.modules["slicer"].mrmlScene
    logic = importlib.import_module("DuralSacSegLib.slicer_logic").DuralSacSegLogicBase()
    assert len(scene.observers) == 1
    del logic
    gc.collect()
    scene.Clear()  # the observer of the collected logic removes itself
    assert scene.observers == {}


# ====================================================================== startup: supported Slicer versions
@pytest.mark.parametrize(("version", "level"), [((5, 8), "error"), ((5, 10), ""), ((5, 12), ""), ((5, 13), "info")])
def test_startup_states_the_supported_version_range(monkeypatch, version, level):
    standin = _standin(monkeypatch, version)
    warnings = []
    sys.modules["slicer"].util.warningDisplay = lambda text, windowTitle=None, **k: warnings.append(text)
    monkeypatch.setitem(sys.modules, "spinemorph", None)  # a source checkout before the core is installed
    startup = importlib.import_module("DuralSacSegLib.slicer_startup")
    assert startup.checkSlicerVersion() == level
    assert len(warnings) == (1 if level == "error" else 0)
    if warnings:
        assert "5.10 to 5.12" in warnings[0] and f"{version[0]}.{version[1]}" in warnings[0]
    del standin


@pytest.mark.parametrize("version", VERSIONS)
def test_standin_launch_console_process_refuses_what_slicer_refuses(monkeypatch, version):
    """The stand-in takes only the keywords of the real signature (5.10: args, useStartupEnvironment,
    updateEnvironment, cwd; 5.12 adds blocking, logCallback, completedCallback), so a glue call Slicer would reject
    fails here too."""
    _standin(monkeypatch, version)
    slicer = sys.modules["slicer"]

    with pytest.raises(TypeError):
        slicer.util.launchConsoleProcess([sys.executable, "-c", "pass"], startupinfo=None)
    if version < (5, 12):
        with pytest.raises(TypeError):
            slicer.util.launchConsoleProcess([sys.executable, "-c", "pass"], blocking=True)
    proc = slicer.util.launchConsoleProcess([sys.executable, "-c", "print('ok')"], useStartupEnvironment=False,
                                            updateEnvironment={"X": "1"})
    assert proc.communicate()[0] == "ok\n"
