"""Slicer glue: install the Python packages the module needs, on first use (never at import).

Order matters: torch first (through the PyTorch extension's ``PyTorchUtils``, which picks the CUDA/CPU build that
fits the computer), then the packages of ``Resources/requirements.txt`` (``slicer.packaging.pip_ensure``; MONAI then
finds torch already installed), then — only when the module runs from a source checkout, where the shared core
``spinemorph`` is not installed next to the modules — the checkout's Slicer-free packages (``pip install --no-deps -e``
of the folder holding ``pyproject.toml``).
"""

import importlib
import importlib.util
import logging
from pathlib import Path

#: torch versions the core is tested with
TORCH_REQUIREMENT = ">=2.1"


class DependencyError(RuntimeError):
    """A required package is missing and could not be installed; the message says what to do."""


def _importable(name):
    importlib.invalidate_caches()
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def sourceCheckoutRoot():
    """Folder holding ``pyproject.toml`` when the module runs from a source checkout, else None."""
    root = Path(__file__).resolve().parent.parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "spinemorph").is_dir() else None


def ensureTorch():
    """Make ``import torch`` work, installing PyTorch through the PyTorch extension if needed."""
    if _importable("torch"):
        return
    try:
        import PyTorchUtils
    except ImportError:
        raise DependencyError(
            "PyTorch is missing: install the 'PyTorch' extension from the Extensions Manager, restart Slicer and try again"
        ) from None
    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    if not torchLogic.torchInstalled():
        torch = torchLogic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT)
        if torch is None:
            raise DependencyError("PyTorch was not installed; it is required to run the segmentation models")


def ensureDependencies(requirementsPath, requester):
    """Install what is missing: torch, the requirements file, then the ``spinemorph`` core of a source checkout.

    :param requirementsPath: the module's ``Resources/requirements.txt``.
    :param requester: module name shown in Slicer's installation dialogs.
    :raises DependencyError: with a message that says what to do (e.g. restart Slicer after an installation).
    """
    import slicer.packaging

    ensureTorch()
    slicer.packaging.pip_ensure(slicer.packaging.load_requirements(requirementsPath), requester=requester)
    if _importable("spinemorph"):
        return
    root = sourceCheckoutRoot()
    if root is None:
        raise DependencyError("the SpineMorph core package 'spinemorph' is missing; reinstall the SpineMorph extension")
    logging.info(f"Installing the SpineMorph core from the source checkout {root}")
    slicer.util.pip_install(["--no-deps", "-e", str(root)], requester=requester)
    if not _importable("spinemorph"):
        raise DependencyError(f"the SpineMorph core was installed from {root}; restart Slicer to use it")
