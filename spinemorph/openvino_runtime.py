"""OpenVINO runtime for the 3D networks' sliding windows: the fastest CPU path measured here.

A network is converted once from PyTorch (``openvino.convert_model`` traces it; no ONNX package needed) to
OpenVINO IR (``.xml`` + ``.bin``, fp32 weights, a static input shape) and compiled for the CPU with a fixed number of
threads and an inference precision:

- ``"fp32"``: fp32 arithmetic (logits within ~2e-3 of torch's; the same labels to a few voxels per million);
- ``"bf16"``: bfloat16 arithmetic where the CPU has it natively (AVX512-BF16 / AMX: OpenVINO's own default there),
  several times faster and slightly different labels; on a CPU without it OpenVINO computes in fp32, and
  :func:`effective_precision` says so.

Timings and label agreement: ``scripts/bench_fine3d.py`` and ``docs/performance.md``. ``openvino`` is a dependency
of the package; :func:`openvino_available` still guards the import (a Slicer whose first-use installation has not
run yet), and everything else raises :class:`spinemorph.errors.ModelError` with one line if it is missing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from spinemorph.errors import ModelError

#: precisions a caller may ask for
PRECISIONS = ("fp32", "bf16")
_OV_HINT = {"fp32": "f32", "bf16": "bf16"}


def openvino_available() -> bool:
    """True when ``openvino`` can be imported."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def require_openvino():
    """The ``openvino`` module, or one :class:`ModelError` saying how to install it."""
    if not openvino_available():
        raise ModelError("the OpenVINO backend needs the package openvino; install it with pip (pip install openvino)")
    import openvino

    return openvino


def cpu_has_bf16() -> bool:
    """True when OpenVINO's CPU device computes bfloat16 natively (it lists ``BF16`` among its capabilities)."""
    ov = require_openvino()
    try:
        return "BF16" in list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # noqa: BLE001 - OpenVINO raises its own exception types
        return False


def effective_precision(precision: str) -> str:
    """The arithmetic a CPU session compiled with ``precision`` uses: ``"bf16"`` only where the CPU has it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return "bf16" if precision == "bf16" and cpu_has_bf16() else "fp32"


def convert_to_ir(net, example, xml_path: str | os.PathLike) -> Path:
    """Convert an eval-mode fp32 PyTorch network to OpenVINO IR at ``xml_path`` (and its ``.bin``) for inputs of
    ``example``'s shape. Both files are written into a temporary folder and moved into place (``.bin`` first), so a
    reader never sees half an IR; returns ``xml_path``."""
    import torch

    ov = require_openvino()
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks: the input shape is fixed here
        model = ov.convert_model(net.eval(), example_input=example, input=[tuple(example.shape)])
    tmp = Path(tempfile.mkdtemp(prefix=".ir-", dir=xml_path.parent))
    try:
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
        os.replace(tmp / "model.bin", xml_path.with_suffix(".bin"))
        os.replace(tmp / "model.xml", xml_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return xml_path


class OpenVinoPredictor:
    """Run an OpenVINO IR on the CPU: ``predictor(batch float32) -> logits float32``.

    Parameters
    ----------
    xml_path : path
        IR written by :func:`convert_to_ir` (static input shape ``(1, C, ...)``; a larger batch is run item by item).
    threads : int, optional
        Inference threads (default: OpenVINO's choice).
    precision : {"fp32", "bf16"}
        Inference precision hint (see the module docstring); :attr:`precision` is what the compiled model uses.
    """

    def __init__(self, xml_path: str | os.PathLike, threads: int | None = None, precision: str = "fp32"):
        ov = require_openvino()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": _OV_HINT[precision]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            core = ov.Core()
            self.compiled = core.compile_model(core.read_model(str(xml_path)), "CPU", config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own exception types
            first = (str(exc).strip().splitlines() or ["unknown reason"])[0][:120]
            raise ModelError(f"OpenVINO cannot load {Path(xml_path).name} ({first}); delete it to convert again") from None
        self.request = self.compiled.create_infer_request()
        self.input_shape = tuple(int(d) for d in self.compiled.input(0).get_shape())
        hint = str(self.compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
        self.precision = "bf16" if "bf16" in hint else "fp32"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if x.shape[1:] != self.input_shape[1:]:
            raise ModelError(f"the OpenVINO model takes inputs of shape {self.input_shape}, got {tuple(x.shape)}")
        outs = [self.request.infer({0: x[i : i + 1]})[0].copy() for i in range(x.shape[0])]
        return np.concatenate(outs, axis=0)
