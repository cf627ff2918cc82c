"""What the main window's parts share: status colours, list roles, sort keys and small icons.

The window is composed of mixins (``window_images``, ``window_classes``,
``window_documents``, ``window_model``); the names several of them use live here
so that no mixin imports another.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap

SORT_NAME = "name"
SORT_UNCERTAIN = "uncertain"

STATUS_LABELS = {"new": "new", "prelabeled": "pre-labelled", "edited": "edited", "reviewed": "reviewed"}
STATUS_COLOURS = {
    "new": QColor(150, 150, 150),
    "prelabeled": QColor(70, 130, 230),
    "edited": QColor(240, 160, 40),
    "reviewed": QColor(60, 180, 75),
}
VOID_COLOUR = (224, 224, 192)
#: The item data role holding an image id (image list) or a class index (class tree).
ROLE_ID = Qt.ItemDataRole.UserRole


def dot_icon(colour: QColor, size: int = 12) -> QIcon:
    """A filled circle, the status mark of the image list."""
    pm = QPixmap(size, size)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setBrush(colour)
    p.setPen(colour.darker(150))
    p.drawEllipse(1, 1, size - 2, size - 2)
    p.end()
    return QIcon(pm)


def swatch_icon(rgb: tuple[int, int, int], size: int = 14) -> QIcon:
    """A framed square of one colour, a class's swatch in the class tree."""
    pm = QPixmap(size, size)
    pm.fill(QColor(*rgb))
    p = QPainter(pm)
    p.setPen(QColor(0, 0, 0))
    p.drawRect(0, 0, size - 1, size - 1)
    p.end()
    return QIcon(pm)
