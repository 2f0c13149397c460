"""3D U-Net with trilinear upsampling for L4 / L4-5 disc / L5 segmentation (4 output channels).

Architecture (:class:`UNet3D`, written in plain PyTorch so that it is small, readable and fast on a CPU):

* optional **strided stem**: a 3×3×3 convolution with stride ``stem_stride`` (1 or 2) that maps the input to
  ``base_channels`` at 1/``stem_stride`` resolution. With ``stem_stride=2`` every later layer runs on 1/8 of the
  voxels; the output logits are upsampled trilinearly by the same factor at the end, so the network still returns
  logits on the full input grid. This is what makes the full 128×192×192 input affordable on 2 CPU cores.
* an encoder of ``depth + 1`` levels; each level is ``convs_per_level`` × (3×3×3 conv → normalisation → LeakyReLU),
  levels separated by 2×2×2 max pooling; channels ``base_channels * channel_mult**level`` (capped at
  ``max_channels``).
* a decoder that upsamples with **trilinear interpolation** (``nn.Upsample(mode="trilinear")``, no transposed
  convolutions, as in the source method), concatenates the skip connection and applies the same conv block.
* a 1×1×1 output convolution to ``out_channels`` (4: background, L4, L4-5 disc, L5), then the trilinear upsampling
  that undoes the stem stride.

``base_channels=16, depth=4, stem_stride=1`` is the classic 3D U-Net layout of the source method (four 2× poolings,
hence the 128×192×192 padded input: every size must be divisible by :func:`UNet3D.size_divisor`).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

#: output channels: background, L4, L4-5 disc, L5 (spinemorph.labels.FORAMEN_LABELS)
N_CLASSES = 4


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Hyper-parameters of :class:`UNet3D` (stored with the weights; see :mod:`FORAMEN3DLib.models3d`)."""

    in_channels: int = 1
    out_channels: int = N_CLASSES
    base_channels: int = 16
    depth: int = 4
    stem_stride: int = 1
    channel_mult: int = 2
    max_channels: int = 256
    convs_per_level: int = 2
    norm: str = "instance"
    refine_channels: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> NetworkConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown network settings {unknown}; known: {sorted(names)}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.stem_stride not in (1, 2, 4):
            raise ValueError(f"stem_stride must be 1, 2 or 4, got {self.stem_stride}")
        if self.depth < 1 or self.depth > 6:
            raise ValueError(f"depth must be 1..6, got {self.depth}")
        if self.base_channels < 1 or self.convs_per_level < 1 or self.channel_mult < 1:
            raise ValueError("base_channels, convs_per_level and channel_mult must be positive")
        if self.refine_channels < 0 or (self.refine_channels and self.stem_stride == 1):
            raise ValueError("refine_channels must be 0, or positive together with stem_stride > 1")
        if self.norm not in ("instance", "batch", "none"):
            raise ValueError(f"norm must be 'instance', 'batch' or 'none', got {self.norm!r}")

    def channels(self) -> list[int]:
        """Channels of each encoder level (level 0 = highest resolution)."""
        return [min(self.base_channels * self.channel_mult**lv, self.max_channels) for lv in range(self.depth + 1)]

    @property
    def size_divisor(self) -> int:
        """Every spatial input size must be a multiple of this (stem stride × 2**depth)."""
        return self.stem_stride * 2**self.depth


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm3d(ch, affine=True)
    if kind == "batch":
        return nn.BatchNorm3d(ch)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """``n`` × (3×3×3 convolution → normalisation → LeakyReLU(0.01))."""

    def __init__(self, cin: int, cout: int, n: int, norm: str):
        layers: list[nn.Module] = []
        for idx in range(n):
            layers += [
                nn.Conv3d(cin if idx == 0 else cout, cout, 3, padding=1, bias=norm == "none"),
                _norm(norm, cout),
                nn.LeakyReLU(0.01, inplace=True),
            ]
        super().__init__(*layers)


