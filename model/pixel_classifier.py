"""The scribble-trained pixel classifier: filter features and a random forest (ilastik's pixel classification).

Every labelled pixel (any value but void) of a person's strokes or edited/reviewed masks is a
sample, described by filters at scales 1..16: smoothed intensity per channel and, on the
luminance, gradient magnitude, Laplacian of Gaussian, Hessian and structure-tensor eigenvalues.
A scikit-learn random forest learns from a class-balanced sample and predicts a label map and
a confidence map (max class probability, 255 = certain), like the CNN. It is a model version
of its own kind: :class:`PixelClassifierPredictor` has the interface the pre-label and
evaluate jobs call. Saved without pickle: an ``.npz`` of plain arrays (settings, classes, the
sampled features and labels), read with ``allow_pickle=False``; the forest is refitted at load
(deterministic for its seed). torch-free and Qt-free; scipy, scikit-learn and OpenCV are
imported inside functions.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from annotation.atomic import atomic_write_with
from annotation.errors import AtrousError, AtrousReadError, ImageReadError
from annotation.imageio import load_image
from annotation.masks import VOID

from .versions import PIXEL_CLASSIFIER_KIND

#: The kind recorded with its model versions (``metrics["kind"]``) and shown by ``models PROJECT``.
KIND = PIXEL_CLASSIFIER_KIND
FORMAT = "atrous-pixel-classifier"
FORMAT_VERSION = 1
SUFFIX = ".npz"
#: Images are smaller than this many pixels while features are computed (larger ones are downscaled).
MAX_WORK_PIXELS = 1024 * 1024
#: Below this side, images are padded (the Hessian needs a few pixels each way).
MIN_SIDE = 8


class PixelClassifierError(AtrousError):
    """The pixel classifier cannot be trained or used (too few labels, a bad file)."""


class PixelClassifierFileError(PixelClassifierError, AtrousReadError):
    """A saved pixel classifier that cannot be read: corrupt, tampered with, or of another format."""


@dataclass(frozen=True)
class FeatureConfig:
    """Which filters at which scales. ``mode``: "grey" (one channel) or "rgb" (smoothed intensity per channel)."""

    sigmas: tuple[float, ...] = (1.0, 1.6, 2.5, 4.0, 8.0, 16.0)
    mode: str = "grey"

    def n_features(self) -> int:
        channels = 1 if self.mode == "grey" else 3
        return 1 + len(self.sigmas) * (channels + 6) + (channels - 1)


@dataclass(frozen=True)
class ForestParams:
    """The random forest's settings (scikit-learn names) and the sampling cap; the seed makes fits repeatable."""

    n_estimators: int = 16
    max_depth: int = 10
    min_samples_leaf: int = 4
    max_features: str = "sqrt"
    seed: int = 0
    max_samples: int = 30_000


# --------------------------------------------------------------------------- features


def _grey_and_channels(image: np.ndarray, mode: str) -> tuple[np.ndarray, list[np.ndarray]]:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise PixelClassifierError(f"expected an HxW or HxWx{{1,3,4}} image, got shape {img.shape}")
    scale = 1.0 / (65535.0 if img.dtype == np.uint16 else 255.0 if img.dtype == np.uint8 else 1.0)
    f = img.astype(np.float32) * np.float32(scale)
    if f.ndim == 2:
        grey = f
        chans = [f] if mode == "grey" else [f, f, f]
    else:
        grey = f @ np.array([0.299, 0.587, 0.114], np.float32)
        chans = [grey] if mode == "grey" else [f[:, :, c] for c in range(3)]
    return grey, chans


def is_grey(image: np.ndarray) -> bool:
    """True for a single-channel image or an RGB(A) one whose three channels are equal (a decoded grey file)."""
    img = np.asarray(image)
    if img.ndim == 2 or img.shape[2] == 1:
        return True
    return bool(np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 0], img[:, :, 2]))


