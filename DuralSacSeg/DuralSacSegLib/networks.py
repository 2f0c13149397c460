"""2D segmentation networks of DuralSacSeg: U-Net, Attention U-Net and MultiResUNet.

Every network takes one input channel (a normalised axial slice, see
:func:`spinemorph.intensity.normalize_percentile`) and returns one logit channel (dural sac); apply
``torch.sigmoid`` for a probability. All three are fully convolutional with four 2× down-samplings, so any
input whose height and width are multiples of 16 works (training uses crops, inference 320×320).

Architectures
-------------
``"multiresunet"`` (default)
    MultiResUNet written from the paper's description (Ibtehaz N, Rahman MS, "MultiResUNet: Rethinking the U-Net
    architecture for multimodal biomedical image segmentation", Neural Networks 121:74-87, 2020):

    * *MultiRes block* for ``U`` filters: ``W = α·U`` with ``α = 1.67``; three chained 3×3 convolutions with
      ``int(0.167·W)``, ``int(0.333·W)`` and ``int(0.5·W)`` filters (each conv → BN → ReLU), concatenated, BN,
      added to a 1×1 convolution shortcut of the input (conv → BN), ReLU, BN. The int() rounding of the three
      widths is the one of the authors' reference Keras implementation.
    * *ResPath* of length ``n``: ``n`` residual units (3×3 conv → BN → ReLU plus a 1×1 conv → BN shortcut,
      added, ReLU, BN) with ``U`` filters, on the skip connections; lengths 4, 3, 2, 1 from the top.
    * Encoder ``U`` = 32, 64, 128, 256, bottleneck 512; 2×2 max pooling; decoder 2×2 stride-2 transposed
      convolutions with ``U`` filters (with bias), concatenation with the ResPath output, MultiRes block.
    * Head: a 1×1 convolution (with bias) to one logit (the Keras model ends with conv → BN → sigmoid; we
      leave the sigmoid to the loss / inference and need no BN on a single logit).

    Convolutions followed by BN have no bias (as in the reference). PyTorch ``BatchNorm2d`` always has a scale
    γ and a shift β, whereas the Keras ``conv2d_bn`` helper uses ``BatchNormalization(scale=False)`` (β only).

    Parameter count, pinned by ``Testing/test_networks2d.py``: ``MultiResUNet(1, 1)`` has
    :data:`MULTIRESUNET_PARAMETERS` = 7,244,528 trainable PyTorch parameters. The paper's 7.26 M is the
    reference Keras model's ``count_params()``, which *includes* every BatchNormalization's moving mean and
    moving variance (Keras "non-trainable params") besides β (and γ where the BN has a scale), and whose head is a
    bias-free 1×1 conv followed by BN(scale=False). :func:`keras_style_parameter_count` counts our network by
    those rules: 7,262,504 for 1 input channel, and exactly the paper's 7,262,750 for 3 input channels (the 246
    extra = 2 more input channels × (51 shortcut + 9·8 first-conv) weights of the first MultiRes block), so the
    published number was counted with an RGB input. Counting trainable parameters only (no BN moving
    statistics) would give ≈ 7.24 M, so the ≈ 7.26 M convention is "BN moving statistics included". The PyTorch
    count differs from the Keras one by the BN buffers (not parameters in PyTorch), the γ of the
    ``conv2d_bn`` BNs (PyTorch BN always has γ) and the head (conv with bias, no BN).

``"unet"``
    Classic U-Net (Ronneberger et al. 2015) as MONAI ``BasicUNet`` with features 32, 64, 128, 256, 512 (decoder
    top level 32): two 3×3 conv → BN → ReLU per level, 2×2 max pooling, 2×2 transposed-conv up-sampling with
    concatenated skips, 1×1 conv head. 7,782,849 parameters.

``"attention_unet"``
    Attention U-Net (Oktay et al. 2018) as MONAI ``AttentionUnet`` with channels 32…512 and strides 2: additive
    attention gates on every skip connection. MONAI down-samples with stride-2 convolutions instead of max pooling
    and uses 3×3 transposed convolutions for up-sampling. 7,939,745 parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from spinemorph.errors import ModelError

#: α of the MultiRes block (W = α·U)
MULTIRES_ALPHA = 1.67
#: base filter counts U of the five MultiResUNet levels
MULTIRES_FILTERS = (32, 64, 128, 256, 512)
#: ResPath lengths of the four skip connections, top to bottom
RESPATH_LENGTHS = (4, 3, 2, 1)
#: trainable PyTorch parameters of ``MultiResUNet(1, 1)``
MULTIRESUNET_PARAMETERS = 7_244_528
#: Keras-style count (BN moving statistics included) of MultiResUNet(1, 1)
MULTIRESUNET_KERAS_PARAMETERS_1CH = 7_262_504
#: the paper's count = Keras-style count of MultiResUNet(3, 1)
MULTIRESUNET_PAPER_PARAMETERS = 7_262_750
#: trainable parameters of ``build_network("unet")`` and ``build_network("attention_unet")``
UNET_PARAMETERS = 7_782_849
ATTENTION_UNET_PARAMETERS = 7_939_745


# ----------------------------------------------------------------------------- MultiResUNet
class ConvBN(nn.Sequential):
    """Convolution (no bias) → BatchNorm → optional ReLU (the reference ``conv2d_bn``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, relu: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def multires_widths(filters: int, alpha: float = MULTIRES_ALPHA) -> tuple[int, int, int]:
    """Filter counts of the three chained 3×3 convolutions of a MultiRes block (W/6, W/3, W/2 with int())."""
    w = alpha * filters
    return int(w * 0.167), int(w * 0.333), int(w * 0.5)


class MultiResBlock(nn.Module):
    """MultiRes block: three chained 3×3 conv → BN → ReLU (W/6, W/3, W/2), concatenated, plus a 1×1 shortcut."""

    def __init__(self, in_ch: int, filters: int, alpha: float = MULTIRES_ALPHA):
        super().__init__()
        c1, c2, c3 = multires_widths(filters, alpha)
        self.out_channels = c1 + c2 + c3
        self.shortcut = ConvBN(in_ch, self.out_channels, 1, relu=False)
        self.conv3 = ConvBN(in_ch, c1, 3)
        self.conv5 = ConvBN(c1, c2, 3)
        self.conv7 = ConvBN(c2, c3, 3)
        self.bn_cat = nn.BatchNorm2d(self.out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.bn_out = nn.BatchNorm2d(self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv3(x)
        b = self.conv5(a)
        c = self.conv7(b)
        out = self.bn_cat(torch.cat([a, b, c], dim=1))
        return self.bn_out(self.relu(out + self.shortcut(x)))


class ResPathUnit(nn.Module):
    """One residual unit of a ResPath: 3×3 conv → BN → ReLU plus 1×1 conv → BN shortcut, ReLU, BN."""

    def __init__(self, in_ch: int, filters: int):
        super().__init__()
        self.shortcut = ConvBN(in_ch, filters, 1, relu=False)
        self.conv = ConvBN(in_ch, filters, 3)
        self.relu = nn.ReLU(inplace=True)
        self.bn = nn.BatchNorm2d(filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.relu(self.conv(x) + self.shortcut(x)))


class ResPath(nn.Sequential):
    """``length`` chained :class:`ResPathUnit` with ``filters`` channels."""

    def __init__(self, in_ch: int, filters: int, length: int):
        units = [ResPathUnit(in_ch if i == 0 else filters, filters) for i in range(length)]
        super().__init__(*units)


class MultiResUNet(nn.Module):
    """MultiResUNet (Ibtehaz & Rahman 2020) for 2D images; returns logits.

    Parameters
    ----------
    in_channels, out_channels : int
        Input channels and output logit channels (DuralSacSeg: 1 and 1).
    filters : sequence of 5 int
        ``U`` of the five levels (default 32, 64, 128, 256, 512).
    alpha : float
        Width multiplier of the MultiRes blocks (1.67).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        filters: tuple[int, ...] = MULTIRES_FILTERS,
        alpha: float = MULTIRES_ALPHA,
    ):
        super().__init__()
        if len(filters) != 5:
            raise ValueError("MultiResUNet needs 5 filter counts")
        self.encoders = nn.ModuleList()
        self.respaths = nn.ModuleList()
        ch = in_channels
        for level, u in enumerate(filters[:4]):
            block = MultiResBlock(ch, u, alpha)
            self.encoders.append(block)
            self.respaths.append(ResPath(block.out_channels, u, RESPATH_LENGTHS[level]))
            ch = block.out_channels
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = MultiResBlock(ch, filters[4], alpha)
        ch = self.bottleneck.out_channels
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for u in reversed(filters[:4]):
            self.ups.append(nn.ConvTranspose2d(ch, u, kernel_size=2, stride=2))
            block = MultiResBlock(2 * u, u, alpha)
            self.decoders.append(block)
            ch = block.out_channels
        self.head = nn.Conv2d(ch, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for enc, rp in zip(self.encoders, self.respaths):
            x = enc(x)
            skips.append(rp(x))
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def keras_style_parameter_count(model: nn.Module) -> int:
    """Count parameters of a :class:`MultiResUNet` the way the reference Keras model reports them.

    Keras ``model.count_params()`` includes BatchNormalization moving mean and variance; the reference
    ``conv2d_bn`` helper uses ``BatchNormalization(scale=False)`` (no γ), the BNs inside MultiRes blocks and
    ResPaths that follow an addition / concatenation have γ, and the head is a bias-free 1×1 conv followed by
    ``conv2d_bn``'s BN (scale=False). Returns the count under those rules (7,262,504 for 1 channel in/out; 7,262,750 — the paper's
    figure — for 3 channels in).
    """
    total = 0
    for module in model.modules():
        if isinstance(module, ConvBN):
            conv, bn = module[0], module[1]
            total += conv.weight.numel() + 3 * bn.num_features  # β + moving mean + moving variance
        elif isinstance(module, (MultiResBlock, ResPathUnit)):
            bns = [module.bn_cat, module.bn_out] if isinstance(module, MultiResBlock) else [module.bn]
            total += sum(4 * bn.num_features for bn in bns)  # γ, β, moving mean, moving variance
        elif isinstance(module, nn.ConvTranspose2d):
            total += module.weight.numel() + module.bias.numel()
    if isinstance(model, MultiResUNet):
        head = model.head
        total += head.weight.numel() + 3 * head.out_channels  # bias-free conv + BN(scale=False)
    return total


# ----------------------------------------------------------------------------- U-Net / Attention U-Net
def _unet(in_channels: int = 1, out_channels: int = 1) -> nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        features=(32, 64, 128, 256, 512, 32),
        act=("relu", {"inplace": True}),
        norm=("batch", {}),
        upsample="deconv",
    )


def _attention_unet(in_channels: int = 1, out_channels: int = 1) -> nn.Module:
    from monai.networks.nets import AttentionUnet

    return AttentionUnet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=(32, 64, 128, 256, 512),
        strides=(2, 2, 2, 2),
    )


def _multiresunet(in_channels: int = 1, out_channels: int = 1) -> nn.Module:
    return MultiResUNet(in_channels, out_channels)


#: architecture name -> builder ``f(in_channels, out_channels) -> nn.Module``
NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "multiresunet": _multiresunet,
    "unet": _unet,
    "attention_unet": _attention_unet,
}
DEFAULT_NETWORK = "multiresunet"
#: every network down-samples four times by 2: input sizes must be multiples of this
SIZE_DIVISOR = 16


def build_network(name: str = DEFAULT_NETWORK, in_channels: int = 1, out_channels: int = 1) -> nn.Module:
    """Build an untrained network by registry name (``multiresunet``, ``unet``, ``attention_unet``).

    Raises
    ------
    ModelError
        Unknown architecture name.
    """
    key = (name or DEFAULT_NETWORK).lower().replace("-", "_")
    if key not in NETWORKS:
        raise ModelError(f"unknown architecture {name!r}; choose one of {', '.join(NETWORKS)}")
    return NETWORKS[key](in_channels, out_channels)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
