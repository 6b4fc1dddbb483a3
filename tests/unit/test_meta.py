"""Engine-level tests of the metadata package and placement (no FUSE)."""

import random
from collections import Counter

import pytest

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
