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
    small_screen_shots(app, win)
    help_shots(app, win)

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

    smart_tool_shots(app, win, shot)
    learn_shots(app, win, shot)  # before model_shots marks every mask reviewed: it learns from the strokes alone
    model_shots(app, win, shot)
    class_map_shots(app, win)
    class_shots(app, win, shot)
    transfer_shots(app, win, Path(tmp.name))

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


def smart_tool_shots(app, win, shot) -> None:
    """Magic wand, superpixel brush and GrabCut previews; each is cancelled or undone afterwards."""
    import time

    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtTest import QTest

    c = win.canvas

    def open_image(stem: str) -> None:
        rec = next(r for r in win.project.images() if Path(r.path).stem == stem)
        win.show_image(rec.id)
        c.fit()

    def wait(ready, seconds: float = 60) -> None:
        end = time.monotonic() + seconds
        while not ready() and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.02)

    def at(x: float, y: float) -> QPoint:
        return c.image_to_widget(x, y).toPoint()

    before = (win.current_id, win.tools.class_value, win.tools.radius)
    # The sample masks cover these objects already: hide the overlay so the previews stand out.
    QTest.keyClick(c, Qt.Key.Key_O)

    # Wand: press on the cup's rim and drag right to widen the tolerance.
    open_image("coffee")
    QTest.keyClick(c, Qt.Key.Key_W)
    win.select_class(3)
    win.tools.wand_tolerance = 20
    QTest.mousePress(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(300, 60))
    QTest.mouseMove(c, at(300, 60) + QPoint(40, 0))
    shot("06-magic-wand.png")
    QTest.keyClick(c, Qt.Key.Key_Escape)
    QTest.mouseRelease(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(300, 60) + QPoint(40, 0))

    # GrabCut: a box around the cat's head, previewed before Enter.
    open_image("chelsea")
    QTest.keyClick(c, Qt.Key.Key_G)
    win.select_class(2)
    QTest.mousePress(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(20, 5))
    QTest.mouseMove(c, at(200, 150))
    QTest.mouseRelease(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(370, 295))
    wait(lambda: not c.smart.gc_busy)
    QTest.mouseMove(c, at(440, 20))
    shot("08-grabcut.png")
    QTest.keyClick(c, Qt.Key.Key_Escape)
    QTest.keyClick(c, Qt.Key.Key_O)

    # Superpixels: boundaries on, one stroke of sky over the rocket photo's unlabelled corner, then undone.
    open_image("rocket")
    QTest.keyClick(c, Qt.Key.Key_S)
    QTest.keyClick(c, Qt.Key.Key_V)
    wait(lambda: c.smart.current_superpixels() is not None)
    win.select_class(4)
    win.tools.radius = 4
    pts = [at(x, 15 + (x - 540) // 3) for x in range(540, 636, 6)]
    QTest.mousePress(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pts[0])
    for p in pts[1:]:
        QTest.mouseMove(c, p)
    QTest.mouseRelease(c, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, pts[-1])
    shot("07-superpixel-brush.png")
    win.undo()
    QTest.keyClick(c, Qt.Key.Key_V)
    QTest.keyClick(c, Qt.Key.Key_B)
    if before[0] is not None:
        win.show_image(before[0])
    win.select_class(before[1])
    win.tools.radius = before[2]
    c.fit()


def small_screen_shots(app, win) -> None:
    """The first window as it opens on 1280x800 and 1366x768 screens (its default geometry there)."""
    from PySide6.QtCore import QRect

    size = win.size()
    for w, h in ((1280, 800), (1366, 768)):
        win._default_geometry(QRect(0, 0, w, h))
        app.processEvents()
        win.grab().save(str(OUT / f"window-{w}x{h}.png"))
        print(f"wrote {OUT / f'window-{w}x{h}.png'}")
    win.resize(size)
    app.processEvents()


def help_shots(app, win) -> None:
    """Help -> Keys and Help -> How the loop works."""
    from gui.help_dialogs import KeysDialog, LoopDialog

    for dlg, name in ((KeysDialog(win), "help-keys.png"), (LoopDialog(win), "help-loop.png")):
        dlg.show()
        app.processEvents()
        dlg.grab().save(str(OUT / name))
        print(f"wrote {OUT / name}")
        dlg.close()


def class_shots(app, win, shot) -> None:
    """The class dialogs: adding a pasted list, the panel with keys past 9, deleting a class."""
    from gui.class_dialogs import AddClassesDialog, DeleteClassDialog

    names = ["building", "pole", "road", "sidewalk", "tree", "sign", "fence", "car", "pedestrian", "bicyclist", "lane"]
    dlg = AddClassesDialog(win, win._classes, names)
    dlg.show()
    app.processEvents()
    dlg.grab().save(str(OUT / "classes-add.png"))
    print(f"wrote {OUT / 'classes-add.png'}")
    dlg.close()
    win.add_classes(names)
    win.select_class(14)
    shot("classes-panel.png")
    dlg = DeleteClassDialog(win, win._classes, 3, merge=False)
    dlg.show()
    app.processEvents()
    dlg.grab().save(str(OUT / "classes-delete.png"))
    print(f"wrote {OUT / 'classes-delete.png'}")
    dlg.close()


def learn_shots(app, win, shot) -> None:
    """ "Learn from my strokes" on the coffee photo: the mask emptied (void), a few strokes of cup and
    background, Learn, and the preview of the pixel classifier it trained. It also learns from the project's
    edited and reviewed masks, so it is shot while the sample's are pre-labels. Undone and saved afterwards:
    the photo keeps its sample mask for the shots that follow."""
    import time

    import numpy as np

    from annotation.masks import VOID

    proj = win.project
    rec = next(r for r in proj.images() if Path(r.path).stem == "coffee")
    if proj.image(rec.id).status == "reviewed":  # a reviewed image is left as it is by the preview
        proj.set_status(rec.id, "edited")
        win._refresh_record(rec.id)
    win.show_image(rec.id)
    win.canvas.fit()
    m = win.current_model
    m.replace_all(np.full(m.shape, VOID, np.uint8))  # nothing labelled: only the strokes below teach
    strokes = {
        3: [
            [(200, 40), (300, 22), (395, 45)],
            [(250, 150), (330, 140)],
            [(190, 200), (250, 240), (330, 235)],
            [(215, 255), (225, 290)],
        ],
        0: [
            [(20, 40), (140, 20)],
            [(440, 30), (580, 70)],
            [(500, 130), (560, 260), (540, 360)],
            [(95, 230), (110, 310), (200, 360)],
            [(430, 180), (465, 280), (420, 340)],
            [(345, 290), (380, 265)],
            [(260, 385), (460, 380)],
        ],
    }
    for value, lines in strokes.items():
        for pts in lines:
            m.begin_stroke()
            for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
                m.brush_segment(x0, y0, x1, y1, 7, value)
            m.end_stroke()
    win.select_class(3)
    win.model_panel.learn_button.click()
    end = time.monotonic() + 300
    while win.learning and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.05)
    for _ in range(10):  # the result and finished signals queued behind the thread's end
        app.processEvents()
        time.sleep(0.02)
    print("learn:", win.model_panel.progress_label.text())
    shot("09-learn-from-strokes.png")
    for _ in range(2 + sum(len(lines) for lines in strokes.values())):  # the preview, the strokes, the emptying
        m.undo()
    win.save_current()


def class_map_shots(app, win) -> None:
    """The class-map table for torchvision's 21 VOC classes onto the sample project's classes."""
    from gui.class_map_dialog import ClassMapDialog
    from model.versions import DEFAULT_MODEL
    from model.weights import REGISTRY

    voc = list(REGISTRY[DEFAULT_MODEL].torchvision_weights().meta["categories"])  # names only, no download
    sample = [c for c in win.project.classes() if c.index < 5]  # background, person, cat, cup, sky
    dlg = ClassMapDialog(DEFAULT_MODEL, voc, sample, parent=win)
    dlg.resize(640, 780)  # tall enough for rows 0-19: background, cat and person (the by-name matches) in view
    dlg.show()
    dlg.ok_button.setFocus()  # no focus frame on the table's first cell
    app.processEvents()
    dlg.grab().save(str(OUT / "class-map.png"))
    print(f"wrote {OUT / 'class-map.png'}")
    dlg.close()


def transfer_shots(app, win, tmp: Path) -> None:
    """File -> New project (summary before Create), Import labels, and Export masks after a run."""
    import time

    from gui.new_project_dialog import NewProjectDialog
    from gui.settings import SAMPLES
    from gui.transfer_dialog import ExportDialog, ImportDialog

    def wait(busy, seconds: float = 60) -> None:
        end = time.monotonic() + seconds
        while busy() and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.01)
        app.processEvents()

    def grab(dlg, name: str) -> None:
        app.processEvents()
        dlg.grab().save(str(OUT / name))
        print(f"wrote {OUT / name}")

    dlg = NewProjectDialog(win)
    dlg.show()
    dlg.add_folder(win.project.root / "images")
    dlg.set_root(tmp / "my project")
    dlg.load_class_file(SAMPLES / "classes.json")
    wait(lambda: dlg._scan is None)
    grab(dlg, "new-project.png")
    dlg.close()

    dlg = ImportDialog(win)
    dlg.format_combo.setCurrentIndex(dlg.format_combo.findData("masks"))
    dlg.src_edit.setText(str(tmp / "labels"))
    dlg.void_spin.setValue(11)
    dlg.show()
    grab(dlg, "import.png")
    dlg.close()

    dlg = ExportDialog(win)
    dlg.out_edit.setText(str(tmp / "export-voc"))
    dlg.devkit_check.setChecked(True)
    dlg.show()
    dlg.start()
    wait(lambda: dlg.running)
    grab(dlg, "export.png")
    dlg.close()


if __name__ == "__main__":
    sys.exit(main())