def _eig2(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (larger, smaller) of the symmetric 2x2 matrices [[a, b], [b, c]], elementwise."""
    half = (a + c) * 0.5
    root = np.sqrt(((a - c) * 0.5) ** 2 + b * b)
    return half + root, half - root


def _scale_features(grey: np.ndarray, chans: list[np.ndarray], s: float) -> list[np.ndarray]:
    """The features of one scale at the size of ``grey``: smoothed channels, then 6 derivative features."""
    from scipy import ndimage as ndi

    g = ndi.gaussian_filter(grey, s, truncate=3.0)
    out = [g] if len(chans) == 1 else [ndi.gaussian_filter(c, s, truncate=3.0) for c in chans]
    # Derivatives of the smoothed image (finite differences): gradient, Hessian, structure tensor.
    gy, gx = np.gradient(g)
    gyy, gyx = np.gradient(gy)
    gxx = np.gradient(gx, axis=1)
    norm = np.float32(s * s)  # scale-normalised second derivatives
    e1, e2 = _eig2(gxx, gyx, gyy)
    st = 2.0 * s  # the structure tensor integrates over a wider window than it differentiates
    t1, t2 = _eig2(*(ndi.gaussian_filter(a * b, st, truncate=2.0) for a, b in ((gx, gx), (gx, gy), (gy, gy))))
    out += [np.hypot(gx, gy) * np.float32(s), (gxx + gyy) * norm, e1 * norm, e2 * norm, t1 * norm, t2 * norm]
    return out


def compute_features(image: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """(H, W, F) float32 features of one image (any size down to 1x1; uint8 or uint16, grey or colour).

    Intensities are normalised by the image's own mean and spread first (images of one kind
    differ in brightness and contrast). Scales of 4 and more are computed on a copy
    downscaled by 2 or 4 (the smoothing removes what the full size would add) and
    interpolated back.
    """
    grey, chans = _grey_and_channels(image, config.mode)
    h, w = grey.shape
    if h == 0 or w == 0:
        raise PixelClassifierError(f"the image is empty ({w}x{h})")
    mean, spread = float(grey.mean()), max(float(grey.std()), 1e-3)
    grey = (grey - np.float32(mean)) / np.float32(spread)
    chans = [grey] if len(chans) == 1 else [(c - np.float32(mean)) / np.float32(spread) for c in chans]
    ph, pw = max(0, MIN_SIDE - h), max(0, MIN_SIDE - w)
    if ph or pw:  # tiny images: pad by reflection, compute, crop back
        grey = np.pad(grey, ((0, ph), (0, pw)), mode="symmetric")
        chans = [grey] if len(chans) == 1 else [np.pad(c, ((0, ph), (0, pw)), mode="symmetric") for c in chans]
    out = np.empty((config.n_features(), h, w), np.float32)  # one plane per feature: contiguous writes
    maps = [grey] if len(chans) == 1 else [grey, *chans[:2]]
    for k, m in enumerate(maps):
        out[k] = m[:h, :w]
    k = len(maps)
    gh, gw = grey.shape
    for s in config.sigmas:
        f = 4 if s >= 8 else 2 if s >= 4 else 1
        f = min(f, max(1, min(gh, gw) // MIN_SIDE))
        if f == 1:
            feats = _scale_features(grey, chans, s)
        else:
            sh, sw = max(1, gh // f), max(1, gw // f)
            small = [_resize(c, sh, sw, nearest=False) for c in chans]
            g_small = small[0] if len(chans) == 1 else _resize(grey, sh, sw, nearest=False)
            feats = [_resize(m, gh, gw, nearest=False) for m in _scale_features(g_small, small, s / f)]
        for m in feats:
            out[k] = m[:h, :w]
            k += 1
    assert k == out.shape[0]
    return np.moveaxis(out, 0, 2)


def _resize(arr: np.ndarray, h: int, w: int, *, nearest: bool) -> np.ndarray:
    import cv2

    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if arr.shape[0] > h else cv2.INTER_LINEAR)
    return cv2.resize(arr, (w, h), interpolation=interp)


def _work_copy(image: np.ndarray, max_pixels: int) -> np.ndarray:
    h, w = image.shape[:2]
    s = min(1.0, float(np.sqrt(max_pixels / max(1, h * w))))  # downscaled by this before features
    if s >= 1.0:
        return image
    return _resize(np.ascontiguousarray(image), max(1, round(h * s)), max(1, round(w * s)), nearest=False)


# --------------------------------------------------------------------------- training


def labelled_samples(
    image: np.ndarray, labels: np.ndarray, config: FeatureConfig, n_classes: int, max_pixels: int = MAX_WORK_PIXELS
) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, F), labels (N,)) of the labelled pixels of one image (void and unknown classes left out)."""
    labels = np.asarray(labels)
    if labels.shape != image.shape[:2]:
        raise PixelClassifierError(
            f"the mask is {labels.shape[1]}x{labels.shape[0]}, the image {image.shape[1]}x{image.shape[0]}"
        )
    work = _work_copy(image, max_pixels)
    if work.shape[:2] != labels.shape:
        labels = _resize(np.ascontiguousarray(labels, np.uint8), work.shape[0], work.shape[1], nearest=True)
    keep = (labels != VOID) & (labels < n_classes)
    if not keep.any():
        return np.empty((0, config.n_features()), np.float32), np.empty(0, np.uint8)
    feats = compute_features(work, config)
    return feats[keep], labels[keep].astype(np.uint8)


