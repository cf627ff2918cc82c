"""The model versions a project records, and its statistics: the parts of :class:`Project` that read
and write the index without touching mask files (kept apart to keep ``project.py`` readable).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from .errors import AtrousError
from .records import STATUSES, ModelVersion, ProjectStats


class ProjectIndexMixin:
    """Model versions and statistics; mixed into :class:`annotation.project.Project`."""

    # ---------------------------------------------------------------- model versions

    def add_model_version(
        self, name: str, checkpoint_path: str | os.PathLike[str], metrics: dict[str, Any] | None = None
    ) -> int:
        """Record a model version; returns its id."""
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO model_versions (name, checkpoint_path, metrics, created) VALUES (?,?,?,?)",
                (name, str(checkpoint_path), json.dumps(metrics or {}), time.time()),
            )
            return int(cur.lastrowid)

    def model_versions(self) -> list[ModelVersion]:
        """All recorded model versions, oldest first."""
        return [
            ModelVersion(int(i), n, p, json.loads(m), float(c))
            for i, n, p, m, c in self._query(
                "SELECT id, name, checkpoint_path, metrics, created FROM model_versions ORDER BY id"
            )
        ]

    @property
    def active_model_version(self) -> ModelVersion | None:
        """The model version used for new pre-labels (None when unset)."""
        row = self._query("SELECT value FROM meta WHERE key='active_model_version'")
        if not row:
            return None
        for mv in self.model_versions():
            if mv.id == int(row[0][0]):
                return mv
        return None

    @active_model_version.setter
    def active_model_version(self, version_id: int | None) -> None:
        with self._tx() as cur:
            if version_id is None:
                cur.execute("DELETE FROM meta WHERE key='active_model_version'")
                return
            if cur.execute("SELECT 1 FROM model_versions WHERE id=?", (int(version_id),)).fetchone() is None:
                raise AtrousError(f"no model version with id {version_id}")
            cur.execute("INSERT OR REPLACE INTO meta VALUES ('active_model_version', ?)", (str(int(version_id)),))

    def stats(self) -> ProjectStats:
        """Counts by status and pixel counts per class over all stored masks."""
        recs = self.images()
        by_status = {s: 0 for s in STATUSES}
        pixels = np.zeros(256, dtype=np.int64)
        n_masks = 0
        for r in recs:
            by_status[r.status] = by_status.get(r.status, 0) + 1
            if r.has_mask:
                m = self.read_mask(r.id)
                if m is not None:
                    pixels += np.bincount(m.ravel(), minlength=256)
                    n_masks += 1
        return ProjectStats(
            n_images=len(recs),
            by_status=by_status,
            n_masks=n_masks,
            class_pixels={i: int(v) for i, v in enumerate(pixels) if v},
            total_pixels=int(pixels.sum()),
        )
