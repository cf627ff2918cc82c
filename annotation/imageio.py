"""Reading images the way a viewer shows them: upright, 8-bit RGB.

Every mask in Atrous lives in the upright (EXIF-applied) frame of its image, so
everything that reads pixels for display, pre-labelling or export goes through
:func:`load_image`. Bad files raise :class:`ImageReadError` with one clear line.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageReadError
from .layout import DB_NAME, PROJECT_DIRS

#: File extensions treated as images when a folder is scanned.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

#: EXIF tag 0x0112.
_ORIENTATION_TAG = 0x0112


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True when the name has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: upright size and the EXIF orientation (1 = none)."""

    width: int
    height: int
    orientation: int
    mode: str
    format: str | None


def _pixel_limit() -> int | None:
    return Image.MAX_IMAGE_PIXELS


def open_guarded(source: str | os.PathLike[str] | IO[bytes], name: object) -> Image.Image:
    """``Image.open`` that refuses decompression bombs with one :class:`ImageReadError` naming ``name``.

    Pillow only warns between 1x and 2x its pixel limit; we refuse both. Every reader of
    untrusted pixels (images, label PNGs, images and masks inside label files) opens them here.
    Other errors propagate as Pillow raises them.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"{name}: image too large ({e})") from e


def _open(path: Path) -> Image.Image:
    try:
        size = path.stat().st_size
    except FileNotFoundError as e:
        raise ImageReadError(f"{path}: file not found") from e
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read ({e.strerror or e})") from e
    if size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes)")
    try:
        return open_guarded(path, path)
    except UnidentifiedImageError as e:
        raise ImageReadError(f"{path}: not an image file Pillow can read") from e
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read ({e.strerror or e})") from e


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block must not make the image unreadable
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def read_image_info(path: str | os.PathLike[str]) -> ImageInfo:
    """Read only the header: upright width/height (orientation 5-8 swaps them)."""
    path = Path(path)
    return _info(_open(path))


def read_image_info_bytes(data: bytes, name: object) -> ImageInfo:
    """:func:`read_image_info` for an image held in memory (e.g. embedded in a label file)."""
    try:
        img = open_guarded(io.BytesIO(data), name)
    except (UnidentifiedImageError, OSError) as e:
        raise ImageReadError(f"{name}: not an image Pillow can read") from e
    return _info(img)


def _info(img: Image.Image) -> ImageInfo:
    with img:
        orientation = _orientation(img)
        w, h = img.size
        if orientation in (5, 6, 7, 8):
            w, h = h, w
        return ImageInfo(width=w, height=h, orientation=orientation, mode=img.mode, format=img.format)


def _to_uint8_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F") or mode.startswith("I;16"):
        # 16-bit, 32-bit and float images: stretch the values present to 0..255
        # (a fixed >>8 turns 12-bit microscopy images nearly black).
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if hi <= 255 and lo >= 0 and mode != "F":
            out = arr.astype(np.uint8)
        else:
            scale = 255.0 / (hi - lo) if hi > lo else 0.0
            out = np.clip((arr - lo) * scale + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(out[:, :, None], 3, axis=2)
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8)
    if mode in ("L", "1"):
        return np.repeat(np.asarray(img.convert("L"), dtype=np.uint8)[:, :, None], 3, axis=2)
    # P, PA, LA, RGBA, CMYK, YCbCr, LAB, HSV...: Pillow knows how to get RGB.
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode ``path`` to an upright ``uint8`` array of shape (H, W, 3).

    EXIF orientation is applied; greyscale, palette, RGBA, CMYK, 16-bit and float
    images are converted to RGB. Raises :class:`ImageReadError` on a missing,
    empty, truncated, non-image or over-large file.
    """
    path = Path(path)
    img = _open(path)
    try:
        with img:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    img.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
                raise ImageReadError(f"{path}: image too large ({e})") from e
            except OSError as e:
                raise ImageReadError(f"{path}: truncated or corrupt image ({e})") from e
            except (SyntaxError, ValueError) as e:  # some plugins report corruption like this
                raise ImageReadError(f"{path}: corrupt image ({e})") from e
            if _orientation(img) != 1:
                img = ImageOps.exif_transpose(img)
            return np.ascontiguousarray(_to_uint8_rgb(img))
    except ImageReadError:
        raise
    except MemoryError as e:
        raise ImageReadError(f"{path}: not enough memory to decode this image") from e


# PIL transpose method per EXIF orientation (the table ImageOps.exif_transpose uses).
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def exif_transpose_array(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a 2-D array from the stored (raw) frame into the upright frame of ``orientation``.

    Used for label maps that were drawn on an image's raw pixels, so they line
    up with the upright frame every Atrous mask lives in. Orientation 1 (or an
    unknown value) returns the array unchanged.
    """
    method = _EXIF_TRANSPOSE.get(int(orientation))
    if method is None:
        return arr
    # Pure index shuffles: the same flips/rotations as PIL, done on the array.
    a = np.asarray(arr)
    ops = {
        Image.Transpose.FLIP_LEFT_RIGHT: lambda x: x[:, ::-1],
        Image.Transpose.ROTATE_180: lambda x: x[::-1, ::-1],
        Image.Transpose.FLIP_TOP_BOTTOM: lambda x: x[::-1, :],
        Image.Transpose.TRANSPOSE: lambda x: x.T,
        Image.Transpose.ROTATE_270: lambda x: np.rot90(x, -1),
        Image.Transpose.TRANSVERSE: lambda x: np.rot90(x, 2).T,
        Image.Transpose.ROTATE_90: lambda x: np.rot90(x, 1),
    }
    return np.ascontiguousarray(ops[method](a))


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Content hash of a file, used to skip images that are already in a project."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read ({e.strerror or e})") from e
    return h.hexdigest()


def scan_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, hidden folders skipped)."""
    folder = Path(folder)
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if DB_NAME in files:  # a project inside the folder: its masks and maps are not images to label
            dirs[:] = [d for d in dirs if d not in PROJECT_DIRS]
        for f in sorted(files):
            if not f.startswith(".") and is_image_file(f):
                found.append(Path(root) / f)
    return found
