"""Start the Qt application: the exception hook, the project to open, the main window."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from types import TracebackType

from annotation.errors import AtrousError

log = logging.getLogger("atrous")


def _setup_logging() -> Path:
    from .app_log import setup_logging

    return setup_logging()


def excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """Show an unexpected error in a dialog and log its traceback; the app keeps running.

    AtrousError subclasses are problems a person can act on (a bad file, a full
    disk): they are shown as a plain message, without a traceback.
    """
    from . import dialogs

    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    try:
        path = _setup_logging()
    except OSError:
        path = None
    if issubclass(exc_type, AtrousError):
        log.warning("%s", exc)
        dialogs.show_error(None, "Atrous", str(exc))
        return
    log.error("unexpected error\n%s", text)
    sys.stderr.write(text)
    where = f"\n\nThe details were written to {path}." if path else ""
    dialogs.show_error(
        None, "Unexpected error", f"Something went wrong: {exc_type.__name__}: {exc}{where}", details=text
    )


def startup_path() -> Path | None:
    """What the app opens when started without a path.

    The project opened last; on the very first start in this data folder, the
    sample project (made then); afterwards, when the last project is gone, nothing
    (an empty window whose File menu opens or makes one).
    """
    from annotation.layout import is_project

    from .projects import ensure_sample_project
    from .settings import is_first_start, last_project

    last = last_project()
    if last is not None and is_project(Path(last)):
        return Path(last)
    if is_first_start():
        return ensure_sample_project()
    return None


def start_window(path: str | None = None):
    """Make and show the main window on ``path`` (or :func:`startup_path`); a QApplication must exist."""
    from . import dialogs
    from .main_window import MainWindow
    from .settings import mark_started

    window = MainWindow()
    opened = False
    try:
        target = startup_path() if path is None else path
        opened = target is not None and window.open_path(str(target))
    except AtrousError as e:
        log.warning("start-up: %s", e)
        dialogs.show_error(None, "Atrous", str(e))
    if not opened:
        window._update_status()  # says how to open or make a project
    mark_started()
    window.show()
    return window


def run_gui(path: str | None = None) -> int:
    """Open the desktop app (on ``path`` when given) and run the event loop."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Atrous")
    app.setOrganizationName("Atrous")
    _setup_logging()
    sys.excepthook = excepthook
    window = start_window(path)  # noqa: F841  (kept alive while the loop runs)
    return app.exec()
