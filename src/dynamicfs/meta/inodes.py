"""SQL for the namespace: inodes, directory entries, symlinks and xattrs."""

from __future__ import annotations

from dataclasses import dataclass

from .db import Database

_COLS = "id, mode, uid, gid, size, nlink, rdev, atime_ns, mtime_ns, ctime_ns, policy, alloc"


@dataclass
class InodeRow:
    id: int
    mode: int
    uid: int
    gid: int
    size: int
    nlink: int
    rdev: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    policy: str | None
    alloc: int


def get_inode(db: Database, ino: int) -> InodeRow | None:
    row = db.get_row(f"SELECT {_COLS} FROM inodes WHERE id=?", (ino,))
    return None if row is None else InodeRow(*row)


def create_inode(
    db: Database, mode: int, uid: int, gid: int, nlink: int, now_ns: int, rdev: int = 0,
    ino: int | None = None, policy: str | None = None,
) -> int:
    cur = db.execute(
        "INSERT INTO inodes (id, mode, uid, gid, size, nlink, rdev, atime_ns, mtime_ns, ctime_ns,"
        " policy) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)",
        (ino, mode, uid, gid, nlink, rdev, now_ns, now_ns, now_ns, policy),
    )
    return int(cur.lastrowid)


_UPDATABLE = {"mode", "uid", "gid", "size", "nlink", "atime_ns", "mtime_ns", "ctime_ns", "policy",
              "alloc"}


def update_inode(db: Database, ino: int, **fields: int | str | None) -> None:
    if not fields:
        return
    bad = set(fields) - _UPDATABLE
    if bad:
        raise ValueError(f"not updatable: {sorted(bad)}")
    cols = ", ".join(f"{k}=?" for k in fields)
    db.execute(f"UPDATE inodes SET {cols} WHERE id=?", (*fields.values(), ino))


def add_nlink(db: Database, ino: int, delta: int) -> None:
    db.execute("UPDATE inodes SET nlink = nlink + ? WHERE id=?", (delta, ino))


def delete_inode(db: Database, ino: int) -> None:
    db.execute("DELETE FROM inodes WHERE id=?", (ino,))
    db.execute("DELETE FROM symlinks WHERE inode=?", (ino,))
    db.execute("DELETE FROM xattrs WHERE inode=?", (ino,))


def unlinked_inodes(db: Database) -> list[int]:
    return [r[0] for r in db.query("SELECT id FROM inodes WHERE nlink = 0")]


def count_inodes(db: Database) -> int:
    return int(db.get_val("SELECT COUNT(*) FROM inodes"))


# -- directory entries ----------------------------------------------------------------------

def lookup(db: Database, parent: int, name: bytes) -> int | None:
    return db.get_val("SELECT inode FROM dentries WHERE parent=? AND name=?", (parent, name))


def add_dentry(db: Database, parent: int, name: bytes, ino: int) -> None:
    db.execute("INSERT INTO dentries (parent, name, inode) VALUES (?, ?, ?)", (parent, name, ino))


def remove_dentry(db: Database, parent: int, name: bytes) -> None:
    db.execute("DELETE FROM dentries WHERE parent=? AND name=?", (parent, name))


def retarget_dentry(db: Database, parent: int, name: bytes, ino: int) -> None:
    db.execute("UPDATE dentries SET inode=? WHERE parent=? AND name=?", (ino, parent, name))


def move_dentry(
    db: Database, parent: int, name: bytes, new_parent: int, new_name: bytes
) -> None:
    db.execute(
        "UPDATE dentries SET parent=?, name=? WHERE parent=? AND name=?",
        (new_parent, new_name, parent, name),
    )


def has_children(db: Database, parent: int) -> bool:
    return db.get_val("SELECT 1 FROM dentries WHERE parent=? LIMIT 1", (parent,)) is not None


def list_dir(db: Database, parent: int, after: int, limit: int) -> list[tuple[int, bytes, int]]:
    """(offset, name, inode) of entries after offset `after`, in stable offset order."""
    return db.query(
        "SELECT id, name, inode FROM dentries WHERE parent=? AND id > ? ORDER BY id LIMIT ?",
        (parent, after, limit),
    )


def list_dir_plus(
    db: Database, parent: int, after: int, limit: int
) -> list[tuple[int, bytes, InodeRow]]:
    """Like list_dir, with each entry's inode row (one query: readdir must stay cheap)."""
    cols = ", ".join(f"i.{c.strip()}" for c in _COLS.split(","))
    rows = db.query(
        f"SELECT d.id, d.name, {cols} FROM dentries d JOIN inodes i ON i.id = d.inode"
        " WHERE d.parent=? AND d.id > ? ORDER BY d.id LIMIT ?",
        (parent, after, limit),
    )
    return [(r[0], r[1], InodeRow(*r[2:])) for r in rows]


def parent_of(db: Database, ino: int) -> int | None:
    return db.get_val("SELECT parent FROM dentries WHERE inode=? LIMIT 1", (ino,))


# -- symlinks and xattrs -------------------------------------------------------------------

def set_symlink(db: Database, ino: int, target: bytes) -> None:
    db.execute("INSERT INTO symlinks (inode, target) VALUES (?, ?)", (ino, target))


def get_symlink(db: Database, ino: int) -> bytes | None:
    return db.get_val("SELECT target FROM symlinks WHERE inode=?", (ino,))


def get_xattr(db: Database, ino: int, name: bytes) -> bytes | None:
    return db.get_val("SELECT value FROM xattrs WHERE inode=? AND name=?", (ino, name))


def set_xattr(db: Database, ino: int, name: bytes, value: bytes) -> None:
    db.execute(
        "INSERT INTO xattrs (inode, name, value) VALUES (?, ?, ?)"
        " ON CONFLICT (inode, name) DO UPDATE SET value=excluded.value",
        (ino, name, value),
    )


def list_xattrs(db: Database, ino: int) -> list[bytes]:
    return [r[0] for r in db.query("SELECT name FROM xattrs WHERE inode=?", (ino,))]


def remove_xattr(db: Database, ino: int, name: bytes) -> bool:
    return db.execute("DELETE FROM xattrs WHERE inode=? AND name=?", (ino, name)).rowcount > 0


def inodes_with_xattr(db: Database, name: bytes) -> list[int]:
    return [r[0] for r in db.query("SELECT inode FROM xattrs WHERE name=?", (name,))]
