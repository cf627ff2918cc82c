"""Class mapping: a model trained for other classes pre-labels and is evaluated in the project's classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import main
from annotation.classes import LabelClass, make_class, read_class_file
from annotation.confidence import read_confidence
from annotation.errors import AtrousError, AtrousReadError
from annotation.masks import VOID
from annotation.project import Project
from model.class_map import (
    ClassMapError,
    class_map_from_record,
    classes_differ,
    make_class_map,
    map_file_text,
    mapped_classes,
    name_key,
    parse_map_lines,
    read_map_file,
)
from model.jobs import evaluate_project, prelabel_project
from model.predictor import Prediction
from model.versions import ModelRef, check_classes_match, ensure_version

from .ddp_common import one_thread  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]
#: torchvision's VOC categories (what the registry models predict); a test keeps this equal to the weights' meta.
VOC = [
    "__background__",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]


def classes(*names: str) -> list[LabelClass]:
    return [make_class(i, n) for i, n in enumerate(names)]


def test_voc_list_is_torchvisions() -> None:
    from model.versions import DEFAULT_MODEL
    from model.weights import REGISTRY

    assert list(REGISTRY[DEFAULT_MODEL].torchvision_weights().meta["categories"]) == VOC


def test_the_sample_project_uses_voc_names_so_the_pretrained_model_maps_onto_it() -> None:
    sample, _ = read_class_file(REPO / "resources" / "samples" / "classes.json")
    cmap = make_class_map(VOC, sample)
    voc_keys = {name_key(n): i for i, n in enumerate(VOC)}
    in_voc = [c for c in sample if name_key(c.name) in voc_keys]
    # every sample class VOC has receives that VOC class (background included) ...
    for c in in_voc:
        assert cmap.targets[voc_keys[name_key(c.name)]] == c.index, c.name
    # ... and those are the photos' subjects: the astronaut and the cat
    assert {"person", "cat"} <= set(mapped_classes(cmap, sample))
    assert cmap.targets[VOC.index("__background__")] == 0 and cmap.targets[VOC.index("cow")] == 0


@pytest.mark.parametrize(
    ("model", "project"),
    [
        ("Person", " person "),
        ("pottedplant", "potted plant"),
        ("tvmonitor", "TV"),
        ("motorbike", "motorcycle"),
        ("aeroplane", "airplane"),
        ("diningtable", "dining_table"),
        ("__background__", "_background_"),
    ],
)
def test_names_match_ignoring_case_spaces_and_synonyms(model: str, project: str) -> None:
    assert name_key(model) == name_key(project)


def test_unmapped_classes_go_to_background_or_void_and_the_lut_maps_labels() -> None:
    proj = classes("background", "person", "car", "cat")
    to_bg = make_class_map(VOC, proj)
    to_void = make_class_map(VOC, proj, unmapped="void")
    labels = np.array([[15, 7, 8], [0, 10, 255]], np.uint8)  # person car cat / background cow (out of range)
    assert to_bg.apply(labels).tolist() == [[1, 2, 3], [0, 0, VOID]]
    assert to_void.apply(labels).tolist() == [[1, 2, 3], [0, VOID, VOID]]
    assert to_bg.lut().dtype == np.uint8 and to_bg.lut().shape == (256,)
    assert "person -> person" in to_void.describe() and "17 other(s) -> void" in to_void.describe()
    # a person's choices win over names; None sends a class where the rest goes
    chosen = make_class_map(VOC, proj, chosen={VOC.index("dog"): 3, VOC.index("cat"): None})
    assert chosen.targets[VOC.index("dog")] == 3 and chosen.targets[VOC.index("cat")] == 0
    assert classes_differ(VOC, proj) and not classes_differ(["background", "person"], proj[:2])


def test_a_project_without_background_needs_void_for_the_rest() -> None:
    proj = classes("person", "car", "cat")
    with pytest.raises(ClassMapError, match="no background class"):
        make_class_map(VOC, proj)
    cmap = make_class_map(VOC, proj, unmapped="void")
    assert cmap.targets[VOC.index("person")] == 0 and cmap.targets[0] == VOID
    with pytest.raises(ClassMapError, match="no class with index 7"):
        make_class_map(VOC, proj, unmapped="void", chosen={1: 7})


def test_map_file_reads_like_a_class_list_and_round_trips(tmp_path: Path) -> None:
    f = tmp_path / "map.txt"
    f.write_bytes("\ufeff# VOC onto ours\n\nMotorbike = car\n  cow = void  \n# the rest\n* = void\n".encode())
    spec = read_map_file(f)
    assert [(m.line, m.model, m.target) for m in spec.lines] == [(3, "Motorbike", "car"), (4, "cow", "void")]
    proj = classes("person", "car", "cat")
    cmap = spec.resolve(VOC, proj)
    assert cmap.targets[VOC.index("motorbike")] == 1 and cmap.targets[VOC.index("cow")] == VOID
    assert cmap.targets[VOC.index("person")] == 0 and cmap.targets[VOC.index("bus")] == VOID
    assert cmap.source == str(f)
    again = parse_map_lines(map_file_text(cmap).splitlines(), "again").resolve(VOC, proj)
    assert again.targets == cmap.targets and again.unmapped == "void"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("person = person\ncar person\n", r"line 2: expected `model class = project class`"),
        ("person =\n", "line 1: expected"),
        ("= car\n", "line 1: expected"),
        ("a = b = c\n", "line 1: expected"),
        ("* = car\n", r"line 1: `\* = car`: the unmapped classes go to background or void"),
        ("* = void\n* = background\n", "line 2: .* already given on line 1"),
        ("", "maps nothing"),
        ("# only a comment\n\n", "maps nothing"),
    ],
)
def test_malformed_map_files_are_refused_naming_the_line(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "bad.map"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(ClassMapError, match=match):
        read_map_file(f)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "person = dog\n",
            r"line 1: the project has no class 'dog' \(its classes: background, person, car, cat, void\)",
        ),
        ("unicorn = car\n", r"line 1: the model has no class 'unicorn' \(its classes: __background__, aeroplane"),
        ("car = car\n# x\nCAR = void\n", r"line 3: model class 'car' is already mapped on line 1"),
        ("person = background\ncar = void\ncat = void\n", "maps no model class onto a project class"),
    ],
)
def test_map_files_naming_classes_either_side_lacks_are_refused(tmp_path: Path, text: str, match: str) -> None:
    spec = parse_map_lines(text.splitlines(), tmp_path / "m.txt")
    with pytest.raises(ClassMapError, match=match):
        spec.resolve(VOC, classes("background", "person", "car", "cat"))


def test_a_recorded_map_is_made_again_while_it_fits() -> None:
    proj = classes("background", "person", "car", "cat")
    cmap = make_class_map(VOC, proj, unmapped="void", chosen={VOC.index("bus"): 2})
    again = class_map_from_record(json.loads(json.dumps(cmap.record())), VOC, proj)
    assert again is not None and again.targets == cmap.targets and again.unmapped == "void"
    assert class_map_from_record(cmap.record(), VOC[:-1], proj) is None  # another model
    assert class_map_from_record(cmap.record(), VOC, classes("background", "person", "auto", "cat")) is None
    assert class_map_from_record(None, VOC, proj) is None and class_map_from_record({"pairs": 3}, VOC, proj) is None


def test_unreadable_map_files(tmp_path: Path) -> None:
    with pytest.raises(AtrousReadError, match="cannot read the class map"):
        read_map_file(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9 = car\n")
    with pytest.raises(AtrousReadError, match="not UTF-8"):
        read_map_file(tmp_path / "latin1.txt")


class _Meta:
    def __init__(self, names: list[str]) -> None:
        self.class_names = names


class FakePredictor:
    """Yields fixed predictions (VOC labels), so the job's mapping is checked label by label."""

    description = "fake"

    def __init__(self, labels: list[np.ndarray]) -> None:
        self.labels = labels
        self.meta = _Meta(VOC)

    def predict_files(self, paths):
        def gen():
            for p, lab in zip(paths, self.labels, strict=True):
                conf = (np.arange(lab.size, dtype=np.uint8).reshape(lab.shape) * 7) | 1
                yield Path(p), Prediction(lab.copy(), conf)

        return gen()


