"""The one model resolver: registry names, checkpoint files and project versions, as every caller sees them."""

from __future__ import annotations

from pathlib import Path

import pytest

import main
from annotation.project import Project
from model.versions import (
    REGISTRY_NAMES,
    ModelChoiceError,
    ensure_version,
    resolve,
    version_choices,
)
from model.weights import save_checkpoint

from .ddp_common import make_tiny_project
from .helpers import tiny_model


@pytest.fixture
def project(tmp_path: Path):
    path, _ = make_tiny_project(tmp_path, n=2, statuses=("new",))
    with Project.open(path) as p:
        yield p


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    loaded = tiny_model(num_classes=3, input_size=40, class_names=["k0", "k1", "k2"])
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, loaded.network, loaded.meta)
    return path


def test_registry_names_match_the_registry() -> None:
    from model.weights import REGISTRY

    assert list(REGISTRY_NAMES) == list(REGISTRY)


def test_no_choice_is_the_active_version_else_the_default(project: Project, ckpt: Path) -> None:
    assert resolve(project, None).spec == REGISTRY_NAMES[0]
    assert resolve(project, None, default=None) is None
    vid = project.add_model_version("mine", str(ckpt))
    project.active_model_version = vid
    ref = resolve(project, None)
    assert ref.spec == str(ckpt) and ref.version_id == vid and ref.label == f"v{vid} mine"


def test_a_file_that_is_a_version_keeps_its_id(project: Project, ckpt: Path) -> None:
    vid = project.add_model_version("mine", str(ckpt))
    assert resolve(project, str(ckpt)).version_id == vid
    assert resolve(project, f"v{vid}").spec == str(ckpt)
    assert resolve(project, str(vid)).version_id == vid


def test_relative_version_paths_resolve_inside_the_project(project: Project, ckpt: Path) -> None:
    (project.root / "models").mkdir()
    inside = project.root / "models" / "ft.pt"
    inside.write_bytes(ckpt.read_bytes())
    vid = project.add_model_version("ft", "models/ft.pt")
    assert resolve(project, f"v{vid}").spec == str(inside)


def test_registry_version_stays_a_name_in_the_app_and_fails_offline_with_a_reason(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prelabel PROJECT` records a registry model by name; the app used to look for PROJECT/<name>."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    ref = resolve(project, REGISTRY_NAMES[0])
    vid = ensure_version(project, ref, "torchvision")
    assert project.model_versions()[-1].checkpoint_path == REGISTRY_NAMES[0]
    ((choice_id, _, spec, available),) = version_choices(project)
    assert spec == REGISTRY_NAMES[0] and choice_id == vid and available
    assert resolve(project, f"v{vid}").spec == REGISTRY_NAMES[0]
    from model.versions import load_predictor
    from model.weights import WeightsUnavailableError

    with pytest.raises(WeightsUnavailableError) as e:
        load_predictor(resolve(project, f"v{vid}"), device="cpu")
    assert "\n" not in str(e.value) and "cache" in str(e.value).lower()


def test_deleted_checkpoint_behind_a_version_is_a_clear_error(project: Project, ckpt: Path, capsys) -> None:
    vid = project.add_model_version("gone", str(ckpt))
    project.active_model_version = vid
    ckpt.unlink()
    with pytest.raises(ModelChoiceError, match=r"v1 \(gone\): its checkpoint .* is missing"):
        resolve(project, None)
    ((choice_id, name, _, available),) = version_choices(project)
    assert not available and choice_id == vid and name == "gone"
    assert main.main(["prelabel", str(project.root), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "is missing" in err and "activate" in err and "Traceback" not in err
    assert main.main(["models", str(project.root)]) == 0
    assert f"{ckpt}  (missing)" in capsys.readouterr().out


def test_unknown_version_lists_the_known_ones(project: Project, ckpt: Path) -> None:
    project.add_model_version("a", str(ckpt))
    with pytest.raises(ModelChoiceError, match=r"no model version v7 \(versions: v1"):
        resolve(project, "v7")
    with pytest.raises(ModelChoiceError, match="neither a model name"):
        resolve(project, "no-such-model")
    with pytest.raises(ModelChoiceError, match="needs a project"):
        resolve(None, "v2")


def test_an_outside_model_is_recorded_once(project: Project, ckpt: Path) -> None:
    ref = resolve(project, str(ckpt))
    assert ref.version_id is None
    first = ensure_version(project, ref, "tiny")
    assert ensure_version(project, resolve(project, str(ckpt)), "tiny") == first
    assert len(project.model_versions()) == 1
    assert Path(project.model_versions()[0].checkpoint_path).is_absolute()
