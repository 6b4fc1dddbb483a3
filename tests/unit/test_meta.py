"""Engine-level tests of the metadata package and placement (no FUSE)."""

import contextlib
import random
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamicfs.meta import Database, MetadataError
from dynamicfs.meta import extents as mext
from dynamicfs.meta import inodes as mino
from dynamicfs.store.placement import choose_disks


def test_schema_roundtrip(tmp_path):
    db = Database(tmp_path / "m.db", create=True)
    with db.transaction():
        root = mino.create_inode(db, 0o40755, 0, 0, 2, 1, ino=1)
        f = mino.create_inode(db, 0o100644, 0, 0, 1, 1)
        mino.add_dentry(db, root, b"a", f)
    assert mino.lookup(db, 1, b"a") == f
    with pytest.raises(RuntimeError), db.transaction():
        mino.add_dentry(db, root, b"b", f)
        raise RuntimeError
    assert mino.lookup(db, 1, b"b") is None
    db.sync()
    db.close()
    db2 = Database(tmp_path / "m.db")
    assert mino.lookup(db2, 1, b"a") == f


def test_refcounts(tmp_path):
    db = Database(tmp_path / "m.db", create=True)
    with db.transaction():
        e = mext.add_extent(db, b"h" * 32, 10, 1, 1, 1, [(0, 1, 100), (1, 2, 100)])
        mext.incref(db, e)
        mext.incref(db, e)
    assert not mext.decref(db, e)
    assert mext.decref(db, e)
    assert [f.disk for f in mext.delete_extent(db, e)] == [1, 2]
    assert mext.get_extent(db, e) is None


def test_committed_range_answers_as_the_per_block_queries_do(tmp_path):
    """Readahead's one query per window gives what three queries per block gave."""
    db = Database(tmp_path / "m.db", create=True)
    with db.transaction():
        a = mext.add_extent(db, b"a" * 32, 10, 1, 1, 1, [(0, 3, 100), (1, 1, 100)])
        b = mext.add_extent(db, b"b" * 32, 20, 2, 4, 2, [(i, i + 1, 60) for i in range(6)])
        for idx, ext in ((0, a), (2, b), (3, a), (9, b)):
            mext.set_block(db, 7, idx, ext)
        mext.set_block(db, 8, 1, b)  # another file's block in the window: not ours
    got = mext.committed_range(db, 7, 0, 5)
    assert sorted(got) == [0, 2, 3]  # 1, 4 and 5 are holes, 9 is outside
    for idx, (ext, frags) in got.items():
        eid = mext.block_extent(db, 7, idx)
        assert ext == mext.get_extent(db, eid)
        assert frags == [(f.idx, f.disk) for f in mext.get_fragments(db, eid)]
    assert mext.committed_range(db, 7, 4, 8) == {}


def test_missing_db(tmp_path):
    with pytest.raises(MetadataError):
        Database(tmp_path / "nope.db")


def test_placement_distinct_and_weighted():
    rng = random.Random(1)
    free = {1: 1000, 2: 3000, 3: 0, 4: 2000}
    seen = Counter()
    for _ in range(3000):
        got = choose_disks(free, 2, 10, rng=rng)
        assert len(set(got)) == 2 and 3 not in got
        seen.update(got)
    assert seen[2] > seen[4] > seen[1]
    assert choose_disks(free, 4, 10, rng=rng).__len__() == 3


# -- the inode row cache ----------------------------------------------------------------------

def _fresh(db: Database, ino: int) -> mino.InodeRow | None:
    """The row as SQLite has it, past the cache."""
    row = db.get_row(f"SELECT {mino._COLS} FROM inodes WHERE id=?", (ino,))
    return None if row is None else mino.InodeRow(*row)


def _cache_db(tmp_path) -> tuple[Database, list[int]]:
    db = Database(tmp_path / "m.db", create=True)
    with mino.transaction(db):
        inos = [mino.create_inode(db, 0o100644, 0, 0, 1, 1) for _ in range(3)]
    return db, inos


