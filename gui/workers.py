"""Background decoding: the next image is read while the person works on this one.

Workers never touch widgets: a task gets plain paths, decodes them with the
Qt-free readers of ``annotation``, and reports through the signals of a
QObject that lives in the GUI thread (queued across threads). Nothing here
touches the project database, so the SQLite connection stays on one thread.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from annotation.imageio import load_image
from annotation.masks import read_mask_png

from .app_log import log_error


@dataclass(frozen=True)
class LoadRequest:
    """What to decode for one image: its file and (if it has one) its mask file."""

    image_id: int
    image_path: Path
    mask_path: Path | None


@dataclass(frozen=True)
class Decoded:
    image_id: int
    rgb: np.ndarray
    mask: np.ndarray | None

    @property
    def nbytes(self) -> int:
        return int(self.rgb.nbytes + (0 if self.mask is None else self.mask.nbytes))


def decode(req: LoadRequest) -> Decoded:
    """Read an image and its mask (raises AtrousReadError subclasses)."""
    rgb = load_image(req.image_path)
    mask = read_mask_png(req.mask_path) if req.mask_path is not None else None
    return Decoded(req.image_id, rgb, mask)


class _Signals(QObject):
    loaded = Signal(object)  # Decoded
    failed = Signal(int, str)


class _LoadTask(QRunnable):
    def __init__(self, req: LoadRequest, signals: _Signals) -> None:
        super().__init__()
        self.setAutoDelete(True)
        self.req = req
        self.signals = signals

    def run(self) -> None:
        # A worker catches its own errors and reports them; it never raises into Qt.
        try:
            result = decode(self.req)
        except Exception as e:
            self.signals.failed.emit(self.req.image_id, str(e))
            return
        self.signals.loaded.emit(result)


class ImageCache(QObject):
    """A small LRU of decoded images, filled ahead of time by a thread pool.

    Signals:
        prefetched(int): an image finished decoding in the background.
    """

    prefetched = Signal(int)

    def __init__(self, max_items: int = 4, max_bytes: int = 600 * 1024 * 1024, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: OrderedDict[int, Decoded] = OrderedDict()
        self._pending: set[int] = set()
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._signals = _Signals(self)
        self._signals.loaded.connect(self._on_loaded)
        self._signals.failed.connect(self._on_failed)
        self._closed = False
        self._logged: set[str] = set()

    def __contains__(self, image_id: int) -> bool:
        return image_id in self._items

    def get(self, req: LoadRequest) -> Decoded:
        """The decoded image, from the cache or decoded now (in this thread)."""
        hit = self._items.get(req.image_id)
        if hit is not None:
            self._items.move_to_end(req.image_id)
            return hit
        try:
            result = decode(req)
        except Exception as e:
            self._log_failure(str(e))
            raise
        self._put(result)
        return result

    def prefetch(self, req: LoadRequest) -> None:
        """Start decoding ``req`` in the background unless it is cached or on its way."""
        if self._closed or req.image_id in self._items or req.image_id in self._pending:
            return
        self._pending.add(req.image_id)
        self._pool.start(_LoadTask(req, self._signals))

    def drop(self, image_id: int) -> None:
        self._items.pop(image_id, None)

    def clear(self) -> None:
        self._items.clear()

    def shutdown(self) -> None:
        """Stop accepting work and wait for the running task (call before quitting)."""
        self._closed = True
        self._pool.clear()
        self._pool.waitForDone()

    def _put(self, item: Decoded) -> None:
        self._items[item.image_id] = item
        self._items.move_to_end(item.image_id)
        total = sum(v.nbytes for v in self._items.values())
        while len(self._items) > 1 and (len(self._items) > self.max_items or total > self.max_bytes):
            _, gone = self._items.popitem(last=False)
            total -= gone.nbytes

    def _on_loaded(self, item: Decoded) -> None:
        self._pending.discard(item.image_id)
        if self._closed:
            return
        if item.image_id not in self._items:
            self._put(item)
        self.prefetched.emit(item.image_id)

    def _on_failed(self, image_id: int, message: str) -> None:
        # A prefetch failure is not shown: opening that image will report it properly. It is logged.
        self._pending.discard(image_id)
        self._log_failure(message)

    def _log_failure(self, message: str) -> None:
        """Write an unreadable image to atrous.log (the readers' messages name the file), once each."""
        if message not in self._logged:
            self._logged.add(message)
            log_error("image", message)
