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
    c.fit()

    model_shots(app, win, shot)

    win.close()
    tmp.cleanup()
    return 0


def model_shots(app, win, shot) -> None:
    """Fine-tune a small model on the sample masks (no download needed), then pre-label with it
    and show the model panel with the low-confidence overlay."""
    import time

    from gui import dialogs
    from gui.finetune_dialog import FinetuneDialog

    dialogs.confirm = lambda *_a, **_k: True  # the overwrite question: yes, in this throw-away copy
    proj = win.project
    for rec in proj.images():
        proj.set_status(rec.id, "reviewed")
    win._fill_image_list()
    dlg = FinetuneDialog(proj, win)
    dlg.show()
    done: list[bool] = []
    dlg.runFinished.connect(lambda: done.append(True))
    dlg.start(
        base="scratch",
        minutes=float(os.environ.get("ATROUS_SHOT_MINUTES", "1.5")),
        crop=256,
        batch_size=4,
        input_size=256,
        device="cpu",
        evals=4,
    )
    t0 = time.monotonic()
    while not done and time.monotonic() - t0 < 900:
        app.processEvents()
        time.sleep(0.05)
    app.processEvents()
    dlg.grab().save(str(OUT / "05-finetune.png"))
    print(f"wrote {OUT / '05-finetune.png'}")
    version = dlg.result.version_id if dlg.result is not None else None
    dlg.close()
    dlg.shutdown()
    if version is None:
        print("fine-tuning saved no version; skipping the pre-label screenshot")
        return
    win._fill_models()
    mv = next(m for m in proj.model_versions() if m.id == version)
    win.model_panel.select_spec(win._version_path(mv.checkpoint_path))
    win.model_panel.device_combo.setCurrentIndex(win.model_panel.device_combo.findData("cpu"))
    win.show_image(proj.images()[1].id)
    finished: list[bool] = []
    win.prelabel.finished.connect(lambda _s: finished.append(True))
    win.prelabel_images("current", overwrite=True)
    t0 = time.monotonic()
    while not finished and time.monotonic() - t0 < 300:
        app.processEvents()
        time.sleep(0.05)
    import numpy as np

    conf = win.confidence_map(win.current_id)
    if conf is not None:  # mark about the least sure third of the pixels, whatever the model
        win.model_panel.threshold_slider.setValue(int(np.clip(np.percentile(conf, 33) / 2.55 + 1, 5, 100)))
    win.set_confidence_visible(True)
    shot("04-model-panel-confidence.png")
    win.set_confidence_visible(False)


if __name__ == "__main__":
    sys.exit(main())
