"""Slicer glue: what the extension does once Slicer has started (``startupCompleted()``, connected by the DuralSacSeg
module file): state the supported Slicer version range, register the sample data, load the segment terminology."""

import logging

import slicer

from DuralSacSegLib import slicer_sampledata, slicer_terminology

#: Slicer versions the modules are written and checked for (``--min-slicer 5.10`` API check against 5.10.0 and 5.12.3)
MIN_SLICER_VERSION = (5, 10)
NEWEST_CHECKED_SLICER_VERSION = (5, 12)


def slicer_version_message(major, minor):
    """``(level, message)`` for Slicer ``major.minor``: "error" below the supported range (the modules use 5.10 APIs),
    "info" above the newest checked version, "" inside it; the message states the range. (Here, not in the core: it
    must work at startup before ``spinemorph`` is installed in a source checkout.)"""
    supported = (f"SpineMorph supports Slicer {MIN_SLICER_VERSION[0]}.{MIN_SLICER_VERSION[1]} to "
                 f"{NEWEST_CHECKED_SLICER_VERSION[0]}.{NEWEST_CHECKED_SLICER_VERSION[1]}")
    version = (int(major), int(minor))
    if version < MIN_SLICER_VERSION:
        return "error", f"{supported}; this is Slicer {major}.{minor}: install Slicer 5.10 or later"
    if version > NEWEST_CHECKED_SLICER_VERSION:
        return "info", f"{supported}; this is Slicer {major}.{minor}, newer than the versions checked: report problems"
    return "", f"{supported} (running {major}.{minor})"


def checkSlicerVersion():
    """Log (and, below the supported range, show) the Slicer versions SpineMorph supports; returns the level."""
    level, message = slicer_version_message(slicer.app.majorVersion, slicer.app.minorVersion)
    if level == "error":
        logging.error(message)
        if not slicer.app.testingEnabled():
            slicer.util.warningDisplay(message, windowTitle="SpineMorph")
    else:
        logging.info(message)
    return level


def onStartupCompleted():
    """Version check, sample data, terminology; each step logs its own failure and never stops Slicer's startup."""
    for step in (checkSlicerVersion, slicer_sampledata.registerSampleData, slicer_terminology.loadTerminology):
        try:
            step()
        except Exception as exc:  # startup must go on; the log says what failed
            logging.warning(f"SpineMorph startup step {step.__name__} failed: {exc}")
