"""`prelabel --ray` on a local Ray cluster: the CLI's masks, exactly once across crashes, bad input.

One Ray instance (2 CPUs) serves the module; the killed-driver test runs the command in a
child process that joins it by address, as a laptop joins a cluster.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import main
from annotation.layout import prelabel_path
from annotation.masks import read_mask_png
from annotation.project import LabelClass, Project
from model.cluster_run import CONFIDENCE_DIR, MASKS_DIR, RESULTS_FILE, TEST_EXIT_ENV
from model.weights import save_checkpoint
from tests.conftest import SHARED_DATA

from .helpers import tiny_model

REPO = Path(__file__).resolve().parents[2]
N = 8


@pytest.fixture(scope="module")
def ray_address():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    loaded = tiny_model(num_classes=3)
    save_checkpoint(path, loaded.network, loaded.meta)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Eight CamVid images (synthetic 360x480 ones where the shared data is absent)."""
    folder = tmp_path_factory.mktemp("camvid")
    source = SHARED_DATA / "camvid_small" / "train" / "images"
    found = sorted(source.glob("*.png"))[:N] if source.is_dir() else []
    for p in found:
        shutil.copy(p, folder / p.name)
    rng = np.random.default_rng(0)
    for i in range(N - len(found)):
        Image.fromarray(rng.integers(0, 255, (360, 480, 3), dtype=np.uint8)).save(folder / f"synthetic{i}.png")
    return folder


def _args(images: Path, out: Path, checkpoint: Path, *extra: str) -> list[str]:
    return ["prelabel", str(images), "--out", str(out), "--model", str(checkpoint), "--device", "cpu", *extra]


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / RESULTS_FILE).read_text().splitlines()]


