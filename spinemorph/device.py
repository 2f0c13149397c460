"""Choice of compute device: CUDA, then MPS, then CPU, overridable, with a warning on fallback."""

from __future__ import annotations

import warnings

from spinemorph.errors import SpineMorphError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


class CPUFallbackWarning(UserWarning):
    """Inference falls back to the CPU (slower)."""


def select_device(preference: str = "auto"):
    """Return a ``torch.device`` for ``preference`` (``auto``, ``cuda``, ``mps`` or ``cpu``).

    ``auto`` takes CUDA, then Apple MPS, then the CPU; falling back to the CPU issues a
    :class:`CPUFallbackWarning`. Asking for an unavailable accelerator falls back to the CPU with the same warning.
    """
    import torch

    pref = (preference or "auto").lower()
    if pref not in DEVICE_CHOICES:
        raise SpineMorphError(f"unknown device {preference!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    cuda_ok = torch.cuda.is_available()
    mps_ok = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if pref in ("auto", "cuda") and cuda_ok:
        return torch.device("cuda")
    if pref in ("auto", "mps") and mps_ok:
        return torch.device("mps")
    if pref != "cpu":
        warnings.warn(
            f"no {'GPU' if pref == 'auto' else pref.upper()} available: running on the CPU (slower)",
            CPUFallbackWarning,
            stacklevel=2,
        )
    return torch.device("cpu")
