"""Import layers: every first-party import points down (DEVELOPERS.md, "Layers").

A small AST walk (no dependency) over every first-party module collects its imports, at module level and inside
functions (``import x``, ``from x import y``, relative imports, ``importlib.import_module("literal")``), and checks:

- every module belongs to a layer (1 core, 2 data, 3 computation, 4 application, 5 Slicer glue);
- no import goes from a lower layer to a higher one;
- no import cycle among the modules of layers 1-4 (a cycle between two modules of one layer counts; an import under
  ``if TYPE_CHECKING:`` is for annotations only and closes no cycle, but must still point down);
- ``DuralSacSegLib`` and ``FORAMEN3DLib`` never import each other's private (leading underscore) names;
- no source file is longer than 800 lines.

The checker is a plain function (:func:`check_layers`); the last tests plant violations in a package made in
``tmp_path`` and check that it reports each one.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: import name -> folder of every first-party package
PACKAGES = {
    "spinemorph": ROOT / "spinemorph",
    "DuralSacSegLib": ROOT / "DuralSacSeg" / "DuralSacSegLib",
    "FORAMEN3DLib": ROOT / "FORAMEN3D" / "FORAMEN3DLib",
}
#: first-party modules outside the packages: the Slicer module files and their self-tests
MODULE_FILES = {
    "DuralSacSeg": ROOT / "DuralSacSeg" / "DuralSacSeg.py",
    "FORAMEN3D": ROOT / "FORAMEN3D" / "FORAMEN3D.py",
    "DuralSacSegWidgetTest": ROOT / "DuralSacSeg" / "Testing" / "Python" / "DuralSacSegWidgetTest.py",
    "FORAMEN3DWidgetTest": ROOT / "FORAMEN3D" / "Testing" / "Python" / "FORAMEN3DWidgetTest.py",
}

CORE, DATA, COMPUTATION, APPLICATION, SLICER = 1, 2, 3, 4, 5
LAYER_NAMES = {CORE: "core", DATA: "data", COMPUTATION: "computation", APPLICATION: "application", SLICER: "Slicer glue"}

#: layer 1, the Slicer-free core: image IO and geometry, DICOM, label maps, masks, meshes (polydata), statistics,
#: file digests, errors, atomic writes, intensity, device choice, run configuration, CPU inference preparation
#: (cpu_inference, onnx_export), measurement helpers (benchutil), command-line scaffolding (commandline, argtypes)
CORE_MODULES = {
    "spinemorph", "spinemorph.argtypes", "spinemorph.atomic", "spinemorph.benchutil", "spinemorph.commandline",
    "spinemorph.cpu_inference", "spinemorph.device", "spinemorph.dicomio", "spinemorph.errors", "spinemorph.files", "spinemorph.intensity",
    "spinemorph.labelmaps", "spinemorph.labels", "spinemorph.masks", "spinemorph.onnx_export", "spinemorph.openvino_runtime",
    "spinemorph.polydata",
    "spinemorph.runconfig", "spinemorph.segio", "spinemorph.series", "spinemorph.stats", "spinemorph.volume",
}
#: layer 2, synthetic and real data. A name here also covers ``<name>_*`` and ``<name>.*`` (files split from it).
#: ``gui_support`` (Slicer-free helpers of the module panels) is here because its ``sample_study`` generates the
#: phantom study with ``acquisition``.
DATA_MODULES = {
    "spinemorph.acquisition", "spinemorph.phantom", "spinemorph.phantom_acceptance", "spinemorph.samples",
    "spinemorph.spider", "spinemorph.synth", "spinemorph.gui_support",
}
#: entry-point aliases: tiny modules at the old paths of moved application modules, kept for command lines and
#: launchers (``python -m spinemorph.cli``, ``PythonSlicer -m spinemorph.inference_worker``). They belong to the
#: application layer and may import only their target.
ALIASES = {
    "spinemorph.cli": "spinemorph.app.cli",
    "spinemorph.inference_worker": "spinemorph.app.inference_worker",
}
#: import cycles other work is still removing (issue 18): these edges are left out of the cycle check, and the
#: test fails once one is gone, so that the list only shrinks. Keep it empty.
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()
#: private names one module library still takes from the other (issue 18): (importer, module, name); the test fails
#: once one is gone. Keep it empty.
KNOWN_PRIVATE_NAMES: set[tuple[str, str, str]] = set()
#: upward imports still allowed (keep it empty; an entry needs a comment naming its issue)
ALLOWED_UPWARD: set[tuple[str, str]] = set()

#: files over MAX_LINES that other work is splitting (name the issue); the test fails once one is short enough, so
#: that the list only shrinks. Empty since phantom.py, synth.py and morphometry.py were split (issue 18).
MAX_LINES = 800
LONG_FILES_BEING_SPLIT: set[str] = set()
#: folders whose ``.py`` files the line limit covers
LINE_LIMIT_FOLDERS = ("spinemorph", "DuralSacSeg", "FORAMEN3D", "scripts", "Testing")


def _covered(name: str, names: set[str]) -> bool:
    return any(name == n or name.startswith(n + "_") or name.startswith(n + ".") for n in names)


def layer_of(module: str) -> int | None:
    """The layer of a first-party module of this repository, or None when it has none (an unknown module)."""
    top, _, rest = module.partition(".")
    leaf = module.rsplit(".", 1)[-1]
    if module in MODULE_FILES:
        return SLICER
    if top in ("DuralSacSegLib", "FORAMEN3DLib"):
        return SLICER if leaf.startswith("slicer_") else COMPUTATION
    if top == "spinemorph":
        if module in ALIASES or module == "spinemorph.app" or module.startswith("spinemorph.app."):
            return APPLICATION
        if module in CORE_MODULES:
            return CORE
        if _covered(module, DATA_MODULES):
            return DATA
    return None


# ---------------------------------------------------------------------------------------------------- the walker
@dataclass
class Import:
    source: str
    target: str  # the first-party module imported (longest known prefix)
    names: tuple[str, ...]  # names taken from it (``from target import a, b``), or attribute names used on it
    line: int
    top_level: bool
    type_only: bool = False  # under ``if TYPE_CHECKING:`` (annotations only; no import at run time)


@dataclass
class Graph:
    modules: dict[str, Path]
    imports: list[Import] = field(default_factory=list)

    def edges(self) -> set[tuple[str, str]]:
        return {(i.source, i.target) for i in self.imports if i.source != i.target}

    def runtime_edges(self) -> set[tuple[str, str]]:
        return {(i.source, i.target) for i in self.imports if i.source != i.target and not i.type_only}


def discover(packages: dict[str, Path], module_files: dict[str, Path]) -> dict[str, Path]:
    """Module name -> file of every first-party module (``__init__.py`` is the package itself)."""
    out = {}
    for name, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder)
            if any(part == "__pycache__" or part.startswith(".") for part in rel.parts):
                continue
            parts = [name, *rel.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    out.update({name: path for name, path in module_files.items() if path.is_file()})
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is a known module."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        cand = ".".join(parts[:n])
        if cand in known:
            return cand
    return None


def walk(modules: dict[str, Path]) -> Graph:
    """Every import between the given modules (module level and inside functions)."""
    graph = Graph(modules)
    tops = {m.split(".")[0] for m in modules}
    for source, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        package = source if is_package else source.rpartition(".")[0]
        top_level_nodes = {id(n) for n in tree.body}
        type_only = set()
        for node in tree.body:  # imports under top-level if/try count as module level
            if isinstance(node, (ast.If, ast.Try)):
                top_level_nodes |= {id(n) for n in ast.walk(node)}
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                type_only |= {id(n) for n in ast.walk(node)}
        bound: dict[str, str] = {}  # local name -> first-party module it refers to
        for node in ast.walk(tree):
            found: list[tuple[str, tuple[str, ...], str | None]] = []  # (dotted name, names, local binding)
            if isinstance(node, ast.Import):
                for a in node.names:
                    found.append((a.name, (), a.asname or (a.name if a.asname is None and "." not in a.name else None)))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for a in node.names:
                    full = f"{base}.{a.name}"
                    if full in modules:  # ``from pkg import module``
                        found.append((full, (), a.asname or a.name))
                    else:
                        found.append((base, (a.name,), None))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == "import_module" and node.args
                  and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                found.append((node.args[0].value, (), None))
            for name, names, local in found:
                if name.split(".")[0] not in tops:
                    continue
                target = _resolve(name, modules)
                if target is None:
                    continue
                graph.imports.append(Import(source, target, names, node.lineno, id(node) in top_level_nodes,
                                            id(node) in type_only))
                if local:
                    bound[local] = target
        # attribute access on a bound first-party module (``segment3d._helper``) counts as taking that name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
                graph.imports.append(Import(source, bound[node.value.id], (node.attr,), node.lineno, False))
    return graph


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    succ: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        succ.setdefault(a, []).append(b)
        succ.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    counter = 0
    for root in sorted(succ):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            recurse = False
            for k in range(i, len(succ[v])):
                w = succ[v][k]
                if w not in index:
                    work.append((v, k + 1))
                    work.append((w, 0))
                    recurse = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if recurse:
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return out


def check_layers(graph: Graph, layer_of: Callable[[str], int | None], *, private_pairs=(), aliases=None,
                 allowed_upward=frozenset(), known_cycle_edges=frozenset(), known_private=frozenset(),
                 acyclic_layers=(1, 2, 3, 4)) -> list[str]:
    """Every violation of the layer rules in ``graph``, one line each (empty: all arrows point down)."""
    problems = []
    aliases = aliases or {}
    for m in sorted(graph.modules):
        if layer_of(m) is None:
            problems.append(f"unknown module {m} ({graph.modules[m]}): assign it to a layer in "
                            "Testing/test_import_layers.py")
    for imp in graph.imports:
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if src is None or dst is None or imp.source == imp.target:
            continue
        where = f"{imp.source} line {imp.line} imports {imp.target}"
        if dst > src and (imp.source, imp.target) not in allowed_upward:
            problems.append(f"upward import: {where} (layer {src} -> {dst})")
        if imp.source in aliases and imp.target != aliases[imp.source]:
            problems.append(f"alias {imp.source} imports {imp.target}; an alias imports only {aliases[imp.source]}")
        for a, b in private_pairs:
            if imp.source.split(".")[0] == a and imp.target.split(".")[0] == b:
                private = [n for n in imp.names if n.startswith("_") and not n.startswith("__")
                           and (imp.source, imp.target, n) not in known_private]
                private += [p for p in imp.target.split(".")[1:] if p.startswith("_") and not p.startswith("__")]
                if private:
                    problems.append(f"private name of {b}: {where} ({', '.join(private)}); move what both "
                                    "packages need down to the core")
    edges = {(a, b) for a, b in graph.runtime_edges()  # an annotation-only import makes no cycle
             if layer_of(a) in acyclic_layers and layer_of(b) in acyclic_layers and (a, b) not in known_cycle_edges}
    for comp in _cycles(edges):
        inner = sorted((a, b) for a, b in edges if a in comp and b in comp)
        problems.append(f"import cycle among {', '.join(comp)}: " + "; ".join(f"{a} -> {b}" for a, b in inner))
    return problems


@pytest.fixture(scope="module")
def graph() -> Graph:
    return walk(discover(PACKAGES, MODULE_FILES))


# ---------------------------------------------------------------------------------------------------- this repository
def test_every_module_has_a_layer(graph):
    unknown = [m for m in graph.modules if layer_of(m) is None]
    assert not unknown, f"assign these modules to a layer in Testing/test_import_layers.py: {unknown}"
    assert set(ALIASES) <= set(graph.modules), "an alias listed here no longer exists: remove it from ALIASES"


def test_imports_point_down_and_have_no_cycles(graph):
    problems = check_layers(graph, layer_of, private_pairs=(("DuralSacSegLib", "FORAMEN3DLib"),
                                                            ("FORAMEN3DLib", "DuralSacSegLib")),
                            aliases=ALIASES, allowed_upward=ALLOWED_UPWARD, known_cycle_edges=KNOWN_CYCLE_EDGES,
                            known_private=KNOWN_PRIVATE_NAMES)
    assert not problems, "\n".join(problems)


def test_known_exceptions_are_still_needed(graph):
    gone = sorted(KNOWN_CYCLE_EDGES - graph.edges())
    assert not gone, f"these import edges are gone: remove them from KNOWN_CYCLE_EDGES: {gone}"
    taken = {(i.source, i.target, n) for i in graph.imports for n in i.names}
    gone = sorted(KNOWN_PRIVATE_NAMES - taken)
    assert not gone, f"these private names are no longer imported: remove them from KNOWN_PRIVATE_NAMES: {gone}"
    gone = sorted(ALLOWED_UPWARD - graph.edges())
    assert not gone, f"these upward imports are gone: remove them from ALLOWED_UPWARD: {gone}"


def test_aliases_are_tiny_and_point_at_their_target(graph):
    for alias, target in ALIASES.items():
        path = graph.modules[alias]
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 30, f"{path} should only re-export {target}"
        targets = {i.target for i in graph.imports if i.source == alias}
        assert targets == {target}, f"{alias} imports {sorted(targets)}, expected only {target}"


def test_layer_examples():
    assert layer_of("spinemorph.volume") == CORE
    assert layer_of("spinemorph.phantom") == DATA and layer_of("spinemorph.phantom_geometry") == DATA
    assert layer_of("DuralSacSegLib.segment") == COMPUTATION and layer_of("FORAMEN3DLib.planning") == COMPUTATION
    assert layer_of("spinemorph.app.cli") == APPLICATION and layer_of("spinemorph.cli") == APPLICATION
    assert layer_of("FORAMEN3DLib.slicer_logic") == SLICER and layer_of("DuralSacSeg") == SLICER
    assert layer_of("spinemorph.something_new") is None


def test_no_source_file_over_the_line_limit():
    long, shorter = [], []
    for folder in LINE_LIMIT_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(ROOT).as_posix()
            n = len(path.read_text(encoding="utf-8").splitlines())
            if n > MAX_LINES and rel not in LONG_FILES_BEING_SPLIT:
                long.append(f"{rel}: {n} lines")
            if n <= MAX_LINES and rel in LONG_FILES_BEING_SPLIT:
                shorter.append(rel)
    assert not long, f"split by responsibility (at most {MAX_LINES} lines per file): {long}"
    assert not shorter, f"now at most {MAX_LINES} lines: remove from LONG_FILES_BEING_SPLIT: {shorter}"


# ---------------------------------------------------------------------------------------------------- the checker itself
def _package(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return discover({"low": root / "low", "high": root / "high"}, {})


def _toy_layer(module: str) -> int | None:
    return {"low": 1, "high": 4}.get(module.split(".")[0]) if module != "low.stray" else None


def test_checker_accepts_downward_imports(tmp_path):
    mods = _package(tmp_path, {"low/__init__.py": "", "low/a.py": "X = 1\n", "high/__init__.py": "",
                               "high/b.py": "from low.a import X\nfrom . import c\n", "high/c.py": "import low\n"})
    assert check_layers(walk(mods), _toy_layer) == []


def test_checker_catches_a_planted_upward_import_inside_a_function(tmp_path):
    mods = _package(tmp_path, {"low/__init__.py": "", "low/a.py": "def f():\n    from high.b import g\n    return g\n",
                               "high/__init__.py": "", "high/b.py": "def g():\n    return 1\n"})
    problems = check_layers(walk(mods), _toy_layer)
    assert len(problems) == 1 and problems[0].startswith("upward import: low.a line 2 imports high.b")


def test_checker_catches_relative_and_importlib_upward_imports(tmp_path):
    mods = _package(tmp_path, {"low/__init__.py": "", "low/a.py": "import importlib\n"
                               "M = importlib.import_module('high.b')\n", "high/__init__.py": "", "high/b.py": "",
                               "low/sub/__init__.py": "from .. import a\n"})
    walked = walk(mods)
    problems = check_layers(walked, _toy_layer)
    assert problems == ["upward import: low.a line 2 imports high.b (layer 1 -> 4)"]
    assert ("low.sub", "low.a") in walked.edges()  # the relative import resolved to its module


def test_checker_catches_a_cycle_and_honours_known_edges(tmp_path):
    mods = _package(tmp_path, {"low/__init__.py": "", "low/a.py": "from low import b\n",
                               "low/b.py": "def f():\n    import low.a\n", "high/__init__.py": ""})
    problems = check_layers(walk(mods), _toy_layer)
    assert len(problems) == 1 and problems[0].startswith("import cycle among low.a, low.b")
    assert check_layers(walk(mods), _toy_layer, known_cycle_edges={("low.b", "low.a")}) == []
    (tmp_path / "low" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from low.a import X\n")
    assert check_layers(walk(mods), _toy_layer) == []  # an annotation-only import closes no cycle


def test_checker_catches_private_names_unknown_modules_and_alias_extras(tmp_path):
    mods = _package(tmp_path, {"low/__init__.py": "", "low/a.py": "_secret = 1\nPUBLIC = 2\n", "low/stray.py": "",
                               "high/__init__.py": "", "high/b.py": "from low.a import PUBLIC, _secret\n",
                               "high/c.py": "from low import a\nY = a._secret\n",
                               "high/alias.py": "from high.b import PUBLIC\nimport low.a\n"})
    problems = check_layers(walk(mods), _toy_layer, private_pairs=(("high", "low"),), aliases={"high.alias": "high.b"})
    assert any(p.startswith("unknown module low.stray") for p in problems)
    assert any("high.b line 1 imports low.a (_secret)" in p for p in problems)
    assert any("high.c line 2 imports low.a (_secret)" in p for p in problems)
    assert any(p.startswith("alias high.alias imports low.a") for p in problems)
    assert len(problems) == 4, problems
