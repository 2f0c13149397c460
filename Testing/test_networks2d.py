"""DuralSacSeg 2D networks: output shapes at 320×320, pinned parameter counts, MultiResUNet structure."""

from __future__ import annotations

import pytest
import torch  # noqa: E402 - a hard dependency: a missing torch must fail, not skip
from DuralSacSegLib import networks  # noqa: E402
from DuralSacSegLib.networks import (  # noqa: E402
    NETWORKS,
    MultiResBlock,
    MultiResUNet,
    ResPath,
    build_network,
    count_parameters,
    keras_style_parameter_count,
    multires_widths,
)

from spinemorph.errors import ModelError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # Testing/conftest.py


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_output_shape_320(name):
    torch.manual_seed(0)
    net = build_network(name).eval()
    with torch.inference_mode():
        y = net(torch.rand(1, 1, 320, 320))
    assert y.shape == (1, 1, 320, 320)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_fully_convolutional_on_crops(name):
    net = build_network(name).eval()
    with torch.inference_mode():
        assert net(torch.rand(2, 1, 96, 128)).shape == (2, 1, 96, 128)


def test_parameter_counts_pinned():
    assert count_parameters(build_network("multiresunet")) == 7_244_528 == networks.MULTIRESUNET_PARAMETERS
    assert count_parameters(build_network("unet")) == 7_782_849 == networks.UNET_PARAMETERS
    assert count_parameters(build_network("attention_unet")) == 7_939_745 == networks.ATTENTION_UNET_PARAMETERS


def test_multiresunet_keras_convention_gives_paper_count():
    """Keras count (BN moving mean/var included, conv2d_bn BNs without γ): 7.26 M; exactly 7,262,750 for RGB input."""
    assert keras_style_parameter_count(MultiResUNet(1, 1)) == 7_262_504
    assert keras_style_parameter_count(MultiResUNet(3, 1)) == 7_262_750 == networks.MULTIRESUNET_PAPER_PARAMETERS
    # the only difference between 1 and 3 input channels: 2 more channels into the first block's two convolutions
    assert 7_262_750 - 7_262_504 == 2 * (51 * 1 * 1 + 8 * 3 * 3)


def test_multires_block_widths():
    # W = 1.67 U split int(0.167 W), int(0.333 W), int(0.5 W) as the reference implementation
    assert multires_widths(32) == (8, 17, 26)
    assert multires_widths(64) == (17, 35, 53)
    assert multires_widths(128) == (35, 71, 106)
    assert multires_widths(256) == (71, 142, 213)
    assert multires_widths(512) == (142, 284, 427)
    block = MultiResBlock(1, 32)
    assert block.out_channels == 51
    assert block.conv3[0].kernel_size == block.conv5[0].kernel_size == block.conv7[0].kernel_size == (3, 3)
    assert block.shortcut[0].kernel_size == (1, 1)
    assert block.conv3[0].bias is None  # conv → BN without bias, as in the reference


def test_multiresunet_structure():
    net = MultiResUNet()
    assert [len(rp) for rp in net.respaths] == [4, 3, 2, 1]
    assert all(isinstance(rp, ResPath) for rp in net.respaths)
    assert [rp[0].conv[0].out_channels for rp in net.respaths] == [32, 64, 128, 256]
    assert net.bottleneck.out_channels == 142 + 284 + 427
    assert [up.out_channels for up in net.ups] == [256, 128, 64, 32]
    assert net.head.out_channels == 1 and net.head.in_channels == 51
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.modules()) == 1  # shared 2×2 pool used 4 times


def test_build_network_default_and_unknown():
    assert isinstance(build_network(), MultiResUNet)
    assert isinstance(build_network("MultiResUNet"), MultiResUNet)
    with pytest.raises(ModelError, match="unknown architecture"):
        build_network("segformer")
