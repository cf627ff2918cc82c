"""The folder a cluster pre-label run writes (docs/cluster.md), without Ray or torch.

The image list (a folder, a project or a list file, named as ``prelabel DIR --out``
names its masks), ``OUT/run.json`` (which model made the results), the
``OUT/results.jsonl`` manifest, and the check that an image's mask and confidence
PNGs are complete: what makes a rerun skip, adopt or redo an image, exactly once.
:mod:`model.cluster` runs the Ray side on top of it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from annotation.errors import AtrousError, AtrousReadError

#: What to install for ``--ray``.
EXTRA = "pip install 'atrous[cluster]'"
RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"
MASKS_DIR = "masks"
CONFIDENCE_DIR = "confidence"
#: Test hook: ``<image file name>:<marker file>``: the actor that meets that image first exits
#: (os._exit) right after writing its outputs, once (the marker records that it did).
TEST_EXIT_ENV = "ATROUS_CLUSTER_TEST_EXIT"


class ClusterError(AtrousError):
    """A cluster run that cannot start or go on: no Ray, no cluster, a folder of another model."""


# --------------------------------------------------------------------------- the image list


@dataclass(frozen=True)
class Item:
    """One image to pre-label: its absolute path, its output name, its project id (if any)."""

    path: str
    name: str
    image_id: int = -1


def list_file(path: Path) -> tuple[list[Path], int]:
    """A manifest file's image paths (one a line; relative to the file's folder; ``#`` comments), duplicates dropped."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AtrousReadError(f"{path}: cannot read the image list ({e})") from e
    seen: set[Path] = set()
    paths: list[Path] = []
    dups = 0
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        p = Path(text).expanduser()
        p = (p if p.is_absolute() else path.parent / p).resolve()
        if p in seen:
            dups += 1
            continue
        seen.add(p)
        paths.append(p)
    if not paths:
        raise AtrousReadError(f"{path}: the image list names no images")
    return paths, dups


def make_items(paths: list[Path], root: Path, ids: list[int] | None = None) -> list[Item]:
    """Items named like ``prelabel DIR --out`` names its masks (relative path, ``.png``)."""
    from .jobs import mask_names

    names = mask_names(paths, root)
    ids = ids or [-1] * len(paths)
    return [Item(str(p.resolve()), names[p].as_posix(), i) for p, i in zip(paths, ids)]


def common_root(paths: list[Path]) -> Path:
    return Path(os.path.commonpath([str(p.parent) for p in paths]))


# --------------------------------------------------------------------------- run.json and the manifest


def model_identity(spec: str, label: str, meta) -> dict:
    """What ``run.json`` records of the model: spec, checkpoint sha256, classes and colours."""
    from annotation.imageio import file_sha256

    sha = file_sha256(spec) if Path(spec).is_file() else None
    colours = [[int(v) for v in c] for c in meta.colours]
    return {
        "model": spec,
        "label": label,
        "sha256": sha,
        "classes": list(meta.class_names),
        "colours": colours,
        "name": meta.name,
    }


def same_model(a: dict, b: dict) -> bool:
    if a.get("classes") != b.get("classes"):
        return False
    if a.get("sha256") or b.get("sha256"):
        return a.get("sha256") == b.get("sha256")
    return a.get("model") == b.get("model")


def read_run(out: Path) -> dict | None:
    p = out / RUN_FILE
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AtrousReadError(f"{p}: unreadable ({e}); this folder is not a cluster run's output") from e


def check_out(out: Path, identity: dict, resume: bool) -> bool:
    """Refuse an OUT of another model (or of anything else); True when it resumes a run of this model."""
    if out.exists() and not out.is_dir():
        raise ClusterError(f"--out {out} exists and is not a folder")
    old = read_run(out)
    if old is not None:
        if not same_model(old, identity):
            raise ClusterError(
                f"--out {out} holds the results of another model ({old.get('label') or old.get('model')}, "
                f"sha256 {str(old.get('sha256'))[:12]}); this run's is {identity['label'] or identity['model']}. "
                "Choose another folder"
            )
        if not resume:
            raise ClusterError(
                f"--out {out} already holds this model's results; pass --resume to do the images left, "
                "or choose a new folder"
            )
        return True
    if out.is_dir() and any(out.iterdir()):
        raise ClusterError(
            f"--out {out} already holds files that are not a cluster run's; choose a new or empty folder"
        )
    return False


