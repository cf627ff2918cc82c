"""The app's log file, ``atrous.log`` in the data folder: one place every part reports to.

Workers report errors to the window through signals; the window (or the worker's
owner) also writes them here, so a failure a person dismissed can still be read
later. Everything goes through the ``atrous`` logger; :func:`setup_logging`
attaches the file handler once per file (the app calls it at start-up; tests
read the records with ``caplog`` instead).
"""

from __future__ import annotations

import logging
from pathlib import Path

#: The app's logger; modules log to children of it (``atrous.gui``) or through :func:`log_error`.
log = logging.getLogger("atrous")


def setup_logging() -> Path:
    """Write the ``atrous`` logger's records (INFO and above) to ``atrous.log``; returns its path."""
    from .settings import log_path

    path = log_path()
    if not any(
        isinstance(h, logging.FileHandler) and getattr(h, "baseFilename", None) == str(path) for h in log.handlers
    ):
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    return path


def log_error(where: str, message: str) -> None:
    """Record an error a person was shown (or could not be shown), e.g. ``log_error("export", str(e))``.

    ``where`` names the part that failed ("model", "pre-label", "fine-tune",
    "import", "export", "image", "project"); ``message`` is the whole text, never
    shortened, so the log holds what a clipped label or a dismissed box did not.
    """
    log.error("%s: %s", where, message)


def log_info(where: str, message: str) -> None:
    """Record what a long-running part did (a fine-tune started or saved a version, an export wrote files)."""
    log.info("%s: %s", where, message)


__all__ = ["log", "log_error", "log_info", "setup_logging"]
