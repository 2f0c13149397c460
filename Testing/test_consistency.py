"""Repository consistency: Slicer's CMake file lists, extension metadata, .ui files, import rules.

These checks stand in for a Slicer build, which cannot run here: ``slicerMacroBuildScriptedModule`` installs only
the files listed in a module's CMakeLists, so a missing entry is a module that works from the source tree and breaks
once installed from the Extensions Manager.
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("DuralSacSeg", "FORAMEN3D")
EXTENSION_KEYS = {
    "HOMEPAGE": "homepage",
    "CATEGORY": "category",
    "CONTRIBUTORS": "contributors",
    "DESCRIPTION": "description",
    "ICONURL": "iconurl",
    "SCREENSHOTURLS": "screenshoturls",
    "DEPENDS": "depends",
}
SLICER_ONLY_IMPORTS = {"slicer", "qt", "ctk", "vtkSegmentationCore", "sitkUtils", "SampleData", "DICOMLib"}
#: Qt-bound VTK modules (dotted prefixes): they need a Qt application, which the Slicer-free core must not
QT_VTK_IMPORTS = ("vtk.util.qt", "vtkmodules.qt")


# ----------------------------------------------------------------------------- helpers
def cmake_listed_files(cmake_text: str) -> set[str]:
    """Files named in the ``set(MODULE_PYTHON_SCRIPTS ...)`` / ``set(MODULE_PYTHON_RESOURCES ...)`` blocks."""
    listed: set[str] = set()
    module_name = re.search(r"set\(MODULE_NAME\s+(\w+)\)", cmake_text)
    for block in re.findall(r"set\((?:MODULE|SPINEMORPH)_PYTHON_(?:SCRIPTS|RESOURCES)\s+(.*?)\)", cmake_text, re.S):
        for line in block.splitlines():
            token = line.split("#", 1)[0].strip()
            if not token:
                continue
            if module_name:
                token = token.replace("${MODULE_NAME}", module_name.group(1))
            listed.add(token)
    return listed


def module_files_on_disk(module_dir: Path) -> set[str]:
    """Every ``.py`` file of the module (module file + ``<Module>Lib``) and every file under ``Resources``."""
    found = {f"{module_dir.name}.py"} if (module_dir / f"{module_dir.name}.py").exists() else set()
    for sub, pattern in ((f"{module_dir.name}Lib", "*.py"), ("Resources", "*")):
        for p in (module_dir / sub).rglob(pattern):
            rel = p.relative_to(module_dir)
            if p.is_file() and "__pycache__" not in rel.parts and not any(s.startswith(".") for s in rel.parts):
                found.add(rel.as_posix())
    return found


def missing_from_cmake(module_dir: Path) -> set[str]:
    listed = cmake_listed_files((module_dir / "CMakeLists.txt").read_text())
    return module_files_on_disk(module_dir) - listed


def parse_cmake_extension_vars(text: str) -> dict[str, str]:
    out = {}
    for key in EXTENSION_KEYS:
        m = re.search(rf'set\(EXTENSION_{key}\s+"(.*?)"\)', text, re.S)
        out[key] = m.group(1) if m else None
    return out


def parse_s4ext(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        out[key] = value.strip()
    return out


# ----------------------------------------------------------------------------- CMake lists
@pytest.mark.parametrize("module", MODULES)
def test_every_module_file_is_listed_in_cmake(module):
    missing = missing_from_cmake(ROOT / module)
    assert not missing, f"{module}/CMakeLists.txt does not list {sorted(missing)} (run scripts/sync_cmake_lists.py)"


@pytest.mark.parametrize("module", MODULES)
def test_every_listed_file_exists(module):
    listed = cmake_listed_files((ROOT / module / "CMakeLists.txt").read_text())
    absent = [f for f in listed if not (ROOT / module / f).exists()]
    assert not absent, f"{module}/CMakeLists.txt lists files that do not exist: {absent}"


def test_spinemorph_package_fully_listed():
    listed = cmake_listed_files((ROOT / "spinemorph" / "CMakeLists.txt").read_text())
    on_disk = {
        p.relative_to(ROOT / "spinemorph").as_posix()
        for p in (ROOT / "spinemorph").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.name != "CMakeLists.txt"
    }
    assert on_disk - listed == set(), f"spinemorph/CMakeLists.txt misses {sorted(on_disk - listed)}"


def test_check_fails_when_a_file_is_left_out(tmp_path):
    """The check itself works: a temporary copy with one extra, unlisted file is caught."""
    copy = tmp_path / "DuralSacSeg"
    shutil.copytree(ROOT / "DuralSacSeg", copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert missing_from_cmake(copy) == set()
    (copy / "DuralSacSegLib" / "forgotten_helper.py").write_text("X = 1\n")
    (copy / "Resources" / "Icons" / "unlisted.png").write_bytes(b"\x89PNG")
    assert missing_from_cmake(copy) == {"DuralSacSegLib/forgotten_helper.py", "Resources/Icons/unlisted.png"}
    # and removing a listed entry from the CMakeLists is caught too
    cm = copy / "CMakeLists.txt"
    cm.write_text(cm.read_text().replace("  DuralSacSegLib/__init__.py\n", ""))
    assert "DuralSacSegLib/__init__.py" in missing_from_cmake(copy)


def test_top_level_cmake_structure():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"project\(SpineMorph\)", text)
    assert "find_package(Slicer REQUIRED)" in text
    for sub in ("spinemorph", *MODULES):
        assert f"add_subdirectory({sub})" in text
    assert "include(${Slicer_EXTENSION_GENERATE_CONFIG})" in text
    assert "include(${Slicer_EXTENSION_CPACK})" in text
    for module in MODULES:
        mtext = (ROOT / module / "CMakeLists.txt").read_text()
        assert re.search(r"slicerMacroBuildScriptedModule\(.*WITH_GENERIC_TESTS", mtext, re.S)
        assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in mtext
        assert (ROOT / module / "Testing" / "Python" / "CMakeLists.txt").exists()


def test_extension_metadata_agrees():
    cmake = parse_cmake_extension_vars((ROOT / "CMakeLists.txt").read_text())
    s4ext = parse_s4ext((ROOT / "extension.s4ext").read_text())
    for key, s4key in EXTENSION_KEYS.items():
        assert cmake[key], f"CMakeLists.txt lacks EXTENSION_{key}"
        assert s4ext.get(s4key) == cmake[key], f"extension.s4ext '{s4key}' differs from EXTENSION_{key}"
    # icon and screenshots named in the metadata exist in the repository
    for url in [cmake["ICONURL"], *cmake["SCREENSHOTURLS"].split()]:
        rel = url.split("/main/", 1)[1]
        assert (ROOT / rel).is_file(), f"{rel} (named in the extension metadata) is missing"


# ----------------------------------------------------------------------------- .ui files
def _ui_object_names(ui_path: Path) -> set[str]:
    tree = ET.parse(ui_path)
    return {w.get("name") for w in tree.iter() if w.tag in ("widget", "layout", "action") and w.get("name")}


def _ui_names_used(py_text: str) -> set[str]:
    return set(re.findall(r"\bself\.ui\.([A-Za-z_]\w*)", py_text)) | set(re.findall(r"\bui\.([A-Za-z_]\w*)", py_text))


@pytest.mark.parametrize("module", MODULES)
def test_ui_names_used_exist(module):
    ui = ROOT / module / "Resources" / "UI" / f"{module}.ui"
    assert ui.exists(), f"{ui} missing"
    names = _ui_object_names(ui)
    glue = [ROOT / module / f"{module}.py", *sorted((ROOT / module / f"{module}Lib").glob("slicer_*.py"))]
    used = set()
    for f in glue:
        if f.exists():
            used |= _ui_names_used(f.read_text())
    qt_methods = {"setMRMLScene", "findChild", "findChildren", "setEnabled", "show", "hide"}
    unknown = sorted(used - names - qt_methods)
    assert not unknown, f"{module}: self.ui names not in {ui.name}: {unknown}"


@pytest.mark.parametrize("module", MODULES)
def test_ui_loads_in_qt(module):
    pytest.importorskip("PySide6")
    from ui_fallback import load_ui_offscreen

    widget = load_ui_offscreen(ROOT / module / "Resources" / "UI" / f"{module}.ui")
    assert widget is not None
    names = {c.objectName() for c in widget.findChildren(object) if hasattr(c, "objectName")}
    # every named widget of the .ui exists in the loaded tree (layouts and spacers excluded)
    tree = ET.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui")
    widgets = {w.get("name") for w in tree.iter("widget") if w.get("name")} - {tree.getroot().find("widget").get("name")}
    assert len(widgets) > 5, "the .ui file defines (almost) no widgets"
    assert widgets - names == set(), f"widgets missing after loading: {sorted(widgets - names)}"


# ----------------------------------------------------------------------------- import rules
def _python_files(*dirs: str) -> list[Path]:
    files = []
    for d in dirs:
        files += [p for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts]
    return files


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, False) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, node.lineno, any(a.name == "*" for a in node.names)))
    return out


def test_core_is_slicer_free():
    core = [
        p
        for p in _python_files("spinemorph", "DuralSacSeg/DuralSacSegLib", "FORAMEN3D/FORAMEN3DLib", "Testing")
        if not p.name.startswith("slicer_")
    ]
    offenders = [
        f"{p.relative_to(ROOT)}:{line} imports {mod}"
        for p in core
        for mod, line, _ in _imports(p)
        if mod.split(".")[0] in SLICER_ONLY_IMPORTS or mod.startswith(QT_VTK_IMPORTS)
    ]
    assert not offenders, "Slicer-free files import Slicer: " + "; ".join(offenders)


def test_no_star_imports_and_no_sys_path_hacks():
    files = _python_files("spinemorph", "DuralSacSeg", "FORAMEN3D", "Testing", "scripts")
    stars = [f"{p.relative_to(ROOT)}:{line}" for p in files for mod, line, star in _imports(p) if star]
    assert not stars, f"star imports: {stars}"
    hacks = [str(p.relative_to(ROOT)) for p in files if re.search(r"sys\.path\.(insert|append)|sys\.path\s*\+?=", p.read_text())]
    assert not hacks, f"sys.path manipulation in {hacks}"
    imp = [str(p.relative_to(ROOT)) for p in files for mod, _, _ in _imports(p) if mod == "imp"]
    assert not imp, f"'imp' (removed in Python 3.12) imported in {imp}"


@pytest.mark.parametrize("module", MODULES)
def test_module_file_imports_only_glue(module):
    """The module file imports Slicer/Qt/VTK, the standard library and its own glue (``<Module>Lib.slicer_*``)."""
    path = ROOT / module / f"{module}.py"
    if not path.exists():
        pytest.fail(f"{path} missing")
    allowed_roots = {"slicer", "qt", "ctk", "vtk", "os", "logging", "typing", "unittest", "pathlib", "__future__"}
    bad = []
    for mod, line, _ in _imports(path):
        root = mod.split(".")[0]
        if root in allowed_roots:
            continue
        glue_roots = {f"{module}Lib", "DuralSacSegLib"}  # DuralSacSeg hosts the glue both modules share
        if root in glue_roots and (mod.count(".") == 0 or mod.split(".")[1].startswith("slicer_")):
            continue
        bad.append(f"{line}: {mod}")
    assert not bad, f"{module}.py imports non-glue modules: {bad}"


def install_destinations() -> dict[str, list[str]]:
    """Install destination (relative to ``qt-scripted-modules``) -> source files, from the CMake lists.

    ``slicerMacroBuildScriptedModule`` (no ``WITH_SUBDIR``) copies every listed script and resource of every module to
    ``qt-scripted-modules/<listed path>``; ``spinemorph/CMakeLists.txt`` copies to ``qt-scripted-modules/spinemorph/``.
    """
    out: dict[str, list[str]] = {}
    for module in MODULES:
        for rel in cmake_listed_files((ROOT / module / "CMakeLists.txt").read_text()):
            out.setdefault(rel, []).append(f"{module}/{rel}")
    for rel in cmake_listed_files((ROOT / "spinemorph" / "CMakeLists.txt").read_text()):
        out.setdefault(f"spinemorph/{rel}", []).append(f"spinemorph/{rel}")
    return out


def test_install_destinations_are_unique():
    """Every scripted module installs into one ``qt-scripted-modules`` folder (resources into one shared
    ``Resources``): two listed files with one destination make Ninja fail with "multiple rules generate ..." even when
    the files are identical (issue 17, item 5)."""
    clashes = {dest: srcs for dest, srcs in install_destinations().items() if len(srcs) > 1}
    assert not clashes, f"files installed to the same place: {clashes}"
    assert "Resources/SpineMorph-requirements.txt" in install_destinations()


def test_install_destination_check_catches_a_shared_name(tmp_path, monkeypatch):
    for module in MODULES:
        (tmp_path / module).mkdir()
        shutil.copy(ROOT / module / "CMakeLists.txt", tmp_path / module / "CMakeLists.txt")
    (tmp_path / "spinemorph").mkdir()
    shutil.copy(ROOT / "spinemorph" / "CMakeLists.txt", tmp_path / "spinemorph" / "CMakeLists.txt")
    cm = tmp_path / "FORAMEN3D" / "CMakeLists.txt"
    cm.write_text(cm.read_text().replace("  # END MODULE_PYTHON_RESOURCES", "  Resources/SpineMorph-requirements.txt\n  # END MODULE_PYTHON_RESOURCES"))
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert install_destinations()["Resources/SpineMorph-requirements.txt"] == [
        "DuralSacSeg/Resources/SpineMorph-requirements.txt", "FORAMEN3D/Resources/SpineMorph-requirements.txt"]


# ----------------------------------------------------------------------------- Extensions Index metadata
#: "Name (Organization)" as the Extensions Index and Slicer's module template expect contributors
CONTRIBUTOR = re.compile(r"^[^(),]+ \([^()]+\)$")
#: keys of Slicer's catalog entry schema v1.0.1 (Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json, present in
#: Slicer 5.10 and 5.12; additionalProperties false; required $schema, category, scm_url)
INDEX_SCHEMA_KEYS = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                     "build_subdirectory", "enabled", "tier"}


def test_extensions_index_description_agrees_with_the_extension():
    import json

    entry = json.loads((ROOT / "SpineMorph.json").read_text())
    assert entry["$schema"].endswith("/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert set(entry) <= INDEX_SCHEMA_KEYS and {"$schema", "category", "scm_url"} <= set(entry)
    cmake = parse_cmake_extension_vars((ROOT / "CMakeLists.txt").read_text())
    s4ext = parse_s4ext((ROOT / "extension.s4ext").read_text())
    assert entry["category"] == cmake["CATEGORY"] == s4ext["category"]
    assert entry["scm_url"] == s4ext["scmurl"] and entry["scm_revision"] == s4ext["scmrevision"]
    depends = [] if cmake["DEPENDS"] == "NA" else cmake["DEPENDS"].split()
    assert entry["build_dependencies"] == depends
    assert entry["build_subdirectory"] == s4ext["build_subdirectory"]
    assert isinstance(entry["tier"], int) and 1 <= entry["tier"] <= 5 and str(entry["tier"]) == s4ext["tier"]


def test_contributors_and_categories_are_consistent():
    cmake = parse_cmake_extension_vars((ROOT / "CMakeLists.txt").read_text())
    contributors = [c.strip() for c in cmake["CONTRIBUTORS"].split(",")]
    assert contributors and all(CONTRIBUTOR.match(c) for c in contributors), contributors
    for module in MODULES:
        tree = ast.parse((ROOT / module / f"{module}.py").read_text())
        values = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute) and \
                    node.targets[0].attr in ("categories", "contributors"):
                values[node.targets[0].attr] = ast.literal_eval(node.value)
        assert all(CONTRIBUTOR.match(c) for c in values["contributors"]), values["contributors"]
        # modules appear under the extension's category in the Modules menu ("Segmentation.SpineMorph")
        assert all(c.split(".")[0] == cmake["CATEGORY"] for c in values["categories"]), values["categories"]


def test_cmake_minimum_is_the_slicer_510_template_one():
    """The extension supports Slicer 5.10: its template's ``cmake_minimum_required(VERSION 3.20.6...3.22.6)`` (5.12's
    template asks 3.28.0), and the build refuses an older Slicer."""
    text = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"^cmake_minimum_required\(VERSION 3\.20\.6\.\.\.3\.22\.6 FATAL_ERROR\)", text, re.M)
    assert re.search(r'if\(Slicer_VERSION VERSION_LESS "5\.10"\)\s*\n\s*message\(FATAL_ERROR', text)
