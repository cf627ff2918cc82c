"""Make the README screenshots of the main window (docs/screenshots/*.png).

Runs the real app on the bundled sample project in a throw-away data folder,
drives it with synthetic mouse and key events (the same ones a person makes)
and saves ``QWidget.grab()`` images. Works offscreen, so no display is needed::

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "docs" / "screenshots"


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = tempfile.TemporaryDirectory()
    os.environ["ATROUS_DATA_DIR"] = tmp.name

    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from annotation.project import Project
    from gui.main_window import MainWindow
    from gui.projects import ensure_sample_project

    app = QApplication.instance() or QApplication(sys.argv[:1])
    OUT.mkdir(parents=True, exist_ok=True)
    win = MainWindow(Project.open(ensure_sample_project()))
    win.resize(1400, 860)
    win.show()
    QTest.qWaitForWindowExposed(win)
    app.processEvents()

    def shot(name: str) -> None:
        app.processEvents()
        win.grab().save(str(OUT / name))
        print(f"wrote {OUT / name}")

    shot("01-first-start.png")

    # Paint the person class over the astronaut's helmet with a few strokes.
    c = win.canvas
    QTest.keyClick(c, Qt.Key.Key_1)
    win.tools.radius = 14
    for y in range(370, 470, 18):
        pts = [c.image_to_widget(x, y).toPoint() for x in range(215, 330, 10)]
        QTest.mousePress(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pts[0])
        for p in pts[1:]:
            QTest.mouseMove(c, p)
        QTest.mouseRelease(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pts[-1])
    QTest.mouseMove(c, c.image_to_widget(300, 300).toPoint())
    shot("02-after-painting.png")

    # Outline mode on the next image, zoomed in around the cat's eye: crisp pixels.
    QTest.keyClick(c, Qt.Key.Key_D)
    QTest.keyClick(c, Qt.Key.Key_O, Qt.KeyboardModifier.ShiftModifier)
    c.zoom_to(4.0, c.image_to_widget(130, 120))
    QTest.mouseMove(c, QPoint(c.width() // 2, c.height() // 2))
    shot("03-outline-zoomed.png")
    QTest.keyClick(c, Qt.Key.Key_O, Qt.KeyboardModifier.ShiftModifier)

    win.close()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
