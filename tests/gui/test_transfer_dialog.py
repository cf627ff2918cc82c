"""File -> Import and File -> Export: the CLI's jobs in a worker, all or nothing, cancellable."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from annotation.masks import read_mask_png, write_mask_png
from annotation.project import Project
from gui import dialogs, transfer_dialog

from .conftest import H, W, shown_window


def wait_idle(qtbot, dlg) -> None:
    qtbot.waitUntil(lambda: not dlg.running, timeout=20000)
    qtbot.wait(10)  # let the queued report arrive


@pytest.fixture
def labelled_path(project_path: Path) -> Path:
    """The test project with a reviewed mask on every image (so an export has three)."""
    with Project.open(project_path) as p:
        for k, r in enumerate(p.images()):
            m = np.zeros((H, W), np.uint8)
            m[: 10 + 5 * k, :] = 2
            p.save_mask(r.id, m, status="reviewed")
    return project_path


@pytest.fixture
def labelled_window(qtbot, labelled_path: Path):
    yield from shown_window(qtbot, labelled_path)


def gate_export(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Hold the export at its first image until the test opens the gate: a cancel that lands mid-job."""
    import annotation.formats.voc as voc

    entered, gate = threading.Event(), threading.Event()
    real = voc.export_image_bytes

    def held(*a, **k):
        entered.set()
        assert gate.wait(10)
        return real(*a, **k)

    monkeypatch.setattr(voc, "export_image_bytes", held)
    return entered, gate


