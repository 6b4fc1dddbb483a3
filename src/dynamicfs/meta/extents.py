"""SQL for block maps, extents (reference-counted) and fragment locations."""

from __future__ import annotations

from dataclasses import dataclass

from .db import Database


@dataclass(frozen=True)
class ExtentRow:
    id: int
    hash: bytes
    length: int
    codec_id: int
    k: int
    m: int
    refcount: int


@dataclass(frozen=True)
class FragmentRow:
    idx: int
    disk: int
    size: int


_ECOLS = "id, hash, length, codec_id, k, m, refcount"
_ECOLS_E = ", ".join("e." + c for c in _ECOLS.split(", "))  # the same, in a join as `e`


def block_extent(db: Database, ino: int, idx: int) -> int | None:
    return db.get_val("SELECT extent FROM blocks WHERE inode=? AND idx=?", (ino, idx))


def block_range(db: Database, ino: int, first: int, last: int) -> dict[int, int]:
    """idx -> extent id for blocks first..last inclusive that are not holes."""
    return dict(
        db.query(
            "SELECT idx, extent FROM blocks WHERE inode=? AND idx BETWEEN ? AND ?",
            (ino, first, last),
        )
    )


def committed_range(
    db: Database, ino: int, first: int, last: int
) -> dict[int, tuple[ExtentRow, list[tuple[int, int]]]]:
    """idx -> (extent, [(fragment idx, disk)]) for blocks first..last that are not holes.

    One query for what readahead needs of a whole window (three per block before).
    """
    out: dict[int, tuple[ExtentRow, list[tuple[int, int]]]] = {}
    rows = db.query(
        f"SELECT b.idx, {_ECOLS_E}, f.idx, f.disk"
        " FROM blocks b JOIN extents e ON e.id = b.extent"
        " JOIN fragments f ON f.extent = e.id"
        " WHERE b.inode=? AND b.idx BETWEEN ? AND ? ORDER BY b.idx, f.idx",
        (ino, first, last),
    )
    for idx, *erow, fidx, disk in rows:
        got = out.get(idx)
        if got is None:
            got = out[idx] = (ExtentRow(*erow), [])
        got[1].append((fidx, disk))
    return out


def set_block(db: Database, ino: int, idx: int, extent: int) -> int | None:
    """Point block idx at extent; returns the extent it pointed at before (or None)."""
    old = block_extent(db, ino, idx)
    db.execute(
        "INSERT INTO blocks (inode, idx, extent) VALUES (?, ?, ?)"
        " ON CONFLICT (inode, idx) DO UPDATE SET extent=excluded.extent",
        (ino, idx, extent),
    )
    return old


def drop_blocks_from(
    db: Database, ino: int, first: int, keep: set[int] | frozenset[int] = frozenset()
) -> list[int]:
    """Remove blocks idx >= first except those in `keep`; returns each removed row's extent."""
    rows = db.query("SELECT idx, extent FROM blocks WHERE inode=? AND idx >= ?", (ino, first))
    gone = [(ino, idx) for idx, _ in rows if idx not in keep]
    db.executemany("DELETE FROM blocks WHERE inode=? AND idx=?", gone)
    return [extent for idx, extent in rows if idx not in keep]


def drop_block(db: Database, ino: int, idx: int) -> int | None:
    old = block_extent(db, ino, idx)
    if old is not None:
        db.execute("DELETE FROM blocks WHERE inode=? AND idx=?", (ino, idx))
    return old


def get_extent(db: Database, extent: int) -> ExtentRow | None:
    row = db.get_row(f"SELECT {_ECOLS} FROM extents WHERE id=?", (extent,))
    return None if row is None else ExtentRow(*row)


def find_extent(db: Database, digest: bytes) -> ExtentRow | None:
    row = db.get_row(f"SELECT {_ECOLS} FROM extents WHERE hash=?", (digest,))
    return None if row is None else ExtentRow(*row)


def add_extent(
    db: Database, digest: bytes, length: int, codec_id: int, k: int, m: int,
    fragments: list[tuple[int, int, int]],
) -> int:
    """Record a new extent with refcount 0 and its fragments [(idx, disk, size)]."""
    cur = db.execute(
        "INSERT INTO extents (hash, length, codec_id, k, m, refcount) VALUES (?, ?, ?, ?, ?, 0)",
        (digest, length, codec_id, k, m),
    )
    eid = int(cur.lastrowid)
    db.executemany(
        "INSERT INTO fragments (extent, idx, disk, size) VALUES (?, ?, ?, ?)",
        [(eid, idx, disk, size) for idx, disk, size in fragments],
    )
    return eid


def incref(db: Database, extent: int, delta: int = 1) -> None:
    db.execute("UPDATE extents SET refcount = refcount + ? WHERE id=?", (delta, extent))


def decref(db: Database, extent: int) -> bool:
    """Drop one reference; returns True when the extent reached zero and should be freed."""
    db.execute("UPDATE extents SET refcount = refcount - 1 WHERE id=?", (extent,))
    return db.get_val("SELECT refcount FROM extents WHERE id=?", (extent,)) == 0


def delete_extent(db: Database, extent: int) -> list[FragmentRow]:
    """Forget an unreferenced extent; returns its fragments for deletion after commit."""
    frags = get_fragments(db, extent)
    db.execute("DELETE FROM fragments WHERE extent=?", (extent,))
    db.execute("DELETE FROM extents WHERE id=?", (extent,))
    return frags


def get_fragments(db: Database, extent: int) -> list[FragmentRow]:
    return [FragmentRow(*r) for r in db.query(
        "SELECT idx, disk, size FROM fragments WHERE extent=? ORDER BY idx", (extent,))]


def totals(db: Database) -> dict[str, int]:
    """Logical and stored byte counts for status reports."""
    ext = db.get_row("SELECT COUNT(*), COALESCE(SUM(length), 0),"
                     " COALESCE(SUM(length * refcount), 0) FROM extents")
    stored = db.get_val("SELECT COALESCE(SUM(size), 0) FROM fragments")
    nfrag = db.get_val("SELECT COUNT(*) FROM fragments")
    assert ext is not None
    return {"extents": ext[0], "unique_bytes": ext[1], "referenced_bytes": ext[2],
            "stored_bytes": stored, "fragments": nfrag}


def fragment_recorded(db: Database, digest: bytes, idx: int, disk: int) -> bool:
    """Whether the metadata says fragment `idx` of the extent `digest` lives on `disk`."""
    return db.get_val(
        "SELECT 1 FROM extents e JOIN fragments f ON f.extent = e.id"
        " WHERE e.hash=? AND f.idx=? AND f.disk=?", (digest, idx, disk)) is not None
