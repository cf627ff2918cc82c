"""Start the Qt application and show the main window."""

from __future__ import annotations

import sys


def run_gui(path: str | None = None) -> int:
    """Open the desktop app (on ``path`` when given) and run the event loop."""
    from PySide6.QtWidgets import QApplication, QLabel, QMainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Atrous")
    app.setOrganizationName("Atrous")
    window = QMainWindow()
    window.setWindowTitle("Atrous")
    label = QLabel(
        "Atrous: the editor arrives with the desktop-editor issue.\n"
        "Headless commands work now: run `python main.py --help`."
    )
    label.setMargin(24)
    window.setCentralWidget(label)
    window.resize(720, 360)
    window.show()
    return app.exec()