def test_inode_cache_drops_changes_of_a_rolled_back_transaction(tmp_path):
    db, (a, b, _) = _cache_db(tmp_path)
    before = mino.get_inode(db, a)
    with pytest.raises(RuntimeError), mino.transaction(db):
        mino.update_inode(db, a, nlink=7, size=5)
        mino.add_nlink(db, b, 3)
        mino.delete_inode(db, b)
        assert mino.get_inode(db, a).nlink == 7  # the transaction sees its own change
        assert mino.get_inode(db, b) is None
        raise RuntimeError
    assert mino.get_inode(db, a) == before == _fresh(db, a)
    assert mino.get_inode(db, b) == _fresh(db, b) is not None


def test_inode_cache_keeps_nothing_read_inside_a_foreign_transaction(tmp_path):
    db, (a, _, _) = _cache_db(tmp_path)
    mino.forget_cached(db)
    # Database.transaction() directly: the cache cannot see its outcome, so what is read or
    # written inside must not outlive it.
    with pytest.raises(RuntimeError), db.transaction():
        mino.update_inode(db, a, nlink=9)
        assert mino.get_inode(db, a).nlink == 9
        with mino.transaction(db):  # nested in the foreign one: not tracked either
            mino.update_inode(db, a, size=4)
        raise RuntimeError
    assert mino.get_inode(db, a) == _fresh(db, a)
    assert mino.get_inode(db, a).nlink == 1
    with db.transaction():
        mino.update_inode(db, a, mode=0o100600)
    assert mino.get_inode(db, a).mode == 0o100600


def test_inode_cache_inner_failure_commits_with_the_outer_transaction(tmp_path):
    # A nested failure that the outer transaction survives is not rolled back by SQLite
    # (Database.transaction only rolls back at the outermost level), so it must stay cached.
    db, (a, _, _) = _cache_db(tmp_path)
    with mino.transaction(db):
        with pytest.raises(RuntimeError), mino.transaction(db):
            mino.update_inode(db, a, nlink=4)
            raise RuntimeError
    assert mino.get_inode(db, a) == _fresh(db, a)
    assert _fresh(db, a).nlink == 4


def test_every_namespace_change_moves_the_generation(tmp_path):
    # The engine keeps directory listings while this number stays put: every function that
    # changes an inode row or a directory entry must move it, inside a transaction or not.
    db, (a, b, c) = _cache_db(tmp_path)
    changes = [
        lambda: mino.update_inode(db, a, size=1),
        lambda: mino.add_nlink(db, a, 1),
        lambda: mino.create_inode(db, 0o100644, 0, 0, 1, 1),
        lambda: mino.add_dentry(db, a, b"x", b),
        lambda: mino.retarget_dentry(db, a, b"x", c),
        lambda: mino.move_dentry(db, a, b"x", b, b"y"),
        lambda: mino.remove_dentry(db, b, b"y"),
        lambda: mino.delete_inode(db, c),
        lambda: mino.forget_cached(db),
    ]
    for tracked in (False, True):
        for change in changes:
            before = mino.namespace_generation(db)
            with mino.transaction(db) if tracked else contextlib.nullcontext():
                change()
            assert mino.namespace_generation(db) != before, (tracked, change)
        c = mino.create_inode(db, 0o100644, 0, 0, 1, 1)
    # Reading moves nothing.
    before = mino.namespace_generation(db)
    mino.get_inode(db, a)
    mino.list_dir_plus(db, a, 0, 10)
    mino.lookup(db, a, b"x")
    assert mino.namespace_generation(db) == before
    db.close()


