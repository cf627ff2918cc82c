"""The scribble-trained pixel classifier: features, training from strokes, safe saving, the jobs and the CLI."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import main
from annotation.layout import confidence_path, prelabel_path
from annotation.masks import VOID
from annotation.project import LabelClass, Project
from model.jobs import evaluate_project, prelabel_project
from model.pixel_classifier import (
    Cancelled,
    FeatureConfig,
    ForestParams,
    PixelClassifier,
    PixelClassifierError,
    PixelClassifierFileError,
    compute_features,
)
from model.pixel_learning import learning_baseline, preview_labels, stroke_labels, train_for_project
from model.versions import load_predictor, resolve, version_kind

from .ddp_common import make_tiny_project

NAMES = ["bg", "fg"]
COLOURS = [(0, 0, 0), (255, 0, 0)]
FAST = ForestParams(n_estimators=8, max_depth=8, max_samples=4000)


def blobs(h: int = 48, w: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A grey image with bright discs on a dark, noisy ground, and its true label map."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    truth = np.zeros((h, w), np.uint8)
    for cy, cx, r in ((h // 3, w // 4, 8), (2 * h // 3, 3 * w // 4, 10)):
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    img = np.clip(60 + truth * 120 + rng.normal(0, 12, (h, w)), 0, 255).astype(np.uint8)
    return np.repeat(img[:, :, None], 3, axis=2), truth


def strokes(truth: np.ndarray) -> np.ndarray:
    """A few lines of each class taken from the truth; everything else void."""
    s = np.full(truth.shape, VOID, np.uint8)
    h, w = truth.shape
    for y in (h // 3, 2 * h // 3, h - 3):
        s[y, :] = truth[y, :]
    return s


def test_features_cover_grey_colour_16_bit_and_tiny_images() -> None:
    img, _ = blobs()
    grey = compute_features(img[:, :, 0], FeatureConfig())
    assert grey.shape == (48, 64, FeatureConfig().n_features()) and grey.dtype == np.float32
    assert np.isfinite(grey).all()
    rgb = compute_features(img, FeatureConfig(mode="rgb"))
    assert rgb.shape[2] == FeatureConfig(mode="rgb").n_features() > grey.shape[2]
    wide = compute_features(img[:, :, 0].astype(np.uint16) * 257, FeatureConfig())
    assert np.allclose(wide, grey, atol=1e-3)  # 16-bit data gives the same features after normalisation
    one = compute_features(np.full((1, 1, 3), 7, np.uint8), FeatureConfig(mode="rgb"))
    assert one.shape == (1, 1, FeatureConfig(mode="rgb").n_features()) and np.isfinite(one).all()


def test_learns_from_a_few_strokes_and_predicts_other_images() -> None:
    img, truth = blobs()
    clf = PixelClassifier.train([(img, strokes(truth))], NAMES, COLOURS, params=FAST)
    assert clf.config.mode == "grey"  # a decoded grey file (three equal channels)
    other, other_truth = blobs(seed=1)
    labels, conf = clf.predict(other)
    assert labels.dtype == np.uint8 and conf.dtype == np.uint8 and labels.shape == other_truth.shape
    assert (labels == other_truth).mean() > 0.9
    assert conf.max() == 255 and conf.min() >= 127  # two classes: the best is at least one half


def test_strokes_of_one_class_only_or_none_are_refused() -> None:
    img, truth = blobs()
    one = np.full(truth.shape, VOID, np.uint8)
    one[5, :] = 0
    with pytest.raises(PixelClassifierError, match="only one class is labelled \\(bg\\)"):
        PixelClassifier.train([(img, one)], NAMES, COLOURS, params=FAST)
    with pytest.raises(PixelClassifierError, match="no labelled pixels"):
        PixelClassifier.train([(img, np.full(truth.shape, VOID, np.uint8))], NAMES, COLOURS, params=FAST)
    with pytest.raises(PixelClassifierError, match="no labelled pixels"):
        PixelClassifier.train([], NAMES, COLOURS, params=FAST)


def test_uniform_and_1x1_images_give_a_correct_answer() -> None:
    flat = np.full((30, 40, 3), 128, np.uint8)
    lab = np.full((30, 40), VOID, np.uint8)
    lab[:, :5], lab[:, -5:] = 0, 1
    clf = PixelClassifier.train([(flat, lab)], NAMES, COLOURS, params=FAST)
    labels, conf = clf.predict(flat)  # nothing tells the classes apart: a valid, unsure answer
    assert set(np.unique(labels)) <= {0, 1} and conf.max() <= 200
    tiny, tiny_conf = clf.predict(np.zeros((1, 1, 3), np.uint8))
    assert tiny.shape == (1, 1) and tiny_conf.shape == (1, 1)


def test_a_big_image_is_predicted_on_a_downscaled_copy() -> None:
    img, truth = blobs()
    big = np.kron(img[:, :, 0], np.ones((32, 32), np.uint8))  # 1536x2048: 3.1 megapixels
    big_truth = np.kron(truth, np.ones((32, 32), np.uint8))
    clf = PixelClassifier.train([(big, big_truth)], NAMES, COLOURS, params=FAST)  # features of a 1-megapixel copy
    labels, conf = clf.predict(big)
    assert labels.shape == conf.shape == big.shape
    assert (labels == big_truth).mean() > 0.9


def test_cancel_between_images() -> None:
    img, truth = blobs()
    with pytest.raises(Cancelled):
        PixelClassifier.train([(img, truth)] * 3, NAMES, COLOURS, params=FAST, should_stop=lambda: True)


def test_stroke_labels_are_the_persons_pixels_only() -> None:
    pre = np.zeros((4, 4), np.uint8)
    pre[:, 2:] = 1  # a pre-label: the model's guesses are not labels
    now = pre.copy()
    now[0, 0] = 1
    got = stroke_labels(now, pre)
    assert got[0, 0] == 1 and (got == VOID).sum() == 15
    blank = np.zeros((30, 30), np.uint8)  # a blank image: untouched pixels far from strokes are the blank's class
    now = blank.copy()
    now[1, 1] = 1
    got = stroke_labels(now, blank)
    assert got[1, 1] == 1 and got[28, 28] == 0
    assert got[5, 5] == VOID  # near the stroke: perhaps more of the stroked object
    machine = np.zeros((30, 30), bool)
    machine[-1] = True  # set by a preview and untouched since: neither a stroke nor blank
    assert (stroke_labels(now, blank, machine)[-1] == VOID).all()
    voided = np.full((30, 30), VOID, np.uint8)  # ilastik's way: the blank filled with void, then strokes
    voided[2, :5], voided[20, :5] = 0, 1
    got = stroke_labels(voided, blank)
    assert (got == voided).all()
    merged, machine = preview_labels(voided, blank, np.full((30, 30), 1, np.uint8))
    assert (merged[2, :5] == 0).all() and merged[10, 10] == 1 and machine[10, 10] and not machine[2, 0]


def test_learning_baseline_is_the_prelabel_else_the_blank_else_void(tmp_path: Path) -> None:
    from annotation.layout import prelabel_path as kept
    from annotation.masks import write_mask_png

    blank = np.zeros((6, 8), np.uint8)
    assert learning_baseline(tmp_path, 1, blank) is blank  # a new image: its blank
    drawn = blank.copy()
    drawn[2:4] = 1
    assert (learning_baseline(tmp_path, 1, drawn) == VOID).all()  # imported or a person's: every label theirs
    pre = np.ones((6, 8), np.uint8)
    kept(tmp_path, 1).parent.mkdir()
    write_mask_png(kept(tmp_path, 1), pre)
    assert (learning_baseline(tmp_path, 1, drawn) == pre).all()  # the machine's last word
    kept(tmp_path, 2).write_bytes(b"not a png")
    assert (learning_baseline(tmp_path, 2, drawn) == VOID).all()


def test_save_load_round_trip_without_pickle(tmp_path: Path) -> None:
    img, truth = blobs()
    clf = PixelClassifier.train([(img, strokes(truth))], NAMES, COLOURS, params=FAST, name="mine")
    path = clf.save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as z:  # plain arrays only
        assert set(z.files) == {"header", "x", "y"}
    again = PixelClassifier.load(path)
    assert again.class_names == NAMES and again.name == "mine" and again.params == FAST
    other, _ = blobs(seed=2)
    assert np.array_equal(again.predict(other)[0], clf.predict(other)[0])  # the refit is deterministic
    assert np.array_equal(again.predict(other)[1], clf.predict(other)[1])


def _rewrite(path: Path, **arrays: np.ndarray) -> None:
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data.update(arrays)
    buf = io.BytesIO()
    np.savez(buf, **data)
    path.write_bytes(buf.getvalue())


def _header(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return json.loads(bytes(z["header"]).decode())


def test_corrupt_or_tampered_files_are_clear_errors(tmp_path: Path) -> None:
    img, truth = blobs()
    good = PixelClassifier.train([(img, strokes(truth))], NAMES, COLOURS, params=FAST).save(tmp_path / "m.npz")
    cases = {}
    cases["truncated"] = good.read_bytes()[:200]
    for name, change in {
        "format": lambda h: h.update(format="something-else"),
        "classes": lambda h: h.update(colours=[[0, 0, 0]]),
        "sigmas": lambda h: h["config"].update(sigmas=[]),
        "trees": lambda h: h["params"].update(n_estimators=10**9),
        "depth": lambda h: h["params"].update(max_depth="deep"),
        "counts": lambda h: h["info"].update(labelled=["x"]),
    }.items():
        p = tmp_path / f"{name}.npz"
        p.write_bytes(good.read_bytes())
        h = _header(p)
        change(h)
        _rewrite(p, header=np.frombuffer(json.dumps(h).encode(), np.uint8))
        cases[name] = p.read_bytes()
    p = tmp_path / "x.npz"
    p.write_bytes(good.read_bytes())
    _rewrite(p, x=np.zeros((3, 2), np.float32))
    cases["features"] = p.read_bytes()
    buf = io.BytesIO()  # an object array: only loadable by unpickling, which is never done
    np.savez(buf, header=np.array([{"format": "atrous-pixel-classifier"}], dtype=object))
    cases["pickle"] = buf.getvalue()
    cases["garbage"] = b"not an archive"
    for name, data in cases.items():
        bad = tmp_path / f"bad-{name}.npz"
        bad.write_bytes(data)
        with pytest.raises(PixelClassifierFileError, match="bad-") as e:
            PixelClassifier.load(bad)
        assert "unsafe" not in str(e.value).lower()  # never advice to unpickle it
    with pytest.raises(PixelClassifierFileError, match="no such file"):
        PixelClassifier.load(tmp_path / "none.npz")
    assert zipfile.is_zipfile(good)


# --------------------------------------------------------------------------- projects, jobs and the CLI


@pytest.fixture
def project_path(tmp_path: Path) -> Path:
    path, _ = make_tiny_project(tmp_path, n=4, statuses=("reviewed", "new"), classes=3)
    return path


def test_train_for_project_records_a_version_the_jobs_use(project_path: Path) -> None:
    with Project.open(project_path) as project:
        clf, vid, path = train_for_project(project, params=FAST)
        assert path.parent.name == "models" and path.suffix == ".npz"
        mv = next(m for m in project.model_versions() if m.id == vid)
        assert mv.metrics["kind"] == "pixel-classifier" and mv.metrics["images"] == 2
        ref = resolve(project, f"v{vid}")
        assert version_kind(ref.spec) == "pixel-classifier"
        predictor = load_predictor(ref)
        summary = prelabel_project(project, predictor, version_id=vid)
        assert summary.saved == 2 and not summary.failed
        for rec in project.images("prelabeled"):
            assert rec.prelabel_model_version == vid and rec.mean_confidence is not None
            assert prelabel_path(project.root, rec.id).is_file() and confidence_path(project.root, rec.id).is_file()
        result = evaluate_project(project, predictor, project.images("reviewed"))
        assert result.images == 2 and result.metrics.pixel_accuracy > 0.9


def test_cli_prelabel_trains_saves_and_prelabels(project_path: Path, tmp_path: Path, capsys) -> None:
    assert main.main(["prelabel", str(project_path), "--model", "pixel-classifier"]) == 0
    out = capsys.readouterr()
    assert "pre-labelled 2 of 2 images" in out.out and "pixel classifier v1" in out.err
    assert main.main(["models", str(project_path)]) == 0
    listing = capsys.readouterr().out
    assert "pixel-classifier" in listing and ".npz" in listing
    saved = next((project_path / "models").glob("*.npz"))
    # The file is a model for another project with the same classes ...
    other, _ = make_tiny_project(tmp_path / "other", n=2, statuses=("reviewed",), classes=3)
    assert main.main(["evaluate", str(other), "--model", str(saved), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pixel_accuracy"] > 0.9
    # ... and refused, like a checkpoint, where the classes differ.
    third, _ = make_tiny_project(tmp_path / "third", n=2, statuses=("new",), classes=3)
    with Project.open(third) as p:
        p.set_classes([LabelClass(k, name, (k, k, k)) for k, name in enumerate(["sky", "road", "car"])])
    assert main.main(["prelabel", str(third), "--model", str(saved)]) == 2
    assert "are not the project's" in capsys.readouterr().err


def test_cli_prelabel_without_person_masks_is_a_clear_error(tmp_path: Path, capsys) -> None:
    path, _ = make_tiny_project(tmp_path, n=2, statuses=("new",), classes=2)
    assert main.main(["prelabel", str(path), "--model", "pixel-classifier"]) == 2
    assert "no edited or reviewed masks" in capsys.readouterr().err
    assert main.main(["prelabel", str(path), "--model", "pixel-classifier", "--batch-size", "0"]) == 2
    assert "batch size must be at least 1" in capsys.readouterr().err
    with Project.open(path) as p:
        assert p.model_versions() == []
        rec = p.images()[0]
        p.save_mask(rec.id, np.zeros((rec.height, rec.width), np.uint8), status="edited")
    assert main.main(["prelabel", str(path), "--model", "pixel-classifier"]) == 2
    assert "only one class is labelled (k0)" in capsys.readouterr().err


def test_isbi_one_slice_is_enough(shared_data) -> None:
    root = shared_data("isbi2012_membrane")

    def pair(n: int) -> tuple[np.ndarray, np.ndarray]:
        img = np.array(Image.open(root / "image" / f"{n}.png"))
        return img, (np.array(Image.open(root / "label" / f"{n}.png")) > 127).astype(np.uint8)

    clf = PixelClassifier.train([pair(0)], ["membrane", "cell"], COLOURS)
    img, truth = pair(16)
    assert (clf.predict(img)[0] == truth).mean() > 0.87


def test_labels_outside_the_classes_are_not_samples() -> None:
    img, truth = blobs()
    lab = truth.copy()
    lab[:4] = 7  # a class index the model does not have: ignored like void
    clf = PixelClassifier.train([(img, lab)], NAMES, COLOURS, params=FAST)
    assert set(clf.y.tolist()) == {0, 1}


def test_project_without_classes_is_refused(tmp_path: Path) -> None:
    with (
        Project.create(tmp_path / "p", [LabelClass(0, "only", (1, 2, 3))]) as p,
        pytest.raises(PixelClassifierError, match="nothing to learn from"),
    ):
        train_for_project(p)
