"""fsck itself: a pool the engine left behind is clean, and each kind of damage is reported by
the check responsible for it (and by no check that has no business with it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import ROOT, corrupt_db, fragment_files, fsck_problems, write_file

from dynamicfs.engine.types import ROOT_CTX
from dynamicfs.maint import fsck


def checks(pool_path: Path, verify_data: bool = True) -> set[str]:
    return {p.check for p in fsck_problems(pool_path, verify_data)}


@pytest.fixture
def populated(run_engine) -> Path:
    """A pool with a two-block file (ino 2), a directory (3) holding a symlink (4), a hard
    link to the file inside the directory, and an xattr on the file."""

    async def body(engine):
        a = await write_file(engine, b"file", os.urandom(100_000))
        assert a.ino == 2
        d = await engine.mkdir(ROOT, b"dir", 0o755, ROOT_CTX)
        s = await engine.symlink(d.ino, b"link", b"../file", ROOT_CTX)
        assert (d.ino, s.ino) == (3, 4)
        await engine.link(a.ino, d.ino, b"hard", ROOT_CTX)
        await engine.setxattr(a.ino, b"user.k", b"v")
        await engine.forget([(d.ino, 1), (s.ino, 1), (a.ino, 1)])

    return run_engine(body)


def test_clean_pool_has_no_problems(populated):
    assert fsck_problems(populated) == []


def test_problem_renders_check_and_message():
    p = fsck.Problem("tree", "inode 9 is not reachable from the root", ("inode", 9))
    assert str(p) == "[tree] inode 9 is not reachable from the root"


def test_wrong_refcount(populated):
    corrupt_db(populated, "UPDATE extents SET refcount = refcount + 1")
    problems = fsck_problems(populated)
    assert {p.check for p in problems} == {"refcounts"}
    assert all(p.subject[0] == "extent" for p in problems)


def test_unreferenced_extent_row(populated):
    corrupt_db(populated, "DELETE FROM blocks WHERE idx = 1",
               "UPDATE inodes SET alloc = 65536 WHERE id = 2",
               "UPDATE inodes SET size = 65536 WHERE id = 2",
               "UPDATE extents SET refcount = 0 WHERE id NOT IN (SELECT extent FROM blocks)")
    assert checks(populated) == {"refcounts"}


def test_block_pointing_at_missing_extent(populated):
    corrupt_db(populated, "UPDATE blocks SET extent = 999 WHERE idx = 0")
    # The extent it used to name lost its reference; alloc now counts a missing extent as 0.
    assert checks(populated) == {"block_map", "refcounts", "alloc"}


def test_block_beyond_size(populated):
    corrupt_db(populated, "UPDATE inodes SET size = 65536 WHERE id = 2")
    problems = fsck_problems(populated)
    assert [(p.check, p.subject) for p in problems] == [("block_map", ("inode", 2))]


def test_block_map_of_missing_inode(populated):
    corrupt_db(populated, "UPDATE blocks SET inode = 77 WHERE idx = 1")
    assert checks(populated) == {"block_map", "alloc"}


def test_wrong_alloc(populated):
    corrupt_db(populated, "UPDATE inodes SET alloc = 5 WHERE id = 2")
    assert checks(populated) == {"alloc"}


def test_missing_fragment_file(populated):
    fragment_files(populated)[0].unlink()
    assert checks(populated, verify_data=False) == {"fragment_files"}


def test_truncated_fragment_file(populated):
    f = fragment_files(populated)[0]
    os.truncate(f, f.stat().st_size - 1)
    assert checks(populated, verify_data=False) == {"fragment_files"}


def test_corrupt_fragment_header(populated):
    f = fragment_files(populated)[0]
    data = bytearray(f.read_bytes())
    data[20] ^= 1  # inside the pool UUID: the header checksum no longer matches
    f.write_bytes(bytes(data))
    assert checks(populated, verify_data=False) == {"fragment_files"}


def test_flipped_payload_byte_needs_verify_data(populated):
    f = fragment_files(populated)[0]
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    assert checks(populated, verify_data=False) == set()
    assert checks(populated, verify_data=True) == {"fragment_files"}


def test_fragment_row_missing(populated):
    corrupt_db(populated, "DELETE FROM fragments WHERE idx = 1 AND extent = 1")
    # The file it named is now unaccounted for as well.
    assert checks(populated) == {"fragment_rows", "orphan_files"}


def test_fragments_sharing_a_disk(populated):
    corrupt_db(populated, "UPDATE fragments SET disk = (SELECT disk FROM fragments"
                          " WHERE extent = 1 AND idx = 0) WHERE extent = 1 AND idx = 1")
    # The moved row now points at a file that is not on that disk; the real file is orphaned.
    assert checks(populated) == {"fragment_rows", "fragment_files", "orphan_files"}


def test_fragment_on_unregistered_disk(populated):
    corrupt_db(populated, "UPDATE fragments SET disk = 42 WHERE extent = 1 AND idx = 1")
    assert checks(populated) == {"fragment_rows", "fragment_files", "orphan_files"}


def test_orphan_and_temporary_files(populated):
    some = fragment_files(populated)[0]
    (some.parent / ("ab" * 32 + ".0")).write_bytes(b"x")
    (some.parent / ".tmp.leftover").write_bytes(b"x")
    problems = fsck_problems(populated)
    assert [p.check for p in problems] == ["orphan_files", "orphan_files"]
    assert any("temporary" in p.message for p in problems)


def test_missing_disk_label(populated):
    label = next(populated.parent.glob("disk0/dynamicfs-disk.json"))
    label.unlink()
    found = checks(populated)
    assert "disk_labels" in found
    # Fragments on it are reported as unchecked, not one "missing" line per file.
    assert found <= {"disk_labels", "fragment_files"}


def test_label_of_another_disk(populated):
    disks = sorted(populated.parent.glob("disk*"))
    (disks[0] / "dynamicfs-disk.json").write_bytes((disks[1] / "dynamicfs-disk.json")
                                                     .read_bytes())
    assert "disk_labels" in checks(populated)


def test_wrong_nlink(populated):
    corrupt_db(populated, "UPDATE inodes SET nlink = 1 WHERE id = 2")
    assert checks(populated) == {"link_counts"}


def test_wrong_directory_nlink(populated):
    corrupt_db(populated, f"UPDATE inodes SET nlink = 2 WHERE id = {ROOT}")
    problems = fsck_problems(populated)
    assert [(p.check, p.subject) for p in problems] == [("link_counts", ("inode", ROOT))]


def test_dentry_under_a_file(populated):
    corrupt_db(populated, "UPDATE dentries SET parent = 2 WHERE name = CAST('link' AS BLOB)")
    # The directory lost a child; the symlink hangs under a file, so it is unreachable too.
    assert checks(populated) == {"tree"}


def test_dentry_to_missing_inode(populated):
    corrupt_db(populated, "INSERT INTO dentries (parent, name, inode) VALUES (1, x'6e', 55)")
    assert checks(populated) == {"tree"}


def test_detached_directory_loop(populated):
    # dir (3) becomes a child of itself: it and everything below it are cut off from the root.
    corrupt_db(populated, "UPDATE dentries SET parent = 3 WHERE name = CAST('dir' AS BLOB)",
               "UPDATE inodes SET nlink = 3 WHERE id = 3",
               "UPDATE inodes SET nlink = 2 WHERE id = 1")
    problems = [p for p in fsck_problems(populated) if p.check == "tree"]
    assert {p.subject for p in problems} == {("inode", 3), ("inode", 4)}


def test_symlink_without_target(populated):
    corrupt_db(populated, "DELETE FROM symlinks")
    assert checks(populated) == {"symlinks"}


def test_symlink_size_mismatch(populated):
    corrupt_db(populated, "UPDATE inodes SET size = 1 WHERE id = 4")
    assert checks(populated) == {"symlinks"}


def test_stray_xattr_and_symlink_rows(populated):
    corrupt_db(populated, "INSERT INTO xattrs VALUES (99, x'61', x'62')",
               "INSERT INTO symlinks VALUES (2, x'61')")
    assert checks(populated) == {"xattrs", "symlinks"}


def test_unlinked_inode_left_behind(populated):
    corrupt_db(populated, "INSERT INTO inodes (id, mode, uid, gid, nlink, atime_ns, mtime_ns,"
                          " ctime_ns) VALUES (50, 33188, 0, 0, 0, 0, 0, 0)")
    assert checks(populated) == {"unlinked"}


def test_settings_name_another_pool(populated):
    corrupt_db(populated, "UPDATE settings SET value = 'x' WHERE key = 'pool_uuid'",
               "UPDATE settings SET value = '1000' WHERE key = 'block_size'")
    problems = [p for p in fsck_problems(populated) if p.check == "settings"]
    assert len(problems) == 2


@pytest.mark.parametrize("name", ["x'2f61'", "x''", "CAST('..' AS BLOB)", "x'610062'",
                                  "zeroblob(256)"])
def test_invalid_entry_names(populated, name):
    corrupt_db(populated, f"UPDATE dentries SET name = {name} WHERE name = CAST('hard' AS BLOB)")
    assert checks(populated) == {"tree"}


def test_root_that_is_not_a_directory(populated):
    corrupt_db(populated, f"UPDATE inodes SET mode = 33188 WHERE id = {ROOT}")
    assert "tree" in checks(populated)
