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


def run_gui(path: str | None = None) -> int:
    """Open the desktop app (on ``path`` when given) and run the event loop."""
    from PySide6.QtWidgets import QApplication

    from . import dialogs
    from .main_window import MainWindow
    from .projects import ensure_sample_project, open_or_create

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Atrous")
    app.setOrganizationName("Atrous")
    _setup_logging()
    sys.excepthook = excepthook

    window = MainWindow()
    try:
        if path is None:
            project = open_or_create(ensure_sample_project(), lambda _t: False)
        else:
            project = open_or_create(path, lambda text: dialogs.confirm(None, "Create a project?", text))
    except AtrousError as e:
        dialogs.show_error(None, "Atrous", str(e))
        project = None
    if project is not None:
        window.set_project(project)
    window.show()
    return app.exec()
