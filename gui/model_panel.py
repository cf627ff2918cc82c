"""The "Model" dock: which network pre-labels, on which device, what it actually used,
the batch progress, per-image problems, and the low-confidence overlay controls.

A view only: it emits requests (pre-label this / selected / new, cancel,
check model, fine-tune) and the main window does the work.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from .model_worker import ModelChoice, registry_names

ROLE_CHOICE = Qt.ItemDataRole.UserRole
#: Combo entry that opens a file dialog.
BROWSE = "__browse__"
#: What to do when no model can pre-label (offline and no project version yet).
NO_MODEL_HINT = (
    "Until a model can pre-label: use the smart tools (magic wand W, superpixels S, GrabCut G) and "
    "'Learn from my strokes' now; fine-tune after a few images."
)


def format_eta(seconds: float) -> str:
    if seconds < 0:
        return "…"
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}" if s < 3600 else f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ModelPanel(QWidget):
    """Model choice, device, status, batch progress and confidence controls.

    Signals:
        prelabelRequested(str scope): ``"current"``, ``"selected"`` or ``"new"``.
        cancelRequested()
        checkRequested(): load the chosen model without predicting, to see what it uses.
        browseRequested(): the person picked "Checkpoint file…".
        finetuneRequested()
        confidenceToggled(bool)
        thresholdChanged(int): 0..255
    """

    prelabelRequested = Signal(str)
    cancelRequested = Signal()
    checkRequested = Signal()
    browseRequested = Signal()
    finetuneRequested = Signal()
    learnRequested = Signal()
    confidenceToggled = Signal(bool)
    thresholdChanged = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.model_combo = QComboBox()
        self.model_combo.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(14)
        self.model_combo.setToolTip(
            "The network that pre-labels: a project model version, a registry model, or a checkpoint file"
        )
        self.model_combo.activated.connect(self._combo_activated)
        self.device_combo = QComboBox()
        self.device_combo.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        for d in ("auto", "cpu", "cuda"):
            self.device_combo.addItem(d, d)
        self.device_combo.setToolTip("auto: the GPU when there is one, else the CPU")
        dev_row = QHBoxLayout()
        dev_row.addWidget(self.device_combo, 1)
        self.check_button = QPushButton("Check")
        self.check_button.setToolTip("Load the model now and show what it runs on")
        self.check_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.check_button.clicked.connect(self.checkRequested)
        dev_row.addWidget(self.check_button)
        form.addRow("Model", self.model_combo)
        form.addRow("Device", dev_row)
        lay.addLayout(form)

        self.info_label = QLabel("Not loaded yet (Check loads it)")
        self.info_label.setWordWrap(True)
        self.info_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.info_label)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.setFrameShape(QFrame.Shape.StyledPanel)
        self.error_label.setStyleSheet(
            "QLabel { background: #fff4e5; color: #663c00; border: 1px solid #f0c36d; border-radius: 3px; padding: 4px; }"
        )
        self.error_label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        self.error_label.hide()
        lay.addWidget(self.error_label)

        grid = QGridLayout()
        self.btn_current = QPushButton("This image")
        self.btn_selected = QPushButton("Selected")
        self.btn_new = QPushButton("All new")
        self.btn_current.setToolTip("Pre-label the image on screen (Ctrl+L)")
        self.btn_selected.setToolTip("Pre-label the images selected in the list (Ctrl+Shift+L)")
        self.btn_new.setToolTip("Pre-label every image whose status is new")
        for i, (b, scope) in enumerate(
            ((self.btn_current, "current"), (self.btn_selected, "selected"), (self.btn_new, "new"))
        ):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            b.clicked.connect(lambda _=False, s=scope: self.prelabelRequested.emit(s))
            grid.addWidget(b, 0, i)
        lay.addWidget(QLabel("Pre-label"))
        lay.addLayout(grid)
        self.overwrite_check = QCheckBox("Also overwrite edited / reviewed")
        self.overwrite_check.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.overwrite_check.setToolTip(
            "Off: images a person edited or reviewed are skipped. On: they are replaced too "
            "(after a confirmation); open images keep the old mask one Ctrl+Z away."
        )
        lay.addWidget(self.overwrite_check)

        prow = QHBoxLayout()
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setFormat("%v / %m")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.cancel_button.clicked.connect(self.cancelRequested)
        prow.addWidget(self.progress_bar, 1)
        prow.addWidget(self.cancel_button)
        lay.addLayout(prow)
        self.progress_label = QLabel()
        self.progress_label.setWordWrap(True)  # "Nothing was pre-labelled (…)" must not widen the dock
        lay.addWidget(self.progress_label)
        self.problem_list = QListWidget()
        self.problem_list.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.problem_list.setMaximumHeight(90)
        self.problem_list.setWordWrap(True)
        self.problem_list.setToolTip("Images the last batch could not pre-label or skipped, and why")
        lay.addWidget(self.problem_list)

        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        lay.addWidget(line)
        self.confidence_check = QCheckBox("Show low-confidence pixels (C)")
        self.confidence_check.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.confidence_check.toggled.connect(self.confidenceToggled)
        lay.addWidget(self.confidence_check)
        trow = QHBoxLayout()
        trow.addWidget(QLabel("below"))
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        self.threshold_slider.setRange(5, 100)
        self.threshold_slider.setValue(50)
        self.threshold_slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.threshold_slider.valueChanged.connect(self._threshold_changed)
        self.threshold_label = QLabel("50 %")
        self.threshold_label.setMinimumWidth(40)
        trow.addWidget(self.threshold_slider, 1)
        trow.addWidget(self.threshold_label)
        lay.addLayout(trow)
        self.confidence_info = QLabel()
        self.confidence_info.setWordWrap(True)
        self.confidence_info.setStyleSheet("color: palette(mid);")
        lay.addWidget(self.confidence_info)

        self.finetune_button = QPushButton("Fine-tune on corrections…")
        self.finetune_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.finetune_button.setToolTip("Train a new model version on the edited and reviewed masks")
        self.finetune_button.clicked.connect(self.finetuneRequested)
        lay.addWidget(self.finetune_button)
        self.learn_button = QPushButton("Learn from my strokes")
        self.learn_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.learn_button.setToolTip(
            "Train a pixel classifier on this image's strokes and the edited/reviewed masks, preview it here "
            "(only pixels you did not paint change; Ctrl+Z undoes it) and save it as a model version. "
            "Like ilastik: fill a new image with void first, then paint a few strokes of every class"
        )
        self.learn_button.clicked.connect(self.learnRequested)
        lay.addWidget(self.learn_button)
        lay.addStretch(1)
        self._ran_batch = False
        self._has_versions = False  # the project has a model version to pre-label with (see explain)
        self.set_running(False)
        self._last_index = 0

    # ---- model list

    def set_models(
        self,
        versions: list[tuple[int, str, str, bool]],
        active: int | None,
        extra_files: list[str],
        *,
        keep_choice: bool = True,
    ) -> None:
        """Fill the model combo: project versions ``(id, name, spec, available)``, registry names, files.

        ``keep_choice``: keep what was chosen before if it is still listed; otherwise (a
        project was opened, a fine-tune made a new active version) choose the active version.
        """
        current = self.choice() if keep_choice else None
        self._has_versions = any(available for *_, available in versions)
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for vid, name, spec, available in reversed(versions):
            label = f"v{vid} · {name}" + ("  (active)" if vid == active else "") + ("" if available else "  (missing)")
            self.model_combo.addItem(label, ModelChoice(spec, version_id=vid, label=f"v{vid} {name}"))
            tip = spec if available else f"{spec}\nThis checkpoint file is missing (moved or deleted)."
            self.model_combo.setItemData(self.model_combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        for name in registry_names():
            if any(spec == name for _, _, spec, _ in versions):
                continue  # already listed as the project version that recorded it
            self.model_combo.addItem(name, ModelChoice(name, label=name))
            self.model_combo.setItemData(
                self.model_combo.count() - 1,
                "torchvision's pretrained weights (21 VOC classes); downloaded once into torchvision's cache",
                Qt.ItemDataRole.ToolTipRole,
            )
        for f in extra_files:
            self.add_file(f, select=False)
        self.model_combo.addItem("Checkpoint file…", BROWSE)
        self.model_combo.blockSignals(False)
        # keep the previous choice; else the active version; else the first entry
        idx = -1
        if current is not None:
            idx = self._find(current.spec)
        if idx < 0 and active is not None:
            idx = next(
                (
                    i
                    for i in range(self.model_combo.count())
                    if isinstance(self.model_combo.itemData(i), ModelChoice)
                    and self.model_combo.itemData(i).version_id == active
                ),
                -1,
            )
        self.model_combo.setCurrentIndex(max(idx, 0))
        self._last_index = self.model_combo.currentIndex()

    def reset(self) -> None:
        """Forget what the panel said about the previous project's model and batches."""
        self.info_label.setText("Not loaded yet (Check loads it)")
        self.error_label.clear()
        self.error_label.hide()
        self.progress_label.clear()
        self.problem_list.clear()
        self._ran_batch = False
        self.progress_bar.setValue(0)
        self.set_running(False)

    def _find(self, spec: str) -> int:
        for i in range(self.model_combo.count()):
            d = self.model_combo.itemData(i)
            if isinstance(d, ModelChoice) and d.spec == spec:
                return i
        return -1

    def add_file(self, path: str, *, select: bool = True) -> None:
        """Add a checkpoint file to the list (before "Checkpoint file…") and select it."""
        idx = self._find(path)
        if idx < 0:
            at = self.model_combo.findData(BROWSE)
            at = self.model_combo.count() if at < 0 else at
            self.model_combo.insertItem(at, Path(path).name, ModelChoice(path, label=Path(path).name))
            self.model_combo.setItemData(at, path, Qt.ItemDataRole.ToolTipRole)
            idx = at
        if select:
            self.model_combo.setCurrentIndex(idx)
            self._last_index = idx

    def _combo_activated(self, index: int) -> None:
        if self.model_combo.itemData(index) == BROWSE:
            self.model_combo.setCurrentIndex(self._last_index)
            self.browseRequested.emit()
        else:
            self._last_index = index

    def choice(self) -> ModelChoice | None:
        """The chosen model and device, or None when nothing is chosen."""
        d = self.model_combo.currentData()
        if not isinstance(d, ModelChoice):
            return None
        return ModelChoice(d.spec, str(self.device_combo.currentData() or "auto"), d.version_id, d.label)

    def select_spec(self, spec: str) -> bool:
        idx = self._find(spec)
        if idx >= 0:
            self.model_combo.setCurrentIndex(idx)
            self._last_index = idx
        return idx >= 0

    # ---- status

    def show_loaded(self, description: str, model_name: str, note: str = "") -> None:
        self.error_label.hide()
        text = f"Using <b>{model_name or 'model'}</b> on <b>{description}</b>"
        self.info_label.setText(text + (f"<br>{note}" if note else ""))

    def explain(self, message: str) -> str:
        """A model error as this panel says it: the GUI's words for the command line's advice, and,
        when the project has no model version to fall back on, what to do without a model."""
        pick = "choose a checkpoint file" + (" or a project model version above" if self._has_versions else "")
        for cli, gui in (
            ("pass a checkpoint file with --model PATH", pick),
            ("use --device cpu", "choose the cpu device"),
        ):
            message = message.replace(cli, gui)
        if not self._has_versions:
            message += "\n\n" + NO_MODEL_HINT
        return message

    def show_error(self, message: str) -> None:
        message = self.explain(message)
        self.info_label.setText("Could not load the model:")
        self.error_label.setText(message)
        self.error_label.setToolTip(message)
        self.error_label.show()

    def set_running(self, running: bool) -> None:
        for b in (
            self.btn_current,
            self.btn_selected,
            self.btn_new,
            self.check_button,
            self.finetune_button,
            self.learn_button,
        ):
            b.setEnabled(not running)
        self.model_combo.setEnabled(not running)
        self.device_combo.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.cancel_button.setVisible(running)
        self.progress_bar.setVisible(running or self._ran_batch)
        self.problem_list.setVisible(self.problem_list.count() > 0)

    def start_batch(self, total: int, what: str) -> None:
        self._ran_batch = total > 0
        self.problem_list.clear()
        self.problem_list.hide()
        self.progress_bar.setRange(0, max(total, 0))
        self.progress_bar.setValue(0)
        self.progress_label.setText(f"{what}: loading the model…")
        self.error_label.hide()

    def show_not_run(self, text: str) -> None:
        """A batch that never ran: no progress bar left at 0 of N, just ``text``."""
        self._ran_batch = False
        self.progress_bar.hide()
        self.progress_label.setText(text)

    def set_progress(self, done: int, total: int, eta: float) -> None:
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(done)
        self.progress_label.setText(
            f"{done} of {total} · about {format_eta(eta)} left" if done < total else f"{done} of {total}"
        )

    def add_problem(self, text: str) -> None:
        self.problem_list.show()
        self.problem_list.addItem(text)
        self.problem_list.scrollToBottom()

    def _threshold_changed(self, v: int) -> None:
        self.threshold_label.setText(f"{v} %")
        self.thresholdChanged.emit(round(v * 255 / 100))

    def threshold(self) -> int:
        """The threshold as a 0..255 confidence value."""
        return round(self.threshold_slider.value() * 255 / 100)
