"""SQL for fsck --repair, --restore-metadata and --rebuild-metadata.

These statements change what the checker found wrong, one small step at a time; the callers
(maint/repair.py, maint/metadata.py) decide what to change and wrap each step in a transaction.
Nothing here runs while a pool is mounted.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .db import Database
from .schema import SCHEMA

# -- health of a database file ---------------------------------------------------------------

# Every table the schema creates; a database missing one is not usable as ours.
TABLES = tuple(
    line.split()[2] for line in SCHEMA.splitlines() if line.startswith("CREATE TABLE ")
)


def database_problem(path: Path, pool_uuid: str | None = None) -> str | None:
    """Why the SQLite file at `path` is not a usable pool database, or None if it is.

    Opened read-only and immutable, so a damaged file (or its WAL) is never written to while
    it is being judged: it may be the only evidence of what went wrong.
    """
    if not path.exists():
        return f"{path} does not exist"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return f"SQLite cannot open {path}: {exc}"
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
        if [r[0] for r in rows] != ["ok"]:
            detail = "; ".join(str(r[0]) for r in rows[:3])
            return f"integrity check of {path} failed: {detail}"
        have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = [t for t in TABLES if t not in have]
        if missing:
            return f"{path} lacks the tables {', '.join(missing)}"
        settings = dict(conn.execute("SELECT key, value FROM settings").fetchall())
        if not str(settings.get("format_version", "")).isdigit():
            return f"{path} records no schema version"
        if pool_uuid is not None and settings.get("pool_uuid") != pool_uuid:
            return f"{path} belongs to pool {settings.get('pool_uuid')}, not {pool_uuid}"
    except sqlite3.Error as exc:
        return f"SQLite cannot read {path}: {exc}"
    finally:
        conn.close()
    return None


def recorded_disk_paths(path: Path) -> list[str]:
    """Disk paths a (possibly old or damaged) database names; [] if it cannot be read."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return []
    try:
        return [r[0] for r in conn.execute("SELECT path FROM disks ORDER BY id")]
    except sqlite3.Error:
        return []
    finally:
        conn.close()


# -- repairs of the namespace ----------------------------------------------------------------

def name_of(db: Database, ino: int) -> tuple[int, bytes] | None:
    """(parent, name) of one directory entry naming `ino` (the oldest), or None."""
    return db.get_row(
        "SELECT parent, name FROM dentries WHERE inode=? ORDER BY id LIMIT 1", (ino,))


def names_of(db: Database, ino: int) -> list[tuple[int, bytes]]:
    """(parent, name) of every entry naming `ino`, oldest first."""
    return db.query("SELECT parent, name FROM dentries WHERE inode=? ORDER BY id", (ino,))


def delete_symlink_row(db: Database, ino: int) -> None:
    db.execute("DELETE FROM symlinks WHERE inode=?", (ino,))


def delete_xattrs_of(db: Database, ino: int) -> None:
    db.execute("DELETE FROM xattrs WHERE inode=?", (ino,))


# -- repairs of extents and fragments --------------------------------------------------------

def set_refcount(db: Database, extent: int, refcount: int) -> None:
    db.execute("UPDATE extents SET refcount=? WHERE id=?", (refcount, extent))


def delete_fragment_row(db: Database, extent: int, idx: int) -> None:
    db.execute("DELETE FROM fragments WHERE extent=? AND idx=?", (extent, idx))


def put_fragment_row(db: Database, extent: int, idx: int, disk: int, size: int) -> None:
    db.execute(
        "INSERT INTO fragments (extent, idx, disk, size) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (extent, idx) DO UPDATE SET disk=excluded.disk, size=excluded.size",
        (extent, idx, disk, size))


def blocks_of_extent(db: Database, extent: int) -> list[tuple[int, int]]:
    """(inode, idx) of every block-map row pointing at `extent`."""
    return db.query("SELECT inode, idx FROM blocks WHERE extent=? ORDER BY inode, idx",
                    (extent,))


# -- rebuilding the extents and fragments tables ---------------------------------------------

def extent_ids_by_hash(db: Database) -> dict[bytes, int]:
    return {bytes(h): i for i, h in db.query("SELECT id, hash FROM extents")}


def replace_extent(
    db: Database, extent: int | None, digest: bytes, length: int, codec_id: int, k: int, m: int,
) -> int:
    """Record an extent as its fragment headers describe it, keeping `extent` as its id when
    given (the block maps name extents by id); returns the id. Refcounts are set later."""
    if extent is None:
        cur = db.execute(
            "INSERT INTO extents (hash, length, codec_id, k, m, refcount)"
            " VALUES (?, ?, ?, ?, ?, 0)", (digest, length, codec_id, k, m))
        return int(cur.lastrowid)
    db.execute("UPDATE extents SET length=?, codec_id=?, k=?, m=? WHERE id=?",
               (length, codec_id, k, m, extent))
    return extent


def drop_extent_rows(db: Database, extents: list[int]) -> None:
    db.executemany("DELETE FROM extents WHERE id=?", [(e,) for e in extents])


def clear_fragments(db: Database) -> None:
    db.execute("DELETE FROM fragments")


def recompute_refcounts(db: Database) -> int:
    """Set every extent's refcount to the block-map rows naming it; returns rows changed."""
    cur = db.execute(
        "UPDATE extents SET refcount = (SELECT COUNT(*) FROM blocks b WHERE b.extent = extents.id)"
        " WHERE refcount != (SELECT COUNT(*) FROM blocks b WHERE b.extent = extents.id)")
    return cur.rowcount


def disk_ids_by_uuid(db: Database) -> dict[str, int]:
    return {u: i for i, u in db.query("SELECT id, uuid FROM disks")}


def unreferenced_extent_rows(db: Database) -> list[tuple[int, bytes, int]]:
    """(id, hash, length) of extents no block map points at."""
    return [(i, bytes(h), n) for i, h, n in db.query(
        "SELECT id, hash, length FROM extents WHERE refcount <= 0 ORDER BY id")]


def set_disk_path(db: Database, disk: int, path: str) -> None:
    """Record where a disk is now (found with --disk after it moved)."""
    db.execute("UPDATE disks SET path=? WHERE id=?", (path, disk))
