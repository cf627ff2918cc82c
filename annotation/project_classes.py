"""The project's class list: read, replace, add, rename, recolour, and its palette.

A mixin of :class:`annotation.project.Project` (it uses the project's ``_query`` and
``_tx``). Changing what the masks' indices mean (delete, merge, reorder) is
:mod:`annotation.class_edits`; these methods never touch a mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .classes import LabelClass, default_colour, validate_classes
from .errors import AtrousError
from .masks import VOID, make_palette


class ProjectClassesMixin:
    """Class-list methods of :class:`~annotation.project.Project`."""

    def classes(self) -> list[LabelClass]:
        """The label classes, by index."""
        return [
            LabelClass(int(i), n, (int(r), int(g), int(b)), bool(bg))
            for i, n, r, g, b, bg in self._query("SELECT idx, name, r, g, b, is_background FROM classes ORDER BY idx")
        ]

    def set_classes(self, classes: Sequence[LabelClass]) -> None:
        """Replace the whole class list (masks are not changed)."""
        classes = validate_classes(list(classes))
        with self._tx() as cur:
            cur.execute("DELETE FROM classes")
            cur.executemany(
                "INSERT INTO classes VALUES (?,?,?,?,?,?)",
                [(c.index, c.name, *c.colour, int(c.is_background)) for c in classes],
            )

    def add_class(
        self,
        name: str,
        colour: tuple[int, int, int] | None = None,
        index: int | None = None,
        is_background: bool = False,
    ) -> LabelClass:
        """Add a class (at the first free index unless ``index`` is given)."""
        current = self.classes()
        used = {c.index for c in current}
        if index is None:
            index = next((i for i in range(VOID) if i not in used), None)
            if index is None:
                raise AtrousError("no free class index left (0..254)")
        new = LabelClass(index, name, colour or default_colour(index), is_background)
        self.set_classes([*current, new])
        return new

    def rename_class(self, index: int, name: str) -> None:
        """Give class ``index`` a new name."""
        self.set_classes(
            [
                LabelClass(c.index, name, c.colour, c.is_background) if c.index == index else c
                for c in self._class_or_fail(index)
            ]
        )

    def recolour_class(self, index: int, colour: tuple[int, int, int]) -> None:
        """Give class ``index`` a new display colour."""
        self.set_classes(
            [
                LabelClass(c.index, c.name, tuple(colour), c.is_background) if c.index == index else c
                for c in self._class_or_fail(index)
            ]
        )

    def _class_or_fail(self, index: int) -> list[LabelClass]:
        current = self.classes()
        if index not in {c.index for c in current}:
            raise AtrousError(f"no class with index {index}")
        return current

    def palette(self) -> np.ndarray:
        """The (256, 3) uint8 palette: class colours, VOC colours elsewhere, 255 = void colour."""
        pal = make_palette()
        for c in self.classes():
            pal[c.index] = c.colour
        return pal
