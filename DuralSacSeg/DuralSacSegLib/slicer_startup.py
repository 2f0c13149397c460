"""Slicer glue: what the extension does once Slicer has started (``startupCompleted()``, connected by the DuralSacSeg
module file): state the supported Slicer version range, register the sample data, load the segment terminology."""

import logging

import slicer

from DuralSacSegLib import slicer_sampledata, slicer_terminology


def checkSlicerVersion():
    """Log (and, below the supported range, show) the Slicer versions SpineMorph supports; returns the level."""
    from spinemorph.gui_support import slicer_version_message

    level, message = slicer_version_message(slicer.app.majorVersion, slicer.app.minorVersion)
    if level == "error":
        logging.error(message)
        if not slicer.app.testingEnabled():
            slicer.util.warningDisplay(message, windowTitle="SpineMorph")
    elif level == "info":
        logging.info(message)
    return level


def onStartupCompleted():
    """Version check, sample data, terminology; each step logs its own failure and never stops Slicer's startup."""
    for step in (checkSlicerVersion, slicer_sampledata.registerSampleData, slicer_terminology.loadTerminology):
        try:
            step()
        except Exception as exc:  # startup must go on; the log says what failed
            logging.warning(f"SpineMorph startup step {step.__name__} failed: {exc}")
