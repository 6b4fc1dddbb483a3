"""Recovering lost metadata: --restore-metadata from the copies on the disks, and
--rebuild-metadata from the fragment headers alone."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from engine_fixtures import (
    ROOT,
    db_rows,
    fragment_files,
    fsck_problems,
    lookup_ino,
    read_file,
    write_file,
)

from dynamicfs.engine.pool import Pool
from dynamicfs.engine.types import ROOT_CTX
from dynamicfs.errors import DynamicFSError
from dynamicfs.maint import metadata, repair
from dynamicfs.meta import rebuild as mreb

A = os.urandom(150_000)  # three 64 KiB blocks
B = os.urandom(70_000)


@pytest.fixture
def pool(run_engine) -> Path:
    """A pool with /a and /d/b; unmounting left metadata copies on two disks."""

    async def body(engine):
        await write_file(engine, b"a", A)
        d = await engine.mkdir(ROOT, b"d", 0o755, ROOT_CTX)
        await write_file(engine, b"b", B, parent=d.ino)
        await engine.forget([(d.ino, 1)])

    return run_engine(body)


def disks_of(path: Path) -> list[Path]:
    return sorted(path.parent.glob("disk*"))


def copies(path: Path) -> list[Path]:
    return sorted(path.parent.glob("disk*/metadata/meta.db"))


def reads(run_engine, path: Path, files: dict[bytes, bytes]) -> None:
    async def body(engine):
        for name, data in files.items():
            assert await read_file(engine, await lookup_ino(engine, name)) == data, name

    run_engine(body, pool_path=path)


def finish(path: Path) -> list[repair.Repair]:
    """What `fsck --rebuild-metadata` does after the rebuild: a repair pass, then fsck."""
    p = Pool.open(path)
    p.lock("test")
    try:
        done = repair.repair(p, verify_data=True)
    finally:
        p.close()
    assert fsck_problems(path) == [], "\n".join(map(str, fsck_problems(path)))
    return done


# -- restore -----------------------------------------------------------------------------------

def test_copies_exist_after_unmount(pool):
    assert len(copies(pool)) == 2
    for c in copies(pool):
        info = json.loads((c.parent / "meta.json").read_text())
        assert mreb.database_problem(c, info["pool_uuid"]) is None


def test_healthy_database_is_not_replaced_without_force(pool, run_engine):
    with pytest.raises(DynamicFSError, match="healthy.*--force"):
        metadata.restore(pool, [])
    report = metadata.restore(pool, [], force=True)
    assert report["reason"] == "replaced on request (--force)"
    assert (pool / report["damaged"]).exists()
    reads(run_engine, pool, {b"a": A, b"d/b": B})


def test_garbage_database_needs_a_disk_named(pool, run_engine):
    (pool / "meta.db").write_bytes(b"\x00garbage" * 1000)
    assert mreb.database_problem(pool / "meta.db") is not None
    with pytest.raises(DynamicFSError, match="--disk"):
        metadata.restore(pool, [])
    # One disk holding a copy is enough: the copy names the others.
    report = metadata.restore(pool, [copies(pool)[0].parent.parent])
    assert report["copy"] in map(str, copies(pool))
    assert report["age_seconds"] < 120
    assert (pool / report["damaged"]).read_bytes().startswith(b"\x00garbage")
    assert "cannot" in report["reason"] or "integrity" in report["reason"] \
        or "not a database" in report["reason"]
    reads(run_engine, pool, {b"a": A, b"d/b": B})


def test_truncated_database_and_stale_wal_are_set_aside(pool, run_engine):
    db = pool / "meta.db"
    size = db.stat().st_size
    os.truncate(db, size // 2)
    (pool / "meta.db-wal").write_bytes(b"junk")
    report = metadata.restore(pool, [copies(pool)[1].parent.parent])
    assert not (pool / "meta.db-wal").exists()
    assert (pool / (report["damaged"] + "-wal")).exists()
    reads(run_engine, pool, {b"a": A, b"d/b": B})


def test_newest_good_copy_wins_and_bad_copies_are_skipped(pool, run_engine):
    first, second = copies(pool)
    side = second.parent / "meta.json"
    info = json.loads(side.read_text())
    info["time"] -= 1000  # the second copy is older
    side.write_text(json.dumps(info))
    (pool / "meta.db").unlink()
    report = metadata.restore(pool, disks_of(pool))
    assert report["copy"] == str(first)
    assert report["damaged"] is None
    # Now damage the newest: a flipped byte no longer matches the sidecar's BLAKE3.
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.write_bytes(bytes(data))
    (pool / "meta.db").unlink()
    report = metadata.restore(pool, disks_of(pool))
    assert report["copy"] == str(second)
    reads(run_engine, pool, {b"a": A, b"d/b": B})


def test_no_good_copy_is_a_clear_error(pool):
    for c in copies(pool):
        c.write_bytes(b"x")
    (pool / "meta.db").unlink()
    with pytest.raises(DynamicFSError, match="no good metadata copy.*does not match"):
        metadata.restore(pool, disks_of(pool))


def test_pool_directory_lost_everything(pool, run_engine):
    for name in ("meta.db", "pool.json"):
        (pool / name).unlink()
    with pytest.raises(DynamicFSError, match="--disk"):
        metadata.restore(pool, [])
    holders = {c.parent.parent for c in copies(pool)}
    without = next(d for d in disks_of(pool) if d not in holders)
    with pytest.raises(DynamicFSError, match="no copy on .*name the pool's disks"):
        metadata.restore(pool, [without])
    metadata.restore(pool, [without, sorted(holders)[0]])
    assert json.loads((pool / "pool.json").read_text())["uuid"]
    reads(run_engine, pool, {b"a": A, b"d/b": B})


# -- rebuild -----------------------------------------------------------------------------------

def test_rebuild_of_lost_fragment_and_extent_tables(pool, run_engine):
    before = db_rows(pool, "SELECT id, hash, length, refcount FROM extents ORDER BY id")
    frags = db_rows(pool, "SELECT * FROM fragments ORDER BY extent, idx")
    conn = sqlite3.connect(pool / "meta.db")
    conn.execute("DELETE FROM fragments")
    conn.execute("UPDATE extents SET refcount = 0, length = 1")
    conn.commit()
    conn.close()
    report = metadata.rebuild(pool, [])
    assert report["base"] == "the current database"
    assert report["extents"] == len(before) and report["holes"] == []
    assert report["unattached_extents"] == 0 and report["bad_fragments"] == 0
    assert db_rows(pool, "SELECT id, hash, length, refcount FROM extents ORDER BY id") == before
    assert db_rows(pool, "SELECT * FROM fragments ORDER BY extent, idx") == frags
    assert finish(pool) == []
    reads(run_engine, pool, {b"a": A, b"d/b": B})


def test_rebuild_without_any_database_keeps_data_in_lost_found(pool, run_engine):
    for c in copies(pool):
        c.unlink()
    (pool / "meta.db").unlink()
    report = metadata.rebuild(pool, disks_of(pool))
    assert report["base"].startswith("an empty schema")
    assert report["guessed_settings"] == {"block_size": 65536, "policy": "rep:2"}
    assert report["unattached_extents"] == 5  # three blocks of a, two of b
    assert report["unattached_bytes"] == len(A) + len(B)
    finish(pool)

    async def body(engine):
        home = await lookup_ino(engine, b"lost+found/extents")
        names = [e.name for e in await engine.readdir(home, 0) if e.name not in (b".", b"..")]
        contents = set()
        for name in names:
            contents.add(await read_file(engine, await lookup_ino(
                engine, b"lost+found/extents/" + name)))
        blocks = {x[i:i + 65536] for x in (A, B) for i in range(0, len(x), 65536)}
        assert contents == blocks

    run_engine(body, pool_path=pool)


def test_rebuild_from_an_old_copy(pool, run_engine):
    """The copy predates a new file and the deletion of another: the new file's data is kept
    in lost+found, the deleted data's block maps become named holes."""

    async def later(engine):
        await write_file(engine, b"c", b"new data" * 1000)
        await engine.unlink(await lookup_ino(engine, b"d"), b"b")

    old = {c: c.read_bytes() for c in copies(pool)}
    sides = {c: (c.parent / "meta.json").read_bytes() for c in copies(pool)}
    run_engine(later, pool_path=pool)
    for c in old:  # put the earlier copies back, then lose the database
        c.write_bytes(old[c])
        (c.parent / "meta.json").write_bytes(sides[c])
    (pool / "meta.db").write_bytes(b"lost")
    report = metadata.rebuild(pool, [copies(pool)[0].parent.parent])
    assert report["base"].startswith("the copy ")
    assert [(h["path"], h["block"]) for h in report["holes"]] == [("/d/b", 0), ("/d/b", 1)]
    assert report["unattached_extents"] == 1
    finish(pool)
    reads(run_engine, pool, {b"a": A, b"d/b": bytes(len(B))})


def test_rebuild_skips_bad_fragments_and_repair_restores_redundancy(pool, run_engine):
    victim = fragment_files(pool)[0]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    report = metadata.rebuild(pool, [])
    assert report["bad_fragments"] == 1 and report["holes"] == []
    done = finish(pool)
    assert any("rebuilt fragment" in r.action for r in done)
    reads(run_engine, pool, {b"a": A, b"d/b": B})


def test_extent_on_no_disk_becomes_a_named_hole(pool, run_engine):
    ino = db_rows(pool, "SELECT inode FROM dentries WHERE name = CAST('a' AS BLOB)")[0][0]
    eid = db_rows(pool, f"SELECT extent FROM blocks WHERE inode = {ino} AND idx = 1")[0][0]
    digest = db_rows(pool, f"SELECT hash FROM extents WHERE id = {eid}")[0][0]
    for f in fragment_files(pool):
        if f.name.startswith(digest.hex()):
            f.unlink()
    report = metadata.rebuild(pool, [])
    assert [(h["path"], h["block"]) for h in report["holes"]] == [("/a", 1)]
    finish(pool)
    reads(run_engine, pool, {b"a": A[:65536] + bytes(65536) + A[131072:]})
