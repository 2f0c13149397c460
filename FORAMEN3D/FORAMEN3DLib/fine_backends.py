"""What runs the fine network's sliding windows: OpenVINO, ONNX Runtime or torch (issue 15, speed).

- ``"openvino"`` (the CPU default when ``openvino`` is installed — a package dependency): the network converted to
  OpenVINO IR once per machine (cached, :func:`cache_dir`), fp32 by default, bfloat16 on request;
- ``"onnx"``: ONNX Runtime, fp32 (the optional ``onnx`` extra; the CPU default when OpenVINO is missing);
- ``"torch"``: the network itself (fp32, or bf16 / fp16 autocast); the only path on a GPU.

Speed and label agreement on a real SPACE slab: ``scripts/bench_fine3d.py`` (``docs/performance.md``). Every
backend's labels are compared with torch's in ``Testing/test_fine3d.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import models3d

#: the backends a caller may name (plus "auto")
BACKENDS = ("openvino", "onnx", "torch")

#: per-process sessions, the most recently used last: ``(backend, weights, roi, precision, threads) -> predictor``
_SESSIONS: dict = {}
#: sessions kept per process (a few MB each; switching backends, e.g. in a benchmark, reuses them)
MAX_SESSIONS = 4


def resolve_fine_backend(device_type: str, backend: str = "auto", precision: str = "fp32") -> str:
    """The window backend: ``"openvino"``, ``"onnx"`` or ``"torch"``. ``"auto"``: on a CPU OpenVINO when it is
    installed (fp32 or bf16), else ONNX Runtime for fp32 when ``onnx`` and ``onnxruntime`` are, else torch; on any
    other device torch."""
    if backend == "auto":
        if device_type != "cpu":
            return "torch"
        from spinemorph.onnx_export import onnx_available
        from spinemorph.openvino_runtime import openvino_available

        if openvino_available():
            return "openvino"
        return "onnx" if (precision == "fp32" and onnx_available()) else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be auto, {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "onnx" and precision != "fp32":
        raise ValueError(f"the ONNX Runtime backend computes fp32 only, got precision {precision!r}; "
                         "use backend openvino or torch for bf16")
    return backend


def inference_record(device, backend: str, precision: str = "fp32") -> dict:
    """What ran the network, for the result's ``inference`` (and ``segmentation.json``): ``backend``
    (``"openvino"``, ``"onnxruntime"`` or ``"torch"``), ``threads`` (intra-op threads: ``torch.get_num_threads()``,
    which the OpenVINO / ONNX Runtime session also gets), ``precision`` (``"fp32"``; ``"bf16"`` with OpenVINO on a
    CPU that computes it natively, else ``"fp32"``; ``"bf16 autocast"`` with torch on a CPU, ``"fp16 autocast"`` on
    CUDA; ONNX Runtime always fp32) and ``device``. ``backend``: already resolved."""
    import torch

    dev = torch.device(device).type
    if backend == "onnx":
        prec = "fp32"
    elif backend == "openvino":
        from spinemorph.openvino_runtime import effective_precision

        prec = effective_precision(precision)
    elif precision == "bf16":
        prec = "bf16 autocast" if dev == "cpu" else "fp16 autocast"
    elif precision == "fp16 autocast":
        prec = precision
    else:
        prec = "fp32"
    name = {"onnx": "onnxruntime"}.get(backend, backend)
    return {"backend": name, "threads": int(torch.get_num_threads()), "precision": prec, "device": str(device)}


def cache_dir(kind: str = "onnx") -> Path:
    """Folder of converted fine models (``kind`` ``"onnx"`` or ``"openvino"``): ``$SPINEMORPH_CACHE_DIR/<kind>``,
    else ``$XDG_CACHE_HOME/spinemorph/<kind>`` or ``~/.cache/spinemorph/<kind>``."""
    base = os.environ.get("SPINEMORPH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "spinemorph")
    return Path(base) / kind


def onnx_cache_dir() -> Path:
    """Folder of exported fine-model ONNX files (:func:`cache_dir` ``"onnx"``)."""
    return cache_dir("onnx")


def _cpu_copy(loaded: models3d.LoadedModel):
    """The network on the CPU for export, without moving ``loaded``'s own copy off its device."""
    import copy

    net = loaded.network
    if any(p.device.type != "cpu" for p in net.parameters()):
        net = copy.deepcopy(net).cpu()
    return net


