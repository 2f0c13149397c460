"""Slicer glue: the synthetic lumbar study in the Sample Data module (category "SpineMorph").

Nothing is downloaded: the study is generated locally by the core (``spinemorph.acquisition.make_study``) into Slicer's
cache folder the first time it is asked for, then loaded. Two samples of the same study are registered (here, once,
for both modules of the extension): its axial T1 stack (DuralSacSeg) and its sagittal 3D T2 SPACE volume (FORAMEN3D).
"""

import os

import slicer

CATEGORY = "SpineMorph"
SEED = 0
AXIAL_T1 = "SpineMorphAxialT1Phantom"
SPACE_T2 = "SpineMorphSpaceT2Phantom"
#: sample name -> (key of the series in the generated study, node name, thumbnail icon)
SAMPLES = {
    AXIAL_T1: ("axial_t1", "SpineMorphPhantom_axialT1", "DuralSacSeg.png"),
    SPACE_T2: ("space_t2", "SpineMorphPhantom_T2SPACE", "FORAMEN3D.png"),
}


def registerSampleData():
    """Register the generated samples (called on ``startupCompleted()``)."""
    import SampleData

    # Slicer >= 5.12 has category titles; on 5.10 the category name itself is the title shown
    if hasattr(SampleData.SampleDataLogic, "registerCustomSampleDataCategory"):
        SampleData.SampleDataLogic.registerCustomSampleDataCategory(CATEGORY, title="SpineMorph")
    for sampleName, (_key, _node, icon) in SAMPLES.items():
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category=CATEGORY,
            sampleName=sampleName,
            uris=[],
            fileNames=[],
            nodeNames=[],
            thumbnailFileName=_iconPath(icon),
            customDownloader=_downloader,
        )


def _iconPath(icon):
    """Installed extension: every module's icons are in the shared ``qt-scripted-modules/Resources/Icons``; source
    tree: in ``<Module>/Resources/Icons`` (FORAMEN3D.png next to this module's folder)."""
    moduleDir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for folder in (moduleDir, os.path.join(os.path.dirname(moduleDir), os.path.splitext(icon)[0])):
        path = os.path.join(folder, "Resources", "Icons", icon)
        if os.path.isfile(path):
            return path
    return os.path.join(moduleDir, "Resources", "Icons", icon)


def _downloader(source):
    """Sample Data button handler: generate (if needed) and load the series the button names."""
    with slicer.util.tryWithErrorDisplay("Failed to generate the SpineMorph phantom study.", waitCursor=True):
        loadSample(source.sampleName)


def studyFolder(seed=SEED):
    return os.path.join(slicer.app.cachePath, "SpineMorph", f"phantom_seed{seed}")


def loadSample(sampleName=AXIAL_T1, seed=SEED, requester="SpineMorph"):
    """Generate the phantom study (once, cached) and load one of its series; returns ``(volumeNode, study)``.

    ``study`` is the dict of :func:`spinemorph.gui_support.sample_study` (paths and exact truth values).
    Only what the phantom generator needs is installed (``SAMPLE_DATA_PACKAGES``): no torch, no MONAI.
    """
    from DuralSacSegLib import slicer_dependencies

    slicer_dependencies.ensureDependencies(slicer_dependencies.requirementsPath(), requester=requester,
                                           packages=slicer_dependencies.SAMPLE_DATA_PACKAGES, needTorch=False)
    from spinemorph.gui_support import sample_study

    key, nodeName, _icon = SAMPLES[sampleName]
    study = sample_study(studyFolder(seed), seed=seed)
    volumeNode = slicer.util.loadVolume(study[key], {"name": nodeName})
    return volumeNode, study
