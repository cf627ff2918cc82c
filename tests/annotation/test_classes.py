"""The one class-list reader: labelme's __ignore__, a BOM, duplicates, classes.json, names by index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from annotation.classes import LabelClass, names_by_index, read_class_file, read_class_names
from annotation.errors import AtrousReadError


def test_labelme_ignore_line_is_void_and_the_next_line_is_index_0(tmp_path: Path) -> None:
    f = tmp_path / "labels.txt"
    f.write_text("__ignore__\n_background_\ncat\ndog\n")
    classes, void = read_class_file(f)
    assert [(c.index, c.name) for c in classes] == [(0, "_background_"), (1, "cat"), (2, "dog")]
    assert void == {"__ignore__"} and classes[0].is_background
    assert read_class_names(f) == ["_background_", "cat", "dog"]


def test_a_bom_is_not_part_of_the_first_name(tmp_path: Path) -> None:
    f = tmp_path / "labels.txt"
    f.write_bytes("\ufeffbackground\nroad\n".encode())
    assert read_class_names(f) == ["background", "road"]
    g = tmp_path / "ignore.txt"
    g.write_bytes("\ufeff__ignore__\nsky\n".encode())
    assert read_class_names(g) == ["sky"]


def test_duplicates_name_both_indices(tmp_path: Path) -> None:
    f = tmp_path / "labels.txt"
    f.write_text("a\nb\na\n")
    with pytest.raises(AtrousReadError, match=r"'a' appears twice \(indices 0 and 2\)"):
        read_class_file(f)


def test_unused_placeholders_keep_indices(tmp_path: Path) -> None:
    f = tmp_path / "labels.txt"
    f.write_text("bg\n__unused_1__\ncar\n")
    assert read_class_names(f) == ["bg", "__unused_1__", "car"]
    assert names_by_index([LabelClass(2, "x", (0, 0, 0))]) == ["__unused_0__", "__unused_1__", "x"]


def test_classes_json_in_both_spellings(tmp_path: Path) -> None:
    f = tmp_path / "classes.json"
    f.write_text(
        json.dumps(
            [
                {"index": 0, "name": "background", "colour": [0, 0, 0], "is_background": True},  # the sample project's
                {"index": 1, "name": "cat", "colour": [1, 2, 3], "background": False},  # our exports'
            ]
        )
    )
    classes, _ = read_class_file(f)
    assert classes == [LabelClass(0, "background", (0, 0, 0), True), LabelClass(1, "cat", (1, 2, 3), False)]
    f.write_text(json.dumps([{"index": 0, "name": "a"}, {"index": 0, "name": "b"}]))
    with pytest.raises(AtrousReadError, match="index 0 is used twice"):
        read_class_file(f)


def test_an_empty_list_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "labels.txt"
    f.write_text("\n\n")
    with pytest.raises(AtrousReadError, match="empty"):
        read_class_names(f)
