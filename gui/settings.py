"""Where the app keeps its files: the data folder, the settings file, the bundled resources.

``ATROUS_DATA_DIR`` overrides the data folder (tests and portable installs use
it), so nothing ever needs to touch the real user folder. Settings live in an
INI file inside the data folder rather than the platform registry, so the
same override isolates them too.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from PySide6.QtCore import QSettings, QStandardPaths

#: The folder holding the sample images, their starter masks and class list.
RESOURCES = Path(__file__).resolve().parents[1] / "resources"
SAMPLES = RESOURCES / "samples"

#: How many recent projects the File menu remembers.
MAX_RECENT = 8


def data_dir() -> Path:
    """The user's Atrous data folder (created on demand)."""
    env = os.environ.get("ATROUS_DATA_DIR")
    if env:
        path = Path(env)
    else:
        loc = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
        path = Path(loc) if loc else Path.home() / ".atrous"
    path.mkdir(parents=True, exist_ok=True)
    return path


def settings() -> QSettings:
    """The app's settings (an INI file in the data folder)."""
    return QSettings(str(data_dir() / "settings.ini"), QSettings.Format.IniFormat)


def log_path() -> Path:
    """The log file (``atrous.log``): unexpected errors and every worker's failures."""
    return data_dir() / "atrous.log"


def recent_projects() -> list[str]:
    """Recently opened project folders, newest first (only those that still exist)."""
    raw = settings().value("recent_projects", [])
    if isinstance(raw, str):
        raw = [raw]
    return [p for p in (raw or []) if Path(p).is_dir()]


def remember_project(path: str | os.PathLike[str]) -> None:
    """Put ``path`` at the top of the recent projects list."""
    p = str(Path(path).resolve())
    items = [p] + [q for q in recent_projects() if q != p]
    s = settings()
    s.setValue("recent_projects", items[:MAX_RECENT])
    s.sync()


def _image_key(project_root: str | os.PathLike[str]) -> str:
    digest = hashlib.sha1(str(Path(project_root).resolve()).encode("utf-8")).hexdigest()[:16]
    return f"last_image/{digest}"


def remember_image(project_root: str | os.PathLike[str], image_id: int | None) -> None:
    """Remember the image shown last in a project, to open it there next time."""
    if image_id is not None:
        settings().setValue(_image_key(project_root), int(image_id))


def last_image(project_root: str | os.PathLike[str]) -> int | None:
    """The image shown last in the project at ``project_root`` (None when not known)."""
    try:
        value = settings().value(_image_key(project_root))
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def last_project() -> str | None:
    """The project opened last (None when there is none, or it no longer exists)."""
    recent = recent_projects()
    return recent[0] if recent else None


def is_first_start() -> bool:
    """True until :func:`mark_started` was called once in this data folder."""
    return str(settings().value("app/started", "false")).lower() != "true"


def mark_started() -> None:
    """Remember that the app has started here (the sample project opens only on the very first start)."""
    s = settings()
    s.setValue("app/started", "true")
    s.sync()
