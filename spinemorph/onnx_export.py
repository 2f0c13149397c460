"""ONNX export of the segmentation networks and an ONNX Runtime predictor (benchmark alternative to torch).

PyTorch stays the reference: :func:`export_onnx` writes the network as ONNX (opset 17, dynamic batch) and
:class:`OnnxPredictor` runs it with ONNX Runtime's CPU (or CUDA) provider; ``Testing/test_inference_equivalence.py``
checks that both give the same logits. Whether ONNX Runtime is faster than the optimised torch path is measured by
``spinemorph bench`` (see ``docs/performance.md``); the segmentation commands use torch.

``onnx``, ``onnxscript`` and ``onnxruntime`` are optional dependencies: :func:`onnx_available` tells whether they
are installed, and everything else raises :class:`spinemorph.errors.ModelError` with a one-line message if not.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

from spinemorph.atomic import atomic_write_bytes
from spinemorph.errors import ModelError

#: ONNX opset used for export
OPSET = 17


def onnx_available() -> bool:
    """True when ``onnx`` and ``onnxruntime`` can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _require() -> None:
    if not onnx_available():
        raise ModelError("ONNX export needs the optional packages onnx and onnxruntime; install them with pip")


def export_onnx(net, example, path: str | os.PathLike | None = None, dynamic_batch: bool = True,
                dynamic_spatial: bool = False) -> bytes:
    """Export an eval-mode network to ONNX; return the model bytes (and write them atomically to ``path``).

    Parameters
    ----------
    net : torch.nn.Module
        Network in eval mode (fp32, CPU).
    example : torch.Tensor
        Example input ``(N, C, ...)``; its spatial size is fixed in the graph unless ``dynamic_spatial``.
    path : path, optional
        Where to write the ``.onnx`` file.
    dynamic_batch : bool
        Mark axis 0 of the input and output as dynamic.
    dynamic_spatial : bool
        Also mark the spatial axes as dynamic (e.g. whole slices and canal-centred windows with one session).
    """
    import torch

    _require()
    net = net.eval()
    buf = io.BytesIO()
    dims = {}
    if dynamic_batch:
        dims[0] = "batch"
    if dynamic_spatial:
        dims.update({ax: f"size{ax}" for ax in range(2, example.dim())})
    axes = {"input": dict(dims), "logits": dict(dims)} if dims else None
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        try:
            # TorchScript-based exporter: fast and dependable for plain conv nets
            torch.onnx.export(net, (example,), buf, input_names=["input"], output_names=["logits"],
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        except TypeError:  # a torch without the ``dynamo`` switch
            torch.onnx.export(net, (example,), buf, input_names=["input"], output_names=["logits"],
                              dynamic_axes=axes, opset_version=OPSET)
    data = buf.getvalue()
    if path is not None:
        atomic_write_bytes(Path(path), data)
    return data


class OnnxPredictor:
    """Run an ONNX model with ONNX Runtime: ``predictor(batch float32) -> logits float32``.

    Parameters
    ----------
    model : bytes or path
        ONNX model bytes (from :func:`export_onnx`) or an ``.onnx`` file.
    threads : int, optional
        Intra-op threads (default: ONNX Runtime's choice, one per core).
    device : {"cpu", "cuda"}
        ``"cuda"`` uses the CUDA execution provider when ONNX Runtime has it.
    """

    def __init__(self, model: bytes | str | os.PathLike, threads: int | None = None, device: str = "cpu"):
        _require()
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        src = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(src, so, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            first = (str(exc).strip().splitlines() or ["unknown reason"])[0][:120]
            raise ModelError(f"ONNX Runtime cannot load the model ({first}); re-export it with export_onnx") from None
        self.input_name = self.session.get_inputs()[0].name
        self.providers = self.session.get_providers()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run(None, {self.input_name: x})[0]


def matmul_session(n: int, threads: int | None = None) -> OnnxPredictor:
    """ONNX Runtime session of one fp32 ``n × n`` MatMul (for measuring the machine's fp32 matmul peak with
    ONNX Runtime's own GEMM, which on AMD CPUs is faster than the MKL build inside PyTorch wheels).

    Call it with an ``(n, n)`` float32 array ``A``; it returns ``A @ A``.
    """
    _require()
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("input", TensorProto.FLOAT, [n, n])
    c = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [n, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "input"], ["logits"])], "matmul", [a], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every ONNX Runtime >= 1.10
    return OnnxPredictor(model.SerializeToString(), threads=threads)
