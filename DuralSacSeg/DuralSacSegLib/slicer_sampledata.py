"""Slicer glue: the synthetic lumbar study in the Sample Data module (category "SpineMorph").

Nothing is downloaded: the study is generated locally by the core (``spinemorph.phantom.make_study``) into Slicer's
cache folder the first time it is asked for, then loaded. DuralSacSeg registers the axial T1 series of the study.
"""

import os

import slicer

CATEGORY = "SpineMorph"
SAMPLE_NAME = "SpineMorphAxialT1Phantom"
SAMPLE_DESCRIPTION = "Lumbar phantom (axial T1)"
NODE_NAME = "SpineMorphPhantom_axialT1"
SEED = 0


def registerSampleData():
    """Register the generated sample (called on ``startupCompleted()``)."""
    import SampleData

    iconPath = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Resources", "Icons", "DuralSacSeg.png")
    SampleData.SampleDataLogic.registerCustomSampleDataCategory(CATEGORY, title="SpineMorph")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category=CATEGORY,
        sampleName=SAMPLE_NAME,
        uris=[],
        fileNames=[],
        nodeNames=[],
        thumbnailFileName=iconPath,
        customDownloader=_downloader,
    )


def _downloader(source):
    """Sample Data button handler: generate (if needed) and load."""
    with slicer.util.tryWithErrorDisplay("Failed to generate the SpineMorph phantom study.", waitCursor=True):
        loadSample()


def studyFolder(seed=SEED):
    return os.path.join(slicer.app.cachePath, "SpineMorph", f"phantom_seed{seed}")


def loadSample(seed=SEED):
    """Generate the phantom study (once, cached) and load its axial T1 series; returns ``(volumeNode, study)``.

    ``study`` is the dict of :func:`spinemorph.gui_support.sample_study` (paths and exact truth values).
    """
    from DuralSacSegLib import slicer_dependencies, slicer_logic

    slicer_dependencies.ensureDependencies(slicer_logic.requirementsPath(), requester="DuralSacSeg")
    from spinemorph.gui_support import sample_study

    study = sample_study(studyFolder(seed), seed=seed)
    volumeNode = slicer.util.loadVolume(study["axial_t1"], {"name": NODE_NAME})
    return volumeNode, study
