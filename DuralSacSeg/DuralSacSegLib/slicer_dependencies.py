"""Slicer glue: install the Python packages the modules need, on first use (never at import, never under ``--testing``).

Works on Slicer 5.10 and 5.12:

- which requirements are missing is decided here, the same way on both versions (``importlib.metadata`` +
  ``packaging``, which Slicer 5.10 and 5.12 both ship);
- the installation goes through ``slicer.packaging.pip_ensure`` (confirmation dialog, progress) where it exists
  (Slicer >= 5.12), else through ``slicer.util.pip_install(list)`` after a confirmation (Slicer 5.10's only API,
  signature ``pip_install(requirements)``);
- torch comes from the PyTorch extension (``PyTorchUtils``, which picks the CUDA/CPU build that fits the computer) and
  only when a computation needs it (not to generate the sample data, not to open a panel);
- under ``slicer.app.testingEnabled()`` (CTest, ``--testing``) **nothing is installed**: a missing package raises
  :class:`DependenciesUnavailable`, and the self-tests turn it into a skip with its message (PyTorchUtils would
  otherwise download torch without asking, and 5.12's ``pip_ensure`` silently skips).

The requirement list is one file, ``DuralSacSeg/Resources/SpineMorph-requirements.txt``, shared by both modules:
Slicer installs every scripted module's resources into one ``qt-scripted-modules/Resources`` folder, so two modules
listing the same resource name would make the build generate one file twice.
"""

import importlib
import importlib.util
import logging
import os
from pathlib import Path

#: torch versions the core is tested with
TORCH_REQUIREMENT = ">=2.1"
#: the one requirements file of the extension (listed in DuralSacSeg/CMakeLists.txt only)
REQUIREMENTS_FILE_NAME = "SpineMorph-requirements.txt"
#: distributions the generated sample study needs (``spinemorph.acquisition``: DICOM writer, .seg.nrrd, NRRD); it
#: needs neither torch nor MONAI (``spinemorph.phantom`` imports only numpy)
SAMPLE_DATA_PACKAGES = ("pydicom", "pynrrd", "slicerio")


class DependencyError(RuntimeError):
    """A required package is missing and could not be installed; the message says what to do."""


class DependenciesUnavailable(DependencyError):
    """Packages are missing and Slicer runs in testing mode, where nothing is installed (self-tests skip on this)."""


def requirementsPath():
    """Path of ``SpineMorph-requirements.txt`` (source tree: ``DuralSacSeg/Resources``; installed extension: the
    shared ``qt-scripted-modules/Resources``; both are ``<folder of DuralSacSegLib>/Resources``)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Resources", REQUIREMENTS_FILE_NAME)


def _importable(name):
    importlib.invalidate_caches()
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def readRequirements(path, packages=None):
    """Requirement strings of a requirements file (comments and blank lines dropped).

    :param packages: keep only these distribution names (None: all).
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    keep = None if packages is None else {canonicalize_name(p) for p in packages}
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        if keep is None or canonicalize_name(requirement.name) in keep:
            out.append(str(requirement))
    return out


def missingRequirements(requirements):
    """The requirement strings that the installed distributions do not satisfy (same test on Slicer 5.10 and 5.12)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    missing = []
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            missing.append(text)
    return missing


def sourceCheckoutRoot():
    """Folder holding ``pyproject.toml`` when the module runs from a source checkout, else None."""
    root = Path(__file__).resolve().parent.parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "spinemorph").is_dir() else None


def testingEnabled():
    """True when Slicer runs its tests (``--testing``): then nothing may be installed."""
    import slicer

    app = getattr(slicer, "app", None)
    return bool(app is not None and app.testingEnabled())


def missingDependencies(requirementsFile, packages=None, needTorch=True):
    """Human-readable list of what is missing: torch (when needed), requirements, the ``spinemorph`` core."""
    missing = missingRequirements(readRequirements(requirementsFile, packages))
    if needTorch and not _importable("torch"):
        missing.insert(0, f"torch{TORCH_REQUIREMENT} (PyTorch extension)")
    if not _importable("spinemorph"):
        missing.append("spinemorph (SpineMorph core)")
    return missing


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


def _slicerPackaging():
    """``slicer.packaging`` (Slicer >= 5.12), or None on Slicer 5.10 where it does not exist."""
    try:
        import slicer.packaging as packaging
    except ImportError:
        return None
    return packaging


def installRequirements(missing, requester):
    """Install the requirement strings ``missing`` (with the user's consent) on Slicer 5.10 or 5.12."""
    import slicer

    packaging = _slicerPackaging()
    if packaging is not None:  # Slicer >= 5.12: confirmation + progress dialog of Slicer
        packaging.pip_ensure(missing, requester=requester)
        return
    # Slicer 5.10: slicer.util.pip_install(requirements) is the only installer; ask first, as pip_ensure does
    details = "\n".join(f"- {r}" for r in missing)
    if not slicer.util.confirmOkCancelDisplay(
        f"{requester} needs {len(missing)} Python package(s); install them into Slicer's Python now?",
        f"{requester} - Install Python Packages", detailedText=details):
        raise DependencyError(f"installation declined; {requester} needs: {', '.join(missing)}")
    slicer.util.pip_install(list(missing))


def ensureDependencies(requirementsFile, requester, packages=None, needTorch=True):
    """Install what is missing: torch (if ``needTorch``), the requirements, then the ``spinemorph`` core of a source
    checkout.

    :param requirementsFile: ``SpineMorph-requirements.txt`` (:func:`requirementsPath`).
    :param requester: module name shown in Slicer's installation dialogs.
    :param packages: only these distributions of the file (e.g. :data:`SAMPLE_DATA_PACKAGES`); None: all.
    :param needTorch: install torch too (computations); False for the sample data.
    :raises DependenciesUnavailable: something is missing while Slicer runs in testing mode (nothing is installed).
    :raises DependencyError: with a message that says what to do (e.g. restart Slicer after an installation).
    """
    missing = missingDependencies(requirementsFile, packages, needTorch)
    if not missing:
        return
    if testingEnabled():
        raise DependenciesUnavailable(
            f"{requester}: Python packages missing ({', '.join(missing)}); Slicer runs in testing mode, where nothing "
            "is installed: install them first (run the module once without --testing) to run this test")
    if needTorch:
        ensureTorch()
    requirements = missingRequirements(readRequirements(requirementsFile, packages))
    if requirements:
        installRequirements(requirements, requester)
    if _importable("spinemorph"):
        return
    root = sourceCheckoutRoot()
    if root is None:
        raise DependencyError("the SpineMorph core package 'spinemorph' is missing; reinstall the SpineMorph extension")
    import slicer

    logging.info(f"Installing the SpineMorph core from the source checkout {root}")
    slicer.util.pip_install(["--no-deps", "-e", str(root)])
    if not _importable("spinemorph"):
        raise DependencyError(f"the SpineMorph core was installed from {root}; restart Slicer to use it")