def _project(tmp_path: Path, names: tuple[str, ...], n: int = 2, h: int = 6, w: int = 8) -> Path:
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(imgs / f"im{i}.png")
    path = tmp_path / "proj"
    with Project.create(path, classes(*names)) as p:
        p.add_images(imgs)
    return path


def test_the_job_records_mapped_labels_keeps_confidence_and_the_version_keeps_the_map(tmp_path: Path) -> None:
    path = _project(tmp_path, ("background", "person", "car", "cat"))
    rng = np.random.default_rng(0)
    raw = [rng.integers(0, 21, (6, 8)).astype(np.uint8) for _ in range(2)]
    pred = FakePredictor(raw)
    with Project.open(path) as p:
        cmap = make_class_map(VOC, p.classes(), unmapped="void")
        with pytest.raises(AtrousError, match="--map FILE"):
            check_classes_match(p, pred.meta)
        check_classes_match(p, pred.meta, cmap)
        vid = ensure_version(p, ModelRef("deeplabv3_mobilenet_v3_large"), "deeplab", cmap)
        assert ensure_version(p, ModelRef("deeplabv3_mobilenet_v3_large"), "deeplab", cmap) == vid  # once per map
        other = make_class_map(VOC, p.classes())
        assert ensure_version(p, ModelRef("deeplabv3_mobilenet_v3_large"), "deeplab", other) != vid
        mv = next(v for v in p.model_versions() if v.id == vid)
        assert mv.metrics["class_map"]["pairs"]["person"] == "person"
        assert mv.metrics["class_map"]["pairs"]["cow"] == "void" and mv.metrics["class_map"]["unmapped"] == "void"
        summary = prelabel_project(p, pred, version_id=vid, class_map=cmap)
        assert summary.saved == 2
        for rec, lab in zip(p.images(), raw, strict=True):
            assert np.array_equal(p.read_mask(rec.id), cmap.lut()[lab])
            conf = read_confidence(path, rec.id)
            assert np.array_equal(conf, (np.arange(48, dtype=np.uint8).reshape(6, 8) * 7) | 1)  # as predicted
            assert p.image(rec.id).prelabel_model_version == vid
        # scored per project class; a pixel mapped to void is wrong
        for rec, lab in zip(p.images(), raw, strict=True):
            p.save_mask(rec.id, cmap.lut()[lab], status="reviewed")
        perfect = evaluate_project(p, FakePredictor(raw), p.images(), class_map=cmap)
        assert perfect.metrics.class_names == ["background", "person", "car", "cat"]
        void_px = sum(int((cmap.lut()[lab] == VOID).sum()) for lab in raw)
        assert perfect.metrics.pixel_accuracy == 1.0 and perfect.metrics.n_pixels == 96 - void_px
        truth = [np.full((6, 8), 1, np.uint8)] * 2  # everything is a person
        for rec, t in zip(p.images(), truth, strict=True):
            p.save_mask(rec.id, t, status="reviewed")
        scored = evaluate_project(p, FakePredictor(raw), p.images(), class_map=cmap)
        hits = sum(int((cmap.lut()[lab] == 1).sum()) for lab in raw)
        assert scored.metrics.pixel_accuracy == pytest.approx(hits / 96)  # void predictions count as misses
        assert len(scored.metrics.per_class_iou) == 4 and scored.metrics.per_class_iou[1] == pytest.approx(hits / 96)


