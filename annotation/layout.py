"""The folder layout of a project, named in one place.

A project folder holds::

    atrous.sqlite          the index (images, classes, statuses, model versions, edit log)
    masks/<id>.png         the current mask of each image (indexed PNG, upright frame)
    prelabels/<id>.png     the last machine pre-label of each image, kept to count corrections
    confidence/<id>.png    the confidence map of that pre-label (greyscale, 255 = certain)
    models/                fine-tuned checkpoints (<name>.pt with a <name>.json beside it)

Every reader and writer asks these functions for a path instead of joining names
itself: the copies that used to live in the CLI, the app and the trainer drifted.
"""

from __future__ import annotations

import os
from pathlib import Path

DB_NAME = "atrous.sqlite"
MASK_DIR = "masks"
PRELABEL_DIR = "prelabels"
CONFIDENCE_DIR = "confidence"
MODELS_DIR = "models"

#: Folders a project creates inside itself; never to be taken for image folders.
PROJECT_DIRS = (MASK_DIR, PRELABEL_DIR, CONFIDENCE_DIR, MODELS_DIR)


def db_path(root: str | os.PathLike[str]) -> Path:
    """The project's SQLite index."""
    return Path(root) / DB_NAME


def is_project(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a project folder (it holds the index)."""
    return db_path(path).is_file()


def mask_path(root: str | os.PathLike[str], image_id: int) -> Path:
    """Where the mask of an image is (or would be) stored."""
    return Path(root) / MASK_DIR / f"{int(image_id)}.png"


def prelabel_path(root: str | os.PathLike[str], image_id: int) -> Path:
    """Where the last pre-label of an image is kept (corrections = mask != this)."""
    return Path(root) / PRELABEL_DIR / f"{int(image_id)}.png"


def confidence_path(root: str | os.PathLike[str], image_id: int) -> Path:
    """Where the confidence map of an image's last pre-label is kept."""
    return Path(root) / CONFIDENCE_DIR / f"{int(image_id)}.png"


def models_dir(root: str | os.PathLike[str]) -> Path:
    """The folder fine-tuned checkpoints are saved in."""
    return Path(root) / MODELS_DIR


def stored_model_path(root: str | os.PathLike[str], stored: str) -> Path:
    """A checkpoint path as recorded in the index (relative to the project, or absolute) made absolute."""
    p = Path(stored).expanduser()
    return p if p.is_absolute() else Path(root) / p
