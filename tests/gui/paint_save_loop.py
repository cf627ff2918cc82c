"""Helper for the kill -9 test: paint and save through the real API in a loop, forever.

Usage: python paint_save_loop.py PROJECT_DIR LOG_FILE

Before each save it appends the SHA-256 of the label map it is about to save
to LOG_FILE (flushed and fsynced), so whatever moment the process is killed
at, the mask on disk must be one of the logged states (or the pre-label).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

from annotation.editing import MaskDocument
from annotation.project import Project


def main() -> int:
    root, log_file = Path(sys.argv[1]), Path(sys.argv[2])
    proj = Project.open(root)
    rec = proj.images()[0]
    start = proj.read_mask(rec.id)
    doc = MaskDocument(start if start is not None else np.zeros((rec.height, rec.width), np.uint8))
    rng = np.random.default_rng(os.getpid())
    seen = {hashlib.sha256(doc.label_map.tobytes()).hexdigest()}
    with open(log_file, "a", encoding="ascii") as log:
        while True:
            with doc.stroke():
                x, y = rng.uniform(0, rec.width, 2), rng.uniform(0, rec.height, 2)
                doc.brush_segment(x[0], y[0], x[1], y[1], rng.uniform(2, 30), int(rng.integers(0, 4)))
            digest = hashlib.sha256(doc.label_map.tobytes()).hexdigest()
            log.write(digest + "\n")
            log.flush()
            os.fsync(log.fileno())
            proj.save_mask(rec.id, doc.label_map, status="edited", changed_pixels=doc.changed_pixels, edit_seconds=0.1)
            doc.mark_clean()
            # A stroke of the colour already there changes nothing; "ready" waits for
            # three different saved states so the test's "it was saving" check is certain.
            before = len(seen)
            seen.add(digest)
            if len(seen) == 4 and before == 3:
                print("ready", flush=True)


if __name__ == "__main__":
    sys.exit(main())
