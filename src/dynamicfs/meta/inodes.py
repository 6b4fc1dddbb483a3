"""SQL for the namespace: inodes, directory entries, symlinks and xattrs.

Inode rows are read on almost every FUSE request (getattr, lookup, the open-count check of
release), so each `Database` keeps the committed rows it has seen in memory (`_RowCache`),
and the names its lookups found. The cache is only correct because every change of the
`inodes` and `dentries` tables goes through the functions of this module, and because the
mount is the pool's only writer (invariant 7).
The same functions count every change of an inode row or a directory entry
(`namespace_generation`), so the engine can keep directory listings until something changes.
"""

from __future__ import annotations

import weakref
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType

from .db import Database

_COLS = "id, mode, uid, gid, size, nlink, rdev, atime_ns, mtime_ns, ctime_ns, policy, alloc"


# Not frozen: a frozen dataclass costs ~1 µs more per construction, on every namespace request.
# Rows handed out are shared with the cache and must never be modified by their users.
@dataclass(slots=True)
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


# Enough for the working set of a large directory; beyond it, the oldest rows are read again.
_CACHE_MAX = 1 << 15
# Names found by lookups (~200 bytes each), as many as rows: a lookup goes on to read the row.
# The kernel keeps its own dentries for ENTRY_TIMEOUT; these serve the lookups it sends again
# after it let them go (memory pressure, dropped caches, expired entries).
_NAMES_MAX = 1 << 15


class _RowCache:
    """Inode rows as committed, plus what the open tracked transaction changed.

    `rows` only ever holds committed values. Inside a transaction opened with `transaction()`
    (tracked), changes go to `pending` (the new row, or None once deleted) or, when the new
    value is not known without a read, to `touched`; a commit moves them into `rows`, a
    rollback drops them, so `rows` never sees a value that did not commit. A change made in a
    transaction opened otherwise (`Database.transaction()` directly) just evicts the row.
    Every access happens under `Database.lock`, which a transaction holds from BEGIN to
    COMMIT, so a tracked transaction's state is only ever seen by its own thread.

    `generation` counts changes of inode rows and directory entries, committed or not: a
    value read before a query and unchanged after it means nothing the query read has
    changed since (a change still uncommitted at the read holds the lock the query waits for).

    `names` maps (parent, name) to the inode of a committed directory entry, the same way:
    a tracked transaction's changes wait in `pending_names` (the new inode, or None for gone
    or not known without a read) until its commit; any other change just drops the name.
    Names that do not exist are not kept: the kernel caches those misses itself.
    """

    __slots__ = ("rows", "pending", "touched", "depth", "generation", "names",
                 "pending_names")

    def __init__(self) -> None:
        self.rows: dict[int, InodeRow] = {}
        self.pending: dict[int, InodeRow | None] = {}
        self.touched: set[int] = set()
        self.depth = 0
        self.generation = 0
        self.names: dict[tuple[int, bytes], int] = {}
        self.pending_names: dict[tuple[int, bytes], int | None] = {}

    def keep(self, row: InodeRow) -> None:
        rows = self.rows
        rows[row.id] = row
        if len(rows) > _CACHE_MAX:
            del rows[next(iter(rows))]

    def keep_name(self, key: tuple[int, bytes], ino: int) -> None:
        names = self.names
        names[key] = ino
        if len(names) > _NAMES_MAX:
            del names[next(iter(names))]

    def committed(self) -> None:
        for ino in self.touched:
            self.rows.pop(ino, None)
        for ino, row in self.pending.items():
            if row is None:
                self.rows.pop(ino, None)
            else:
                self.keep(row)
        for key, target in self.pending_names.items():
            if target is not None:
                self.keep_name(key, target)
        self.rolled_back()

    def rolled_back(self) -> None:
        self.pending.clear()
        self.touched.clear()
        self.pending_names.clear()

    def renamed(self, key: tuple[int, bytes], target: int | None) -> None:
        """Record a change of a directory entry (`target` None: gone, or not known)."""
        self.generation += 1
        # Dropped at once even inside a transaction: `names` never holds an uncommitted value.
        self.names.pop(key, None)
        if self.depth:
            self.pending_names[key] = target

    def changed(self, ino: int, row: InodeRow | None) -> None:
        """Record the new value of a row this transaction changed (None: deleted)."""
        self.generation += 1
        if self.depth:
            self.pending[ino] = row
            self.touched.discard(ino)
        else:
            self.rows.pop(ino, None)

    def unknown(self, ino: int) -> None:
        """A row changed in a way only a read can tell."""
        self.generation += 1
        if self.depth:
            self.pending.pop(ino, None)
            self.touched.add(ino)
        else:
            self.rows.pop(ino, None)

    def current(self, ino: int) -> tuple[bool, InodeRow | None]:
        """(known, row) as this transaction sees it, without SQL."""
        if self.depth:
            if ino in self.pending:
                return True, self.pending[ino]
            if ino in self.touched:
                return False, None
        row = self.rows.get(ino)
        return row is not None, row