def test_export_voc_writes_the_cli_summary_and_opens_the_folder(
    qtbot, labelled_window, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dlg = transfer_dialog.open_export(labelled_window)
    assert labelled_window._job_dialog is dlg
    out = tmp_path / "voc"
    dlg.out_edit.setText(str(out))
    dlg.devkit_check.setChecked(True)
    dlg.seed_spin.setValue(3)
    assert not dlg.open_btn.isVisible()
    dlg.run_btn.click()
    wait_idle(qtbot, dlg)
    text = dlg.report.toPlainText()
    assert f"exported 3 image(s) as VOC to {out}" in text, text
    root = out / "VOCdevkit" / "VOC2012"
    assert len(list((root / "SegmentationClass").iterdir())) == 3
    assert (root / "ImageSets" / "Segmentation" / "val.txt").read_text().strip()
    opened: list[str] = []
    monkeypatch.setattr(
        transfer_dialog.QDesktopServices, "openUrl", staticmethod(lambda url: opened.append(url.toLocalFile()) or True)
    )
    assert dlg.open_btn.isVisibleTo(dlg)
    dlg.open_btn.click()
    assert opened == [str(out)]


def test_export_coco_with_status_filter(qtbot, labelled_window, labelled_path: Path, tmp_path: Path) -> None:
    with Project.open(labelled_path) as p:
        p.set_status(p.images()[0].id, "edited")
    labelled_window.set_project(Project.open(labelled_path))
    dlg = transfer_dialog.open_export(labelled_window)
    dlg.format_combo.setCurrentIndex(dlg.format_combo.findData("coco"))
    assert dlg.polygons_check.isVisibleTo(dlg) and not dlg.devkit_check.isVisibleTo(dlg)
    dlg.status_checks["reviewed"].setChecked(False)
    dlg.polygons_check.setChecked(True)
    dlg.out_edit.setText(str(tmp_path / "coco"))
    dlg.start()
    wait_idle(qtbot, dlg)
    assert "exported 1 image(s)" in dlg.report.toPlainText()
    from pycocotools.coco import COCO

    assert len(COCO(str(tmp_path / "coco" / "annotations.json")).imgs) == 1


def test_export_into_a_non_empty_folder_writes_nothing(qtbot, labelled_window, tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    dlg = transfer_dialog.open_export(labelled_window)
    dlg.out_edit.setText(str(out))
    dlg.start()
    wait_idle(qtbot, dlg)
    assert "export folder is not empty" in dlg.state.text()
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert dlg.run_btn.isEnabled() and dlg.form_box.isEnabled()


def test_export_into_a_read_only_folder_leaves_it_empty(
    qtbot, labelled_window, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    def refused(*a, **k):  # tests may run as root, where chmod does not stop writes
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("annotation.atomic._create_temp", refused)
    out = tmp_path / "ro"
    out.mkdir()
    dlg = transfer_dialog.open_export(labelled_window)
    dlg.out_edit.setText(str(out))
    dlg.start()
    wait_idle(qtbot, dlg)
    assert "Permission denied" in dlg.state.text() and "Cannot write" in dlg.state.text()
    assert list(out.iterdir()) == []


def test_cancel_mid_export_leaves_nothing(
    qtbot, labelled_window, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, gate = gate_export(monkeypatch)
    dlg = transfer_dialog.open_export(labelled_window)
    out = tmp_path / "out"
    dlg.out_edit.setText(str(out))
    dlg.start()
    assert entered.wait(10) and dlg.running
    assert dlg.cancel_btn.text() == "Cancel" and not dlg.run_btn.isEnabled()
    dlg.cancel_btn.click()
    gate.set()
    wait_idle(qtbot, dlg)
    assert dlg.state.text().startswith("Cancelled") and not out.exists()


def test_closing_the_window_during_an_export_asks_and_cleans_up(
    qtbot, labelled_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, gate = gate_export(monkeypatch)
    gen = shown_window(qtbot, labelled_path)
    win = next(gen)
    dlg = transfer_dialog.open_export(win)
    out = tmp_path / "out"
    dlg.out_edit.setText(str(out))
    dlg.start()
    assert entered.wait(10)
    asked: list[str] = []
    monkeypatch.setattr(dialogs, "confirm", lambda parent, title, text: asked.append(title) or False)
    win.close()
    assert win.isVisible() and dlg.running and asked == ["Stop the export?"]

    def yes(parent, title, text):
        asked.append(title)
        gate.set()  # the held image goes on, then the job sees the stop
        return True

    monkeypatch.setattr(dialogs, "confirm", yes)
    win.close()
    assert not win.isVisible() and not dlg.running and len(asked) == 2
    assert not out.exists()
    next(gen, None)


def write_labels(folder: Path, project_path: Path, value: int = 3) -> dict[str, np.ndarray]:
    """Label PNGs named like the project's images: the bottom rows get ``value``."""
    folder.mkdir()
    made = {}
    with Project.open(project_path) as p:
        for r in p.images():
            m = np.zeros((H, W), np.uint8)
            m[H // 2 :, :] = value
            write_mask_png(folder / f"{Path(r.path).stem}.png", m, p.palette())
            made[r.path] = m
    return made


def test_import_masks_into_the_open_project_takes_its_images_and_classes(
    qtbot, window, project_path: Path, tmp_path: Path
) -> None:
    made = write_labels(tmp_path / "labels", project_path)
    dlg = transfer_dialog.open_import(window)
    assert dlg.project_edit.text() == str(project_path)
    dlg.format_combo.setCurrentIndex(dlg.format_combo.findData("masks"))
    assert dlg.void_spin.isVisibleTo(dlg) and not dlg.fill_combo.isVisibleTo(dlg)
    assert dlg.binary_check.isVisibleTo(dlg) and not dlg.binary_check.isChecked()
    dlg.src_edit.setText(str(tmp_path / "labels"))
    dlg.binary_check.setChecked(True)
    assert dlg.options().binary  # 0/255 masks: the CLI's --binary
    dlg.binary_check.setChecked(False)
    dlg.status_combo.setCurrentText("edited")
    dlg.start()
    wait_idle(qtbot, dlg)
    text = dlg.report.toPlainText()
    assert "0 new image(s), 3 already present, 3 mask(s) (edited)" in text, dlg.state.text()
    with Project.open(project_path) as p:
        assert [c.name for c in p.classes()] == ["background", "person", "car", "tree"]
        for r in p.images():
            assert r.status == "edited" and np.array_equal(p.read_mask(r.id), made[r.path])
    # The window shows the imported masks (it reopened the project).
    assert window.project is not None and all(r.status == "edited" for r in window.project.images())


def test_malformed_import_shows_the_cli_message_and_changes_nothing(
    qtbot, window, project_path: Path, tmp_path: Path
) -> None:
    masks_before = {f.name: f.read_bytes() for f in (project_path / "masks").iterdir()}
    with Project.open(project_path) as p:
        before = p.images()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.json").write_bytes(b"\xff\xfe{not utf8")
    dlg = transfer_dialog.open_import(window)
    dlg.format_combo.setCurrentIndex(dlg.format_combo.findData("labelme"))
    dlg.src_edit.setText(str(bad))
    dlg.start()
    wait_idle(qtbot, dlg)
    assert dlg.state.text().startswith("error: ") and "x.json: not UTF-8" in dlg.state.text()
    with Project.open(project_path) as p:
        assert p.images() == before
    assert {f.name: f.read_bytes() for f in (project_path / "masks").iterdir()} == masks_before


def test_import_without_a_source_says_so(qtbot, window) -> None:
    dlg = transfer_dialog.open_import(window)
    dlg.start()
    assert not dlg.running and "choose what to import" in dlg.state.text()


def test_cancelled_import_leaves_the_project_as_it_was(
    qtbot, window, project_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import annotation.formats as formats

    write_labels(tmp_path / "labels", project_path)
    entered, gate = threading.Event(), threading.Event()
    real = formats.file_sha256

    def held(path):
        entered.set()
        assert gate.wait(10)
        return real(path)

    monkeypatch.setattr(formats, "file_sha256", held)
    masks_before = {f.name: f.read_bytes() for f in (project_path / "masks").iterdir()}
    dlg = transfer_dialog.open_import(window)
    dlg.format_combo.setCurrentIndex(dlg.format_combo.findData("masks"))
    dlg.src_edit.setText(str(tmp_path / "labels"))
    dlg.start()
    assert entered.wait(10)
    monkeypatch.setattr(dialogs, "confirm", lambda *a: gate.set() or True)
    assert dlg.ask_cancel() and not dlg.running
    assert {f.name: f.read_bytes() for f in (project_path / "masks").iterdir()} == masks_before
    with Project.open(project_path) as p:
        assert sum(r.has_mask for r in p.images()) == 1


def test_import_coco_into_a_new_project_opens_it(qtbot, window, shared_data, tmp_path: Path) -> None:
    lm = shared_data("labelme_examples") / "instance_segmentation" / "data_dataset_coco"
    dlg = transfer_dialog.open_import(window)
    dlg.project_edit.setText(str(tmp_path / "fresh"))
    dlg.format_combo.setCurrentIndex(dlg.format_combo.findData("coco"))
    assert dlg.fill_combo.isVisibleTo(dlg) and not dlg.classes_row.isVisibleTo(dlg)
    dlg.src_edit.setText(str(lm / "annotations.json"))
    dlg.start()
    wait_idle(qtbot, dlg)
    assert "3 new image(s)" in dlg.report.toPlainText(), dlg.state.text()
    assert window.project is not None and window.project.root == tmp_path / "fresh"
    first = window.project.images()[0]
    assert read_mask_png(window.project.mask_path(first.id)).shape == (first.height, first.width)


def test_export_needs_a_project(qtbot, monkeypatch: pytest.MonkeyPatch) -> None:
    from gui.main_window import MainWindow

    win = MainWindow(None)
    qtbot.addWidget(win)
    shown: list[str] = []
    monkeypatch.setattr(dialogs, "show_error", lambda parent, title, text, details=None: shown.append(text))
    assert transfer_dialog.open_export(win) is None and "Open a project first" in shown[0]
    win.close()
    win.cache.shutdown()


@pytest.mark.parametrize("how", ["cancel button", "closing the app"])
def test_cancel_while_reading_the_source_stops_before_writing(
    qtbot, window, project_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """The read phase counts files (a determinate bar); Cancel or closing the app stops it at the next file."""
    import annotation.formats as formats
    import annotation.formats.maskdir as maskdir

    write_labels(tmp_path / "labels", project_path)
    entered, gate = threading.Event(), threading.Event()
    real, reads = maskdir.read_mask_png, []

    def held(path):
        reads.append(path)
        if len(reads) == 2:  # hold the second label file until the test has pressed Cancel
            entered.set()
            assert gate.wait(10)
        return real(path)

    monkeypatch.setattr(maskdir, "read_mask_png", held)
    hashed: list[Path] = []
    monkeypatch.setattr(formats, "file_sha256", lambda p: hashed.append(p) or "x")
    masks_before = {f.name: f.read_bytes() for f in (project_path / "masks").iterdir()}
    dlg = transfer_dialog.open_import(window)
    dlg.format_combo.setCurrentIndex(dlg.format_combo.findData("masks"))
    dlg.src_edit.setText(str(tmp_path / "labels"))
    dlg.start()
    assert entered.wait(10)
    qtbot.waitUntil(lambda: dlg.progress_bar.maximum() == 3, timeout=5000)  # 3 labels: determinate
    assert dlg.progress_bar.value() == 1 and dlg.state.text().startswith("1 / 3  reading ")
    if how == "cancel button":
        dlg.cancel_btn.click()
        gate.set()
    else:  # the window's closeEvent asks the dialog, which cancels and waits for the worker
        monkeypatch.setattr(dialogs, "confirm", lambda *a: gate.set() or True)
        assert dlg.ask_cancel() and not dlg.running
    wait_idle(qtbot, dlg)
    assert dlg.state.text().startswith("Cancelled") and len(reads) == 2 and hashed == []
    assert dlg.run_btn.isEnabled() and dlg.cancel_btn.text() == "Close" and not dlg.progress_bar.isVisible()
    assert {f.name: f.read_bytes() for f in (project_path / "masks").iterdir()} == masks_before
    with Project.open(project_path) as p:
        assert sum(r.has_mask for r in p.images()) == 1
