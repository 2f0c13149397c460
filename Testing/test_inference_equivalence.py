"""The optimised inference paths give the torch reference's answer (random-weight networks, small inputs).

Reference: the network in eval mode, fp32, NCHW, one call for the whole batch. Checked: BatchNorm folded +
channels-last (fp32, exact up to rounding), slice-by-slice vs batched, ONNX Runtime, bf16 autocast (loose, bf16 has
8 mantissa bits), and the 3D U-Net under bf16 autocast through FORAMEN3D's own ``predict_logits``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from DuralSacSegLib.networks import build_network

from spinemorph.app.bench_networks import ARCHS_2D, Bf16Autocast
from spinemorph.app.bench_networks import AutocastUNet as _AutocastUNet
from spinemorph.cpu_inference import cpu_bf16_supported, optimize_for_inference

torch.set_num_threads(1)


def _randomize_norm_stats(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters (fresh ones are the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
    return net.eval()


def _net(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return _randomize_norm_stats(build_network(arch))


def _input(n=2, size=64, seed=1) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _ref(net, x) -> np.ndarray:
    with torch.inference_mode():
        return net(x).numpy()


@pytest.mark.parametrize("arch", ARCHS_2D)
def test_fused_channels_last_matches_reference(arch):
    net = _net(arch)
    x = _input()
    ref = _ref(net, x)
    opt, applied = optimize_for_inference(net)
    assert "channels_last" in applied
    if arch == "multiresunet":
        assert any(a.startswith("fuse_bn") for a in applied)
    with torch.inference_mode():
        out = opt(x.contiguous(memory_format=torch.channels_last)).numpy()
    scale = float(np.abs(ref).max())
    assert scale > 1e-3  # the comparison is not between two near-zero outputs
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * scale)
    assert np.mean((out > 0) == (ref > 0)) > 0.999
    # the input network is unchanged (the optimisation works on a copy)
    np.testing.assert_array_equal(_ref(net, x), ref)


def test_fusion_removes_the_batchnorms_that_follow_convolutions():
    net = _net("multiresunet")
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    opt, _ = optimize_for_inference(net, channels_last=False)
    n_left = sum(isinstance(m, torch.nn.BatchNorm2d) for m in opt.modules())
    # every conv → BN pair is folded; the BNs after concatenations / additions stay
    assert n_left < n_bn / 2


@pytest.mark.parametrize("arch", ARCHS_2D)
def test_batched_equals_slice_by_slice(arch):
    net = _net(arch)
    x = _input(n=3)
    batched = _ref(net, x)
    single = np.concatenate([_ref(net, x[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-5 * float(np.abs(batched).max()))


@pytest.mark.parametrize("arch", ["multiresunet", "unet"])
def test_onnxruntime_matches_torch(arch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from spinemorph.onnx_export import OnnxPredictor, export_onnx

    net = _net(arch)
    x = _input(n=2)
    ref = _ref(net, x)
    pred = OnnxPredictor(export_onnx(net, x[:1]), threads=1)
    out = pred(x.numpy())  # batch of 2 through a graph exported with batch 1: the batch axis is dynamic
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * float(np.abs(ref).max()))


@pytest.mark.parametrize("arch", ["multiresunet", "unet"])
def test_onnx_dynamic_spatial_serves_whole_slices_and_windows(arch):
    """One exported graph runs both the whole grid and the canal-centred windows (DuralSacSegLib.roi)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from spinemorph.onnx_export import OnnxPredictor, export_onnx

    net = _net(arch)
    pred = OnnxPredictor(export_onnx(net, _input(n=1, size=64), dynamic_spatial=True), threads=1)
    for size in (32, 64, 96):
        x = _input(n=1, size=size, seed=size)
        ref = _ref(net, x)
        out = pred(x.numpy())
        assert out.shape == ref.shape
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * float(np.abs(ref).max()))


def test_onnx_export_writes_a_file_that_loads(tmp_path):
    pytest.importorskip("onnxruntime")
    from spinemorph.onnx_export import OnnxPredictor, export_onnx

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1)).eval()
    x = _input(n=1, size=16)
    export_onnx(net, x, tmp_path / "m.onnx")
    out = OnnxPredictor(tmp_path / "m.onnx")(x.numpy())
    np.testing.assert_allclose(out, _ref(net, x), atol=1e-6)


def test_onnx_predictor_rejects_garbage():
    pytest.importorskip("onnxruntime")
    from spinemorph.errors import ModelError
    from spinemorph.onnx_export import OnnxPredictor

    with pytest.raises(ModelError):
        OnnxPredictor(b"not an onnx model")


@pytest.mark.skipif(not cpu_bf16_supported(), reason="no native bf16 on this CPU")
def test_bf16_autocast_is_close_to_fp32():
    net = _net("multiresunet")
    opt, _ = optimize_for_inference(net)
    x = _input(n=2)
    ref = _ref(net, x)
    out = Bf16Autocast(opt, channels_last=True)(x).numpy()
    assert out.dtype == np.float32
    err = np.abs(out - ref)
    # bf16 keeps 8 significant bits: a few per cent of the output range, and the same sign almost everywhere
    assert float(err.max()) < 0.1 * float(np.abs(ref).max())
    assert np.mean((out > 0) == (ref > 0)) > 0.98


@pytest.mark.skipif(not cpu_bf16_supported(), reason="no native bf16 on this CPU")
def test_bf16_3d_unet_through_predict_logits():
    from FORAMEN3DLib import models3d, segment3d
    from FORAMEN3DLib.network3d import UNet3D

    torch.manual_seed(0)
    net = UNet3D(base_channels=4, depth=2, stem_stride=2).eval()
    base = models3d.LoadedModel("t", net, 2, {}, None, "", torch.device("cpu"))
    wrapped = models3d.LoadedModel("t", _AutocastUNet(net), 2, {}, None, "", torch.device("cpu"))
    arr = np.random.default_rng(0).standard_normal((32, 32, 32)).astype(np.float32)
    seen = []
    ref = segment3d.predict_logits(base, arr).numpy()
    out = segment3d.predict_logits(wrapped, arr, progress=lambda f, m: seen.append(f)).numpy()
    assert out.shape == ref.shape == (1, 4, 16, 16, 16)
    assert seen and seen[-1] == pytest.approx(1.0)  # progress hooks fire on the wrapped network's blocks
    assert float(np.abs(out - ref).max()) < 0.1 * float(np.abs(ref).max())
    assert np.mean(out.argmax(1) == ref.argmax(1)) > 0.95


def test_onnxruntime_3d_unet_through_predict_logits():
    pytest.importorskip("onnxruntime")
    from FORAMEN3DLib import models3d, segment3d
    from FORAMEN3DLib.network3d import UNet3D

    from spinemorph.app.bench_networks import onnx_unet as _onnx_unet

    torch.manual_seed(0)
    net = UNet3D(base_channels=4, depth=2, stem_stride=2).eval()
    arr = np.random.default_rng(0).standard_normal((32, 32, 32)).astype(np.float32)
    ort_net, note = _onnx_unet(net, torch.zeros(1, 1, 16, 16, 16))
    assert ort_net is not None and note.startswith("export")
    base = models3d.LoadedModel("t", net, 2, {}, None, "", torch.device("cpu"))
    ref = segment3d.predict_logits(base, arr).numpy()
    out = segment3d.predict_logits(models3d.LoadedModel("t", ort_net, 2, {}, None, "", torch.device("cpu")), arr).numpy()
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * float(np.abs(ref).max()))
