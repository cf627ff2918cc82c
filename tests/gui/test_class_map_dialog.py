"""The class-map dialog, and pre-labelling in the app with a model whose classes are not the project's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from annotation.classes import make_class
from annotation.masks import VOID
from annotation.project import Project
from gui import class_map_dialog
from gui.class_map_dialog import NOT_MAPPED, ClassMapDialog
from gui.main_window import MainWindow
from model.class_map import make_class_map
from tests.model.test_class_map import VOC

from .conftest import CLASSES, H, W


def _dialog(qtbot, project_classes=CLASSES, initial=None) -> ClassMapDialog:
    dlg = ClassMapDialog("voc-model", VOC, project_classes, initial)
    qtbot.addWidget(dlg)
    return dlg


def test_the_table_is_filled_by_name_and_unmapped_go_to_background(qtbot) -> None:
    dlg = _dialog(qtbot)
    assert dlg.table.rowCount() == 21 and dlg.table.item(15, 0).text() == "15: person"
    data = [c.currentData() for c in dlg.combos]
    assert data[VOC.index("person")] == 1 and data[VOC.index("car")] == 2 and data[0] == 0
    assert data[VOC.index("cow")] == NOT_MAPPED and data[VOC.index("cat")] == NOT_MAPPED  # no "cat" here
    assert dlg.to_background.isChecked() and dlg.ok_button.isEnabled()
    cmap = dlg.class_map()
    assert cmap.targets[VOC.index("cow")] == 0 and cmap.targets[VOC.index("person")] == 1
    assert "2 model class(es) become project classes" in dlg.summary.text()


def test_edits_and_the_void_choice_make_the_map(qtbot) -> None:
    dlg = _dialog(qtbot)
    dlg.to_void.setChecked(True)
    dlg.set_choice("pottedplant", "tree")
    dlg.set_choice("bus", "void")
    dlg.set_choice("car", None)
    cmap = dlg.class_map()
    assert cmap.unmapped == "void" and cmap.source == "the app's class table"
    assert cmap.targets[VOC.index("pottedplant")] == 3 and cmap.targets[VOC.index("bus")] == VOID
    assert cmap.targets[VOC.index("car")] == VOID and cmap.targets[VOC.index("cow")] == VOID
    assert cmap.targets[0] == 0  # __background__ -> background by name
    # "Match by name" puts the names back
    dlg.match_by_name()
    assert dlg.class_map().targets[VOC.index("car")] == 2 and dlg.to_background.isChecked()


def test_nothing_mapped_disables_ok_and_says_why(qtbot) -> None:
    dlg = _dialog(qtbot)
    dlg.set_choice("person", None)
    dlg.set_choice("car", "background")
    assert not dlg.ok_button.isEnabled() and "every pre-label would be empty" in dlg.summary.text()
    dlg.set_choice("horse", "tree")
    assert dlg.ok_button.isEnabled()


def test_a_project_without_background_sends_the_rest_to_void(qtbot) -> None:
    proj = [make_class(0, "person"), make_class(1, "car"), make_class(2, "cat")]
    dlg = _dialog(qtbot, proj)
    assert not dlg.to_background.isEnabled() and dlg.to_void.isChecked()
    cmap = dlg.class_map()
    assert cmap.targets[VOC.index("cat")] == 2 and cmap.targets[0] == VOID


def test_a_remembered_map_fills_the_table(qtbot) -> None:
    before = make_class_map(VOC, CLASSES, unmapped="void", chosen={VOC.index("horse"): 3, VOC.index("car"): None})
    dlg = _dialog(qtbot, initial=before)
    assert dlg.to_void.isChecked()
    assert dlg.combos[VOC.index("horse")].currentData() == 3
    assert dlg.combos[VOC.index("car")].currentData() == NOT_MAPPED
    assert dlg.class_map().targets == before.targets


# --------------------------------------------------------------------------- in the window


@pytest.fixture(scope="module")
def voc_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random checkpoint with torchvision's VOC class names whose head says motorbike everywhere."""
    import torch

    from model.weights import save_checkpoint
    from tests.model.helpers import tiny_model

    loaded = tiny_model(num_classes=21, input_size=64, class_names=VOC)
    with torch.no_grad():
        loaded.network.classifier[-1].bias[:] = 0.0
        loaded.network.classifier[-1].bias[VOC.index("motorbike")] = 8.0
    path = tmp_path_factory.mktemp("voc") / "voc.pt"
    save_checkpoint(path, loaded.network, loaded.meta)
    return path


