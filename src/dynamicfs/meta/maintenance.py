"""SQL for whole-pool scans: recovery at mount, and (later) fsck and garbage collection."""

from __future__ import annotations

from .db import Database


def unreferenced_extents(db: Database) -> list[int]:
    """Extents no block map points at (left by a crash between commit and free)."""
    return [r[0] for r in db.query("SELECT id FROM extents WHERE refcount <= 0")]
