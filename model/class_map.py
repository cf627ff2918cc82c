"""Class mapping: pre-label a project with a model trained for other classes.

A model's class list (torchvision's 21 VOC classes, say) rarely is the
project's (person / car / cat). A :class:`ClassMap` says, for every model
class, which project class its pixels become, or void (255). It is built by
name (case-insensitive, spaces, ``_`` and ``-`` ignored, a few well-known
synonyms such as VOC's ``tvmonitor`` for ``tv``), optionally corrected by a
person (the app's table) or by a map file (``--map FILE``). Model classes
left over go to the project's background class or to void, as the person
chooses. Applied as a 256-entry uint8 lookup table to each predicted label
map; the confidence stays as predicted.

Map files (docs/formats.md)::

    # model class = project class      (or `void`)
    motorbike = car
    cow = void
    * = background                      (where the rest goes: background or void)

Read with the class reader's conventions: UTF-8 with or without a BOM, blank
lines and lines starting with ``#`` skipped. Model classes the file does not
name are matched by name, like the app's pre-filled table.

No torch and no Qt here: the CLI, the pre-label job and the app's dialog share it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annotation.classes import BACKGROUND_NAMES, LabelClass, read_text
from annotation.errors import AtrousError
from annotation.masks import VOID

#: Where the model classes nobody mapped go.
UNMAPPED_BACKGROUND = "background"
UNMAPPED_VOID = "void"
UNMAPPED_CHOICES = (UNMAPPED_BACKGROUND, UNMAPPED_VOID)
#: The target word for void in map files and records.
VOID_NAME = "void"
#: The left-hand side of a map file's line for "every class not named".
REST = "*"

#: Different spellings of one class (after :func:`name_key`'s folding) -> the key they share.
SYNONYMS = {
    "airplane": "aeroplane",
    "motorcycle": "motorbike",
    "tv": "tvmonitor",
    "television": "tvmonitor",
    "couch": "sofa",
}


class ClassMapError(AtrousError):
    """A class mapping that cannot be used: a malformed map file, a name neither side has, nothing mapped."""


class ClassMismatchError(AtrousError):
    """A model whose classes are not the project's, used without a class map (the app then offers one)."""


def name_key(name: str) -> str:
    """The form two class names are compared in: ``"Potted Plant"``, ``"pottedplant"`` -> ``"pottedplant"``."""
    text = str(name).strip().lower()
    if text in BACKGROUND_NAMES:
        return "background"
    key = re.sub(r"[\s_\-]+", "", text)
    return SYNONYMS.get(key, key)


def _project_key(c: LabelClass) -> str:
    return "background" if c.is_background else name_key(c.name)


def background_index(project_classes: Sequence[LabelClass]) -> int | None:
    """The project's background class (flagged, else named like one), if it has one."""
    for c in project_classes:
        if c.is_background:
            return c.index
    for c in project_classes:
        if name_key(c.name) == "background":
            return c.index
    return None


def classes_differ(model_names: Sequence[str], project_classes: Sequence[LabelClass]) -> bool:
    """True when index i does not mean the same class name for the model and the project."""
    have = dict(enumerate(model_names))
    return any(have.get(c.index) != c.name for c in project_classes)


@dataclass(frozen=True)
class ClassMap:
    """For each model class (by index) the project class index its pixels become, or 255 (void).

    ``target_names``: the same, as names (``void`` for 255), for messages and records.
    ``unmapped``: where classes nobody mapped went (``background`` or ``void``), ``rest`` its index.
    ``source``: how it was made (``by name``, ``the app's table``, a map file's path).
    """

    model_classes: tuple[str, ...]
    targets: tuple[int, ...]
    target_names: tuple[str, ...]
    unmapped: str = UNMAPPED_BACKGROUND
    rest: int = 0
    source: str = "by name"

    def lut(self) -> np.ndarray:
        """A 256-entry uint8 table: ``lut[model label] = project label``; labels past the model's are void."""
        table = np.full(256, VOID, np.uint8)
        table[: len(self.targets)] = np.asarray(self.targets, np.uint8)
        return table

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """A predicted label map in the project's classes (a new uint8 array)."""
        return self.lut()[np.asarray(labels, dtype=np.uint8)]

    @property
    def maps_void(self) -> bool:
        return VOID in self.targets

    def pairs(self) -> list[tuple[str, str]]:
        """(model class, project class or ``void``) for every model class, in model index order."""
        return list(zip(self.model_classes, self.target_names, strict=True))

    def record(self) -> dict[str, object]:
        """Plain JSON for a model version's metadata: ``{"unmapped", "source", "pairs": {model: project}}``."""
        return {"unmapped": self.unmapped, "source": self.source, "pairs": dict(self.pairs())}

    def describe(self, limit: int = 6) -> str:
        """``person -> person, cat -> cat; 18 other(s) -> background`` (the rest counted, not listed)."""
        shown = [
            f"{m} -> {t}"
            for (m, t), i in zip(self.pairs(), self.targets, strict=True)
            if i != self.rest or name_key(m) == name_key(t)
        ]
        rest = len(self.model_classes) - len(shown)
        head = ", ".join(shown[:limit]) + (f", {len(shown) - limit} more" if len(shown) > limit else "")
        return head + (f"; {rest} other(s) -> {self.unmapped}" if rest else "")


