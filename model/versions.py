"""The one model resolver: registry name | checkpoint file | project version -> what to load.

``prelabel``, ``finetune``, ``evaluate``, ``activate`` and the app all turn what a
person chose into a :class:`ModelRef` here, and load it with :func:`load_predictor`.
Importing this module does not import torch (the app's model panel lists
versions with it before any model is loaded).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from annotation.classes import LabelClass, read_class_names
from annotation.errors import AtrousError
from annotation.layout import stored_model_path
from annotation.masks import VOID
from annotation.project import ModelVersion, Project

if TYPE_CHECKING:  # torch stays out of `import model.versions`
    from .class_map import ClassMap
    from .predictor import Predictor
    from .weights import ModelMeta

#: The registry's model names, in the order `models` lists them (a test keeps this equal to
#: ``model.weights.REGISTRY``, which needs torch to import).
REGISTRY_NAMES = ("deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "deeplabv3_resnet101")
#: What a project with no active version, or a folder, is pre-labelled with.
DEFAULT_MODEL = REGISTRY_NAMES[0]


class ModelChoiceError(AtrousError):
    """A model choice that names nothing loadable (unknown version, missing checkpoint)."""


@dataclass(frozen=True)
class ModelRef:
    """A resolved model choice: plain data, so it crosses threads and processes.

    ``spec``: a registry name or an absolute checkpoint path (what ``load_model`` takes).
    ``version_id``: the project's model version it is, if any. ``label``: how to show it.
    """

    spec: str
    version_id: int | None = None
    label: str = ""


def parse_version_id(text: str) -> int | None:
    """``v3``, ``V3`` or ``3`` -> 3; anything else -> None."""
    text = str(text).strip()
    key = text[1:] if text[:1] in "vV" else text
    return int(key) if key.isdigit() else None


def version_spec(root: str | os.PathLike[str], stored: str) -> str:
    """What to load for a version's recorded checkpoint: a registry name stays a name; a path is made absolute."""
    if stored in REGISTRY_NAMES:
        return stored
    return str(stored_model_path(root, stored))


def version_label(mv: ModelVersion) -> str:
    """``v3 finetune-20261202-1000`` for menus and messages."""
    return f"v{mv.id} {mv.name}".strip()


def version_ref(project: Project, mv: ModelVersion, *, check: bool = True) -> ModelRef:
    """The reference of a recorded version; with ``check`` a deleted checkpoint is a clear error."""
    spec = version_spec(project.root, mv.checkpoint_path)
    if check and spec not in REGISTRY_NAMES and not Path(spec).is_file():
        raise ModelChoiceError(
            f"model version v{mv.id} ({mv.name}): its checkpoint {spec} is missing (moved or deleted); "
            f"choose another version (`activate {project.root} vN`, see `models {project.root}`) or fine-tune again"
        )
    return ModelRef(spec, mv.id, version_label(mv))


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def find_version(project: Project, spec: str) -> ModelVersion | None:
    """The recorded version whose checkpoint (or registry name) is ``spec``, if any."""
    for mv in project.model_versions():
        stored = version_spec(project.root, mv.checkpoint_path)
        if stored == spec or (spec not in REGISTRY_NAMES and _same_file(stored, spec)):
            return mv
    return None


