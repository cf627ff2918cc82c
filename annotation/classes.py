"""Label classes and the one reader of class lists.

Every ``--classes FILE``, every importer and the app read class lists here, so a
labelme ``labels.txt`` (first line ``__ignore__``), a file saved with a UTF-8 BOM
or a list with a repeated name means the same thing everywhere.

Rules: one name per line, line number = index. A first line ``__ignore__``
(labelme's id -1) means void (255) and the next line is index 0. Placeholders
``__unused_N__`` (written by our exports for unused indices) are skipped.
``classes.json`` (our exports, the sample project) gives index, name, colour and
the background flag explicitly.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import AtrousError, AtrousReadError
from .masks import VOID, make_palette

#: Names that mark the background class in class lists (case-insensitive).
BACKGROUND_NAMES = ("_background_", "background", "__background__")
#: labelme's name for regions to ignore; becomes void (255).
IGNORE_NAME = "__ignore__"
#: Placeholder written in labels.txt for unused indices; skipped when read back.
UNUSED_PATTERN = re.compile(r"^__unused_\d+__$")


@dataclass(frozen=True)
class LabelClass:
    """One label class: its index in the masks, name, display colour and background flag."""

    index: int
    name: str
    colour: tuple[int, int, int]
    is_background: bool = False


def default_colour(index: int) -> tuple[int, int, int]:
    """The VOC colour for a class index (the default when a class list gives none)."""
    c = make_palette()[index]
    return (int(c[0]), int(c[1]), int(c[2]))


def make_class(index: int, name: str) -> LabelClass:
    """A class with the default colour; background-like names get the background flag."""
    return LabelClass(index, name, default_colour(index), name.lower() in BACKGROUND_NAMES)


def validate_classes(classes: Sequence[LabelClass]) -> list[LabelClass]:
    """Check a class list: indices 0..254, unique indices and names, at most one background."""
    seen_idx: set[int] = set()
    seen_name: set[str] = set()
    n_bg = 0
    for c in classes:
        if not isinstance(c.index, int) or not 0 <= c.index < VOID:
            raise AtrousError(f"class {c.name!r}: index {c.index} is outside 0..254 (255 is void)")
        if c.index in seen_idx:
            raise AtrousError(f"class index {c.index} is used twice")
        if not c.name or c.name in seen_name:
            raise AtrousError(f"class name {c.name!r} is empty or used twice")
        if len(c.colour) != 3 or any(not isinstance(v, int) or not 0 <= v <= 255 for v in c.colour):
            raise AtrousError(f"class {c.name!r}: colour {tuple(c.colour)} is not three values in 0..255")
        seen_idx.add(c.index)
        seen_name.add(c.name)
        n_bg += bool(c.is_background)
    if n_bg > 1:
        raise AtrousError("at most one class can be the background class")
    return sorted(classes, key=lambda c: c.index)


def read_json(path: str | os.PathLike[str]) -> object:
    """Load a JSON file with clear messages for unreadable, non-UTF-8 or truncated content."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AtrousReadError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise AtrousReadError(f"{path}: not UTF-8 text (bad byte at offset {e.start})") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise AtrousReadError(
            f"{path}: invalid or truncated JSON ({e.msg} at line {e.lineno}, column {e.colno})"
        ) from e
    except RecursionError as e:  # [[[[... nested past the parser's stack
        raise AtrousReadError(f"{path}: JSON nested too deeply to read") from e
    except ValueError as e:  # an integer longer than Python's digit limit for str -> int
        raise AtrousReadError(f"{path}: unreadable JSON ({str(e).split(';')[0]})") from e