def _run_as(db: Database, kind: str, fail: bool, body: Callable[[], None],
            then: Callable[[], object] = lambda: None) -> None:
    """Run `body` in a transaction of the given kind; with `fail` it raises at its end.

    tracked: `mino.transaction`; foreign: `Database.transaction` directly; nested: tracked
    inside foreign; twice: tracked inside tracked; caught: an inner tracked failure the outer
    tracked transaction survives (SQLite keeps its changes), `then` running after it; none:
    autocommit, statement by statement.
    """
    def go() -> None:
        body()
        if fail:
            raise RuntimeError

    with contextlib.suppress(RuntimeError):
        if kind == "tracked":
            with mino.transaction(db):
                go()
        elif kind == "foreign":
            with db.transaction():
                go()
        elif kind == "nested":
            with db.transaction(), mino.transaction(db):
                go()
        elif kind == "twice":
            with mino.transaction(db), mino.transaction(db):
                go()
        elif kind == "caught":
            with mino.transaction(db):
                with contextlib.suppress(RuntimeError), mino.transaction(db):
                    go()
                then()
        else:
            body()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(
    st.sampled_from(["tracked", "foreign", "nested", "twice", "caught", "none"]),
    st.lists(st.tuples(st.sampled_from(["update", "nlink", "create", "delete", "read"]),
                       st.integers(0, 4), st.integers(0, 3)), max_size=5),
    st.booleans()), max_size=12))
def test_inode_cache_matches_sqlite_after_any_transactions(tmp_path_factory, steps):
    db, inos = _cache_db(tmp_path_factory.mktemp("cache"))
    inos = inos + [100, 101]  # two that do not exist yet (create with an explicit id)
    for kind, ops, fail in steps:
        def run_ops(ops: list[tuple[str, int, int]] = ops) -> None:
            for op, i, v in ops:
                ino = inos[i]
                if op == "update":
                    mino.update_inode(db, ino, size=v, mtime_ns=v + 1)
                elif op == "nlink":
                    mino.add_nlink(db, ino, v - 1)
                elif op == "create" and _fresh(db, ino) is None:
                    mino.create_inode(db, 0o100644, v, v, 1, v, ino=ino)
                elif op == "delete":
                    mino.delete_inode(db, ino)
                else:
                    assert mino.get_inode(db, ino) == _fresh(db, ino)

        _run_as(db, kind, fail, run_ops, then=lambda: mino.get_inode(db, inos[0]))
        for ino in inos:
            assert mino.get_inode(db, ino) == _fresh(db, ino), (kind, ops, fail)
    db.close()


def _fresh_lookup(db: Database, parent: int, name: bytes) -> int | None:
    """The entry as SQLite has it, past the name cache."""
    return db.get_val("SELECT inode FROM dentries WHERE parent=? AND name=?", (parent, name))


def test_names_are_found_again_without_sql(tmp_path):
    db, (a, b, c) = _cache_db(tmp_path)
    with mino.transaction(db):
        mino.add_dentry(db, a, b"made", b)  # tracked: known from its commit on
    with db.transaction():
        mino.add_dentry(db, a, b"other", c)  # not tracked: known once read
    reads: list[str] = []
    db.conn.set_trace_callback(lambda sql: reads.append(sql) if "dentries" in sql else None)
    assert [mino.lookup(db, a, b"made") for _ in range(3)] == [b, b, b]
    assert not reads
    assert [mino.lookup(db, a, b"other") for _ in range(3)] == [c, c, c]
    assert len(reads) == 1, reads
    # A name that does not exist is asked every time (the kernel caches misses itself).
    assert mino.lookup(db, a, b"nope") is None and mino.lookup(db, a, b"nope") is None
    assert len(reads) == 3, reads
    # A failed change leaves the cache as it was.
    with pytest.raises(MetadataError), mino.transaction(db):
        mino.add_dentry(db, a, b"made", c)  # the name exists: SQLite refuses
    assert mino.lookup(db, a, b"made") == b
    db.conn.set_trace_callback(None)
    db.close()


_NAMES = [b"p", b"q", b"r"]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(
    st.sampled_from(["tracked", "foreign", "nested", "twice", "caught", "none"]),
    st.lists(st.tuples(st.sampled_from(["add", "remove", "retarget", "move", "lookup"]),
                       st.integers(0, 1), st.integers(0, 2), st.integers(0, 1),
                       st.integers(0, 2)), max_size=5),
    st.booleans()), max_size=12))