def resolve(project: Project | None, choice: str | None, *, default: str | None = DEFAULT_MODEL) -> ModelRef | None:
    """Turn a person's model choice into a :class:`ModelRef`.

    ``choice``: None (the project's active version, else ``default``), a version
    (``v3``/``3``), a registry name or a checkpoint path. Returns None only when
    ``choice`` is None, there is no active version and ``default`` is None.
    Raises :class:`ModelChoiceError` for an unknown version, a version whose
    checkpoint was deleted, or a name that is neither a model nor a file.
    """
    if choice is None or str(choice).strip() == "":
        active = project.active_model_version if project is not None else None
        if active is not None:
            return version_ref(project, active)
        return None if default is None else ModelRef(default, None, default)
    text = os.fspath(choice).strip()
    vid = parse_version_id(text)
    if vid is not None and not Path(text).exists():
        if project is None:
            raise ModelChoiceError(f"{text!r} looks like a model version, which needs a project")
        for mv in project.model_versions():
            if mv.id == vid:
                return version_ref(project, mv)
        known = ", ".join(f"v{mv.id}" for mv in project.model_versions()) or "none yet"
        raise ModelChoiceError(
            f"{project.root}: no model version {text} (versions: {known}; see `models {project.root}`)"
        )
    if text in REGISTRY_NAMES:
        mv = find_version(project, text) if project is not None else None
        return ModelRef(text, mv.id if mv else None, version_label(mv) if mv else text)
    path = Path(text).expanduser()
    if path.is_file():
        spec = str(path.resolve())
        mv = find_version(project, spec) if project is not None else None
        return ModelRef(spec, mv.id if mv else None, version_label(mv) if mv else path.name)
    where = " or a version of the project" if project is not None else ""
    raise ModelChoiceError(
        f"{text!r} is neither a model name ({', '.join(REGISTRY_NAMES)}), an existing checkpoint file{where}"
    )


def ensure_version(project: Project, ref: ModelRef, name: str = "", class_map: ClassMap | None = None) -> int:
    """The version id of ``ref``, recording an outside model (a registry name or a file) once.

    Pre-labels always name the version that made them; a registry model is
    recorded by its name (never as a path), so it resolves in the app too.
    With ``class_map`` the model and its mapping are one version of their own
    (the mapping in its metadata, ``class_map``), recorded once per mapping.
    """
    if class_map is not None:
        return _mapped_version(project, ref, name, class_map)
    if ref.version_id is not None:
        return ref.version_id
    mv = find_version(project, ref.spec)
    if mv is not None:
        return mv.id
    stored = ref.spec if ref.spec in REGISTRY_NAMES else str(Path(ref.spec).resolve())
    return project.add_model_version(name or Path(ref.spec).stem, stored, {"external": True})


def _mapped_version(project: Project, ref: ModelRef, name: str, class_map: ClassMap) -> int:
    record = class_map.record()
    same = {k: record[k] for k in ("pairs", "unmapped")}
    for mv in project.model_versions():
        stored = version_spec(project.root, mv.checkpoint_path)
        mapped = mv.metrics.get("class_map")
        if isinstance(mapped, dict) and {k: mapped.get(k) for k in same} == same:
            if stored == ref.spec or (ref.spec not in REGISTRY_NAMES and _same_file(stored, ref.spec)):
                return mv.id
    base = next((mv for mv in project.model_versions() if mv.id == ref.version_id), None)
    if base is not None:
        stored = base.checkpoint_path
    else:
        stored = ref.spec if ref.spec in REGISTRY_NAMES else str(Path(ref.spec).resolve())
    label = f"{name or Path(ref.spec).stem} mapped"
    return project.add_model_version(label, stored, {"external": base is None, "class_map": record})


def version_choices(project: Project) -> list[tuple[int, str, str, bool]]:
    """Every recorded version as (id, name, spec to load, checkpoint available), oldest first, for a model menu."""
    out = []
    for mv in project.model_versions():
        spec = version_spec(project.root, mv.checkpoint_path)
        out.append((mv.id, mv.name, spec, spec in REGISTRY_NAMES or Path(spec).is_file()))
    return out


#: The kind of a pixel classifier version (:mod:`model.pixel_classifier`): an ``.npz``, not a network.
PIXEL_CLASSIFIER_KIND = "pixel-classifier"


def version_kind(spec: str) -> str:
    """``pixel-classifier`` for a saved pixel classifier (``.npz``), else ``deeplabv3``."""
    return PIXEL_CLASSIFIER_KIND if str(spec).lower().endswith(".npz") else "deeplabv3"


def check_batch_size(batch_size: int | None) -> None:
    """Refuse a batch size below 1 (None: the default)."""
    if batch_size is not None and batch_size < 1:
        raise AtrousError(f"batch size must be at least 1, got {batch_size}")