_caches: weakref.WeakKeyDictionary[Database, _RowCache] = weakref.WeakKeyDictionary()


def _cache(db: Database) -> _RowCache:
    cache = _caches.get(db)
    if cache is None:
        cache = _caches[db] = _RowCache()
    return cache


class transaction:  # noqa: N801 - used like the function it replaced: `with transaction(db):`
    """`Database.transaction()` that also keeps the inode row cache across the transaction.

    Namespace operations use this so the rows they write stay cached after the commit; any
    other transaction is correct too, it only makes the rows it changes be read again. A class
    rather than a generator, and nested uses only count: the engine's unlink, rmdir and rename
    nest the namespace's transaction in their own, and each level cost ~2 µs.
    """

    __slots__ = ("_db", "_cache", "_outer")

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache = _cache(db)
        # The Database.transaction() this opened: None when nested in one of ours.
        self._outer: AbstractContextManager[Database] | None = None

    def __enter__(self) -> Database:
        db, cache = self._db, self._cache
        db.lock.acquire()
        if cache.depth:
            # Inside our own transaction, on this thread (it holds the lock): the outermost
            # level commits or rolls back, exactly as a nested Database.transaction() would.
            cache.depth += 1
            return db
        # Inside a transaction somebody opened without us, its outcome is not ours to see:
        # the cache is not told (changes then just evict rows).
        foreign = db.conn.in_transaction
        outer = db.transaction()
        try:
            outer.__enter__()
        except BaseException:
            db.lock.release()
            raise
        self._outer = outer
        if not foreign:
            cache.depth = 1
        return db

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        db, cache, outer = self._db, self._cache, self._outer
        try:
            if outer is None:
                cache.depth -= 1
                return False
            self._outer = None
            tracked = cache.depth == 1
            try:
                suppressed = bool(outer.__exit__(exc_type, exc, tb))  # COMMIT or ROLLBACK
            except BaseException:
                if tracked:
                    cache.depth = 0
                    cache.rolled_back()
                raise
            if tracked:
                cache.depth = 0
                if exc_type is None:
                    cache.committed()
                else:
                    cache.rolled_back()
            return suppressed
        finally:
            db.lock.release()


def get_inode(db: Database, ino: int) -> InodeRow | None:
    with db.lock:
        cache = _cache(db)
        known, row = cache.current(ino)
        if known:
            return row
        raw = db.conn.execute(f"SELECT {_COLS} FROM inodes WHERE id=?", (ino,)).fetchone()
        row = None if raw is None else InodeRow(*raw)
        if cache.depth:
            cache.pending[ino] = row
            cache.touched.discard(ino)
        elif row is not None and not db.conn.in_transaction:
            # Only a value read outside any transaction is surely committed.
            cache.keep(row)
        return row


def forget_cached(db: Database) -> None:
    """Drop every cached row (for tests, and after the database changed behind our back)."""
    with db.lock:
        cache = _cache(db)
        cache.rows.clear()
        cache.names.clear()
        cache.generation += 1


def namespace_generation(db: Database) -> int:
    """A number that changes whenever an inode row or a directory entry may have changed."""
    return _cache(db).generation


def create_inode(
    db: Database, mode: int, uid: int, gid: int, nlink: int, now_ns: int, rdev: int = 0,
    ino: int | None = None, policy: str | None = None,
) -> int:
    with db.lock:
        cur = db.conn.execute(
            "INSERT INTO inodes (id, mode, uid, gid, size, nlink, rdev, atime_ns, mtime_ns,"
            " ctime_ns, policy) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)",
            (ino, mode, uid, gid, nlink, rdev, now_ns, now_ns, now_ns, policy),
        )
        new = int(cur.lastrowid)
        _cache(db).changed(new, InodeRow(new, mode, uid, gid, 0, nlink, rdev, now_ns, now_ns,
                                         now_ns, policy, 0))
    return new


_UPDATABLE = {"mode", "uid", "gid", "size", "nlink", "atime_ns", "mtime_ns", "ctime_ns", "policy",
              "alloc"}


