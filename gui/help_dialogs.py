"""The Help menu: every key, read from the window's own actions, and how the loop works.

The key list is generated from the actions the window has (their menus, texts and
shortcuts), so a new shortcut or a changed key shows up here without anyone
editing a list. Only what no action carries (mouse gestures and the keys the
canvas handles itself) is written out below, next to the canvas code it describes.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QMainWindow,
    QMenu,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

#: What the canvas does with the mouse and the keys it handles itself (gui/canvas.py), not actions.
CANVAS_KEYS: list[tuple[str, str]] = [
    ("Wheel", "zoom around the cursor"),
    ("Ctrl+wheel", "brush size"),
    ("Middle-drag, Space+drag", "pan"),
    ("Space (tap)", "mark reviewed and go to the next image"),
    ("Enter, double-click", "close the polygon"),
    ("Esc", "cancel the polygon, the stroke in progress or a preview"),
    ("Ctrl+click (brush or fill)", "accept the connected region under the cursor as the current class"),
]

#: The "How the loop works" text.
LOOP_TEXT = """
<h3>The loop: pre-label, correct, fine-tune, export</h3>
<ol>
<li><b>Pre-label.</b> In the <i>Model</i> panel choose a model and press <i>This image</i>,
<i>Selected</i> or <i>All new</i> (Ctrl+L, Ctrl+Shift+L). The network draws a first mask for each
image in the background; images a person edited or reviewed are never overwritten unasked.
No model yet (offline, or a new project)? Start with the smart tools (magic wand W,
superpixels S, GrabCut G) and <i>Learn from my strokes</i>.</li>
<li><b>Correct.</b> Fix each mask with the brush, eraser, fill and polygon; <i>C</i> shows the pixels
the model was unsure of, and <i>Least confident first</i> in the image list puts the worst
pre-labels on top. Press <i>R</i> (or Space) to mark an image reviewed and go on. Masks are saved
as you go.</li>
<li><b>Fine-tune.</b> After a few corrected images, <i>Model -&gt; Fine-tune on corrections…</i> trains a
new model version on them in its own process while you keep working. The new version becomes
the active model (an older one can be made active again); pre-label the remaining images with it,
and the corrections get smaller each round.</li>
<li><b>Export.</b> When the masks are good, export them as Pascal VOC or COCO (<i>File</i> menu, or
<code>main.py export</code> on the command line).</li>
</ol>
<p>Every step also runs from the command line: <code>python main.py --help</code>.</p>
"""


def _plain(text: str) -> str:
    """A menu text without its mnemonic ampersands (``&&`` stays one ``&``)."""
    return text.replace("&&", "\0").replace("&", "").replace("\0", "&")


def _keys(act: QAction) -> str:
    return ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in act.shortcuts() if not k.isEmpty())


def _menu_rows(menu: QMenu, prefix: str, seen: set[int]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for act in menu.actions():
        sub = act.menu()
        if sub is not None:
            rows += _menu_rows(sub, f"{prefix}{_plain(sub.title())} › ", seen)
            continue
        seen.add(id(act))
        keys = _keys(act)
        if keys and not act.isSeparator():
            rows.append((f"{prefix}{_plain(act.text())}", keys))
    return rows


def shortcut_sections(window: QMainWindow) -> list[tuple[str, list[tuple[str, str]]]]:
    """``[(section, [(action, keys), ...]), ...]``: each menu's actions with shortcuts, then the rest.

    Read from the window's actions at the time of the call, so it always matches them.
    """
    sections: list[tuple[str, list[tuple[str, str]]]] = []
    seen: set[int] = set()
    for top in window.menuBar().actions():
        menu = top.menu()
        if menu is None:
            continue
        rows = _menu_rows(menu, "", seen)
        if rows:
            sections.append((_plain(menu.title()), rows))
    # Actions with keys but in no menu (the class keys, for one).
    rest = [(_plain(a.text()), _keys(a)) for a in window.actions() if id(a) not in seen and _keys(a)]
    if rest:
        sections.append(("Other keys", rest))
    sections.append(("Canvas and mouse", list(CANVAS_KEYS)))
    return sections


class KeysDialog(QDialog):
    """Help -> Keys: every shortcut of the window, by menu."""

    def __init__(self, window: QMainWindow, parent: QWidget | None = None) -> None:
        super().__init__(parent or window)
        self.setWindowTitle("Keys")
        lay = QVBoxLayout(self)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(2)
        self.tree.setHeaderLabels(["Action", "Keys"])
        self.tree.setRootIsDecorated(False)
        self.tree.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.tree.setSelectionMode(QTreeWidget.SelectionMode.NoSelection)
        self.tree.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        for title, rows in shortcut_sections(window):
            head = QTreeWidgetItem([title, ""])
            font = head.font(0)
            font.setBold(True)
            head.setFont(0, font)
            head.setFirstColumnSpanned(True)
            self.tree.addTopLevelItem(head)
            for text, keys in rows:
                head.addChild(QTreeWidgetItem([text, keys]))
            head.setExpanded(True)
        self.tree.setItemsExpandable(False)
        header = self.tree.header()
        header.setStretchLastSection(True)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        lay.addWidget(self.tree)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.resize(560, min(640, max(360, window.height() - 80)))

    def rows(self) -> list[tuple[str, str]]:
        """What the dialog lists, ``(action, keys)`` per row (for tests)."""
        out = []
        for i in range(self.tree.topLevelItemCount()):
            head = self.tree.topLevelItem(i)
            out += [(head.child(j).text(0), head.child(j).text(1)) for j in range(head.childCount())]
        return out


class LoopDialog(QDialog):
    """Help -> How the loop works."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("How the loop works")
        lay = QVBoxLayout(self)
        self.label = QLabel(LOOP_TEXT)
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.label)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.setMinimumWidth(520)


def add_help_menu(window: QMainWindow) -> QMenu:
    """Add the Help menu (Keys, How the loop works) to ``window``'s menu bar."""
    menu = window.menuBar().addMenu("&Help")
    keys = menu.addAction("Keys…")
    keys.setShortcut(QKeySequence(QKeySequence.StandardKey.HelpContents))
    keys.triggered.connect(lambda: _show(window, KeysDialog(window)))
    loop = menu.addAction("How the loop works…")
    loop.triggered.connect(lambda: _show(window, LoopDialog(window)))
    return menu


def _show(window: QMainWindow, dlg: QDialog) -> None:
    """Show a help dialog without blocking the editor; one of each kind at a time."""
    name = type(dlg).__name__
    old = window.findChild(QDialog, name)
    if old is not None and old is not dlg:
        old.close()
        old.deleteLater()
    dlg.setObjectName(name)
    dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dlg.show()


__all__ = ["CANVAS_KEYS", "KeysDialog", "LoopDialog", "add_help_menu", "shortcut_sections"]