def parse_class_lines(lines: Sequence[str], source: Path | str) -> tuple[list[LabelClass], set[str]]:
    """Parse a class list (see the module docstring); returns the classes and the names that mean void."""
    names = [ln.strip() for ln in lines]
    if names and names[0].startswith("\ufeff"):  # a BOM that survived a decode without utf-8-sig
        names[0] = names[0][1:].strip()
    while names and not names[-1]:
        names.pop()
    void: set[str] = set()
    if names and names[0] == IGNORE_NAME:
        void.add(IGNORE_NAME)
        names = names[1:]
    classes: list[LabelClass] = []
    has_bg = False
    for i, name in enumerate(names):
        if not name:
            raise AtrousReadError(f"{source}: line {i + 1 + len(void)} is empty (one class name per line)")
        if UNUSED_PATTERN.match(name):
            continue
        if name == IGNORE_NAME:
            void.add(name)
            continue
        if i >= VOID:
            raise AtrousReadError(f"{source}: {len(names)} classes; at most 255 fit (indices 0..254, 255 is void)")
        c = make_class(i, name)
        if c.is_background:
            if has_bg:
                c = LabelClass(c.index, c.name, c.colour, False)
            has_bg = True
        classes.append(c)
    seen: dict[str, int] = {}
    for c in classes:
        if c.name in seen:
            raise AtrousReadError(
                f"{source}: class name {c.name!r} appears twice (indices {seen[c.name]} and {c.index}); "
                "each index needs its own name"
            )
        seen[c.name] = c.index
    return classes, void


def _classes_from_json(data: object, path: Path) -> list[LabelClass]:
    expected = "expected a list of {index, name, colour, background}"
    try:
        classes = []
        for k, c in enumerate(data):
            colour = c.get("colour")
            index = int(c["index"])
            if colour is not None and (not isinstance(colour, (list, tuple)) or len(colour) != 3):
                raise AtrousReadError(
                    f"{path}: entry {k} ({c.get('name')!r}): colour {colour!r} is not three values [r, g, b]"
                )
            rgb = default_colour(index) if colour is None else (int(colour[0]), int(colour[1]), int(colour[2]))
            background = bool(c.get("background", c.get("is_background", False)))
            classes.append(LabelClass(index, str(c["name"]), rgb, background))
    except KeyError as e:
        raise AtrousReadError(f"{path}: {expected}; an entry has no {e}") from e
    except (TypeError, ValueError, AttributeError) as e:
        raise AtrousReadError(f"{path}: {expected}; {e}") from e
    try:
        return validate_classes(classes)
    except AtrousError as e:
        raise AtrousReadError(f"{path}: {e}") from e


def read_class_file(path: str | os.PathLike[str]) -> tuple[list[LabelClass], set[str]]:
    """Read a class list file (a text list, or ``classes.json``); returns the classes and the void names."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return _classes_from_json(read_json(path), path), set()
    return parse_class_lines(read_text(path, "class list").splitlines(), path)


def read_text(path: Path, what: str) -> str:
    """A small text file the person wrote (UTF-8, a BOM allowed), or one clear error naming ``what`` it is."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise AtrousReadError(f"{path}: cannot read the {what} ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise AtrousReadError(f"{path}: the {what} is not UTF-8 text (bad byte at offset {e.start})") from e


def names_by_index(classes: Sequence[LabelClass]) -> list[str]:
    """Class names in index order 0..max, ``__unused_N__`` where an index has no class."""
    by_index = {c.index: c.name for c in classes}
    n = max(by_index, default=-1) + 1
    return [by_index.get(i, f"__unused_{i}__") for i in range(n)]


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """The names of a class file by index, for naming a model's outputs (``--classes FILE``)."""
    classes, _ = read_class_file(path)
    if not classes:
        raise AtrousReadError(f"{path}: the class list is empty (one class name per line)")
    return names_by_index(classes)


def classes_json(classes: Sequence[LabelClass]) -> bytes:
    """The exact class list as JSON (index, name, colour, background), for lossless re-import."""
    return json.dumps(
        [{"index": c.index, "name": c.name, "colour": list(c.colour), "background": c.is_background} for c in classes],
        indent=1,
    ).encode("utf-8")


def labels_txt(classes: Sequence[LabelClass]) -> bytes:
    """One class name per line, line number = index (unused indices get a placeholder)."""
    return ("\n".join(names_by_index(classes)) + "\n").encode("utf-8")