def balanced_sample(y: np.ndarray, max_samples: int, seed: int) -> np.ndarray:
    """Indices of at most ``max_samples`` samples, as many per class as it has up to an equal share."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    share = max(1, max_samples // max(1, len(classes)))
    picked = []
    for c in classes:
        idx = np.flatnonzero(y == c)
        picked.append(idx if len(idx) <= share else np.sort(rng.choice(idx, share, replace=False)))
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, np.int64)


def n_jobs() -> int:
    """Threads for the forest: the CPUs there are, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def _fit_forest(x: np.ndarray, y: np.ndarray, params: ForestParams):
    from sklearn.ensemble import RandomForestClassifier

    rf = RandomForestClassifier(
        n_estimators=params.n_estimators,
        max_depth=params.max_depth,
        min_samples_leaf=params.min_samples_leaf,
        max_features=params.max_features,
        random_state=params.seed,
        class_weight="balanced",  # a class with few samples (a short stroke) weighs as much as the others
        n_jobs=n_jobs(),
    )
    rf.fit(x, y)
    return rf


def _check_two_classes(y: np.ndarray, class_names: Sequence[str]) -> None:
    if y.size == 0:
        raise PixelClassifierError(
            "no labelled pixels to learn from: paint strokes of at least two classes (or edit/review some masks)"
        )
    present = np.unique(y)
    if len(present) < 2:
        name = class_names[int(present[0])] if int(present[0]) < len(class_names) else str(int(present[0]))
        raise PixelClassifierError(
            f"only one class is labelled ({name}); paint strokes of at least one more class (e.g. the background)"
        )


