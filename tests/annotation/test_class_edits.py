"""Class edits: add, delete, merge, reorder and background, applied all or nothing to every mask."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotation import class_edits, class_undo
from annotation.class_edits import (
    PENDING_KEY,
    add_classes,
    apply_class_edit,
    background_index,
    delete_class,
    impact,
    models_still_match,
    move_class,
    remap_document,
    set_background,
)
from annotation.class_undo import last_record, undo_class_edit
from annotation.classes import read_class_file
from annotation.editing import MaskDocument
from annotation.errors import AtrousError, AtrousReadError, AtrousWriteError
from annotation.layout import prelabel_path
from annotation.masks import VOID, read_mask_png, write_mask_png
from annotation.project import LabelClass, Project

CLASSES = [
    LabelClass(0, "background", (0, 0, 0), True),
    LabelClass(1, "cat", (200, 0, 0)),
    LabelClass(2, "dog", (0, 200, 0)),
    LabelClass(3, "bird", (0, 0, 200)),
]
H, W = 8, 12


def _mask(seed: int) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[:, 3:6] = 1
    m[:, 6:9] = 2
    m[:, 9:] = 3
    m[0, 0] = VOID
    if seed == 1:
        m[m == 2] = 0  # no dog here
    return m


@pytest.fixture
def proj(tmp_path: Path) -> Project:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(images / f"i{i}.png")
    p = Project.create(tmp_path / "p", CLASSES)
    p.add_images(images)
    ids = [r.id for r in p.images()]
    p.save_mask(ids[0], _mask(0), status="reviewed")
    p.save_mask(ids[1], _mask(1), status="prelabeled", model_version=None)
    write_mask_png(prelabel_path(p.root, ids[1]), _mask(1))
    yield p
    p.close()


def _disk(p: Project, image_id: int) -> np.ndarray:
    return read_mask_png(p.mask_path(image_id))


def test_background_is_the_flagged_class_or_void() -> None:
    assert background_index(CLASSES) == 0
    renamed = [LabelClass(0, "Sky", (1, 2, 3)), *CLASSES[1:]]
    assert background_index(renamed) == VOID
    edit = set_background(renamed, 0)
    assert background_index(edit.classes) == 0 and not edit.remaps
    assert background_index(set_background(CLASSES, None).classes) == VOID
    with pytest.raises(AtrousError, match="no class with index 9"):
        set_background(CLASSES, 9)


def test_add_several_and_clear_errors() -> None:
    edit = add_classes(CLASSES, ["sky", " road ", "", "car"])
    assert [(c.index, c.name) for c in edit.classes[4:]] == [(4, "sky"), (5, "road"), (6, "car")]
    assert not edit.remaps
    with pytest.raises(AtrousError, match="twice in the list: road"):
        add_classes(CLASSES, ["road", "x", "road"])
    with pytest.raises(AtrousError, match="already classes of this project: cat"):
        add_classes(CLASSES, ["cat"])
    with pytest.raises(AtrousError, match="make 304; a project holds at most 255"):
        add_classes(CLASSES, [f"c{i}" for i in range(300)])
    # a background-like name is the background only when there is none
    no_bg = [LabelClass(0, "Sky", (1, 2, 3))]
    assert background_index(add_classes(no_bg, ["background"]).classes) == 1
    assert background_index(add_classes(CLASSES, ["_background_"]).classes) == 0


def test_class_file_of_300_or_duplicates_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "labels.txt"
    big.write_text("\n".join(f"c{i}" for i in range(300)) + "\n")
    with pytest.raises(AtrousReadError, match="300 classes"):
        read_class_file(big)
    dup = tmp_path / "dup.txt"
    dup.write_text("__ignore__\nbg\ncar\ncar\n")
    with pytest.raises(AtrousReadError, match="'car' appears twice"):
        read_class_file(dup)


def test_delete_merge_move_luts() -> None:
    d = delete_class(CLASSES, 1, VOID)
    assert [(c.index, c.name) for c in d.classes] == [(0, "background"), (1, "dog"), (2, "bird")]
    assert d.lut[1] == VOID and d.lut[2] == 1 and d.lut[3] == 2 and d.lut[VOID] == VOID
    assert not models_still_match(CLASSES, d)
    m = delete_class(CLASSES, 1, 3)  # merge cat into bird
    assert m.lut[1] == 2 and m.lut[3] == 2 and "merge cat into bird" in m.description
    last = delete_class(CLASSES, 3, 0)
    assert models_still_match(CLASSES, last) and last.lut[3] == 0
    mv = move_class(CLASSES, 2, -1)
    assert [c.name for c in mv.classes] == ["background", "dog", "cat", "bird"]
    assert mv.lut[1] == 2 and mv.lut[2] == 1
    with pytest.raises(AtrousError, match="already first"):
        move_class(CLASSES, 0, -1)
    with pytest.raises(AtrousError, match="into itself"):
        delete_class(CLASSES, 2, 2)


def test_delete_rewrites_every_mask_and_prelabel_copy(proj: Project) -> None:
    ids = [r.id for r in proj.images()]
    edit = delete_class(proj.classes(), 2, 0)  # dog -> background
    imp = impact(proj, edit)
    # image 0 has 24 dog pixels; image 1 none, but its birds move from 3 to 2
    assert (imp.images, imp.pixels, imp.masks_rewritten, imp.prelabels_rewritten) == (1, 24, 2, 1)
    statuses = [r.status for r in proj.images()]
    res = apply_class_edit(proj, edit)
    assert sorted(res.changed_ids) == ids[:2]
    want0 = edit.lut[_mask(0)]
    assert (_disk(proj, ids[0]) == want0).all() and (want0[:, 6:9] == 0).all() and (want0[:, 9:] == 2).all()
    assert (_disk(proj, ids[1]) == edit.lut[_mask(1)]).all()
    # the kept pre-label went through the same LUT: no correction appears
    assert (read_mask_png(prelabel_path(proj.root, ids[1])) == _disk(proj, ids[1])).all()
    assert [c.name for c in proj.classes()] == ["background", "cat", "bird"]
    assert [r.status for r in proj.images()] == statuses
    assert proj.last_edits(1)[0].source.startswith("classes: delete dog")
    assert not any(p.name.startswith(".class-edit-") for p in proj.root.iterdir())
    assert not proj._query("SELECT value FROM meta WHERE key=?", (PENDING_KEY,))


def test_failure_before_commit_changes_nothing(proj: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [r.id for r in proj.images()]
    before = {i: _disk(proj, i) for i in ids[:2]}
    real = class_edits.write_mask_png
    calls = []

    def failing(path, mask, pal=None):
        calls.append(path)
        if len(calls) == 2:
            raise AtrousWriteError("disk full (injected)")
        real(path, mask, pal)

    monkeypatch.setattr(class_edits, "write_mask_png", failing)
    with pytest.raises(AtrousWriteError, match="injected"):
        apply_class_edit(proj, move_class(proj.classes(), 1, 1))
    assert [c.name for c in proj.classes()] == [c.name for c in CLASSES]
    for i, m in before.items():
        assert (_disk(proj, i) == m).all()
    assert not any(p.name.startswith(".class-edit-") for p in proj.root.iterdir())


def test_crash_after_commit_is_finished_on_open(proj: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [r.id for r in proj.images()]
    edit = move_class(proj.classes(), 1, 1)  # cat <-> dog
    want = {i: edit.lut[_disk(proj, i)] for i in ids[:2]}
    real = class_edits._move
    moved = []

    def crash(src, dst):
        if len(moved) == 1:
            raise KeyboardInterrupt  # the process dies between two moves
        moved.append(dst)
        real(src, dst)

    monkeypatch.setattr(class_edits, "_move", crash)
    with pytest.raises(KeyboardInterrupt):
        apply_class_edit(proj, edit)
    monkeypatch.setattr(class_edits, "_move", real)
    # half moved: the index says the edit is committed and pending
    assert proj._query("SELECT value FROM meta WHERE key=?", (PENDING_KEY,))
    proj.close()
    with Project.open(proj.root) as again:
        assert [c.name for c in again.classes()] == ["background", "dog", "cat", "bird"]
        for i, m in want.items():
            assert (_disk(again, i) == m).all()
        assert (read_mask_png(prelabel_path(again.root, ids[1])) == want[ids[1]]).all()
        assert not again._query("SELECT value FROM meta WHERE key=?", (PENDING_KEY,))
    assert not any(p.name.startswith(".class-edit-") for p in proj.root.iterdir())


def test_staging_left_by_a_dead_process_is_removed_on_open(proj: Project) -> None:
    stale = proj.root / ".class-edit-999999999-1"
    (stale / "masks").mkdir(parents=True)
    (stale / "masks" / "1.png").write_bytes(b"junk")
    before = _disk(proj, proj.images()[0].id)
    proj.close()
    with Project.open(proj.root) as again:
        assert (_disk(again, again.images()[0].id) == before).all()
    assert not stale.exists()


def test_identity_edit_only_changes_the_list(proj: Project) -> None:
    stamp = proj.mask_path(proj.images()[0].id).stat().st_mtime_ns
    res = apply_class_edit(proj, add_classes(proj.classes(), ["sky"]))
    assert res.changed_ids == [] and proj.classes()[-1].name == "sky"
    assert proj.mask_path(proj.images()[0].id).stat().st_mtime_ns == stamp


def test_remap_document_keeps_history_meaningful() -> None:
    doc = MaskDocument(_mask(0))
    with doc.stroke():
        doc.brush_segment(1, 1, 1, 1, 1.5, 2)  # paint dog over background and cat
    painted = doc.label_map.copy()
    doc.mark_clean()  # the editor saves before a class edit
    edit = move_class(CLASSES, 1, 1)  # cat <-> dog
    remap_document(doc, edit.lut)
    assert (doc.label_map == edit.lut[painted]).all()
    assert not doc.dirty
    doc.undo()  # the stroke is undone in the new indices: the original, remapped
    assert (doc.label_map == edit.lut[_mask(0)]).all()
    doc.redo()
    assert (doc.label_map == edit.lut[painted]).all()
    assert doc.changed_pixels == int(np.count_nonzero(edit.lut[painted] != edit.lut[_mask(0)]))
    doc.begin_stroke()
    with pytest.raises(AtrousError, match="finish the stroke"):
        remap_document(doc, edit.lut)


def test_staging_of_a_running_process_is_left_alone(proj: Project) -> None:
    live = proj.root / f".class-edit-{os.getpid()}-1"
    live.mkdir()
    proj.close()
    Project.open(proj.root).close()
    assert live.is_dir()  # another window of this process may be preparing it


# ---------------------------------------------------------------- undoing the last class change


def _snapshot(p: Project) -> dict[str, bytes]:
    """Every mask and kept pre-label file, byte for byte."""
    out = {}
    for sub in ("masks", "prelabels"):
        folder = p.root / sub
        if folder.is_dir():
            out.update({f"{sub}/{f.name}": f.read_bytes() for f in folder.iterdir() if f.suffix == ".png"})
    return out


def _no_leftovers(p: Project) -> bool:
    return not any(f.name.startswith((".class-edit-", ".class-undo-")) for f in p.root.iterdir())


@pytest.mark.parametrize(
    "make",
    [
        lambda cl: delete_class(cl, 2, 0),  # dog -> background, bird moves up
        lambda cl: delete_class(cl, 1, 3),  # merge cat into bird
        lambda cl: move_class(cl, 1, 1),  # cat <-> dog
    ],
    ids=["delete", "merge", "reorder"],
)
def test_undo_restores_masks_byte_for_byte_and_the_classes(proj: Project, make) -> None:
    before_files, before_classes = _snapshot(proj), proj.classes()
    edit = make(before_classes)
    res = apply_class_edit(proj, edit)
    assert _snapshot(proj) != before_files and res.changed_ids
    assert last_record(proj).description == edit.description
    undone = undo_class_edit(proj)
    assert proj.classes() == before_classes
    assert _snapshot(proj) == before_files  # byte for byte, pre-labels too
    assert sorted(undone.changed_ids) == sorted(res.changed_ids)
    # the inverse LUT carries every surviving class back to its old index
    for c in edit.classes:
        assert undone.lut[c.index] == next(o.index for o in before_classes if o.name == c.name)
    assert proj.last_edits(1)[0].source.startswith("classes: undo ")
    assert last_record(proj) is None and _no_leftovers(proj)
    with pytest.raises(AtrousError, match="no class change to undo"):
        undo_class_edit(proj)


def test_the_next_edit_replaces_the_undo_record(proj: Project) -> None:
    first = _snapshot(proj)
    apply_class_edit(proj, move_class(proj.classes(), 1, 1))
    after_move, classes_after_move = _snapshot(proj), proj.classes()
    apply_class_edit(proj, delete_class(proj.classes(), 3, 0))
    assert len([f for f in proj.root.iterdir() if f.name.startswith(".class-undo-")]) == 1
    undo_class_edit(proj)  # undoes the delete only
    assert proj.classes() == classes_after_move and _snapshot(proj) == after_move != first
    with pytest.raises(AtrousError, match="no class change to undo"):
        undo_class_edit(proj)


def test_undo_of_an_add_is_refused_while_the_new_class_is_painted(proj: Project) -> None:
    old = proj.classes()
    apply_class_edit(proj, add_classes(old, ["sky"]))
    image_id = proj.images()[2].id
    proj.save_mask(image_id, np.full((H, W), 4, np.uint8))
    with pytest.raises(AtrousError, match=r"1 image\(s\) were changed after it \(i2.png\)"):
        undo_class_edit(proj)
    assert [c.name for c in proj.classes()][-1] == "sky"
    proj.save_mask(image_id, np.zeros((H, W), np.uint8))
    undo_class_edit(proj)
    assert proj.classes() == old


def test_undo_is_refused_when_a_mask_changed_since(proj: Project) -> None:
    ids = [r.id for r in proj.images()]
    edit = delete_class(proj.classes(), 2, 0)
    apply_class_edit(proj, edit)
    after, classes_after = _snapshot(proj), proj.classes()
    left = _disk(proj, ids[0])
    painted = left.copy()
    painted[2, 2] = 1
    proj.save_mask(ids[0], painted)  # a stroke saved after the class change
    with pytest.raises(AtrousError, match=r"changed after it \(i0.png\).*Nothing was changed"):
        undo_class_edit(proj)
    assert proj.classes() == classes_after and _disk(proj, ids[0])[2, 2] == 1
    # a mask created after the change (image 2 had none) is a change too
    proj.save_mask(ids[0], left)
    proj.save_mask(ids[2], np.zeros((H, W), np.uint8))
    with pytest.raises(AtrousError, match=r"i2.png"):
        undo_class_edit(proj)
    (proj.root / "masks" / f"{ids[2]}.png").unlink()
    undo_class_edit(proj)  # back as the change left it: undoable again
    assert [c.name for c in proj.classes()] == [c.name for c in CLASSES]
    assert _snapshot(proj) != after


def test_undo_is_refused_after_a_rename(proj: Project) -> None:
    apply_class_edit(proj, move_class(proj.classes(), 1, 1))
    proj.rename_class(1, "hound")
    with pytest.raises(AtrousError, match="renamed or recoloured"):
        undo_class_edit(proj)
    assert proj.classes()[1].name == "hound"


def test_crash_mid_undo_is_finished_on_open(proj: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    before_files, before_classes = _snapshot(proj), proj.classes()
    apply_class_edit(proj, delete_class(proj.classes(), 1, VOID))
    real = class_edits._move
    moved = []

    def crash(src, dst):
        if len(moved) == 1:
            raise KeyboardInterrupt  # the process dies between two moves of the undo
        moved.append(dst)
        real(src, dst)

    monkeypatch.setattr(class_edits, "_move", crash)
    with pytest.raises(KeyboardInterrupt):
        undo_class_edit(proj)
    monkeypatch.setattr(class_edits, "_move", real)
    assert proj._query("SELECT value FROM meta WHERE key=?", (PENDING_KEY,))
    proj.close()
    with Project.open(proj.root) as again:
        assert again.classes() == before_classes
        assert _snapshot(again) == before_files
        assert last_record(again) is None
        with pytest.raises(AtrousError, match="no class change to undo"):
            undo_class_edit(again)


def test_crash_before_the_undo_commits_keeps_the_change_and_its_undo(
    proj: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    before_files = _snapshot(proj)
    apply_class_edit(proj, move_class(proj.classes(), 2, 1))
    after_files, after_classes = _snapshot(proj), proj.classes()
    real = class_undo.atomic_write_bytes

    def failing(path, data):
        if ".class-edit-" in str(path):
            raise AtrousWriteError("disk full (injected)")
        real(path, data)

    monkeypatch.setattr(class_undo, "atomic_write_bytes", failing)
    with pytest.raises(AtrousWriteError, match="injected"):
        undo_class_edit(proj)
    assert proj.classes() == after_classes and _snapshot(proj) == after_files
    monkeypatch.setattr(class_undo, "atomic_write_bytes", real)
    undo_class_edit(proj)
    assert _snapshot(proj) == before_files and _no_leftovers(proj)


def test_a_failed_edit_keeps_the_previous_undo(proj: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    before_files = _snapshot(proj)
    apply_class_edit(proj, move_class(proj.classes(), 1, 1))
    monkeypatch.setattr(class_edits, "write_mask_png", lambda *a: (_ for _ in ()).throw(AtrousWriteError("full")))
    with pytest.raises(AtrousWriteError):
        apply_class_edit(proj, delete_class(proj.classes(), 3, 0))
    assert len([f for f in proj.root.iterdir() if f.name.startswith(".class-undo-")]) == 1
    monkeypatch.undo()
    undo_class_edit(proj)
    assert _snapshot(proj) == before_files