def _use(win: MainWindow, ckpt: Path) -> None:
    win.model_panel.add_file(str(ckpt))
    win.model_panel.device_combo.setCurrentIndex(win.model_panel.device_combo.findData("cpu"))


def test_the_app_asks_for_a_map_runs_with_it_and_remembers_it(
    qtbot, window: MainWindow, voc_checkpoint: Path, project_path: Path, monkeypatch
) -> None:
    _use(window, voc_checkpoint)
    asked: list[tuple] = []

    def answer(parent, name, model_classes, project_classes, initial=None):
        asked.append((name, list(model_classes), [c.name for c in project_classes], initial))
        dlg = ClassMapDialog(name, model_classes, project_classes, initial, parent)
        qtbot.addWidget(dlg)
        dlg.set_choice("motorbike", "car")
        return dlg.class_map()

    monkeypatch.setattr(class_map_dialog, "ask_class_map", answer)
    ids = [r.id for r in window.project.images()]
    window.show_image(ids[1])
    # the first batch is refused for other classes; the answer starts the second, which saves
    with qtbot.waitSignal(window.prelabel.finished, timeout=60000) as refused:
        assert window.prelabel_images("current")
    assert refused.args[0].model_classes == VOC and "--map FILE" in refused.args[0].error
    with qtbot.waitSignal(window.prelabel.finished, timeout=60000) as ran:
        pass
    summary = ran.args[0]
    assert summary.saved + summary.handed == 1 and not summary.error
    assert len(asked) == 1 and asked[0][1] == VOC and asked[0][2] == [c.name for c in CLASSES] and asked[0][3] is None
    with Project.open(project_path) as p:
        rec = p.image(ids[1])
        assert rec.status == "prelabeled" and np.all(p.read_mask(ids[1]) == 2)  # motorbike -> car
        (mv,) = [v for v in p.model_versions() if v.id == rec.prelabel_model_version]
        assert mv.metrics["class_map"]["pairs"]["motorbike"] == "car"
        assert mv.metrics["class_map"]["source"] == "the app's class table"
    assert "Classes mapped onto the project's" in window.model_panel.info_label.text()
    # the next image uses the remembered map without asking
    window.show_image(ids[2])
    with qtbot.waitSignal(window.prelabel.finished, timeout=60000) as again:
        assert window.prelabel_images("current")
    assert again.args[0].saved + again.args[0].handed == 1 and len(asked) == 1
    assert window.project.image(ids[2]).prelabel_model_version == mv.id
    # a later session (nothing remembered) chooses the recorded version: the table starts from its map
    window._class_maps.clear()
    choice = window.model_panel.choice()
    assert choice.version_id == mv.id
    window.show_image(ids[0])
    with qtbot.waitSignal(window.prelabel.finished, timeout=60000):
        assert window.prelabel_images("current")
    with qtbot.waitSignal(window.prelabel.finished, timeout=60000) as third:
        pass
    assert len(asked) == 2 and asked[1][3] is not None
    assert asked[1][3].targets[VOC.index("motorbike")] == 2 and third.args[0].saved + third.args[0].handed == 1
    assert window.project.image(ids[0]).prelabel_model_version == mv.id


def test_declining_the_map_runs_nothing(qtbot, window: MainWindow, voc_checkpoint: Path, monkeypatch) -> None:
    _use(window, voc_checkpoint)
    asked = []
    monkeypatch.setattr(class_map_dialog, "ask_class_map", lambda *a, **k: asked.append(a) or None)
    first = window.project.images()[0]
    with qtbot.waitSignal(window.prelabel.finished, timeout=60000):
        assert window.prelabel_images("current")
    qtbot.waitUntil(lambda: bool(asked), timeout=5000)
    qtbot.wait(50)
    assert not window.prelabel.running
    assert window.project.image(first.id).status == "prelabeled"  # the fixture's mask, unchanged
    assert window.project.image(first.id).prelabel_model_version is None
    assert window.model_panel.progress_label.text().startswith("Nothing was pre-labelled")
    assert window.project.model_versions() == []
    mask = window.project.read_mask(first.id)
    assert mask.shape == (H, W) and (mask[:, : W // 2] == 1).all() and (mask[:, W // 2 :] == 0).all()
