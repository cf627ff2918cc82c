"""Image -> Add images… and Remove from project…: the ``add`` and ``remove`` commands in the app.

Adding runs :func:`annotation.jobs.add_images` (the function ``add`` calls) in a worker,
with progress and Cancel: every file is read first and the rows go in at the end in one
transaction, so a cancel adds nothing. Removing asks first, says how many of the
images a person corrected, then runs :func:`annotation.jobs.remove_images` on the
open project; the image files stay on disk. The removed images' documents (and their
undo history) are dropped, and the window moves on to the next image of the list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QPoint
from PySide6.QtWidgets import QDialog, QFileDialog, QLabel, QLineEdit, QMenu

from annotation.errors import AtrousError
from annotation.jobs import LABELLED, add_images, add_report, remove_images

from . import dialogs
from .transfer_dialog import Job, JobDialog, _path, path_row, running_job, show_job_dialog

#: How many names the removal question lists before "and N more".
SHOW_NAMES = 6


class AddImagesDialog(JobDialog):
    """Image -> Add images…: a folder whose images the open project does not have yet."""

    what = "adding of images"

    def __init__(self, window: Any) -> None:
        super().__init__(window, "Add images", "Add")
        self.root = Path(window.project.root)
        self.form.addRow("Project", QLabel(str(self.root)))
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("a folder of images (its sub-folders too)")
        self.form.addRow("Image folder", path_row(self.folder_edit, self._browse))
        self.help.setText(
            "The images are used where they are (nothing is copied). Images already in the "
            "project (the same content) are skipped; files that cannot be read are listed. "
            "Cancel adds nothing."
        )
        self.folder_edit.setFocus()

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Add the images of this folder", self.folder_edit.text())
        if path:
            self.folder_edit.setText(path)

    def make_job(self) -> Job | None:
        folder = _path(self.folder_edit)
        if folder is None:
            raise AtrousError("choose the image folder")
        if not folder.is_dir():
            raise AtrousError(f"{folder}: image folder not found")
        root = self.root
        return lambda **cb: add_images(root, [folder], **cb)

    def finished_lines(self, result: object) -> list[str]:
        win = self.window_
        if win.project is not None and Path(win.project.root) == self.root:
            win._fill_image_list()
            if win.current_id is None:
                first = win._visible_ids()
                if first:
                    win.show_image(first[0])
        return add_report(self.root, result)  # type: ignore[arg-type]


def open_add_images(window: Any) -> QDialog | None:
    """Image -> Add images…"""
    running = running_job(window)
    if running is not None:
        return running
    if getattr(window, "project", None) is None:
        dialogs.show_error(window, "Add images", "Open a project first.")
        return None
    return show_job_dialog(window, AddImagesDialog(window))


def _question(recs: list) -> str:
    n = len(recs)
    shown = ", ".join(r.name for r in recs[:SHOW_NAMES]) + (f" and {n - SHOW_NAMES} more" if n > SHOW_NAMES else "")
    text = f"Remove {n} image{'s' if n > 1 else ''} from the project: {shown}?\n\n"
    labelled = [r for r in recs if r.has_mask and r.status in LABELLED]
    if labelled and n == 1:
        text += "A person corrected its mask; the mask is deleted with it, and this cannot be undone. "
    elif labelled:
        text += (
            f"{len(labelled)} of them {'was' if len(labelled) == 1 else 'were'} corrected by a person; "
            "the masks are deleted with the images, and this cannot be undone. "
        )
    elif any(r.has_mask for r in recs):
        text += "Its pre-label is deleted with it. " if n == 1 else "Their pre-labels are deleted with them. "
    return text + ("The image file stays on disk." if n == 1 else "The image files stay on disk.")


def remove_selected(window: Any) -> list[int]:
    """Image -> Remove from project…: the selected images (or the current one), after asking.

    Returns the ids removed (empty when nothing was)."""
    project = window.project
    if project is None:
        return []
    if window.prelabel.running:
        window.statusBar().showMessage("Wait for the pre-labelling to finish (or cancel it) before removing images")
        return []
    ids = window._targets("selected")
    if not ids:
        return []
    try:
        recs = [project.image(i) for i in ids]
    except AtrousError as e:
        dialogs.show_error(window, "Remove images", str(e))
        return []
    if not dialogs.confirm(window, "Remove from project", _question(recs)):
        return []
    gone = set(ids)
    after = None
    if window.current_id in gone:
        visible = window._visible_ids()
        pos = visible.index(window.current_id) if window.current_id in visible else 0
        later = [i for i in visible[pos:] if i not in gone]
        earlier = [i for i in visible[:pos] if i not in gone]
        after = later[0] if later else (earlier[-1] if earlier else None)
    try:
        remove_images(project, ids, force=True)
    except AtrousError as e:
        dialogs.show_error(window, "Could not remove", f"{e}\n\nNothing was removed.")
        return []
    for i in ids:
        window._drop_document(i)
        window.confidence.pop(i, None)
        window.mean_confidence.pop(i, None)
    if window.current_id in gone:
        window.current_id = None
        window.autosave_timer.stop()
        window.canvas.clear()
    window._fill_image_list()
    if after is not None:
        window.show_image(after)
    window._update_shares()
    window._update_status()
    n = len(ids)
    window.statusBar().showMessage(
        f"Removed {n} image{'s' if n > 1 else ''} from the project; "
        + ("the file stays on disk" if n == 1 else "the files stay on disk"),
        5000,
    )
    return ids


def list_menu(window: Any, pos: QPoint) -> QMenu | None:
    """The image list's context menu (right click), at ``pos`` in the list's coordinates."""
    if window.project is None:
        return None
    item = window.image_list.itemAt(pos)
    if item is not None and not item.isSelected():
        window.image_list.setCurrentItem(item)  # a right click on another image acts on that one
    menu = QMenu(window.image_list)
    menu.addAction(window.act_prelabel_sel)
    menu.addSeparator()
    menu.addAction(window.act_add_images)
    menu.addAction(window.act_remove_images)
    menu.popup(window.image_list.viewport().mapToGlobal(pos))
    return menu