def _stem(loaded: models3d.LoadedModel, roi) -> str:
    import torch

    tag = (loaded.sha256 or models3d.sha256_file(loaded.path))[:16]
    return f"{tag}_{'x'.join(str(r) for r in roi)}_torch{torch.__version__.split('+')[0]}"


def _onnx_predictor(loaded: models3d.LoadedModel, roi, threads: int):
    """ONNX Runtime predictor; the export (10-25 s) is cached on disk under the weights' sha256, the ROI and the
    torch version (loading it well under a second). An unwritable cache folder only costs the export next time."""
    import torch

    from spinemorph.atomic import atomic_write_bytes
    from spinemorph.onnx_export import OnnxPredictor, export_onnx

    path = onnx_cache_dir() / f"{_stem(loaded, roi)}.onnx"
    data = path.read_bytes() if path.is_file() else None
    if data is None:
        ex = torch.zeros((1, int(loaded.network.config.in_channels), *roi))
        data = export_onnx(_cpu_copy(loaded), ex)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, data)
        except OSError:
            pass
    return OnnxPredictor(data, threads=threads)


def _openvino_predictor(loaded: models3d.LoadedModel, roi, threads: int, precision: str):
    """OpenVINO predictor; the IR conversion (5-10 s) is cached on disk under the weights' sha256, the ROI and the
    torch and OpenVINO versions (read + compile 0.1-0.3 s). An unwritable cache folder: converted into a temporary
    folder each time."""
    import tempfile

    import torch

    from spinemorph.openvino_runtime import OpenVinoPredictor, convert_to_ir, require_openvino

    openvino = require_openvino()  # one clear error when backend="openvino" is asked for without the package
    name = f"{_stem(loaded, roi)}_ov{openvino.__version__.split('-')[0]}.xml"
    path = cache_dir("openvino") / name
    if not (path.is_file() and path.with_suffix(".bin").is_file()):
        ex = torch.zeros((1, int(loaded.network.config.in_channels), *roi))
        try:
            convert_to_ir(_cpu_copy(loaded), ex, path)
        except OSError:
            with tempfile.TemporaryDirectory() as tmp:
                return OpenVinoPredictor(convert_to_ir(_cpu_copy(loaded), ex, Path(tmp) / name), threads, precision)
    return OpenVinoPredictor(path, threads, precision)


def window_predictor(loaded: models3d.LoadedModel, roi, backend: str, precision: str = "fp32"):
    """``f(numpy (N, C, *roi) float32) -> numpy logits`` running ``loaded``'s network with ``backend``
    (``"openvino"`` or ``"onnx"``; torch is called directly by the caller). Cached per process (the
    :data:`MAX_SESSIONS` most recently used), keyed by backend, weights, ROI, precision and thread count."""
    import torch

    roi = tuple(int(r) for r in roi)
    threads = int(torch.get_num_threads())
    key = (backend, loaded.sha256 or str(loaded.path), roi, precision if backend == "openvino" else "fp32", threads)
    pred = _SESSIONS.pop(key, None)
    if pred is None:
        if backend == "onnx":
            pred = _onnx_predictor(loaded, roi, threads)
        elif backend == "openvino":
            pred = _openvino_predictor(loaded, roi, threads, precision)
        else:
            raise ValueError(f"window_predictor runs openvino or onnx, got {backend!r}")
    _SESSIONS[key] = pred
    while len(_SESSIONS) > MAX_SESSIONS:
        _SESSIONS.pop(next(iter(_SESSIONS)))
    return pred
