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

    iconsPath = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Resources", "Icons")
    SampleData.SampleDataLogic.registerCustomSampleDataCategory(CATEGORY, title="SpineMorph")
    for sampleName, (_key, _node, icon) in SAMPLES.items():
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category=CATEGORY,
            sampleName=sampleName,
            uris=[],
            fileNames=[],
            nodeNames=[],
            thumbnailFileName=os.path.join(iconsPath, icon),
            customDownloader=_downloader,
        )


def _downloader(source):
    """Sample Data button handler: generate (if needed) and load the series the button names."""
    with slicer.util.tryWithErrorDisplay("Failed to generate the SpineMorph phantom study.", waitCursor=True):
        loadSample(source.sampleName)


def studyFolder(seed=SEED):
    return os.path.join(slicer.app.cachePath, "SpineMorph", f"phantom_seed{seed}")


def loadSample(sampleName=AXIAL_T1, seed=SEED, requester="SpineMorph"):
    """Generate the phantom study (once, cached) and load one of its series; returns ``(volumeNode, study)``.

    ``study`` is the dict of :func:`spinemorph.gui_support.sample_study` (paths and exact truth values).
    """
    from DuralSacSegLib import slicer_dependencies

    requirements = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Resources", "requirements.txt")
    slicer_dependencies.ensureDependencies(requirements, requester=requester)
    from spinemorph.gui_support import sample_study

    key, nodeName, _icon = SAMPLES[sampleName]
    study = sample_study(studyFolder(seed), seed=seed)
    volumeNode = slicer.util.loadVolume(study[key], {"name": nodeName})
    return volumeNode, study