def test_a_map_made_for_another_model_or_onto_missing_classes_is_refused(tmp_path: Path) -> None:
    path = _project(tmp_path, ("background", "person"), n=1)
    with Project.open(path) as p:
        cmap = make_class_map(VOC, classes("background", "person", "car"), chosen={7: 2})
        with pytest.raises(AtrousError, match=r"classes the project does not have \(car -> 2\)"):
            check_classes_match(p, _Meta(VOC), cmap)
        with pytest.raises(AtrousError, match="made for a model with the classes"):
            check_classes_match(p, _Meta(VOC[:5]), make_class_map(VOC, p.classes()))


# --------------------------------------------------------------------------- the CLI, end to end


@pytest.fixture
def voc_ckpt(tmp_path: Path) -> Path:
    """A random 21-class checkpoint named like torchvision's VOC model whose head predicts motorbike everywhere."""
    import torch

    from model.weights import save_checkpoint

    from .helpers import tiny_model

    loaded = tiny_model(num_classes=21, input_size=40, class_names=VOC)
    last = loaded.network.classifier[-1]
    with torch.no_grad():
        last.bias[:] = 0.0
        last.bias[VOC.index("motorbike")] = 8.0
    path = tmp_path / "voc.pt"
    save_checkpoint(path, loaded.network, loaded.meta)
    return path


