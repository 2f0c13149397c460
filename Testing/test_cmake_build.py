"""The extension's CMake project configured and built with Ninja against a stand-in Slicer configuration
(``Testing/cmake_stub``): every listed file exists and is copied to one place; two modules listing the same
resource path (the old ``Resources/requirements.txt`` of both modules) fail the build with "multiple rules
generate" (issue 17, item 5). Skipped when cmake or ninja is not installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUB = ROOT / "Testing" / "cmake_stub"
LIB = "lib/Slicer-5.10/qt-scripted-modules"

pytestmark = pytest.mark.skipif(not (shutil.which("cmake") and shutil.which("ninja")), reason="needs cmake and ninja")


def _source_tree(dest: Path) -> Path:
    """The repository's CMake files and every file they list, as symbolic links (no large copies)."""
    from test_consistency import cmake_listed_files

    folders = [ROOT, ROOT / "spinemorph"]
    for module in ("DuralSacSeg", "FORAMEN3D"):
        folders += [ROOT / module, ROOT / module / "Testing", ROOT / module / "Testing" / "Python"]
    for cm in (f / "CMakeLists.txt" for f in folders if (f / "CMakeLists.txt").is_file()):
        rel = cm.relative_to(ROOT)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(cm, dest / rel)
        folder = cm.parent
        listed = cmake_listed_files(cm.read_text())
        for test_script in folder.glob("Testing/Python/*.py"):
            listed.add(test_script.relative_to(folder).as_posix())
        for name in listed:
            src = folder / name
            if src.exists():
                target = dest / rel.parent / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    os.symlink(src, target)
    return dest


def _build(src: Path, build: Path):
    configure = subprocess.run(["cmake", "-G", "Ninja", "-S", str(src), "-B", str(build), f"-DSlicer_DIR={STUB}",
                                "-DBUILD_TESTING=ON"], capture_output=True, text=True, timeout=300)
    if configure.returncode != 0:
        return configure
    return subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True, timeout=600)


def test_extension_builds_with_ninja_against_a_stub_slicer(tmp_path):
    src = _source_tree(tmp_path / "src")
    done = _build(src, tmp_path / "build")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "build" / LIB
    for rel in ("DuralSacSeg.py", "FORAMEN3D.py", "DuralSacSegLib/slicer_process.py", "spinemorph/inference_worker.py",
                "Resources/SpineMorph-requirements.txt", "Resources/SpineMorph.term.json",
                "Resources/Icons/FORAMEN3D.png", "Resources/Models/foramen3d_catalog.json"):
        assert (out / rel).is_file(), rel


def test_a_resource_listed_by_both_modules_breaks_the_build(tmp_path):
    src = _source_tree(tmp_path / "src")
    (src / "FORAMEN3D" / "Resources" / "SpineMorph-requirements.txt").write_text("monai>=1.3\n")
    cm = src / "FORAMEN3D" / "CMakeLists.txt"
    cm.write_text(cm.read_text().replace("  # END MODULE_PYTHON_RESOURCES",
                                         "  Resources/SpineMorph-requirements.txt\n  # END MODULE_PYTHON_RESOURCES"))
    done = _build(src, tmp_path / "build")
    assert done.returncode != 0
    assert "multiple rules generate" in done.stdout + done.stderr and "SpineMorph-requirements.txt" in done.stdout + done.stderr