class UNet3D(nn.Module):
    """3D U-Net with trilinear upsampling; see the module docstring.

    Parameters
    ----------
    config : NetworkConfig, optional
        Architecture; keyword arguments override its fields (``UNet3D(base_channels=8, stem_stride=2)``).

    Notes
    -----
    Input ``(N, in_channels, D, H, W)`` with D, H, W multiples of :attr:`size_divisor`; output logits
    ``(N, out_channels, D, H, W)``.
    """

    def __init__(self, config: NetworkConfig | None = None, **overrides):
        super().__init__()
        cfg = dataclasses.replace(config or NetworkConfig(), **overrides)
        cfg.validate()
        self.config = cfg
        ch = cfg.channels()
        if cfg.stem_stride > 1:
            self.stem = nn.Sequential(
                nn.Conv3d(cfg.in_channels, ch[0], 3, stride=cfg.stem_stride, padding=1, bias=cfg.norm == "none"),
                _norm(cfg.norm, ch[0]),
                nn.LeakyReLU(0.01, inplace=True),
            )
            first_in = ch[0]
        else:
            self.stem = nn.Identity()
            first_in = cfg.in_channels
        self.encoders = nn.ModuleList(
            ConvBlock(first_in if lv == 0 else ch[lv - 1], ch[lv], cfg.convs_per_level, cfg.norm)
            for lv in range(cfg.depth + 1)
        )
        self.pool = nn.MaxPool3d(2)
        self.up = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        self.decoders = nn.ModuleList(
            ConvBlock(ch[lv + 1] + ch[lv], ch[lv], cfg.convs_per_level, cfg.norm) for lv in range(cfg.depth)
        )
        if cfg.refine_channels:
            # full-resolution refinement: features of the input at full resolution + the decoder output upsampled
            self.full_res = ConvBlock(cfg.in_channels, cfg.refine_channels, 1, cfg.norm)
            self.refine_up = nn.Upsample(scale_factor=cfg.stem_stride, mode="trilinear", align_corners=False)
            self.refine = ConvBlock(ch[0] + cfg.refine_channels, cfg.refine_channels, 1, cfg.norm)
            self.head = nn.Conv3d(cfg.refine_channels, cfg.out_channels, 1)
            self.final_up = nn.Identity()
        else:
            self.head = nn.Conv3d(ch[0], cfg.out_channels, 1)
            self.final_up = (
                nn.Upsample(scale_factor=cfg.stem_stride, mode="trilinear", align_corners=False)
                if cfg.stem_stride > 1
                else nn.Identity()
            )

    @property
    def size_divisor(self) -> int:
        return self.config.size_divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        div = self.size_divisor
        if x.ndim != 5 or any(s % div for s in x.shape[2:]):
            raise ValueError(f"input must be (N, C, D, H, W) with D, H, W multiples of {div}; got {tuple(x.shape)}")
        h = self.stem(x)
        skips = []
        for lv, enc in enumerate(self.encoders):
            h = enc(h)
            if lv < self.config.depth:
                skips.append(h)
                h = self.pool(h)
        for lv in reversed(range(self.config.depth)):
            h = self.decoders[lv](torch.cat([self.up(h), skips[lv]], dim=1))
        if self.config.refine_channels:
            h = self.refine(torch.cat([self.refine_up(h), self.full_res(x)], dim=1))
        return self.final_up(self.head(h))


def build_network(config: NetworkConfig | dict | None = None) -> UNet3D:
    """Build a :class:`UNet3D` from a :class:`NetworkConfig`, a dict of its fields, or the defaults."""
    if isinstance(config, dict):
        config = NetworkConfig.from_dict(config)
    return UNet3D(config)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def padded_shape(shape, divisor: int) -> tuple[int, ...]:
    """Smallest shape ≥ ``shape`` whose sizes are multiples of ``divisor`` (e.g. 128×180×180 → 128×192×192 for 16)."""
    return tuple(int(-(-int(s) // divisor) * divisor) for s in shape)
