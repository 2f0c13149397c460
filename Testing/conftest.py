"""Shared pytest fixtures of the Slicer-free suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Plots are written without a display.
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session", autouse=True)
def _cache_dir_in_tmp(tmp_path_factory):
    """``SPINEMORPH_CACHE_DIR`` is a folder of this test session, never the user's cache.

    Runs of the fine 3D model with OpenVINO or ONNX Runtime convert the network into
    ``$SPINEMORPH_CACHE_DIR/openvino`` or ``.../onnx``, else ``~/.cache/spinemorph/...``
    (:func:`FORAMEN3DLib.fine_backends.cache_dir` reads the variable at call time;
    worker processes inherit it). Set in ``os.environ`` for the whole session, so one export serves every test of
    the run; a test may still point it elsewhere with ``monkeypatch.setenv``.
    """
    old = os.environ.get("SPINEMORPH_CACHE_DIR")
    os.environ["SPINEMORPH_CACHE_DIR"] = str(tmp_path_factory.mktemp("spinemorph_cache"))
    yield
    if old is None:
        os.environ.pop("SPINEMORPH_CACHE_DIR", None)
    else:
        os.environ["SPINEMORPH_CACHE_DIR"] = old


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (small networks run faster without thread start-up; the machine's other
    work keeps its cores), the previous thread count restored after it. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")`` or as an argument."""
    torch = pytest.importorskip("torch")  # where torch is a hard dependency the test module imports it first
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def spider_root() -> Path:
    """Path of the real SPIDER data, or skip the test when it is absent."""
    root = Path(os.environ.get("SPINEMORPH_SPIDER", REPO_ROOT.parent / "shared" / "data" / "spider"))
    if not (root / "masks" / "manifest.csv").is_file():
        pytest.skip(f"real SPIDER data not found at {root} (set SPINEMORPH_SPIDER); test needs it")
    return root
