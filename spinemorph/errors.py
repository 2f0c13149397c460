"""User-facing errors.

Everything a user can cause (bad input file, missing weights, unwritable folder, ...) raises
:class:`SpineMorphError` with a one-line message that names the problem and says what to do.
The command line prints it as ``error: <message>`` without a traceback.
"""


class SpineMorphError(Exception):
    """An error caused by input or environment, with a message meant for the user."""


class InputError(SpineMorphError):
    """The input image, label map or table cannot be used."""


class OutputError(SpineMorphError):
    """An output cannot be written (exists, unwritable folder, disk full)."""


class ModelError(SpineMorphError):
    """A weights file is missing, truncated, or does not fit the requested network."""
