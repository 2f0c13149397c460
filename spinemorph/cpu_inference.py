"""CPU inference preparation: what the benchmark (``spinemorph bench``, docs/performance.md) found to help a 2D
network on a CPU, used by DSCA segmentation and calibration.

- :func:`optimize_for_inference`: BatchNorm folded into the convolutions (exact up to fp32 rounding) and channels-last
  weights;
- :func:`cpu_bf16_supported`: whether this CPU has native bfloat16 kernels (otherwise bf16 is emulated and slow).

torch is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations


def cpu_bf16_supported() -> bool:
    """True when oneDNN has native bfloat16 kernels on this CPU (AVX512-BF16 / AMX); otherwise bf16 is emulated."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _fold_sequential_conv_bn(module) -> int:
    """Fold BatchNorms into the convolutions they directly follow inside ``nn.Sequential`` chains (in place).

    A BatchNorm counts as following a convolution when it is the next child of the same plain ``nn.Sequential``
    or the first child of the next child when that is itself a plain ``nn.Sequential`` (MONAI's
    ``Convolution`` = Sequential(conv, ADN(norm, dropout, act))); the convolution may itself be the last child of a
    plain ``nn.Sequential`` (MONAI's ``Convolution(conv_only=True)``). Returns the number of folded pairs.
    """
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    bns = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

    def plain(m) -> bool:
        return isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward

    n = 0
    if plain(module):
        kids = list(module.named_children())
        for (name, m), (next_name, nxt) in zip(kids, kids[1:]):
            holder, bn_name, bn = None, None, None
            if isinstance(nxt, bns):
                holder, bn_name, bn = module, next_name, nxt
            elif plain(nxt) and len(nxt) and isinstance(nxt[0], bns):
                holder, bn_name, bn = nxt, next(iter(nxt._modules)), nxt[0]
            conv_holder, conv_name, conv = module, name, m
            if plain(m) and len(m) and isinstance(m[-1], convs):  # e.g. MONAI Convolution(conv_only=True)
                conv_holder, conv_name, conv = m, list(m._modules)[-1], m[-1]
            if (isinstance(conv, convs) and bn is not None and bn.track_running_stats and bn.running_mean is not None
                    and bn.num_features == conv.out_channels):
                setattr(conv_holder, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(holder, bn_name, nn.Identity())
                n += 1
    for child in module.children():
        n += _fold_sequential_conv_bn(child)
    return n


def optimize_for_inference(net, channels_last: bool = True, fuse_bn: bool = True):
    """Prepare an eval-mode 2D network for CPU inference; returns ``(network, applied)``.

    ``fuse_bn`` folds every BatchNorm that directly follows a convolution in an ``nn.Sequential`` chain into the
    convolution's weights and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``; exact up to fp32 rounding).
    ``channels_last`` stores the weights NHWC, which lets oneDNN use its blocked direct convolutions; feed
    ``x.contiguous(memory_format=torch.channels_last)``. The input network is not modified (a copy is returned).
    ``applied`` lists what was done (``"fuse_bn"`` with the number of folded pairs, ``"channels_last"``).
    """
    import copy

    import torch

    applied: list[str] = []
    out = copy.deepcopy(net).eval()
    if fuse_bn:
        n = _fold_sequential_conv_bn(out)
        if n:
            applied.append(f"fuse_bn({n})")
    if channels_last:
        out = out.to(memory_format=torch.channels_last)
        applied.append("channels_last")
    return out, applied