def test_name_cache_matches_sqlite_after_any_transactions(tmp_path_factory, steps):
    # Two directories, three names, three inodes: every lookup, inside a transaction or after
    # one committed or rolled back, must give what SQLite has.
    db, (d0, d1, f) = _cache_db(tmp_path_factory.mktemp("names"))
    dirs = [d0, d1]
    keys = [(d, n) for d in dirs for n in _NAMES]
    for kind, ops, fail in steps:
        def run_ops(ops: list[tuple[str, int, int, int, int]] = ops) -> None:
            for op, di, ni, dj, nj in ops:
                parent, name = dirs[di], _NAMES[ni]
                there = _fresh_lookup(db, parent, name)
                free = _fresh_lookup(db, dirs[dj], _NAMES[nj]) is None
                if op == "add" and there is None:
                    mino.add_dentry(db, parent, name, [d0, d1, f][nj])
                elif op == "remove" and there is not None:
                    mino.remove_dentry(db, parent, name)
                elif op == "retarget" and there is not None:
                    mino.retarget_dentry(db, parent, name, [d0, d1, f][nj])
                elif op == "move" and there is not None and free:
                    mino.move_dentry(db, parent, name, dirs[dj], _NAMES[nj])
                for key in keys:
                    assert mino.lookup(db, *key) == _fresh_lookup(db, *key), (op, key)

        _run_as(db, kind, fail, run_ops)
        for key in keys:
            assert mino.lookup(db, *key) == _fresh_lookup(db, *key), (kind, ops, fail, key)
    db.close()


def test_name_cache_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(mino, "_NAMES_MAX", 10)
    db, (a, b, _) = _cache_db(tmp_path)
    with mino.transaction(db):
        for i in range(30):
            mino.add_dentry(db, a, b"n%d" % i, b)
    for i in range(30):
        assert mino.lookup(db, a, b"n%d" % i) == b
    assert len(mino._cache(db).names) == 10
    # The newest stay: the first of them is served without SQL.
    reads: list[str] = []
    db.conn.set_trace_callback(reads.append)
    assert mino.lookup(db, a, b"n29") == b and not reads
    db.conn.set_trace_callback(None)
    db.close()


def test_sync_keeps_sqlites_posix_locks(tmp_path) -> None:
    """Closing any descriptor of a file drops every POSIX lock the process holds on it, SQLite's
    included. If sync() opened and closed the WAL, another process's connection would believe
    itself the last one when it closes, checkpoint and delete the WAL under the mount."""
    import subprocess
    import sys

    from dynamicfs.meta import Database

    path = tmp_path / "m.db"
    db = Database(path, create=True)
    try:
        with db.transaction():
            db.execute("INSERT INTO settings (key, value) VALUES ('x', '1')")
        db.sync()
        with db.transaction():
            db.execute("UPDATE settings SET value='2' WHERE key='x'")
        db.sync()
        code = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                "c.execute('SELECT * FROM settings').fetchall(); c.close()")
        subprocess.run([sys.executable, "-c", code, str(path)], check=True)
        assert (tmp_path / "m.db-wal").exists()
        assert db.get_val("SELECT value FROM settings WHERE key='x'") == "2"
    finally:
        db.close()


def test_the_wal_stays_bounded_under_a_writer_that_never_pauses(tmp_path, monkeypatch) -> None:
    """A PASSIVE checkpoint never catches up with a busy writer; the commits themselves
    checkpoint past WAL_LIMIT_PAGES, so the WAL cannot grow without bound."""
    from dynamicfs.meta import db as mdb
    from dynamicfs.meta.db import Database

    monkeypatch.setattr(mdb, "WAL_LIMIT_PAGES", 256)  # 1 MiB: small enough to pass quickly
    path = tmp_path / "m.db"
    db = Database(path, create=True)
    try:
        blob = "x" * 3000
        for i in range(3000):  # one or two pages per transaction: ~4,000 frames written
            with db.transaction():
                db.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (f"k{i}", blob))
        assert db.get_val("PRAGMA wal_autocheckpoint") == 256
        # Without the limit this WAL would hold every frame (>12 MiB); with it, about 1 MiB.
        assert (tmp_path / "m.db-wal").stat().st_size <= 2 * 256 * 4096
    finally:
        db.close()