def update_inode(db: Database, ino: int, **fields: int | str | None) -> None:
    if not fields:
        return
    sql = _UPDATE_SQL.get(tuple(fields))
    if sql is None:
        bad = set(fields) - _UPDATABLE
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        cols = ", ".join(f"{k}=?" for k in fields)
        sql = _UPDATE_SQL[tuple(fields)] = f"UPDATE inodes SET {cols} WHERE id=?"
    with db.lock:
        db.conn.execute(sql, (*fields.values(), ino))
        cache = _cache(db)
        known, row = cache.current(ino)
        if row is None:
            if not known:
                cache.unknown(ino)
            return  # a deleted row stays deleted
        new = InodeRow(row.id, row.mode, row.uid, row.gid, row.size, row.nlink, row.rdev,
                       row.atime_ns, row.mtime_ns, row.ctime_ns, row.policy, row.alloc)
        for k, v in fields.items():
            setattr(new, k, v)
        cache.changed(ino, new)


# The statement text per set of columns: building it is a visible share of a namespace op.
_UPDATE_SQL: dict[tuple[str, ...], str] = {}


def add_nlink(db: Database, ino: int, delta: int) -> None:
    with db.lock:
        db.conn.execute("UPDATE inodes SET nlink = nlink + ? WHERE id=?", (delta, ino))
        cache = _cache(db)
        known, row = cache.current(ino)
        if row is not None:
            new = InodeRow(row.id, row.mode, row.uid, row.gid, row.size, row.nlink + delta,
                           row.rdev, row.atime_ns, row.mtime_ns, row.ctime_ns, row.policy,
                           row.alloc)
            cache.changed(ino, new)
        elif not known:
            cache.unknown(ino)


def delete_inode(db: Database, ino: int) -> None:
    with db.lock:
        db.conn.execute("DELETE FROM inodes WHERE id=?", (ino,))
        db.conn.execute("DELETE FROM symlinks WHERE inode=?", (ino,))
        db.conn.execute("DELETE FROM xattrs WHERE inode=?", (ino,))
        _cache(db).changed(ino, None)


def unlinked_inodes(db: Database) -> list[int]:
    return [r[0] for r in db.query("SELECT id FROM inodes WHERE nlink = 0")]


def count_inodes(db: Database) -> int:
    return int(db.get_val("SELECT COUNT(*) FROM inodes"))


# -- directory entries ----------------------------------------------------------------------

def lookup(db: Database, parent: int, name: bytes) -> int | None:
    key = (parent, name)
    with db.lock:
        cache = _cache(db)
        # A name this transaction changed is not in `names` any more (see `renamed`).
        ino = cache.names.get(key)
        if ino is not None:
            return ino
        ino = db.get_val("SELECT inode FROM dentries WHERE parent=? AND name=?", key)
        # Only a value read outside any transaction is surely committed.
        if ino is not None and not cache.depth and not db.conn.in_transaction:
            cache.keep_name(key, ino)
        return ino


def add_dentry(db: Database, parent: int, name: bytes, ino: int) -> None:
    _change_dentries(db, "INSERT INTO dentries (parent, name, inode) VALUES (?, ?, ?)",
                     (parent, name, ino), ((parent, name), ino))


def remove_dentry(db: Database, parent: int, name: bytes) -> None:
    _change_dentries(db, "DELETE FROM dentries WHERE parent=? AND name=?", (parent, name),
                     ((parent, name), None))


def retarget_dentry(db: Database, parent: int, name: bytes, ino: int) -> None:
    _change_dentries(db, "UPDATE dentries SET inode=? WHERE parent=? AND name=?",
                     (ino, parent, name), ((parent, name), ino))


def move_dentry(
    db: Database, parent: int, name: bytes, new_parent: int, new_name: bytes
) -> None:
    _change_dentries(db, "UPDATE dentries SET parent=?, name=? WHERE parent=? AND name=?",
                     (new_parent, new_name, parent, name), ((parent, name), None),
                     ((new_parent, new_name), None))


def _change_dentries(db: Database, sql: str, args: tuple[int | bytes, ...],
                     *changes: tuple[tuple[int, bytes], int | None]) -> None:
    """Run a change of directory entries: `changes` are the (parent, name) pairs it touches,
    each with the inode it now names (None: none, or not known without a read)."""
    # Counted under the lock, like the row changes, so no increment is lost between threads.
    with db.lock:
        db.conn.execute(sql, args)
        cache = _cache(db)
        for key, target in changes:
            cache.renamed(key, target)


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