def _stamps(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every output file: a rewrite (atomic replace) changes the inode."""
    return {
        str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for d in (MASKS_DIR, CONFIDENCE_DIR)
        for p in (out / d).rglob("*")
        if p.is_file()
    }


def test_masks_equal_the_single_process_cli_and_a_rerun_writes_nothing(
    ray_address, images: Path, checkpoint: Path, tmp_path: Path, capsys
) -> None:
    ref = tmp_path / "cli"
    assert main.main(_args(images, ref, checkpoint)) == 0
    out = tmp_path / "ray"
    assert main.main([*_args(images, out, checkpoint), "--ray", "--actors", "2"]) == 0
    assert "done 8, skipped 0" in capsys.readouterr().out
    for p in sorted(images.glob("*.png")):
        got = out / MASKS_DIR / p.name
        assert Image.open(got).mode == "P"
        assert np.array_equal(read_mask_png(got), read_mask_png(ref / p.name)), p.name
        conf = np.asarray(Image.open(out / CONFIDENCE_DIR / p.name))
        assert conf.shape == read_mask_png(got).shape and conf.dtype == np.uint8
    lines = _manifest(out)
    assert sorted(d["path"] for d in lines) == sorted(str(p.resolve()) for p in images.glob("*.png"))
    assert all(d["error"] is None and 0 < d["mean_confidence"] <= 1 and d["width"] == 480 for d in lines), lines[0]
    assert {d["model"] for d in lines} == {str(checkpoint.resolve())}
    assert json.loads((out / "run.json").read_text())["sha256"]

    before = _stamps(out)
    assert main.main([*_args(images, out, checkpoint), "--ray"]) == 2  # no --resume
    assert "--resume" in capsys.readouterr().err
    assert main.main([*_args(images, out, checkpoint), "--ray", "--resume"]) == 0
    assert "done 0, skipped 8" in capsys.readouterr().out
    assert _stamps(out) == before and len(_manifest(out)) == N

    other = tmp_path / "other.pt"
    loaded = tiny_model(num_classes=2)
    save_checkpoint(other, loaded.network, loaded.meta)
    assert main.main([*_args(images, out, other), "--ray", "--resume"]) == 2
    assert "another model" in capsys.readouterr().err
    assert _stamps(out) == before


def test_a_killed_driver_then_resume_does_every_image_exactly_once(
    ray_address, images: Path, checkpoint: Path, tmp_path: Path, capsys
) -> None:
    seed = random.randrange(1 << 16)
    rng = random.Random(seed)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    args = [*_args(images, out, checkpoint), "--ray", ray_address, "--actors", "2", "--batch-size", "1"]
    cmd = [sys.executable, str(REPO / "main.py"), *args]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        want = rng.randint(0, N - 3)  # results in the manifest before the kill (0: while starting up)
        extra = rng.uniform(0, 0.5)
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / RESULTS_FILE).is_file() and len(_manifest_lines(out)) >= max(want, 1) or want == 0:
                break
            time.sleep(0.05)
        time.sleep(extra)
        assert proc.poll() is None, f"seed {seed}: the run ended before the kill: {proc.stderr.read()[-2000:]!r}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    time.sleep(2)  # Ray ends the dead driver's actors
    stamps = _stamps(out)
    # an image's outputs are complete when its mask is there (written last); a lone confidence map is redone
    first = {k: v for k, v in stamps.items() if k.replace(CONFIDENCE_DIR, MASKS_DIR, 1) in stamps}
    assert main.main([*_args(images, out, checkpoint), "--ray", "--resume"]) == 0, seed
    text = capsys.readouterr().out
    after = _stamps(out)
    assert all(after[k] == v for k, v in first.items()), f"seed {seed}: an output of the first run was rewritten"
    assert len(after) == 2 * N
    lines = _manifest(out)
    assert len(lines) == N and len({d["path"] for d in lines}) == N and all(d["error"] is None for d in lines)
    for p in images.glob("*.png"):  # every file complete
        assert read_mask_png(out / MASKS_DIR / p.name).shape == (480, 360)[::-1]
        Image.open(out / CONFIDENCE_DIR / p.name).load()
    assert not list(out.rglob("*.tmp")), "a torn temporary file is left"
    n_first = sum(1 for k in first if k.startswith(MASKS_DIR))
    assert f"done {N - n_first}," in text, (seed, text)


def _subset(images: Path, folder: Path, k: int) -> Path:
    folder.mkdir()
    for p in sorted(images.glob("*.png"))[:k]:
        shutil.copy(p, folder / p.name)
    return folder


def _manifest_lines(out: Path) -> list[str]:
    return [ln for ln in (out / RESULTS_FILE).read_text().splitlines() if ln.strip()]


def test_a_dead_actor_is_retried_and_a_bad_image_is_listed(
    ray_address, images: Path, checkpoint: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    folder = _subset(images, tmp_path / "imgs", 4)
    victim = sorted(folder.glob("*.png"))[2]
    (folder / "broken.png").write_bytes(victim.read_bytes()[:300])  # a truncated PNG
    listing = tmp_path / "list.txt"
    names = [p.name for p in sorted(folder.glob("*.png"))]
    listing.write_text("\n".join([*(f"imgs/{n}" for n in names), f"imgs/{names[0]}", "imgs/gone.png"]) + "\n")
    marker = tmp_path / "died"
    monkeypatch.setenv(TEST_EXIT_ENV, f"{victim.name}:{marker}")
    out = tmp_path / "out"
    assert main.main([*_args(listing, out, checkpoint), "--ray", "--actors", "2"]) == 1
    captured = capsys.readouterr()
    assert marker.exists(), "the actor never died"
    assert "1 duplicate line(s) ignored" in captured.err
    lines = {Path(d["path"]).name: d for d in _manifest(out)}
    assert len(lines) == 4 + 2
    assert lines[victim.name]["error"] is None and lines[victim.name]["adopted"], "written before the death, adopted"
    assert "broken.png" in lines["broken.png"]["error"] and lines["broken.png"]["retried"]
    assert "file not found" in lines["gone.png"]["error"]
    assert "done 4, skipped 0" in captured.out and "failed 2" in captured.out
    failed = [ln for ln in captured.out.splitlines() if ln.startswith("  ")]
    assert len(failed) == 2 and any("broken.png" in ln and "truncated" in ln for ln in failed), captured.out


def test_a_project_gets_prelabels_and_people_s_work_is_kept(
    ray_address, images: Path, checkpoint: Path, tmp_path: Path, capsys
) -> None:
    root = tmp_path / "proj"
    images = _subset(images, tmp_path / "imgs", 4)
    classes = [LabelClass(i, f"c{i}", (40 * i, 0, 0)) for i in range(3)]
    with Project.create(root, classes) as project:
        project.add_images(images)
        recs = project.images()
        person = recs[0]
        project.save_mask(person.id, np.ones((person.height, person.width), np.uint8), status="edited")
    out = tmp_path / "out"
    assert main.main([*_args(root, out, checkpoint), "--ray"]) == 0
    assert "recorded 3 pre-label(s)" in capsys.readouterr().out
    with Project.open(root) as project:
        by_id = {r.id: r for r in project.images()}
        assert by_id[person.id].status == "edited"
        assert (project.read_mask(person.id) == 1).all()
        done = [r for r in by_id.values() if r.id != person.id]
        assert all(r.status == "prelabeled" and r.prelabel_model_version is not None for r in done)
        got = project.read_mask(done[0].id)
        assert np.array_equal(got, read_mask_png(out / MASKS_DIR / (project.image_path(done[0]).stem + ".png")))
        assert prelabel_path(root, done[0].id).is_file()  # the kept copy that counts corrections
    # the same results into a second project: no model runs, no Ray
    other = tmp_path / "proj2"
    with Project.create(other, classes) as project:
        project.add_images(images)
    assert main.main(["prelabel", str(other), "--import-results", str(out)]) == 0
    assert "recorded 3 pre-label(s)" in capsys.readouterr().out
    with Project.open(other) as project:
        assert sorted(r.status for r in project.images()) == ["new", "prelabeled", "prelabeled", "prelabeled"]


def test_no_ray_names_the_extra(images: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main.main(["prelabel", str(images), "--out", str(tmp_path / "o"), "--ray"]) == 2
    assert "atrous[cluster]" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_an_unreachable_address_fails_fast(images: Path, tmp_path: Path, capsys) -> None:
    t0 = time.monotonic()
    assert main.main(["prelabel", str(images), "--out", str(tmp_path / "o"), "--ray", "127.0.0.1:9"]) == 2
    assert "cannot reach a Ray cluster at 127.0.0.1:9" in capsys.readouterr().err
    assert time.monotonic() - t0 < 10


def test_decode_tasks_feeding_the_actors_give_the_same_masks(
    ray_address, images: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """The GPU clusters' pipeline shape (decode tasks, then actors) on CPUs: the same masks as the CLI."""
    import ray

    from model.cluster import Plan, run_pass
    from model.cluster_run import make_items

    folder = _subset(images, tmp_path / "imgs", 3)
    (folder / "broken.png").write_bytes((images / sorted(p.name for p in images.glob("*.png"))[0]).read_bytes()[:300])
    ref = tmp_path / "cli"
    assert main.main(_args(_subset(images, tmp_path / "ref", 3), ref, checkpoint)) == 0
    paths = sorted(folder.glob("*.png"))
    out = tmp_path / "out"
    options = {"device": "cpu", "precision": "auto", "batch_size": None, "class_names": None}
    plan = Plan(1, 1.0, 0.0, 1, decode_cpus=0.5, batch=2)
    results = [
        r for batch in run_pass(ray, make_items(paths, folder), str(checkpoint), out, plan, options) for r in batch
    ]
    fields = {Path(it.path).name: f for it, f in results}
    assert sorted(fields) == sorted(p.name for p in paths)
    assert "truncated" in fields["broken.png"]["error"]
    for p in sorted(ref.glob("*.png")):
        assert fields[p.name]["error"] is None and not fields[p.name]["adopted"]
        assert np.array_equal(read_mask_png(out / MASKS_DIR / p.name), read_mask_png(p)), p.name


class _FakeRay:
    """What plan_pool asks of a cluster: its resources and its nodes."""

    def __init__(self, cpus: float, gpus: int = 0, nodes: int = 1) -> None:
        self.cpus, self.gpus, self.n = cpus, gpus, nodes

    def cluster_resources(self) -> dict:
        return {"CPU": self.cpus * self.n, "GPU": self.gpus * self.n}

    def nodes(self) -> list[dict]:
        return [{"Alive": True, "Resources": {"CPU": self.cpus, "GPU": self.gpus}}] * self.n


def test_cpu_actors_split_the_cpus_and_decode_themselves_gpu_actors_are_fed() -> None:
    from model.cluster import plan_pool

    two = plan_pool(_FakeRay(2), 2, "cpu", None)
    assert (two.actors, two.actor_cpus, two.threads, two.decode_cpus, two.batch) == (2, 1.0, 1, 0.0, 4)
    one = plan_pool(_FakeRay(2), None, "auto", None)  # one actor per 4 CPUs, at least one: all the CPUs
    assert (one.actors, one.actor_cpus, one.threads) == (1, 2.0, 2)
    wide = plan_pool(_FakeRay(8, nodes=4), None, "auto", 2)  # 8 actors on 32 CPUs, 4 each, never above a node
    assert (wide.actors, wide.actor_cpus, wide.threads, wide.batch) == (8, 4.0, 4, 2)
    assert plan_pool(_FakeRay(4, nodes=2), 1, "cpu", None).actor_cpus == 4.0  # one actor fits on one node
    gpu = plan_pool(_FakeRay(8, gpus=2), None, "auto", None)
    assert (gpu.actors, gpu.actor_gpus, gpu.threads, gpu.decode_cpus, gpu.batch) == (2, 1.0, 0, 1.0, 8)


def test_the_manifest_is_synced_now_and_then_not_per_batch(tmp_path: Path, monkeypatch) -> None:
    from model import cluster_run
    from model.cluster_run import Item, ResultsLog, read_results, result_line

    identity = {"model": "m.pt", "label": "m"}
    log = ResultsLog(tmp_path, [], sync_every=3600)
    synced: list[int] = []
    monkeypatch.setattr(cluster_run.os, "fsync", synced.append)
    for i in range(50):
        log.append([result_line(Item(f"/x/{i}.png", f"{i}.png"), identity, error=None)])
    assert len(read_results(tmp_path)) == 50, "each batch is flushed: a killed driver loses no line"
    assert synced == []
    log._synced -= 3600
    log.append([result_line(Item("/x/last.png", "last.png"), identity, error=None)])
    log.close()
    assert len(synced) == 1 and len(read_results(tmp_path)) == 51