def read_results(out: Path) -> dict[str, dict]:
    """The manifest's last line per image path; a torn last line (a killed driver) is ignored."""
    p = out / RESULTS_FILE
    if not p.is_file():
        return {}
    lines: dict[str, dict] = {}
    for raw in p.read_bytes().split(b"\n"):
        try:
            d = json.loads(raw)
            lines[str(d["path"])] = d
        except (ValueError, KeyError, TypeError):
            continue
    return lines


def write_results(out: Path, lines: list[dict]) -> None:
    """Replace the manifest, atomically, with one line per image."""
    from annotation.atomic import atomic_write_bytes

    atomic_write_bytes(out / RESULTS_FILE, "".join(json.dumps(d) + "\n" for d in lines).encode("utf-8"))


class ResultsLog:
    """Appends manifest lines as results arrive: flushed per batch, synced at most every ``sync_every`` seconds.

    The manifest is a record, not the proof that an image is done: a line lost with a crash
    is recovered on ``--resume``, which adopts the complete outputs it finds without a line.
    So a sync per batch (thousands on a big run) buys nothing. The append is not atomic: a
    driver killed mid-line leaves a torn last line, which :func:`read_results` skips and the
    compacting rewrite at the end (or of the rerun) drops.
    """

    def __init__(self, out: Path, lines: list[dict], *, sync_every: float = 2.0) -> None:
        write_results(out, lines)  # starts from a compacted copy: no torn tail to append to
        self._fh = open(out / RESULTS_FILE, "ab")  # noqa: SIM115 (closed in close())
        self._sync_every = sync_every
        self._synced = time.monotonic()

    def append(self, lines: list[dict]) -> None:
        if lines:
            self._fh.write("".join(json.dumps(d) + "\n" for d in lines).encode("utf-8"))
            self._fh.flush()
            if time.monotonic() - self._synced >= self._sync_every:
                os.fsync(self._fh.fileno())
                self._synced = time.monotonic()

    def close(self) -> None:
        self._fh.close()  # the run then replaces the manifest with its compacted copy, atomically


# --------------------------------------------------------------------------- outputs


def output_paths(out: Path, name: str) -> tuple[Path, Path]:
    return out / MASKS_DIR / name, out / CONFIDENCE_DIR / name


def verify_outputs(out: Path, name: str, size: tuple[int, int] | None = None) -> tuple[int, int, float] | None:
    """(width, height, mean confidence) when the mask and confidence PNGs decode fully with one size
    (``size`` if given); None when either is missing or torn."""
    mask, conf = output_paths(out, name)
    try:
        with Image.open(mask) as m:
            m.load()
            msize, mmode = m.size, m.mode
        with Image.open(conf) as c:
            c.load()
            carr = np.asarray(c)
            cmode = c.mode
    except (OSError, ValueError, SyntaxError):
        return None
    if mmode != "P" or cmode != "L" or (carr.shape[1], carr.shape[0]) != msize:
        return None
    if size is not None and tuple(size) != msize:
        return None
    return msize[0], msize[1], float(carr.mean()) / 255.0


def listed_done(out: Path, line: dict) -> bool:
    """A manifest line of a finished image whose two files are still there with the recorded sizes."""
    if line.get("error") or not line.get("name"):
        return False
    mask, conf = output_paths(out, line["name"])
    try:
        return [mask.stat().st_size, conf.stat().st_size] == list(line.get("bytes") or [])
    except OSError:
        return False


def result_line(item: Item, identity: dict, **fields) -> dict:
    d = {"path": item.path, "name": item.name, "id": None if item.image_id < 0 else item.image_id}
    d.update(fields)
    d["model"] = identity["model"]
    d["model_label"] = identity["label"]
    return d


def adopted_line(out: Path, item: Item, identity: dict) -> dict:
    """The manifest line of complete outputs the driver found without a line (its driver died first)."""
    return result_line(item, identity, **found_fields(out, item.name, adopted=True))


def found_fields(out: Path, name: str, *, adopted: bool) -> dict:
    """An image's manifest fields from its complete outputs."""
    w, h, mean = verify_outputs(out, name) or (0, 0, 0.0)
    mask, conf = output_paths(out, name)
    sizes = [mask.stat().st_size, conf.stat().st_size]
    return {
        "width": w,
        "height": h,
        "mean_confidence": round(mean, 6),
        "error": None,
        "adopted": adopted,
        "bytes": sizes,
    }
