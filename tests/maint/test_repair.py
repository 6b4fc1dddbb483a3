"""fsck --repair at the engine level: each kind of damage fsck reports is repaired (or, where
that is not safe, left and still reported), a second repair finds nothing to do, and the data
that survived reads back exactly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from engine_fixtures import (
    ROOT,
    corrupt_db,
    db_rows,
    fragment_files,
    fsck_problems,
    lookup_ino,
    read_file,
    write_file,
)

from dynamicfs.engine.pool import Pool
from dynamicfs.engine.types import ROOT_CTX
from dynamicfs.maint import repair

DATA = bytes(range(256)) * 391  # 100,096 bytes: two 64 KiB blocks


@pytest.fixture
def populated(run_engine) -> Path:
    """A file (ino 2, two blocks), a directory (3) with a symlink (4) and a hard link to the
    file, and an xattr on the file — the same pool tests/engine/test_fsck.py damages."""

    async def body(engine):
        a = await write_file(engine, b"file", DATA)
        d = await engine.mkdir(ROOT, b"dir", 0o755, ROOT_CTX)
        s = await engine.symlink(d.ino, b"link", b"../file", ROOT_CTX)
        assert (a.ino, d.ino, s.ino) == (2, 3, 4)
        await engine.link(a.ino, d.ino, b"hard", ROOT_CTX)
        await engine.setxattr(a.ino, b"user.k", b"v")
        await engine.forget([(d.ino, 1), (s.ino, 1), (a.ino, 1)])

    return run_engine(body)


def run_repair(path: Path, verify_data: bool = True) -> list[repair.Repair]:
    pool = Pool.open(path)
    pool.lock("repair test")
    try:
        return repair.repair(pool, verify_data=verify_data)
    finally:
        pool.close()


def repaired(path: Path) -> list[repair.Repair]:
    """Repair, then prove fsck is clean and a second repair has nothing left to change."""
    done = run_repair(path)
    assert done, "the damage should have needed a repair"
    assert fsck_problems(path) == [], "\n".join(map(str, fsck_problems(path)))
    assert run_repair(path) == []
    return done


def read_back(run_engine, path: Path, name: bytes, expect: bytes) -> None:
    async def body(engine):
        engine.data.clean.__init__(engine.data.clean.limit)
        ino = await lookup_ino(engine, name)
        assert await read_file(engine, ino) == expect

    run_engine(body, pool_path=path)  # which also fscks the pool afterwards


DAMAGE = {
    "refcount": ["UPDATE extents SET refcount = refcount + 1"],
    "alloc": ["UPDATE inodes SET alloc = 5 WHERE id = 2"],
    "nlink": ["UPDATE inodes SET nlink = 1 WHERE id = 2"],
    "dir_nlink": [f"UPDATE inodes SET nlink = 2 WHERE id = {ROOT}"],
    "stray_rows": ["INSERT INTO xattrs VALUES (99, x'61', x'62')",
                   "INSERT INTO symlinks VALUES (2, x'61')"],
    "symlink_size": ["UPDATE inodes SET size = 1 WHERE id = 4"],
    "blocks_of_missing_inode": ["INSERT INTO blocks SELECT 77, idx, extent FROM blocks"
                                " WHERE inode = 2 AND idx = 1",
                                "UPDATE extents SET refcount = refcount + 1"
                                " WHERE id = (SELECT extent FROM blocks WHERE inode = 77)"],
    "fragment_row_missing": ["DELETE FROM fragments WHERE idx = 1 AND extent = 1"],
    "fragment_on_unknown_disk": ["UPDATE fragments SET disk = 42 WHERE extent = 1 AND idx = 1"],
    "fragments_sharing_disk": ["UPDATE fragments SET disk = (SELECT disk FROM fragments"
                               " WHERE extent = 1 AND idx = 0) WHERE extent = 1 AND idx = 1"],
    "dentry_to_missing_inode": ["INSERT INTO dentries (parent, name, inode)"
                                " VALUES (1, x'6e', 55)"],
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_metadata_damage_is_repaired_without_loss(populated, run_engine, damage):
    corrupt_db(populated, *DAMAGE[damage])
    assert fsck_problems(populated)
    done = repaired(populated)
    assert not any(r.data_loss for r in done)
    read_back(run_engine, populated, b"file", DATA)


def test_unreferenced_extent_is_freed_with_its_files(populated, run_engine):
    # A crash between the commit that dropped block 1 and the free that should follow it.
    corrupt_db(populated, "DELETE FROM blocks WHERE inode = 2 AND idx = 1",
               "UPDATE inodes SET size = 65536, alloc = 65536 WHERE id = 2",
               "UPDATE extents SET refcount = 0 WHERE id NOT IN (SELECT extent FROM blocks)")
    before = len(fragment_files(populated))
    done = repaired(populated)
    assert any("freed unreferenced extent" in r.action for r in done)
    assert len(fragment_files(populated)) == before - 2
    read_back(run_engine, populated, b"file", DATA[:65536])


def test_missing_and_corrupt_fragments_are_rebuilt(populated, run_engine):
    by_extent: dict[str, Path] = {}
    for f in fragment_files(populated):
        by_extent.setdefault(f.name.rsplit(".", 1)[0], f)
    first, second = by_extent.values()  # one fragment of each of the file's two extents
    first.unlink()
    data = bytearray(second.read_bytes())
    data[-1] ^= 0xFF
    second.write_bytes(bytes(data))
    done = repaired(populated)
    assert sum("rebuilt fragment" in r.action for r in done) == 2
    read_back(run_engine, populated, b"file", DATA)


def test_rebuild_onto_another_disk_when_the_fragments_disk_is_full(populated, run_engine):
    # The row's disk is gone from the registry: the rebuilt fragment must go elsewhere, to a
    # disk holding no fragment of that extent.
    corrupt_db(populated, "UPDATE fragments SET disk = 42 WHERE extent = 1 AND idx = 1")
    repaired(populated)
    disks = [d for (d,) in db_rows(populated, "SELECT disk FROM fragments WHERE extent = 1")]
    assert len(set(disks)) == len(disks) == 2 and 42 not in disks
    read_back(run_engine, populated, b"file", DATA)


def test_dangling_block_becomes_a_named_hole(populated, run_engine):
    corrupt_db(populated, "UPDATE blocks SET extent = 999 WHERE inode = 2 AND idx = 0")
    done = repaired(populated)
    loss = [r for r in done if r.data_loss]
    assert len(loss) == 1 and "/file lost block 0" in loss[0].action
    read_back(run_engine, populated, b"file", bytes(65536) + DATA[65536:])


def test_disconnected_directory_goes_to_lost_found(populated, run_engine):
    corrupt_db(populated, "UPDATE dentries SET parent = 3 WHERE name = CAST('dir' AS BLOB)",
               "UPDATE inodes SET nlink = 3 WHERE id = 3",
               "UPDATE inodes SET nlink = 2 WHERE id = 1")
    done = repaired(populated)
    assert any("lost+found/#3" in r.action for r in done)
    read_back(run_engine, populated, b"lost+found/#3/hard", DATA)


def test_entry_under_a_file_is_dropped_and_its_target_kept(populated, run_engine):
    corrupt_db(populated, "UPDATE dentries SET parent = 2 WHERE name = CAST('hard' AS BLOB)",
               "DELETE FROM dentries WHERE name = CAST('file' AS BLOB)")
    repaired(populated)
    read_back(run_engine, populated, b"lost+found/#2", DATA)


def test_unlinked_inode_is_removed_with_its_blocks(populated):
    corrupt_db(populated, "DELETE FROM dentries WHERE inode = 2",
               "UPDATE inodes SET nlink = 0 WHERE id = 2")
    repaired(populated)
    assert db_rows(populated, "SELECT id FROM inodes WHERE id = 2") == []
    assert fragment_files(populated) == []


def test_orphan_files_are_collected(populated):
    some = fragment_files(populated)[0]
    (some.parent / ("ab" * 32 + ".0")).write_bytes(b"x")
    (some.parent / ".tmp.leftover.1.2").write_bytes(b"x")
    done = repaired(populated)
    assert [r.check for r in done] == ["orphan_files"]


def test_what_cannot_be_repaired_safely_is_left_and_reported(populated):
    corrupt_db(populated, "DELETE FROM symlinks")
    assert run_repair(populated) == []
    assert {p.check for p in fsck_problems(populated)} == {"symlinks"}


def test_unreadable_extent_is_not_touched(populated):
    files = fragment_files(populated)
    names = {f.name for f in files}
    # Both replicas of one extent gone: nothing to rebuild from.
    victim = sorted(names)[0].rsplit(".", 1)[0]
    for f in files:
        if f.name.startswith(victim):
            f.unlink()
    assert run_repair(populated) == []
    assert {p.check for p in fsck_problems(populated)} == {"fragment_files"}


def test_repair_of_an_ec_pool(run_engine):
    async def body(engine):
        await write_file(engine, b"f", os.urandom(200_000))

    path = run_engine(body, policy="ec:2+1", ndisks=4)
    by_extent: dict[str, list[Path]] = {}
    for f in fragment_files(path):
        by_extent.setdefault(f.name.rsplit(".", 1)[0], []).append(f)
    assert len(by_extent) == 4
    for frags in list(by_extent.values())[:2]:
        frags[0].unlink()  # one shard of two extents: each still decodable from the others
    done = repaired(path)
    assert sum("rebuilt fragment" in r.action for r in done) == 2


def test_fragments_of_a_vanished_disk_are_rebuilt_elsewhere(populated, run_engine):
    # Placement is random: take the disk that holds the most fragments (disk id N is diskN-1).
    disk, on_disk0 = db_rows(populated, "SELECT disk, COUNT(*) FROM fragments GROUP BY disk"
                             " ORDER BY COUNT(*) DESC LIMIT 1")[0]
    assert on_disk0 > 0
    label = populated.parent / f"disk{disk - 1}" / "dynamicfs-disk.json"
    saved = label.read_bytes()
    label.unlink()
    done = run_repair(populated)
    assert sum("rebuilt fragment" in r.action for r in done) == on_disk0
    # The disk itself stays reported (removing a disk is a decision, not a repair) ...
    assert {p.check for p in fsck_problems(populated)} == {"disk_labels"}
    assert db_rows(populated, "SELECT COUNT(*) FROM fragments WHERE disk = ?", (disk,)) == [(0,)]
    # ... and when it comes back, what it held is a set of orphans for GC.
    label.write_bytes(saved)
    assert {p.check for p in fsck_problems(populated)} == {"orphan_files"}
    repaired(populated)
    read_back(run_engine, populated, b"file", DATA)
