"""The class-map dialog: pre-label with a model whose classes are not the project's.

When the chosen model predicts other classes (torchvision's 21 VOC classes on a
person / car / cat project), pre-labelling is refused until a person says where
each model class goes. This dialog shows one row per model class with a combo
of the project's classes, pre-filled by name (:mod:`model.class_map`: case,
spaces and a few synonyms ignored), plus "void"; rows left "not mapped" follow
the "unmapped classes go to" choice (the project's background or void). OK
returns a :class:`~model.class_map.ClassMap`, which the pre-label job applies
to every prediction. The window remembers it per project and model for the
session.

Qt-only view: the mapping itself is built by ``model.class_map`` (no torch).
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QRadioButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from annotation.classes import LabelClass
from annotation.errors import AtrousError
from annotation.masks import VOID
from model.class_map import (
    UNMAPPED_BACKGROUND,
    UNMAPPED_VOID,
    ClassMap,
    background_index,
    make_class_map,
    mapped_classes,
    name_key,
)

#: Combo data of the row choice "not mapped" (follows the unmapped choice).
NOT_MAPPED = -1
SOURCE = "the app's class table"


class ClassMapDialog(QDialog):
    """An editable model-class -> project-class table; :meth:`class_map` is the result."""

    def __init__(
        self,
        model_name: str,
        model_classes: Sequence[str],
        project_classes: Sequence[LabelClass],
        initial: ClassMap | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Map the model's classes")
        self.model_classes = [str(n) for n in model_classes]
        self.project_classes = sorted(project_classes, key=lambda c: c.index)
        self._bg = background_index(self.project_classes)
        lay = QVBoxLayout(self)
        intro = QLabel(
            f"<b>{model_name or 'The model'}</b> predicts {len(self.model_classes)} classes that are not this "
            f"project's {len(self.project_classes)}. Choose the project class each model class becomes; the "
            "table is filled in by name. The confidence stays as the model predicts it."
        )
        intro.setWordWrap(True)
        lay.addWidget(intro)

        self.table = QTableWidget(len(self.model_classes), 2, self)
        self.table.setHorizontalHeaderLabels(["Model class", "Project class"])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.combos: list[QComboBox] = []
        for row, name in enumerate(self.model_classes):
            item = QTableWidgetItem(f"{row}: {name}")
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            self.table.setItem(row, 0, item)
            combo = QComboBox()
            combo.addItem("— not mapped —", NOT_MAPPED)
            for c in self.project_classes:
                combo.addItem(f"{c.index}: {c.name}", c.index)
            combo.addItem("void (ignored)", VOID)
            combo.currentIndexChanged.connect(self._update)
            self.table.setCellWidget(row, 1, combo)
            self.combos.append(combo)
        lay.addWidget(self.table, 1)

        rest = QHBoxLayout()
        rest.addWidget(QLabel("Unmapped classes go to:"))
        self.unmapped_group = QButtonGroup(self)
        bg_name = next((c.name for c in self.project_classes if c.index == self._bg), None)
        self.to_background = QRadioButton(
            f"background ({bg_name})" if bg_name is not None else "background (the project has none)"
        )
        self.to_background.setEnabled(self._bg is not None)
        self.to_void = QRadioButton("void (not labelled)")
        for b in (self.to_background, self.to_void):
            self.unmapped_group.addButton(b)
            rest.addWidget(b)
        rest.addStretch(1)
        self.by_name_button = QPushButton("Match by name")
        self.by_name_button.setToolTip("Fill the table again from the class names")
        self.by_name_button.clicked.connect(self.match_by_name)
        rest.addWidget(self.by_name_button)
        lay.addLayout(rest)
        self.unmapped_group.buttonToggled.connect(lambda *_: self._update())

        self.summary = QLabel()
        self.summary.setWordWrap(True)
        lay.addWidget(self.summary)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("Pre-label")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay.addWidget(self.buttons)

        if initial is not None and list(initial.model_classes) == self.model_classes:
            self._fill_from(initial)
        else:
            self.match_by_name()
        self.resize(460, 520)

    # ---- filling

    def _by_name(self) -> list[int]:
        """Each model class's project class by name, or NOT_MAPPED."""
        names = make_class_map(self.model_classes, self.project_classes, unmapped=UNMAPPED_VOID)
        return [NOT_MAPPED if t == VOID else t for t in names.targets]

    def match_by_name(self) -> None:
        """Fill every row from the names; unmapped go to the background when the project has one."""
        for combo, target in zip(self.combos, self._by_name(), strict=True):
            self._set(combo, target)
        (self.to_background if self._bg is not None else self.to_void).setChecked(True)
        self._update()

    def _fill_from(self, cmap: ClassMap) -> None:
        by_name = self._by_name()
        for combo, target, named in zip(self.combos, cmap.targets, by_name, strict=True):
            # a class that went where the rest goes shows "not mapped", unless its name put it there
            self._set(combo, NOT_MAPPED if target == cmap.rest and named != target else target)
        use_void = cmap.unmapped == UNMAPPED_VOID or self._bg is None
        (self.to_void if use_void else self.to_background).setChecked(True)
        self._update()

    @staticmethod
    def _set(combo: QComboBox, data: int) -> None:
        i = combo.findData(data)
        combo.setCurrentIndex(i if i >= 0 else 0)

    # ---- reading

    @property
    def unmapped(self) -> str:
        return UNMAPPED_VOID if self.to_void.isChecked() else UNMAPPED_BACKGROUND

    def choices(self) -> dict[int, int | None]:
        """Model index -> project index, 255 (void) or None (not mapped), for every row."""
        out: dict[int, int | None] = {}
        for i, combo in enumerate(self.combos):
            data = int(combo.currentData())
            out[i] = None if data == NOT_MAPPED else data
        return out

    def set_choice(self, model_class: str, project_class: str | None) -> None:
        """Choose a row's target by names (``None`` = not mapped, ``"void"``); for tests and scripts."""
        row = next(i for i, n in enumerate(self.model_classes) if name_key(n) == name_key(model_class))
        if project_class is None:
            data = NOT_MAPPED
        elif project_class.lower() == "void":
            data = VOID
        else:
            data = next(c.index for c in self.project_classes if name_key(c.name) == name_key(project_class))
        self._set(self.combos[row], data)

    def class_map(self) -> ClassMap:
        """The mapping the table shows (raises AtrousError for one that cannot be used)."""
        return make_class_map(
            self.model_classes, self.project_classes, unmapped=self.unmapped, chosen=self.choices(), source=SOURCE
        )

    def _update(self) -> None:
        try:
            cmap = self.class_map()
        except AtrousError as e:
            self.summary.setText(str(e))
            self.ok_button.setEnabled(False)
            return
        hits = mapped_classes(cmap, self.project_classes)
        if not hits:
            self.summary.setText(
                "No model class is mapped onto a project class other than background and void, so every "
                "pre-label would be empty. Choose a project class for at least one model class."
            )
            self.ok_button.setEnabled(False)
            return
        self.summary.setText(f"{len(hits)} model class(es) become project classes: {cmap.describe(8)}")
        self.ok_button.setEnabled(True)


def ask_class_map(
    parent: QWidget | None,
    model_name: str,
    model_classes: Sequence[str],
    project_classes: Sequence[LabelClass],
    initial: ClassMap | None = None,
) -> ClassMap | None:
    """Show the dialog modally; the mapping on OK, None on cancel. Tests monkeypatch this function."""
    dlg = ClassMapDialog(model_name, model_classes, project_classes, initial, parent)
    try:
        if dlg.exec() != QDialog.DialogCode.Accepted:
            return None
        return dlg.class_map()
    finally:
        dlg.deleteLater()