def make_class_map(
    model_names: Sequence[str],
    project_classes: Sequence[LabelClass],
    *,
    unmapped: str = UNMAPPED_BACKGROUND,
    chosen: Mapping[int, int | None] | None = None,
    source: str = "by name",
) -> ClassMap:
    """Map a model's classes onto the project's.

    ``chosen``: model index -> project index or 255 (void), or None (explicitly not
    mapped: goes where ``unmapped`` says). Every other model class is matched by name
    (:func:`name_key`); what matches nothing goes to ``unmapped``.
    """
    if unmapped not in UNMAPPED_CHOICES:
        raise ClassMapError(f"unmapped classes go to {' or '.join(UNMAPPED_CHOICES)}, not {unmapped!r}")
    if not project_classes:
        raise ClassMapError("the project has no classes to map the model's classes onto")
    by_index = {c.index: c.name for c in project_classes}
    by_key: dict[str, int] = {}
    for c in project_classes:
        by_key.setdefault(_project_key(c), c.index)
    bg = background_index(project_classes)
    if unmapped == UNMAPPED_BACKGROUND:
        if bg is None:
            raise ClassMapError(
                "the project has no background class for the unmapped model classes; send them to void instead"
            )
        rest = bg
    else:
        rest = VOID
    chosen = dict(chosen or {})
    targets: list[int] = []
    for i, name in enumerate(model_names):
        if i in chosen:
            t = rest if chosen[i] is None else int(chosen[i])
            if t != VOID and t not in by_index:
                raise ClassMapError(f"model class {name!r}: the project has no class with index {t}")
        else:
            t = by_key.get(name_key(name), rest)
        targets.append(t)
    names = tuple(VOID_NAME if t == VOID else by_index[t] for t in targets)
    return ClassMap(tuple(str(n) for n in model_names), tuple(targets), names, unmapped, rest, source)


def class_map_from_record(
    record: object, model_names: Sequence[str], project_classes: Sequence[LabelClass]
) -> ClassMap | None:
    """A :meth:`ClassMap.record` (a model version's metadata) made a map again; None when it no longer fits."""
    if not isinstance(record, dict) or not isinstance(record.get("pairs"), dict):
        return None
    pairs = {str(k): str(v) for k, v in record["pairs"].items()}
    if list(pairs) != [str(n) for n in model_names]:
        return None
    by_name = {c.name: c.index for c in project_classes}
    chosen: dict[int, int | None] = {}
    for i, target in enumerate(pairs.values()):
        if target == VOID_NAME:
            chosen[i] = VOID
        elif target in by_name:
            chosen[i] = by_name[target]
        else:
            return None  # a class renamed or removed since
    try:
        return make_class_map(
            model_names,
            project_classes,
            unmapped=str(record.get("unmapped", UNMAPPED_BACKGROUND)),
            chosen=chosen,
            source=str(record.get("source", "")),
        )
    except ClassMapError:
        return None


def recorded_class_map(
    metrics: Mapping[str, object] | None, model_names: Sequence[str], project_classes: Sequence[LabelClass], label: str
) -> ClassMap | None:
    """The class map a model version was recorded with (its ``metrics``), made again for reuse; None when it has none.

    Raises :class:`ClassMapError` when it has one that no longer fits (a class renamed or removed since,
    or another model's classes): pre-labelling without it would be refused anyway, so say why.
    """
    record = (metrics or {}).get("class_map")
    if record is None:
        return None
    cmap = class_map_from_record(record, model_names, project_classes)
    if cmap is None:
        raise ClassMapError(
            f"model version {label} was recorded with a class map that no longer fits this model and the project's "
            "classes (a class renamed or removed since?); give the map again with `--map FILE` (docs/formats.md)"
        )
    return cmap


def mapped_classes(cmap: ClassMap, project_classes: Sequence[LabelClass]) -> list[str]:
    """The model classes that land on a project class other than background and void."""
    bg = background_index(project_classes)
    return [m for m, t in zip(cmap.model_classes, cmap.targets, strict=True) if t not in (VOID, bg)]


# --------------------------------------------------------------------------- map files


@dataclass(frozen=True)
class MapLine:
    """One ``model class = project class`` line of a map file (``line``: its number, from 1)."""

    line: int
    model: str
    target: str


