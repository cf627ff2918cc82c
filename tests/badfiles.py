"""Makers of the awkward image files users really have (shared by annotation and model tests)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def photo(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth-ish RGB test picture (gradients + noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), (xx + yy) % 256], axis=2)
    return np.clip(base + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def png_bomb(path: Path, width: int = 40000, height: int = 40000) -> None:
    """A tiny PNG whose header claims a huge image (Pillow's decompression-bomb guard must stop it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def truncated(path: Path, fmt: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(photo(64, 64)).save(buf, format=fmt)
    data = buf.getvalue()
    path.write_bytes(data[: len(data) // 2])


def exif_rotated_jpeg(path: Path, h: int = 30, w: int = 50, orientation: int = 6) -> np.ndarray:
    """Store a (h, w) picture with an EXIF orientation; return what a viewer shows (upright)."""
    img = Image.fromarray(photo(h, w))
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, format="JPEG", exif=exif.tobytes(), quality=95)
    from PIL import ImageOps

    return np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))


def make_awkward_folder(folder: Path) -> dict[str, str]:
    """Write one file of every awkward kind; return {file name: 'ok' | word expected in the error}."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo()).save(folder / "good.png")
    Image.fromarray(photo(seed=1)).save(folder / "good.jpg", quality=90)
    (folder / "notes.png").write_text("this is not an image")
    (folder / "empty.jpg").write_bytes(b"")
    truncated(folder / "cut.png", "PNG")
    truncated(folder / "cut.jpg", "JPEG")
    png_bomb(folder / "bomb.png")
    sixteen = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 20).astype(np.uint16)
    Image.fromarray(sixteen).save(folder / "sixteen.png")
    Image.fromarray(photo(seed=2)).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(photo(seed=3)).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(np.dstack([photo(seed=4), np.full((48, 64), 128, np.uint8)])).save(folder / "rgba.png")
    exif_rotated_jpeg(folder / "rotated.jpg")
    return {
        "good.png": "ok",
        "good.jpg": "ok",
        "sixteen.png": "ok",
        "cmyk.jpg": "ok",
        "palette.png": "ok",
        "rgba.png": "ok",
        "rotated.jpg": "ok",
        "notes.png": "not an image",
        "empty.jpg": "empty",
        "cut.png": "truncated",
        "cut.jpg": "truncated",
        "bomb.png": "too large",
    }