@dataclass
class PixelClassifier:
    """A fitted pixel classifier: the forest, the classes it knows, and what is needed to refit it."""

    class_names: list[str]
    colours: list[tuple[int, int, int]]
    config: FeatureConfig
    params: ForestParams
    x: np.ndarray  # (N, F) float32 sampled training features
    y: np.ndarray  # (N,) uint8 their labels
    name: str = ""
    info: dict = field(default_factory=dict)
    forest: object = None

    @classmethod
    def train(
        cls,
        pairs: Iterable[tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, bool]],
        class_names: Sequence[str],
        colours: Sequence[Sequence[int]],
        *,
        config: FeatureConfig | None = None,
        params: ForestParams | None = None,
        name: str = "",
        should_stop: Callable[[], bool] | None = None,
    ) -> PixelClassifier:
        """Fit on (image, label map[, whole]) pairs: every pixel that is not void (255) is a sample.

        ``whole`` (default True): the map is a whole mask, whose class shares are the
        images' (the forest's probabilities are weighted back to those shares after the
        balanced sample); strokes (False) say nothing about class shares.

        ``config=None`` picks "grey" when every image is grey, else "rgb". Raises
        :class:`PixelClassifierError` when fewer than two classes are labelled,
        :class:`Cancelled` when ``should_stop`` turns true between images.
        """
        pairs = [(p[0], p[1], bool(p[2]) if len(p) > 2 else True) for p in pairs]
        params = params or ForestParams()
        if config is None:
            config = FeatureConfig(mode="grey" if all(is_grey(im) for im, _, _ in pairs) else "rgb")
        n = len(class_names)
        xs, ys = [], []
        counts = np.zeros(n, np.int64)
        per_image = max(2000, params.max_samples // max(1, len(pairs)))  # memory stays bounded for many masks
        for i, (image, labels, whole) in enumerate(pairs):
            if should_stop is not None and should_stop():
                raise Cancelled("training cancelled")
            x, y = labelled_samples(image, labels, config, n)
            if whole:
                counts += np.bincount(y, minlength=n)[:n]
            if len(y) > per_image:  # balanced again below
                keep = balanced_sample(y, per_image, params.seed + i)
                x, y = x[keep], y[keep]
            xs.append(x)
            ys.append(y)
        x = np.concatenate(xs) if xs else np.empty((0, config.n_features()), np.float32)
        y = np.concatenate(ys) if ys else np.empty(0, np.uint8)
        _check_two_classes(y, class_names)
        keep = balanced_sample(y, params.max_samples, params.seed)
        x, y = np.ascontiguousarray(x[keep]), np.ascontiguousarray(y[keep])
        if should_stop is not None and should_stop():
            raise Cancelled("training cancelled")
        clf = cls(list(class_names), [tuple(int(v) for v in c) for c in colours], config, params, x, y, name)
        clf.info = {"samples": int(len(y)), "images": len(pairs), "labelled": counts.tolist()}
        clf.forest = _fit_forest(x, y, params)
        return clf

    # -- prediction

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        """(h, w, C) float32 class probabilities (C = the classes it was trained on) at the working size:
        the image's, or for an image above ``MAX_WORK_PIXELS`` a downscaled copy's."""
        work = _work_copy(image, MAX_WORK_PIXELS)
        feats = compute_features(work, self.config)
        wh, ww = feats.shape[:2]
        proba = self.forest.predict_proba(feats.reshape(-1, feats.shape[2])).astype(np.float32)
        proba *= self._prior_weights()[None, :]
        proba /= np.maximum(proba.sum(axis=1, keepdims=True), np.float32(1e-12))
        return proba.reshape(wh, ww, -1)

    def _prior_weights(self) -> np.ndarray:
        """Per class: its share of the labelled pixels of whole masks. The balanced sample and class
        weights gave every class an equal prior; these weights give the probabilities those shares back."""
        classes = np.asarray(self.forest.classes_, np.int64)
        labelled = np.asarray(self.info.get("labelled", []), np.float64)
        if labelled.shape != (len(self.class_names),) or not (labelled[classes] > 0).all():
            return np.ones(len(classes), np.float32)  # strokes only (or a class only stroked): no shares known
        w = labelled[classes]
        return (w / w.max()).astype(np.float32)

    def predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(labels uint8, confidence uint8 with 255 = certain) of one image at its size."""
        proba = self.predict_proba(image)
        labels = np.asarray(self.forest.classes_, np.uint8)[proba.argmax(axis=2)]
        conf = np.clip(np.rint(proba.max(axis=2) * 255.0), 0, 255).astype(np.uint8)
        h, w = image.shape[:2]
        if labels.shape != (h, w):  # a big image: back to full size (per-class maps would not fit in memory)
            labels, conf = _resize(labels, h, w, nearest=True), _resize(conf, h, w, nearest=False)
        return labels, conf

    # -- saving

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the .npz atomically (no pickled objects: arrays and one JSON header)."""
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "class_names": list(self.class_names),
            "colours": [list(c) for c in self.colours],
            "config": {"sigmas": list(self.config.sigmas), "mode": self.config.mode},
            "params": asdict(self.params),
            "info": self.info,
        }
        buf = io.BytesIO()
        np.savez_compressed(buf, header=np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8), x=self.x, y=self.y)
        atomic_write_with(path, lambda fh: fh.write(buf.getvalue()))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PixelClassifier:
        """Read a saved classifier (never unpickling anything) and refit its forest."""
        import zipfile

        path = Path(path)
        if path.is_file() and not zipfile.is_zipfile(path):  # np.load would suggest unpickling it: never
            raise PixelClassifierFileError(f"{path}: not a pixel classifier (not an .npz archive)")
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(bytes(z["header"].astype(np.uint8)).decode("utf-8"))
                x, y = np.asarray(z["x"]), np.asarray(z["y"])
        except FileNotFoundError as e:
            raise PixelClassifierFileError(f"{path}: no such file") from e
        except (OSError, ValueError, KeyError, EOFError, UnicodeDecodeError) as e:
            raise PixelClassifierFileError(f"{path}: not a readable pixel classifier ({_reason(e)})") from e
        except Exception as e:  # zipfile.BadZipFile and friends: a corrupt archive
            raise PixelClassifierFileError(f"{path}: corrupt pixel classifier file ({_reason(e)})") from e
        try:
            if header.get("format") != FORMAT:
                raise ValueError(f"format {header.get('format')!r} is not {FORMAT!r}")
            if int(header.get("version", 0)) > FORMAT_VERSION:
                raise ValueError(f"written by a newer Atrous (format version {header['version']})")
            names = [str(n) for n in header["class_names"]]
            colours = [tuple(int(v) for v in c) for c in header["colours"]]
            config = FeatureConfig(tuple(float(s) for s in header["config"]["sigmas"]), str(header["config"]["mode"]))
            if config.mode not in ("grey", "rgb") or not config.sigmas or min(config.sigmas) <= 0:
                raise ValueError("bad feature configuration")
            params = ForestParams(**{k: v for k, v in header["params"].items() if k in ForestParams.__annotations__})
            ints = (params.n_estimators, params.max_depth, params.min_samples_leaf, params.seed, params.max_samples)
            if not all(isinstance(v, int) and v >= 0 for v in ints) or not 0 < params.n_estimators <= 500:
                raise ValueError("bad forest settings")
            if params.max_features not in ("sqrt", "log2"):
                raise ValueError(f"bad forest setting max_features={params.max_features!r}")
            info = dict(header.get("info", {}))
            labelled = info.get("labelled", [])
            if not (isinstance(labelled, list) and all(isinstance(v, int) and v >= 0 for v in labelled)):
                raise ValueError("bad class counts")
            if len(colours) != len(names):
                raise ValueError(f"{len(names)} class names but {len(colours)} colours")
            if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != config.n_features():
                raise ValueError(f"training features of shape {x.shape} ({x.dtype}) do not fit the configuration")
            if y.dtype != np.uint8 or y.shape != (x.shape[0],):
                raise ValueError(f"training labels of shape {y.shape} ({y.dtype}) do not fit the features")
            if y.size and int(y.max()) >= len(names):
                raise ValueError("training labels name classes the file does not have")
            if not np.isfinite(x).all():
                raise ValueError("training features hold NaN or infinite values")
            _check_two_classes(y, names)
        except (AttributeError, KeyError, TypeError, ValueError, PixelClassifierError) as e:
            raise PixelClassifierFileError(f"{path}: tampered or damaged pixel classifier ({_reason(e)})") from e
        clf = cls(names, colours, config, params, x, y, str(header.get("name", "")), info)
        try:
            clf.forest = _fit_forest(x, y, params)
        except (TypeError, ValueError) as e:  # settings scikit-learn refuses
            raise PixelClassifierFileError(f"{path}: tampered or damaged pixel classifier ({_reason(e)})") from e
        return clf