@pytest.mark.usefixtures("one_thread")
def test_cli_prelabel_and_evaluate_a_voc_model_on_a_person_car_cat_project(tmp_path: Path, voc_ckpt, capsys) -> None:
    path = _project(tmp_path, ("person", "car", "cat"), n=2, h=40, w=56)
    base = ["--model", str(voc_ckpt), "--device", "cpu", "--precision", "fp32"]
    # without a map: refused, saying how to map
    assert main.main(["prelabel", str(path), *base]) == 2
    err = capsys.readouterr().err
    assert "not the project's" in err and "--map FILE" in err
    # the project has no background: the rest must go to void
    mapping = tmp_path / "voc.map"
    mapping.write_text("motorbike = car\n", encoding="utf-8")
    assert main.main(["prelabel", str(path), *base, "--map", str(mapping)]) == 2
    assert "no background class" in capsys.readouterr().err
    mapping.write_text("# VOC -> ours\nmotorbike = car\n* = void\n", encoding="utf-8")
    assert main.main(["prelabel", str(path), *base, "--map", str(mapping)]) == 0
    cap = capsys.readouterr()
    assert "pre-labelled 2 of 2" in cap.out and "motorbike -> car" in cap.err and "person -> person" in cap.err
    with Project.open(path) as p:
        recs = p.images()
        assert {r.status for r in recs} == {"prelabeled"}
        for r in recs:
            assert np.all(p.read_mask(r.id) == 1)  # car
            assert read_confidence(path, r.id) is not None
        (mv,) = p.model_versions()
        assert mv.metrics["class_map"]["pairs"]["motorbike"] == "car" and mv.name.endswith("mapped")
        for r in recs:
            p.save_mask(r.id, np.full((40, 56), 1, np.uint8), status="reviewed")
    assert main.main(["evaluate", str(path), *base, "--map", str(mapping), "--json"]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(d["per_class_iou"]) == {"person", "car", "cat"} and d["pixel_accuracy"] == 1.0
    assert d["class_map"]["pairs"]["motorbike"] == "car"
    # bad input before anything is written: a malformed file, a class the project lacks, folder mode
    mapping.write_text("motorbike -> car\n", encoding="utf-8")
    assert main.main(["prelabel", str(path), *base, "--map", str(mapping), "--overwrite-edited"]) == 2
    assert "line 1: expected `model class = project class`" in capsys.readouterr().err
    mapping.write_text("motorbike = bus\n* = void\n", encoding="utf-8")
    assert main.main(["evaluate", str(path), *base, "--map", str(mapping)]) == 2
    assert "line 1: the project has no class 'bus'" in capsys.readouterr().err
    assert main.main(["prelabel", str(tmp_path / "imgs"), "--out", str(tmp_path / "o"), "--map", str(mapping)]) == 2
    assert "--map applies to projects only" in capsys.readouterr().err
    with Project.open(path) as p:
        assert {r.status for r in p.images()} == {"reviewed"} and len(p.model_versions()) == 1


@pytest.mark.usefixtures("one_thread")
def test_cli_reuses_a_mapped_versions_recorded_map_and_map_wins(tmp_path: Path, voc_ckpt, capsys) -> None:
    path = _project(tmp_path, ("person", "car", "cat"), n=2, h=40, w=56)
    opts = ["--device", "cpu", "--precision", "fp32"]
    mapping = tmp_path / "voc.map"
    mapping.write_text("motorbike = car\n* = void\n", encoding="utf-8")
    assert main.main(["prelabel", str(path), "--model", str(voc_ckpt), *opts, "--map", str(mapping)]) == 0
    capsys.readouterr()
    with Project.open(path) as p:
        (mv,) = p.model_versions()
        for r in p.images():
            p.save_mask(r.id, np.zeros((40, 56), np.uint8), status="prelabeled")  # person, so a rerun shows
    # the mapped version again, without --map: its recorded map, recorded under that same version
    assert main.main(["prelabel", str(path), "--model", f"v{mv.id}", *opts]) == 0
    cap = capsys.readouterr()
    assert f"class map (recorded with v{mv.id} " in cap.err and "motorbike -> car" in cap.err
    assert f"with model version v{mv.id}" in cap.out
    with Project.open(path) as p:
        assert [v.id for v in p.model_versions()] == [mv.id]
        for r in p.images():
            assert np.all(p.read_mask(r.id) == 1) and p.image(r.id).prelabel_model_version == mv.id
            p.save_mask(r.id, np.full((40, 56), 1, np.uint8), status="reviewed")
        p.active_model_version = mv.id
    # evaluate by version, and with the active version (no --model)
    for model in (["--model", f"v{mv.id}"], []):
        assert main.main(["evaluate", str(path), *model, *opts, "--json"]) == 0
        d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert d["pixel_accuracy"] == 1.0 and d["class_map"]["pairs"]["motorbike"] == "car"
    # --map wins over the recorded map: said, and recorded as a version of its own
    mapping.write_text("motorbike = cat\n* = void\n", encoding="utf-8")
    assert main.main(["prelabel", str(path), "--model", f"v{mv.id}", *opts, "--map", str(mapping)]) == 0
    assert "--map differs from the class map recorded with" in capsys.readouterr().err
    with Project.open(path) as p:
        assert {r.status for r in p.images()} == {"reviewed"}  # left alone without --overwrite-edited
        versions = p.model_versions()
        assert len(versions) == 2 and versions[1].metrics["class_map"]["pairs"]["motorbike"] == "cat"
        assert versions[1].checkpoint_path == mv.checkpoint_path and versions[1].name.endswith("mapped")
        p.rename_class(1, "automobile")
    # a recorded map that no longer fits is refused, saying why, before anything is written
    assert main.main(["evaluate", str(path), "--model", f"v{mv.id}", *opts]) == 2
    assert "no longer fits" in capsys.readouterr().err
    assert main.main(["prelabel", str(path), "--model", f"v{mv.id}", *opts, "--overwrite-edited"]) == 2
    assert "--map FILE" in capsys.readouterr().err
    with Project.open(path) as p:
        assert {r.status for r in p.images()} == {"reviewed"} and len(p.model_versions()) == 2
