"""Tool state shared by the canvas and the main window: which tool, brush size, class, lock."""

from __future__ import annotations

from enum import Enum

from PySide6.QtCore import QObject, Signal

from annotation.editing import MIN_RADIUS, VOID

MAX_RADIUS = 500.0

#: Lock values besides a class index: paint over everything, or only over unlabelled pixels.
LOCK_NONE = "none"
LOCK_UNLABELLED = "unlabelled"


class Tool(str, Enum):
    BRUSH = "brush"
    ERASER = "eraser"
    FILL = "fill"
    POLYGON = "polygon"
    WAND = "wand"
    SUPERPIXEL = "superpixel"
    GRABCUT = "grabcut"


#: The superpixel brush's granularities, coarsest first (annotation.smart.GRANULARITIES).
GRANULARITY_NAMES = ("coarse", "medium", "fine")


class ToolSettings(QObject):
    """The current tool and its options; ``changed`` fires on any change."""

    changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._tool = Tool.BRUSH
        self._radius = 8.0
        self._class = 1
        self._erase_to_void = False
        self._lock: str | int = LOCK_NONE
        self._wand_tolerance = 24
        self._granularity = "medium"
        self._show_superpixels = False
        # What the eraser paints: the project's background class, else void; never just index 0
        # (annotation.class_edits.background_index, set from the project).
        self.background = VOID

    @property
    def tool(self) -> Tool:
        return self._tool

    @tool.setter
    def tool(self, value: Tool | str) -> None:
        value = Tool(value)
        if value != self._tool:
            self._tool = value
            self.changed.emit()

    @property
    def radius(self) -> float:
        return self._radius

    @radius.setter
    def radius(self, value: float) -> None:
        value = float(min(max(value, MIN_RADIUS), MAX_RADIUS))
        if value != self._radius:
            self._radius = value
            self.changed.emit()

    def grow(self, steps: int) -> None:
        """Change the brush size by ``steps`` notches (about 15 % each, at least 1 px)."""
        r = self._radius
        for _ in range(abs(steps)):
            r = max(r * 1.15, r + 1) if steps > 0 else min(r / 1.15, r - 1)
        self.radius = r

    @property
    def class_value(self) -> int:
        return self._class

    @class_value.setter
    def class_value(self, value: int) -> None:
        value = int(value)
        if value != self._class:
            self._class = value
            self.changed.emit()

    @property
    def erase_to_void(self) -> bool:
        return self._erase_to_void

    @erase_to_void.setter
    def erase_to_void(self, value: bool) -> None:
        if bool(value) != self._erase_to_void:
            self._erase_to_void = bool(value)
            self.changed.emit()

    @property
    def lock(self) -> str | int:
        """``LOCK_NONE``, ``LOCK_UNLABELLED`` or a class index that is the only one painted over."""
        return self._lock

    @lock.setter
    def lock(self, value: str | int) -> None:
        if value != self._lock:
            self._lock = value
            self.changed.emit()

    # ---- smart tools

    @property
    def wand_tolerance(self) -> int:
        """How far (0..255 per channel) a colour may differ from the clicked one to join the wand's region."""
        return self._wand_tolerance

    @wand_tolerance.setter
    def wand_tolerance(self, value: float) -> None:
        value = int(min(max(round(value), 0), 255))
        if value != self._wand_tolerance:
            self._wand_tolerance = value
            self.changed.emit()

    @property
    def granularity(self) -> str:
        """The superpixel brush's granularity, one of :data:`GRANULARITY_NAMES`."""
        return self._granularity

    @granularity.setter
    def granularity(self, value: str) -> None:
        if value not in GRANULARITY_NAMES:
            raise ValueError(f"granularity is one of {GRANULARITY_NAMES}, got {value!r}")
        if value != self._granularity:
            self._granularity = value
            self.changed.emit()

    def next_granularity(self) -> None:
        """coarse -> medium -> fine -> coarse."""
        i = GRANULARITY_NAMES.index(self._granularity)
        self.granularity = GRANULARITY_NAMES[(i + 1) % len(GRANULARITY_NAMES)]

    @property
    def show_superpixels(self) -> bool:
        return self._show_superpixels

    @show_superpixels.setter
    def show_superpixels(self, value: bool) -> None:
        if bool(value) != self._show_superpixels:
            self._show_superpixels = bool(value)
            self.changed.emit()

    # ---- what the tools paint

    def paint_value(self) -> int:
        """The value the current tool writes."""
        if self._tool is Tool.ERASER:
            return VOID if self._erase_to_void else self.background
        return self._class

    def only_over(self) -> set[int] | None:
        """The ``only_over`` lock for the paint ops."""
        if self._lock == LOCK_NONE:
            return None
        if self._lock == LOCK_UNLABELLED:
            return {self.background, VOID}
        return {int(self._lock)}
