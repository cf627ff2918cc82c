"""The few modal questions the app asks, in one place so tests can answer them.

Every dialog goes through these functions; a test monkeypatches them instead
of fighting a modal event loop.
"""

from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QWidget


def confirm(parent: QWidget | None, title: str, text: str) -> bool:
    """Ask a yes/no question; True for yes."""
    answer = QMessageBox.question(parent, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def show_error(parent: QWidget | None, title: str, text: str, details: str | None = None) -> None:
    """Show an error message (with an expandable traceback when ``details`` is given)."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, parent)
    if details:
        box.setDetailedText(details)
    box.exec()


def save_failed(parent: QWidget | None, text: str) -> str:
    """Saving failed while closing: returns ``'retry'``, ``'discard'`` or ``'cancel'``."""
    box = QMessageBox(QMessageBox.Icon.Critical, "Could not save", text, QMessageBox.StandardButton.NoButton, parent)
    retry = box.addButton("Retry saving", QMessageBox.ButtonRole.AcceptRole)
    discard = box.addButton("Discard edits", QMessageBox.ButtonRole.DestructiveRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(retry)
    box.exec()
    clicked = box.clickedButton()
    if clicked is retry:
        return "retry"
    if clicked is discard:
        return "discard"
    return "cancel"


def open_file(parent: QWidget | None, title: str, filters: str) -> str | None:
    """Ask for an existing file; None when cancelled."""
    from PySide6.QtWidgets import QFileDialog

    path, _ = QFileDialog.getOpenFileName(parent, title, "", filters)
    return path or None


def show_list(parent: QWidget | None, title: str, text: str, lines: list[str]) -> None:
    """Show a message with a list of lines (e.g. the images a batch could not pre-label)."""
    box = QMessageBox(QMessageBox.Icon.Information, title, text, QMessageBox.StandardButton.Ok, parent)
    if lines:
        box.setDetailedText("\n".join(lines))
    box.exec()
