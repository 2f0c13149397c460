"""Slicer glue: the extension's segment terminology (``Resources/SpineMorph.term.json``), loaded into Slicer's
Terminologies module so that the L4, L5, L4-5 disc and dural sac segments show their standard codes.

Slicer's bundled lists lack L4, L5 and the disc. ``vtkSlicerTerminologiesModuleLogic.LoadTerminologyFromFile(path)``
(same in Slicer 5.10 and 5.12; returns the context name, "" on failure) loads the file; segment entries then name that
context (:func:`segmentTerminology`). Where the file cannot be loaded the entries keep the DICOM master list context
(their codes are the same).
"""

import json
import logging
import os

import slicer

TERMINOLOGY_FILE_NAME = "SpineMorph.term.json"


def terminologyPath():
    """``<folder of DuralSacSegLib>/Resources/SpineMorph.term.json`` (source tree and installed extension)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Resources", TERMINOLOGY_FILE_NAME)


def _terminologiesLogic():
    modules = getattr(slicer, "modules", None)
    if modules is None or not hasattr(modules, "terminologies"):
        return None  # Terminologies module disabled (e.g. --disable-modules)
    return modules.terminologies.logic()


def loadTerminology():
    """Load the SpineMorph terminology once per session; returns its context name, or "" when it cannot be loaded."""
    logic = _terminologiesLogic()
    if logic is None:
        return ""
    path = terminologyPath()
    try:
        with open(path, encoding="utf-8") as fh:
            contextName = json.load(fh)["SegmentationCategoryTypeContextName"]
    except (OSError, ValueError, KeyError) as exc:
        logging.warning(f"SpineMorph terminology not loaded from {path}: {exc}")
        return ""
    if logic.IsTerminologyContextLoaded(contextName):
        return contextName
    loaded = logic.LoadTerminologyFromFile(path)
    if loaded != contextName:
        logging.warning(f"SpineMorph terminology not loaded from {path}")
        return ""
    return loaded


def segmentTerminology(entry):
    """``entry`` (serialized terminology of the core, DICOM master list context) in the SpineMorph context when that
    terminology is loaded, so that Slicer finds the type in a loaded list."""
    from spinemorph.gui_support import terminology_in_context

    if not entry:
        return entry
    context = loadTerminology()
    return terminology_in_context(entry, context) if context else entry
