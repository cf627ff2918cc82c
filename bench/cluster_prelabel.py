"""Pre-label throughput of a local Ray (2 actors) against the single-process CLI, on the same CamVid images.

Both sides run the real command in a process of their own, end to end, as a person would
type it: ``prelabel DIR --out`` and ``prelabel DIR --ray --actors 2 --out`` (a local Ray
started by the command, so its start-up is part of the Ray side's time). The weights are
random (speed does not depend on what the network learnt); the images are the first N of
the CamVid train split. Ray's overhead per image is the extra wall time over the CLI,
spread over the images; it shrinks per image as the list grows.

    .venv/bin/python bench/cluster_prelabel.py [--images 24] [--actors 2]

Prints last: ``ray prelabel: <r> img/s, CLI <c> img/s (<r/c>x), overhead <o> s/img, N images, <CPU>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, camvid_pairs, cpu_name
from app_prelabel import random_checkpoint


def timed(cmd: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    print(proc.stdout.strip().splitlines()[-1])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--actors", type=int, default=2)
    args = parser.parse_args()
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SystemExit("this benchmark needs the cluster extra: pip install -e '.[cluster]'") from None
    ckpt = random_checkpoint()
    with tempfile.TemporaryDirectory(prefix="atrous-ray-bench-") as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        for src, _ in camvid_pairs("train")[: args.images]:
            shutil.copy(src, images / src.name)
        n = len(list(images.iterdir()))
        base = [sys.executable, str(REPO / "main.py"), "prelabel", str(images), "--model", str(ckpt), "--device", "cpu"]
        cli = timed([*base, "--out", str(Path(tmp) / "cli")])
        ray_s = timed([*base, "--out", str(Path(tmp) / "ray"), "--ray", "local", "--actors", str(args.actors)])
    c, r = n / cli, n / ray_s
    print(f"CLI {cli:.1f} s, Ray {ray_s:.1f} s end to end (model load, and Ray's start-up, included)")
    print(
        f"ray prelabel: {r:.2f} img/s, CLI {c:.2f} img/s ({r / c:.2f}x), overhead {(ray_s - cli) / n:.2f} s/img, "
        f"{n} images, {args.actors} actors, {cpu_name()}"
    )


if __name__ == "__main__":
    main()
