"""One error hierarchy for everything a user can get wrong or the disk can refuse.

Every error carries a message meant for a person: it names the file and the
problem. The CLI prints ``str(error)`` and exits non-zero; the GUI shows it in a
message box. Low-level causes are chained with ``raise ... from e``.
"""

from __future__ import annotations


class AtrousError(Exception):
    """Base class of all errors Atrous reports to the user."""


class AtrousReadError(AtrousError):
    """A file could not be read or does not hold what it should."""


class AtrousWriteError(AtrousError):
    """A file could not be written (permissions, full disk, bad target)."""


class ImageReadError(AtrousReadError):
    """An image file is missing, corrupt, truncated, too large or not an image."""
