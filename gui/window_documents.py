"""The main window's documents: one undoable mask per visited image, saving and autosave.

:class:`DocumentsMixin` is one part of :class:`gui.main_window.MainWindow`. It
keeps a bounded cache of one :class:`MaskDocumentModel` per visited image (so
undo history survives switching images), shows an image with its mask, and
holds the autosave policy: the current mask is written when switching images,
two seconds after the last edit, when marking reviewed and on close. Every
write goes through ``Project.save_mask`` (atomic PNG, then one DB transaction).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel

from annotation.errors import AtrousError
from annotation.project import ImageRecord, Project

from . import dialogs
from .canvas import Canvas
from .document import MaskDocumentModel
from .prelabel import PrelabelController
from .workers import ImageCache, LoadRequest

#: Keep visited images' documents (mask + baseline + undo) up to this much memory.
DOC_CACHE_BYTES = 512 * 1024 * 1024


class DocumentsMixin:
    """Per-image documents, switching images, saving and undo of the main window (mixed into a QMainWindow).

    Uses the window's ``project``, ``canvas``, ``cache``, ``prelabel`` (its claims),
    the image list's records and the status bar's save label."""

    project: Project | None
    canvas: Canvas
    cache: ImageCache
    prelabel: PrelabelController
    docs: OrderedDict[int, MaskDocumentModel]
    current_id: int | None
    autosave_timer: QTimer
    last_save_error: str | None
    lbl_save: QLabel
    _records: dict[int, ImageRecord]

    @property
    def current_model(self) -> MaskDocumentModel | None:
        return None if self.current_id is None else self.docs.get(self.current_id)

    def _request(self, image_id: int) -> LoadRequest:
        assert self.project is not None
        rec = self._records.get(image_id) or self.project.image(image_id)
        return LoadRequest(
            image_id, self.project.image_path(rec), self.project.mask_path(image_id) if rec.has_mask else None
        )

    def show_image(self, image_id: int) -> bool:
        """Switch to ``image_id`` (saving the current mask first). False if it could not be shown."""
        if self.project is None:
            return False
        if image_id == self.current_id:
            return True
        self.canvas._finish_interaction()
        if not self.save_current():
            dialogs.show_error(
                self,
                "Could not save",
                f"The current mask could not be saved:\n{self.last_save_error}\n\n"
                "Staying on this image so no edit is lost.",
            )
            return False
        try:
            decoded = self.cache.get(self._request(image_id))
        except AtrousError as e:
            dialogs.show_error(self, "Cannot open image", str(e))
            return False
        model = self.docs.get(image_id)
        if model is None:
            h, w = decoded.rgb.shape[:2]
            mask = decoded.mask if decoded.mask is not None else np.full((h, w), self._background(), np.uint8)
            if mask.shape != (h, w):
                dialogs.show_error(
                    self,
                    "Mask does not fit",
                    f"The stored mask is {mask.shape[1]}x{mask.shape[0]}, "
                    f"the image {w}x{h}; starting from an empty mask.",
                )
                mask = np.full((h, w), self._background(), np.uint8)
            # Claim first: from now on a running batch hands this image's pre-label to us
            # instead of writing it; and re-read the mask, which it may have just written.
            self.prelabel.claims.claim(image_id)
            if self.prelabel.running:
                try:
                    fresh = self.project.read_mask(image_id)
                except AtrousError:
                    fresh = None
                if fresh is not None and fresh.shape == (h, w):
                    mask = fresh
                self._records[image_id] = self.project.image(image_id)
            model = MaskDocumentModel(image_id, mask, parent=self)
            model.dirtyChanged.connect(self._on_dirty)
            model.stepFinished.connect(self._on_step)
            model.changed.connect(self._on_changed)
            self.docs[image_id] = model
        self.docs.move_to_end(image_id)
        self.current_id = image_id
        self.canvas.set_content(decoded.rgb, model, self.palette(), self._background())
        self.canvas.set_confidence(self.confidence_map(image_id))
        self._update_confidence_info()
        self._evict_docs()
        item = self._item_for(image_id)
        if item is not None:
            self.image_list.blockSignals(True)
            self.image_list.setCurrentItem(item)
            self.image_list.blockSignals(False)
            self.image_list.scrollToItem(item)
        self._update_shares()
        self._update_status()
        self.canvas.setFocus()
        nxt = self._neighbour(1)
        if nxt is not None:
            self.cache.prefetch(self._request(nxt))
        return True

    def _evict_docs(self) -> None:
        total = sum(m.nbytes() for m in self.docs.values())
        for image_id in list(self.docs):
            if total <= DOC_CACHE_BYTES:
                break
            m = self.docs[image_id]
            if image_id == self.current_id or m.dirty:
                continue
            total -= m.nbytes()
            self._drop_document(image_id)

    def _drop_document(self, image_id: int) -> None:
        """Forget an image's document (its undo history), its claim and its decoded copy."""
        m = self.docs.pop(image_id, None)
        if m is not None:
            m.deleteLater()
        self.prelabel.claims.release(image_id)
        self.cache.drop(image_id)

    def _on_changed(self, _box: object) -> None:
        self.autosave_timer.start()

    def _on_step(self) -> None:
        self._update_shares()
        self._update_status()

    def _on_dirty(self, _dirty: bool) -> None:
        self._update_status()

    # ================================================================ saving

    def save_current(self, status: str = "edited", *, force: bool = False) -> bool:
        """Write the current mask if it has unsaved edits (or ``force``); True when nothing is left unsaved."""
        model = self.current_model
        if self.project is None or model is None:
            return True
        if model.in_stroke:  # never save half a stroke; the release will arm the timer again
            self.autosave_timer.start()
            return not model.dirty
        if not (model.dirty or force):
            return True
        pixels, seconds = model.take_provenance()
        try:
            self.project.save_mask(
                model.image_id,
                model.label_map,
                status=status,
                changed_pixels=pixels,
                edit_seconds=seconds,
                source="editor",
            )
        except (AtrousError, OSError) as e:
            self.last_save_error = str(e)
            self.lbl_save.setText("⚠ save failed")
            self.statusBar().showMessage(f"Saving failed: {e}", 8000)
            return False
        self.last_save_error = None
        self.autosave_timer.stop()
        model.mark_saved()
        self.cache.drop(model.image_id)
        self._refresh_record(model.image_id)
        self._update_status()
        return True

    def _autosave(self) -> None:
        self.save_current()

    def mark_reviewed(self) -> None:
        """Save, set the status to reviewed and go to the next image (Space or R)."""
        model = self.current_model
        if self.project is None or model is None or self.current_id is None:
            return
        self.canvas._finish_interaction()
        rec = self._records[self.current_id]
        nxt = self._neighbour(1)
        if model.dirty or not rec.has_mask:
            if not self.save_current("reviewed", force=True):
                dialogs.show_error(self, "Could not save", str(self.last_save_error))
                return
        else:
            try:
                self.project.set_status(self.current_id, "reviewed")
            except AtrousError as e:
                dialogs.show_error(self, "Could not mark reviewed", str(e))
                return
            self._refresh_record(self.current_id)
        self._apply_filter()
        if nxt is not None:
            self.show_image(nxt)
        else:
            self.statusBar().showMessage("Reviewed — that was the last image", 3000)

    def undo(self) -> None:
        m = self.current_model
        if m is not None and m.undo() is None:
            self.statusBar().showMessage("Nothing to undo", 1500)

    def redo(self) -> None:
        m = self.current_model
        if m is not None and m.redo() is None:
            self.statusBar().showMessage("Nothing to redo", 1500)
