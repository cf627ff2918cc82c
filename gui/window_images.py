"""The main window's image list: search, status filter, sort order and navigation.

:class:`ImagesMixin` is one part of :class:`gui.main_window.MainWindow`; it
builds the "Images" dock, lists the project's images with their status and the
mean confidence of their last pre-label (optionally least confident first, an
active-learning queue), filters them, and moves to the next or previous image
of the list as filtered.
"""

from __future__ import annotations

import bisect
import re

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDockWidget,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)

from annotation.project import STATUSES, ImageRecord, Project

from .window_common import ROLE_ID, SORT_NAME, SORT_UNCERTAIN, STATUS_COLOURS, STATUS_LABELS, dot_icon


def natural_key(text: str) -> list[str | int]:
    """Sort key that puts ``frame2`` before ``frame10`` (runs of digits compare as numbers)."""
    return [int(t) if t.isdigit() else t.casefold() for t in re.split(r"(\d+)", text)]


class ImagesMixin:
    """Image dock, list and navigation of the main window (mixed into a QMainWindow).

    Uses the window's ``project``, ``current_id``, ``mean_confidence`` and
    ``show_image``; keeps ``_records``, the listed images by id in list order."""

    project: Project | None
    current_id: int | None
    mean_confidence: dict[int, float]
    _records: dict[int, ImageRecord]
    _items: dict[int, QListWidgetItem]
    #: Each listed image's row, the shown ids in list order and each one's place among them.
    _row: dict[int, int]
    _shown: list[int]
    _shown_at: dict[int, int]

    def _build_image_dock(self) -> None:
        self._row, self._shown, self._shown_at = {}, [], {}
        dock = QDockWidget("Images", self)
        dock.setObjectName("images_dock")
        w = QWidget()
        lay = QVBoxLayout(w)
        lay.setContentsMargins(4, 4, 4, 4)
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Search by name…")
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.textChanged.connect(self._apply_filter)
        self.status_filter = QComboBox()
        self.status_filter.addItem("All statuses", None)
        for s in STATUSES:
            self.status_filter.addItem(dot_icon(STATUS_COLOURS[s]), STATUS_LABELS[s], s)
        self.status_filter.currentIndexChanged.connect(self._apply_filter)
        self.sort_combo = QComboBox()
        self.sort_combo.addItem("Sort by name", SORT_NAME)
        self.sort_combo.addItem("Least confident first", SORT_UNCERTAIN)
        self.sort_combo.setToolTip(
            "Least confident first: the images whose pre-label the model was least sure of "
            "(an active-learning queue); images without a pre-label go last"
        )
        self.sort_combo.currentIndexChanged.connect(lambda _=0: self._fill_image_list())
        self.image_list = QListWidget()
        self.image_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        # Keys belong to the canvas (D/A, Space); the list is driven by mouse and shortcuts.
        self.image_list.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        # A narrow list shortens the middle of a long name, never the status and confidence at the end.
        self.image_list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.image_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.image_list.currentItemChanged.connect(self._list_current_changed)
        from . import image_set  # right click: pre-label, add, remove

        self.image_list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.image_list.customContextMenuRequested.connect(lambda pos: image_set.list_menu(self, pos))
        self.progress_label = QLabel()
        lay.addWidget(self.search_edit)
        lay.addWidget(self.status_filter)
        lay.addWidget(self.sort_combo)
        lay.addWidget(self.image_list, 1)
        lay.addWidget(self.progress_label)
        dock.setWidget(w)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)

    def _fill_image_list(self) -> None:
        """(Re)build the image list in the chosen order, keeping the current image selected."""
        if self.project is None:
            return
        recs = self.project.images()
        recs.sort(key=lambda r: (natural_key(r.path), r.id))  # images added later fall into place
        if self.sort_combo.currentData() == SORT_UNCERTAIN:
            # Active-learning queue: least confident pre-labels first; never pre-labelled last.
            recs.sort(key=lambda r: (self._mean_conf(r) is None, self._mean_conf(r) or 0.0, r.name))
        self._records = {r.id: r for r in recs}
        self._row = {r.id: i for i, r in enumerate(recs)}
        self.image_list.blockSignals(True)
        self.image_list.clear()
        self._items = {}
        for rec in self._records.values():
            item = QListWidgetItem(rec.name)
            item.setData(ROLE_ID, rec.id)
            self._items[rec.id] = item
            self._style_item(item, rec)
            self.image_list.addItem(item)
            if rec.id == self.current_id:
                self.image_list.setCurrentItem(item)
        self.image_list.blockSignals(False)
        self._apply_filter()

    def _mean_conf(self, rec: ImageRecord) -> float | None:
        v = self.mean_confidence.get(rec.id)
        return rec.mean_confidence if v is None else v

    def _style_item(self, item: QListWidgetItem, rec: ImageRecord) -> None:
        item.setIcon(dot_icon(STATUS_COLOURS.get(rec.status, QColor(128, 128, 128))))
        conf = self._mean_conf(rec)
        conf_text = "" if conf is None or rec.status not in ("prelabeled",) else f"  ·  {100 * conf:.0f} %"
        tip = f"{rec.path}\n{rec.width}x{rec.height}, {STATUS_LABELS.get(rec.status, rec.status)}"
        if conf is not None:
            tip += f"\nmean confidence of the last pre-label: {100 * conf:.1f} %"
        item.setToolTip(tip)
        item.setText(f"{rec.name}  ·  {STATUS_LABELS.get(rec.status, rec.status)}{conf_text}")

    def _item_for(self, image_id: int) -> QListWidgetItem | None:
        # By id, not by walking the list: a batch refreshes one item per result.
        return self._items.get(image_id)

    def _refresh_record(self, image_id: int) -> None:
        assert self.project is not None
        rec = self.project.image(image_id)
        self._records[image_id] = rec
        item = self._item_for(image_id)
        if item is not None:
            self._style_item(item, rec)
        self._update_progress()

    def _apply_filter(self) -> None:
        """Hide what the search text and status filter leave out; the only place that shows or hides items.

        The shown ids are kept in list order (:attr:`_shown`, with each one's position), so
        finding the next image and counting what is shown never walks the list's items: a
        pre-label result or a key press stays cheap with tens of thousands of images."""
        text = self.search_edit.text().strip().lower()
        status = self.status_filter.currentData()
        shown: list[int] = []
        for image_id, rec in self._records.items():
            ok = (not text or text in rec.name.lower()) and (status is None or rec.status == status)
            item = self._items.get(image_id)
            if item is None:  # known since the list was built (a result for an image added meanwhile)
                continue
            if item.isHidden() == ok:
                item.setHidden(not ok)
            if ok:
                shown.append(image_id)
        self._shown = shown
        self._shown_at = {image_id: i for i, image_id in enumerate(shown)}
        self._update_progress()

    def _visible_ids(self) -> list[int]:
        """The ids the list shows, in its order."""
        return list(self._shown)

    def _update_progress(self) -> None:
        recs = self._records.values()
        done = sum(r.status == "reviewed" for r in recs)
        self.progress_label.setText(f"{len(self._shown)} shown · {done}/{len(self._records)} reviewed")

    def _list_current_changed(self, item: QListWidgetItem | None) -> None:
        if item is not None and item.data(ROLE_ID) != self.current_id:
            self.show_image(int(item.data(ROLE_ID)))

    def _neighbour(self, delta: int) -> int | None:
        ids = self._shown
        if not ids:
            return None
        at = self._shown_at.get(self.current_id) if self.current_id is not None else None
        if at is not None:
            i = at + delta
            return ids[i] if 0 <= i < len(ids) else None
        # The current image was filtered out: the nearest shown one after (before) its row.
        pos = self._row.get(self.current_id, -1) if self.current_id is not None else -1
        rows = [self._row[j] for j in ids]  # ascending: the shown ids are in list order
        if delta > 0:
            k = bisect.bisect_right(rows, pos)
            return ids[k] if k < len(ids) else None
        k = bisect.bisect_left(rows, pos)
        return ids[k - 1] if k > 0 else None

    def navigate(self, delta: int) -> None:
        """Go to the next (``delta=1``) or previous (``-1``) image of the list as filtered."""
        target = self._neighbour(delta)
        if target is None:
            self.statusBar().showMessage("No more images" if delta > 0 else "This is the first image", 2000)
            return
        self.show_image(target)