@dataclass(frozen=True)
class MapFile:
    """A parsed map file: its lines and where the rest goes (None: not said, background)."""

    source: str
    lines: tuple[MapLine, ...]
    unmapped: str | None = None

    def resolve(self, model_names: Sequence[str], project_classes: Sequence[LabelClass]) -> ClassMap:
        """The class map for this model and project; names either side does not have are errors naming the line."""
        model_keys: dict[str, int] = {}
        for i, n in enumerate(model_names):
            model_keys.setdefault(str(n).strip().lower(), i)
            model_keys.setdefault(name_key(n), i)
        project_keys: dict[str, int] = {}
        for c in project_classes:
            project_keys.setdefault(c.name.strip().lower(), c.index)
            project_keys.setdefault(_project_key(c), c.index)
        chosen: dict[int, int] = {}
        seen: dict[int, int] = {}
        for ml in self.lines:
            i = model_keys.get(ml.model.lower(), model_keys.get(name_key(ml.model)))
            if i is None:
                raise ClassMapError(
                    f"{self.source}: line {ml.line}: the model has no class {ml.model!r} "
                    f"(its classes: {_shown(model_names)})"
                )
            if i in seen:
                raise ClassMapError(
                    f"{self.source}: line {ml.line}: model class {model_names[i]!r} is already mapped on line {seen[i]}"
                )
            seen[i] = ml.line
            if ml.target.lower() == VOID_NAME:
                chosen[i] = VOID
                continue
            t = project_keys.get(ml.target.lower(), project_keys.get(name_key(ml.target)))
            if t is None:
                known = _shown([c.name for c in project_classes] + [VOID_NAME])
                raise ClassMapError(
                    f"{self.source}: line {ml.line}: the project has no class {ml.target!r} (its classes: {known})"
                )
            chosen[i] = t
        try:
            cmap = make_class_map(
                model_names,
                project_classes,
                unmapped=self.unmapped or UNMAPPED_BACKGROUND,
                chosen=chosen,
                source=self.source,
            )
        except ClassMapError as e:
            raise ClassMapError(f"{self.source}: {e}") from e
        if not mapped_classes(cmap, project_classes):
            raise ClassMapError(
                f"{self.source}: maps no model class onto a project class other than background and void, so every "
                "pre-label would be empty; add lines `model class = project class`"
            )
        return cmap


def _shown(names: Sequence[str], limit: int = 12) -> str:
    names = [str(n) for n in names]
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def parse_map_lines(lines: Sequence[str], source: str | os.PathLike[str]) -> MapFile:
    """Parse a map file's lines (see the module docstring); syntax errors name the line."""
    src = str(source)
    out: list[MapLine] = []
    unmapped: tuple[int, str] | None = None
    for n, raw in enumerate(lines, 1):
        text = raw.strip()
        if n == 1 and text.startswith("\ufeff"):  # a BOM that survived a decode without utf-8-sig
            text = text[1:].strip()
        if not text or text.startswith("#"):
            continue
        left, sep, right = text.partition("=")
        left, right = left.strip(), right.strip()
        if not sep or not left or not right or "=" in right:
            raise ClassMapError(
                f"{src}: line {n}: expected `model class = project class` (or `= void`), got {text[:60]!r}"
            )
        if left == REST:
            if unmapped is not None:
                raise ClassMapError(f"{src}: line {n}: `* = ...` is already given on line {unmapped[0]}")
            if right.lower() not in UNMAPPED_CHOICES:
                raise ClassMapError(f"{src}: line {n}: `* = {right}`: the unmapped classes go to background or void")
            unmapped = (n, right.lower())
            continue
        out.append(MapLine(n, left, right))
    if not out and unmapped is None:
        raise ClassMapError(
            f"{src}: maps nothing (no `model class = project class` lines; blank lines and # comments are skipped)"
        )
    return MapFile(src, tuple(out), None if unmapped is None else unmapped[1])


def read_map_file(path: str | os.PathLike[str]) -> MapFile:
    """Read and parse a map file (UTF-8, BOM allowed); the names are checked by :meth:`MapFile.resolve`."""
    path = Path(path)
    return parse_map_lines(read_text(path, "class map").splitlines(), path)


def map_file_text(cmap: ClassMap) -> str:
    """A map file that gives back ``cmap`` (every model class on its own line)."""
    lines = ["# model class = project class (or void); see docs/formats.md", f"* = {cmap.unmapped}"]
    lines += [f"{m} = {t}" for m, t in cmap.pairs()]
    return "\n".join(lines) + "\n"


__all__ = [
    "REST",
    "SYNONYMS",
    "UNMAPPED_BACKGROUND",
    "UNMAPPED_CHOICES",
    "UNMAPPED_VOID",
    "VOID_NAME",
    "ClassMap",
    "ClassMapError",
    "ClassMismatchError",
    "MapFile",
    "MapLine",
    "background_index",
    "class_map_from_record",
    "classes_differ",
    "make_class_map",
    "map_file_text",
    "mapped_classes",
    "name_key",
    "parse_map_lines",
    "read_map_file",
    "recorded_class_map",
]
