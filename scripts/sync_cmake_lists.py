"""Rewrite the file lists in the module CMakeLists (and spinemorph/CMakeLists.txt) from the files on disk.

Slicer's ``slicerMacroBuildScriptedModule`` installs only the files it is given, so every ``.py`` file and every
resource of a module must be listed. This script regenerates the lists between the ``# BEGIN <LIST>`` and
``# END <LIST>`` markers; ``Testing/test_consistency.py`` checks (independently) that nothing is left out.

Run: ``python scripts/sync_cmake_lists.py`` after adding or removing files.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_PARTS = {"__pycache__", "Testing"}


def _files(folder: Path, pattern: str, under: str | None = None) -> list[str]:
    base = folder / under if under else folder
    out = []
    for p in sorted(base.rglob(pattern)):
        rel = p.relative_to(folder)
        if any(part in SKIP_PARTS or part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        out.append(rel.as_posix())
    return out


def module_lists(module_dir: Path) -> dict[str, list[str]]:
    name = module_dir.name
    scripts = [f"{name}.py"] + [f for f in _files(module_dir, "*.py", f"{name}Lib")]
    resources = _files(module_dir, "*", "Resources")
    return {"MODULE_PYTHON_SCRIPTS": scripts, "MODULE_PYTHON_RESOURCES": resources}


def package_lists(pkg_dir: Path) -> dict[str, list[str]]:
    scripts = _files(pkg_dir, "*.py")
    resources = [f for f in _files(pkg_dir, "*") if not f.endswith((".py", ".pyc")) and f != "CMakeLists.txt"]
    return {"SPINEMORPH_PYTHON_SCRIPTS": scripts, "SPINEMORPH_PYTHON_RESOURCES": resources}


def rewrite(cmake: Path, lists: dict[str, list[str]]) -> bool:
    text = cmake.read_text()
    new = text
    for key, files in lists.items():
        block = "\n".join(f"  {f}" for f in files)
        pattern = re.compile(rf"(# BEGIN {key}\n)(.*?)(  # END {key})", re.S)
        if not pattern.search(new):
            raise SystemExit(f"{cmake}: markers for {key} not found")
        new = pattern.sub(lambda m, b=block: m.group(1) + (b + "\n" if b else "") + m.group(3), new)
    if new != text:
        cmake.write_text(new)
        return True
    return False


def main() -> int:
    changed = []
    for module in ("DuralSacSeg", "FORAMEN3D"):
        d = ROOT / module
        if rewrite(d / "CMakeLists.txt", module_lists(d)):
            changed.append(d / "CMakeLists.txt")
    if rewrite(ROOT / "spinemorph" / "CMakeLists.txt", package_lists(ROOT / "spinemorph")):
        changed.append(ROOT / "spinemorph" / "CMakeLists.txt")
    for c in changed:
        print(f"updated {c.relative_to(ROOT)}")
    if not changed:
        print("CMake file lists already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
