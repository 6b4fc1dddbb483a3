"""SQL for whole-pool scans: recovery at mount, fsck and (later) garbage collection.

These queries read the whole database; they run offline or in the background, never on the
path of a filesystem operation. Each returns plain tuples so the checkers stay free of SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .db import Database

# stat.S_IFMT / S_IFDIR / S_IFLNK / S_IFREG, spelled out because SQL needs literals.
_S_IFMT, _S_IFDIR, _S_IFLNK, _S_IFREG = 0o170000, 0o040000, 0o120000, 0o100000


def unreferenced_extents(db: Database) -> list[int]:
    """Extents no block map points at (left by a crash between commit and free)."""
    return [r[0] for r in db.query("SELECT id FROM extents WHERE refcount <= 0")]


# -- extents and block maps ------------------------------------------------------------------

def refcount_mismatches(db: Database) -> list[tuple[int, int, int]]:
    """(extent, recorded refcount, block-map rows pointing at it) where the two differ."""
    return db.query(
        "SELECT e.id, e.refcount, COUNT(b.extent) FROM extents e"
        " LEFT JOIN blocks b ON b.extent = e.id"
        " GROUP BY e.id HAVING e.refcount != COUNT(b.extent) ORDER BY e.id")


def blocks_without_extent(db: Database) -> list[tuple[int, int, int]]:
    """(inode, idx, extent) of block-map rows naming an extent that does not exist."""
    return db.query(
        "SELECT b.inode, b.idx, b.extent FROM blocks b"
        " LEFT JOIN extents e ON e.id = b.extent WHERE e.id IS NULL"
        " ORDER BY b.inode, b.idx")


def blocks_without_inode(db: Database) -> list[tuple[int, int]]:
    """(inode, number of rows) of block maps whose inode does not exist."""
    return db.query(
        "SELECT b.inode, COUNT(*) FROM blocks b LEFT JOIN inodes i ON i.id = b.inode"
        " WHERE i.id IS NULL GROUP BY b.inode ORDER BY b.inode")


def blocks_of_non_files(db: Database) -> list[tuple[int, int, int]]:
    """(inode, mode, number of rows) of block maps of inodes that are not regular files."""
    return db.query(
        "SELECT i.id, i.mode, COUNT(*) FROM blocks b JOIN inodes i ON i.id = b.inode"
        f" WHERE (i.mode & {_S_IFMT}) != {_S_IFREG} GROUP BY i.id ORDER BY i.id")


def blocks_beyond_size(db: Database, block_size: int) -> list[tuple[int, int, int]]:
    """(inode, first offending idx, size) for files with blocks at or past ceil(size/bs)."""
    return db.query(
        "SELECT b.inode, MIN(b.idx), i.size FROM blocks b JOIN inodes i ON i.id = b.inode"
        " WHERE b.idx * ? >= i.size GROUP BY b.inode ORDER BY b.inode", (block_size,))


def alloc_mismatches(db: Database) -> list[tuple[int, int, int]]:
    """(inode, recorded alloc, sum of its blocks' extent lengths) where they differ."""
    return db.query(
        "SELECT i.id, i.alloc, COALESCE(SUM(e.length), 0) FROM inodes i"
        " LEFT JOIN blocks b ON b.inode = i.id LEFT JOIN extents e ON e.id = b.extent"
        " GROUP BY i.id HAVING i.alloc != COALESCE(SUM(e.length), 0) ORDER BY i.id")


# -- fragments -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExtentFragments:
    """One extent with every fragment row recorded for it: [(idx, disk, size)]."""

    id: int
    hash: bytes
    length: int
    codec_id: int
    k: int
    m: int
    fragments: list[tuple[int, int, int]]


def iter_extent_fragments(db: Database, batch: int = 2000) -> Iterator[ExtentFragments]:
    """Every extent with its fragments, in id order, a batch at a time (bounded memory)."""
    after = -1
    while True:
        extents = db.query(
            "SELECT id, hash, length, codec_id, k, m FROM extents WHERE id > ?"
            " ORDER BY id LIMIT ?", (after, batch))
        if not extents:
            return
        first, last = extents[0][0], extents[-1][0]
        frags: dict[int, list[tuple[int, int, int]]] = {}
        for ext, idx, disk, size in db.query(
                "SELECT extent, idx, disk, size FROM fragments WHERE extent BETWEEN ? AND ?"
                " ORDER BY extent, idx", (first, last)):
            frags.setdefault(ext, []).append((idx, disk, size))
        for eid, digest, length, codec_id, k, m in extents:
            yield ExtentFragments(eid, digest, length, codec_id, k, m, frags.get(eid, []))
        after = last


def fragments_without_extent(db: Database) -> list[tuple[int, int, int]]:
    """(extent, idx, disk) of fragment rows whose extent does not exist."""
    return db.query(
        "SELECT f.extent, f.idx, f.disk FROM fragments f"
        " LEFT JOIN extents e ON e.id = f.extent WHERE e.id IS NULL"
        " ORDER BY f.extent, f.idx")


def fragments_on_unknown_disks(db: Database) -> list[tuple[int, int, int]]:
    """(extent, idx, disk) of fragment rows naming a disk that is not registered."""
    return db.query(
        "SELECT f.extent, f.idx, f.disk FROM fragments f"
        " LEFT JOIN disks d ON d.id = f.disk WHERE d.id IS NULL ORDER BY f.extent, f.idx")


# -- the namespace ---------------------------------------------------------------------------

def link_counts(db: Database) -> list[tuple[int, int, int, int, int]]:
    """(inode, mode, nlink, names pointing at it, subdirectories in it) for every inode."""
    return db.query(
        "SELECT i.id, i.mode, i.nlink, COALESCE(n.names, 0), COALESCE(s.subdirs, 0)"
        " FROM inodes i"
        " LEFT JOIN (SELECT inode, COUNT(*) AS names FROM dentries GROUP BY inode) n"
        "   ON n.inode = i.id"
        " LEFT JOIN (SELECT d.parent, COUNT(*) AS subdirs FROM dentries d"
        f"   JOIN inodes c ON c.id = d.inode WHERE (c.mode & {_S_IFMT}) = {_S_IFDIR}"
        "   GROUP BY d.parent) s ON s.parent = i.id"
        " ORDER BY i.id")


def dentry_edges(db: Database) -> list[tuple[int, int]]:
    """(parent, child inode) for every directory entry."""
    return db.query("SELECT parent, inode FROM dentries")


def inode_ids(db: Database) -> list[int]:
    return [r[0] for r in db.query("SELECT id FROM inodes ORDER BY id")]


def dentries_with_bad_ends(db: Database) -> list[tuple[int, bytes, int, str]]:
    """(parent, name, inode, what is wrong) for entries whose parent or target is unusable."""
    return db.query(
        "SELECT d.parent, d.name, d.inode, CASE"
        "   WHEN p.id IS NULL THEN 'parent inode does not exist'"
        "   WHEN c.id IS NULL THEN 'target inode does not exist'"
        "   ELSE 'parent is not a directory' END"
        " FROM dentries d LEFT JOIN inodes p ON p.id = d.parent"
        " LEFT JOIN inodes c ON c.id = d.inode"
        f" WHERE p.id IS NULL OR c.id IS NULL OR (p.mode & {_S_IFMT}) != {_S_IFDIR}"
        " ORDER BY d.parent, d.name")


def symlinks_without_target(db: Database) -> list[int]:
    """Symlink inodes that have no target row."""
    return [r[0] for r in db.query(
        "SELECT i.id FROM inodes i LEFT JOIN symlinks s ON s.inode = i.id"
        f" WHERE (i.mode & {_S_IFMT}) = {_S_IFLNK} AND s.inode IS NULL ORDER BY i.id")]


def symlink_size_mismatches(db: Database) -> list[tuple[int, int, int]]:
    """(inode, size, target length) of symlinks whose size is not their target's length."""
    return db.query(
        "SELECT i.id, i.size, LENGTH(s.target) FROM inodes i JOIN symlinks s ON s.inode = i.id"
        " WHERE i.size != LENGTH(s.target) ORDER BY i.id")


def stray_symlink_rows(db: Database) -> list[tuple[int, str]]:
    """(inode, why) of symlink targets whose inode is missing or not a symlink."""
    return db.query(
        "SELECT s.inode, CASE WHEN i.id IS NULL THEN 'inode does not exist'"
        "   ELSE 'inode is not a symlink' END"
        " FROM symlinks s LEFT JOIN inodes i ON i.id = s.inode"
        f" WHERE i.id IS NULL OR (i.mode & {_S_IFMT}) != {_S_IFLNK} ORDER BY s.inode")


def stray_xattr_rows(db: Database) -> list[tuple[int, int]]:
    """(inode, number of xattrs) of extended attributes whose inode does not exist."""
    return db.query(
        "SELECT x.inode, COUNT(*) FROM xattrs x LEFT JOIN inodes i ON i.id = x.inode"
        " WHERE i.id IS NULL GROUP BY x.inode ORDER BY x.inode")


def bad_dentry_names(db: Database, name_max: int) -> list[tuple[int, bytes, int]]:
    """(parent, name, inode) of entries whose name no path lookup could ever produce."""
    return db.query(
        "SELECT parent, name, inode FROM dentries WHERE LENGTH(name) = 0 OR LENGTH(name) > ?"
        " OR name IN (CAST('.' AS BLOB), CAST('..' AS BLOB))"
        " OR INSTR(name, CAST('/' AS BLOB)) > 0 OR INSTR(name, x'00') > 0"
        " ORDER BY parent, name", (name_max,))


def inode_mode(db: Database, ino: int) -> int | None:
    return db.get_val("SELECT mode FROM inodes WHERE id=?", (ino,))