class Cancelled(AtrousError):
    """Training was stopped by the caller."""


def _reason(e: BaseException) -> str:
    return " ".join((str(e).strip() or type(e).__name__).split())


# --------------------------------------------------------------------------- the predictor interface


@dataclass(frozen=True)
class _Arch:
    num_classes: int
    backbone: str = KIND


@dataclass(frozen=True)
class PixelClassifierMeta:
    """What the jobs and the class check read from a model's metadata (as :class:`model.weights.ModelMeta`)."""

    class_names: list[str]
    colours: list[tuple[int, int, int]]
    name: str
    arch: _Arch
    source: str = ""
    input_size: int | None = None


@dataclass(frozen=True)
class Prediction:
    """One image's result, like :class:`model.predictor.Prediction` (labels, confidence 0..255)."""

    labels: np.ndarray
    confidence: np.ndarray

    @property
    def mean_confidence(self) -> float:
        return float(self.confidence.mean()) / 255.0


class PixelClassifierPredictor:
    """Wraps a :class:`PixelClassifier` in the predictor interface the pre-label and evaluate jobs call."""

    def __init__(self, clf: PixelClassifier, source: str = "") -> None:
        self.clf = clf
        self.meta = PixelClassifierMeta(
            list(clf.class_names),
            list(clf.colours),
            clf.name or "pixel classifier",
            _Arch(len(clf.class_names)),
            source,
        )
        self.batch_size = 1

    @property
    def description(self) -> str:
        return f"CPU, random forest ({self.clf.params.n_estimators} trees, {n_jobs()} threads)"

    def predict(self, image: np.ndarray) -> Prediction:
        return Prediction(*self.clf.predict(image))

    def predict_files(
        self, paths: Iterable[str | os.PathLike[str]], *, loader: Callable[[Path], np.ndarray] = load_image
    ) -> Iterator[tuple[Path, Prediction | AtrousError]]:
        """Yield ``(path, prediction)`` in order, or ``(path, error)`` for an unreadable file (as the CNN's)."""
        for p in paths:
            p = Path(p)
            try:
                image = loader(p)
            except AtrousError as e:
                yield p, e
                continue
            except Exception as e:  # a decoder bug must not end the batch
                yield p, ImageReadError(f"{p}: cannot decode ({e})")
                continue
            yield p, self.predict(image)


def load_pixel_predictor(spec: str | os.PathLike[str]) -> PixelClassifierPredictor:
    """Load a saved pixel classifier as a predictor."""
    return PixelClassifierPredictor(PixelClassifier.load(spec), str(spec))