def default_batch_size(device_type: str) -> int:
    """Images per pre-label batch: 1 on the CPU (batches do not pay there), 8 on a GPU."""
    return 1 if device_type == "cpu" else 8


def load_predictor(
    ref: ModelRef | str,
    *,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    class_names: list[str] | None = None,
    classes_file: str | os.PathLike[str] | None = None,
) -> Predictor:
    """Load a model and wrap it in a Predictor; raises AtrousError subclasses with one-line reasons."""
    spec = ref.spec if isinstance(ref, ModelRef) else str(ref)
    if version_kind(spec) == PIXEL_CLASSIFIER_KIND:  # a scribble-trained random forest: no torch, no device
        from .pixel_classifier import load_pixel_predictor

        check_batch_size(batch_size)
        return load_pixel_predictor(spec)
    from .predictor import Predictor
    from .weights import load_model

    if classes_file is not None:
        class_names = read_class_names(classes_file)
    loaded = load_model(spec, class_names=class_names)
    check_batch_size(batch_size)
    predictor = Predictor(loaded, device=device, precision=precision, batch_size=batch_size or 1)
    if batch_size is None:
        predictor.batch_size = default_batch_size(predictor.device.type)
    return predictor


def check_classes_match(project: Project, meta: ModelMeta, class_map: ClassMap | None = None) -> None:
    """Refuse a model whose classes are not the project's (names by index); adopt them if the project has none.

    With ``class_map`` (:mod:`model.class_map`) the model's classes may differ: the map must be
    the one for this model's classes and land on classes the project has.
    """
    classes = project.classes()
    if class_map is not None:
        _check_class_map(classes, meta, class_map)
        return
    if not classes:
        project.set_classes(
            [
                LabelClass(i, n, (int(c[0]), int(c[1]), int(c[2])))
                for i, (n, c) in enumerate(zip(meta.class_names, meta.colours, strict=False))
                if not n.startswith("__unused_")
            ]
        )
        return
    want = {c.index: c.name for c in classes}
    have = dict(enumerate(meta.class_names))
    bad = [f"{i}:{n}" for i, n in want.items() if have.get(i) != n]
    if bad:
        from .class_map import ClassMismatchError

        shown = ", ".join(meta.class_names[:8]) + ("..." if len(meta.class_names) > 8 else "")
        raise ClassMismatchError(
            f"the model's classes ({shown}) are not the project's (mismatch at {', '.join(bad[:4])}); map them onto "
            "the project's classes (`--map FILE`, see docs/formats.md; the app offers a table when you pre-label), or "
            f"fine-tune a model for this project (`finetune {project.root} --base MODEL` rebuilds the heads for the "
            "project's classes)"
        )


def _check_class_map(classes: list[LabelClass], meta: ModelMeta, class_map: ClassMap) -> None:
    if not classes:
        raise AtrousError("the project has no classes yet, so there is nothing to map the model's classes onto")
    if list(class_map.model_classes) != list(meta.class_names):
        from .class_map import ClassMismatchError

        raise ClassMismatchError(
            f"the class map was made for a model with the classes {', '.join(class_map.model_classes[:8])}, "
            f"not this one's ({', '.join(meta.class_names[:8])})"
        )
    known = {c.index for c in classes}
    bad = [
        f"{m} -> {t}"
        for m, t in zip(class_map.model_classes, class_map.targets, strict=True)
        if t != VOID and t not in known
    ]
    if bad:
        raise AtrousError(
            f"the class map sends model classes to classes the project does not have ({', '.join(bad[:4])})"
        )


__all__ = [
    "DEFAULT_MODEL",
    "REGISTRY_NAMES",
    "ModelChoiceError",
    "ModelRef",
    "check_batch_size",
    "check_classes_match",
    "default_batch_size",
    "ensure_version",
    "find_version",
    "load_predictor",
    "parse_version_id",
    "resolve",
    "version_choices",
    "version_kind",
    "version_label",
    "version_ref",
    "version_spec",
]
