"""Label maps (uint8 class indices, 255 = void) and their indexed-PNG storage.

A mask is a 2-D ``uint8`` array in the upright frame of its image. It is stored
as a palette ("P" mode) PNG whose pixel values are the class indices, so any
tool reads the indices directly and a viewer shows colours. Writes are atomic.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_write_bytes
from .errors import AtrousReadError
from .imageio import open_guarded

#: The index reserved for "void / ignore" pixels (VOC's border, training's ignore_index).
VOID = 255

RGB = tuple[int, int, int]


def voc_colormap(n: int = 256) -> np.ndarray:
    """The standard PASCAL VOC colour map: an (n, 3) uint8 array (bit-interleaved)."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def make_palette(colours: Sequence[RGB] | None = None) -> np.ndarray:
    """A full 256-entry palette: ``colours`` for the first indices, VOC colours after, void white-ish.

    Index 255 keeps VOC's (224, 224, 192) so void pixels look the same as in VOC.
    """
    pal = voc_colormap(256)
    if colours:
        for i, c in enumerate(colours[:255]):
            pal[i] = c
    return pal


def colorize(mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Map a label map to an RGB image (H, W, 3) through a (256, 3) palette."""
    return palette[mask]


def encode_mask_png(mask: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """Encode a label map as an indexed PNG (lossless; values are the class indices)."""
    mask = np.ascontiguousarray(mask)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"a mask is a 2-D uint8 array, got {mask.dtype} with shape {mask.shape}")
    # frombytes keeps the indices as they are (convert("P") would quantise).
    img = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    pal = make_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    img.putpalette(pal.reshape(-1).tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def write_mask_png(path: str | os.PathLike[str], mask: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write ``mask`` as an indexed PNG at ``path`` atomically."""
    atomic_write_bytes(path, encode_mask_png(mask, palette))


def read_mask_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a label PNG as uint8 class indices.

    Palette PNGs give their indices; greyscale (L) PNGs give their grey values.
    RGB label images are refused: their colours would need a palette to decode.
    """
    path = Path(path)
    try:
        with open_guarded(path, path) as img:  # a 20000x20000 label PNG is refused, not decoded
            img.load()
            if img.mode in ("P", "L"):
                arr = np.array(img, dtype=np.uint8)
            elif img.mode in ("I;16", "I", "I;16B", "I;16L"):
                arr = np.array(img)
                if arr.max(initial=0) > 255:
                    raise AtrousReadError(f"{path}: label values above 255 cannot be class indices")
                arr = arr.astype(np.uint8)
            elif img.mode == "1":
                arr = np.array(img.convert("L"), dtype=np.uint8) // 255
            else:
                raise AtrousReadError(
                    f"{path}: label PNG has mode {img.mode}; expected indexed (P) or greyscale (L) class indices"
                )
    except FileNotFoundError as e:
        raise AtrousReadError(f"{path}: mask file not found") from e
    except UnidentifiedImageError as e:
        raise AtrousReadError(f"{path}: not an image file") from e
    except OSError as e:
        raise AtrousReadError(f"{path}: truncated or unreadable mask ({e})") from e
    return arr
