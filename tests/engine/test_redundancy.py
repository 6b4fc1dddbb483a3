"""Redundancy policies end to end: round trips, degraded reads, unreadable extents, placement
over disks of unequal sizes, and a pool that runs out of space."""

from __future__ import annotations

import errno
import os
from collections import Counter

import pytest
from conftest import BS, ROOT, db_rows, extent_fragments, flip_byte, read_file, write_file

from dynamicfs.codec import Policy
from dynamicfs.disks.faults import Fault
from dynamicfs.engine.types import ROOT_CTX
from dynamicfs.errors import DynamicFSError, FsError
from dynamicfs.meta import extents as mext

POLICIES = ["rep:1", "rep:2", "rep:3", "ec:2+1", "ec:4+2"]


@pytest.fixture
def replica_zero_first(monkeypatch):
    """Make replicated reads try fragment 0 first (they pick a random replica otherwise), so
    that damage to fragment 0 is met, counted and repaired deterministically."""

    class InOrder:
        @staticmethod
        def shuffle(items: list) -> None:
            items.sort()

    monkeypatch.setattr("dynamicfs.store.extents.random", InOrder)


async def ino_of(engine, name: bytes) -> int:
    attr = await engine.lookup(ROOT, name)
    await engine.forget([(attr.ino, 1)])
    return attr.ino


def counters(engine) -> Counter:
    return Counter(engine.stats.snapshot())


@pytest.mark.parametrize("policy", POLICIES)
def test_round_trip(run_engine, policy):
    files = {b"multi": os.urandom(3 * BS + 1234), b"tiny": b"x", b"exact": os.urandom(BS)}
    # A tiny extent of an ec file is kept as M+1 replicas (see the test below).
    parsed = Policy.parse(policy)
    n = parsed.n_fragments

    async def first(engine):
        for name, data in files.items():
            await write_file(engine, name, data)
        for name, data in files.items():
            ino = await ino_of(engine, name)
            assert await read_file(engine, ino) == data
            frags = extent_fragments(engine, ino, 0)
            want = parsed.m + 1 if name == b"tiny" else n
            assert len(frags) == want and all(p.exists() for p in frags)
            assert len({p.parents[3] for p in frags}) == want, "two fragments on one disk"

    path = run_engine(first, policy=policy, ndisks=n + 1)

    async def second(engine):
        for name, data in files.items():
            assert await read_file(engine, await ino_of(engine, name)) == data

    run_engine(second, pool_path=path)


def damage_and_read(run_engine, policy: str, damage, *, ndisks: int | None = None,
                    expect_problems=()) -> tuple[Counter, bytes | int, object]:
    """Write a file, damage its first extent's fragments with `damage(paths)` while the pool
    is closed, then read it back in a fresh engine (cold cache). Returns the stats, either the
    bytes read or the errno the read failed with, and the pool path."""
    data = os.urandom(BS + 999)
    paths: list = []

    async def first(engine):
        a = await write_file(engine, b"f", data)
        paths.extend(extent_fragments(engine, a.ino, 0))

    n = Policy.parse(policy).n_fragments
    path = run_engine(first, policy=policy, ndisks=ndisks or n)
    damage(paths)
    result: list = []

    async def second(engine):
        ino = await ino_of(engine, b"f")
        try:
            got: bytes | int = await read_file(engine, ino)
        except FsError as exc:
            got = exc.errno
        result.extend([engine, got])

    run_engine(second, pool_path=path, expect_problems=expect_problems)
    engine, got = result
    if isinstance(got, bytes):
        assert got == data, "a degraded read returned wrong bytes"
    # Counted after the engine stopped: repairs run in the background until then.
    return counters(engine), got, path


@pytest.mark.parametrize("policy", ["rep:2", "rep:3", "ec:2+1", "ec:4+2"])
def test_missing_fragment_is_read_around_and_repaired(run_engine, replica_zero_first, policy):
    stats, got, _ = damage_and_read(run_engine, policy, lambda paths: paths[0].unlink())
    assert isinstance(got, bytes)
    assert stats["fragments_missing"] == 1 and stats["degraded_reads"] == 1
    assert stats["fragments_repaired"] == 1  # and fsck found the fragment back in place


@pytest.mark.parametrize("policy", ["rep:2", "ec:2+1", "ec:4+2"])
def test_flipped_byte_is_detected_and_repaired(run_engine, replica_zero_first, policy):
    stats, got, _ = damage_and_read(run_engine, policy, lambda paths: flip_byte(paths[0]))
    assert isinstance(got, bytes)
    assert stats["checksum_errors"] == 1 and stats["fragments_repaired"] == 1


def test_ec_survives_losing_m_data_shards(run_engine):
    def damage(paths):
        paths[0].unlink()
        flip_byte(paths[3], 200)

    stats, got, _ = damage_and_read(run_engine, "ec:4+2", damage)
    assert isinstance(got, bytes)
    assert stats["fragments_repaired"] == 2


def test_read_errors_are_counted_against_the_disk(run_engine, replica_zero_first):
    stats, _, _ = damage_and_read(run_engine, "rep:2", lambda paths: flip_byte(paths[0]))
    assert stats["checksum_errors"] == 1


@pytest.mark.parametrize("policy,destroy", [("rep:2", 2), ("rep:3", 3), ("ec:2+1", 2),
                                            ("ec:4+2", 3)])
def test_too_many_lost_fragments_give_eio(run_engine, policy, destroy):
    def damage(paths):
        for p in paths[:destroy]:
            p.unlink()

    stats, got, _ = damage_and_read(run_engine, policy, damage,
                                 expect_problems={"fragment_files"})
    assert got == errno.EIO
    assert stats["extents_unreadable"] >= 1


def test_all_replicas_corrupt_gives_eio_not_wrong_bytes(run_engine):
    def damage(paths):
        for p in paths:
            flip_byte(p)

    stats, got, _ = damage_and_read(run_engine, "rep:3", damage,
                                 expect_problems={"fragment_files"})
    assert got == errno.EIO
    assert stats["checksum_errors"] == 3


def test_disk_error_counters_persist(run_engine, replica_zero_first):
    def damage(paths):
        paths[0].unlink()
        flip_byte(paths[1])

    _, got, path = damage_and_read(run_engine, "rep:3", damage)
    assert isinstance(got, bytes)
    rows = db_rows(path, "SELECT read_errors, checksum_errors FROM disks")
    assert sum(r[0] for r in rows) == 1 and sum(r[1] for r in rows) == 1


# -- placement -------------------------------------------------------------------------------

def fragments_per_disk(path) -> Counter:
    return Counter(dict(db_rows(path, "SELECT disk, COUNT(*) FROM fragments GROUP BY disk")))


async def write_distinct_blocks(engine, count: int, block: int) -> None:
    fh, attr = await engine.create(ROOT, b"blocks", 0o644, os.O_RDWR, ROOT_CTX)
    await engine.write(fh, 0, os.urandom(count * block))
    await engine.fsync(fh, False)
    await engine.release(fh)
    await engine.forget([(attr.ino, 1)])


def test_placement_follows_free_space(run_engine):
    caps = [4 << 20, 8 << 20, 16 << 20, 32 << 20]
    count = 400

    async def body(engine):
        await write_distinct_blocks(engine, count, 4096)

    path = run_engine(body, policy="rep:1", caps=caps, block_size=4096)
    per_disk = fragments_per_disk(path)
    assert sum(per_disk.values()) == count
    for disk, cap in zip(sorted(per_disk), caps, strict=True):
        expected = count * cap / sum(caps)
        spread = 4 * (expected * (1 - cap / sum(caps))) ** 0.5 + 3
        assert abs(per_disk[disk] - expected) < spread, (per_disk, disk, expected)


def test_placement_with_replicas_prefers_bigger_disks(run_engine):
    caps = [2 << 20, 4 << 20, 8 << 20, 16 << 20]

    async def body(engine):
        await write_distinct_blocks(engine, 300, 4096)

    path = run_engine(body, policy="rep:2", caps=caps, block_size=4096)
    per_disk = fragments_per_disk(path)
    counts = [per_disk[d] for d in sorted(per_disk)]
    assert sum(counts) == 600 and all(counts)
    assert counts == sorted(counts), counts


def test_a_full_disk_is_skipped(run_engine):
    async def body(engine):
        full = min(engine.store.disks())
        engine.inject_fault(full, Fault("write", "error", errno=errno.ENOSPC))
        await write_distinct_blocks(engine, 12, BS)
        assert counters(engine)["fragment_write_enospc"] >= 1
        engine.clear_faults()

    path = run_engine(body, policy="rep:3")
    per_disk = fragments_per_disk(path)
    assert len(per_disk) == 3 and sum(per_disk.values()) == 36


@pytest.mark.parametrize("policy", ["rep:1", "rep:2", "ec:2+1"])
def test_a_failing_disk_is_written_around(run_engine, policy):
    # rep:1 covers the fragment a seal writes in its own thread, not through the executor.
    async def body(engine):
        bad = min(engine.store.disks())
        engine.inject_fault(bad, Fault("write", "error", errno=errno.EIO))
        # Placement is random: a disk escapes all n extents on 4 disks with probability
        # (3/4)^n under rep:1, 2^-n under rep:2 (8 blocks failed 1 run in ~250).
        await write_distinct_blocks(engine, 32, BS)
        engine.clear_faults()
        assert counters(engine)["fragment_write_errors"] >= 1
        ino = await ino_of(engine, b"blocks")
        assert len(await read_file(engine, ino)) == 32 * BS

    path = run_engine(body, policy=policy)
    assert sum(r[0] for r in db_rows(path, "SELECT write_errors FROM disks")) >= 1


@pytest.mark.parametrize("policy,handed_off", [("rep:1", 0), ("rep:2", 1), ("ec:4+2", 5)])
def test_a_seal_writes_one_fragment_itself(run_engine, policy, handed_off):
    # The sealing thread would only wait for its first fragment: it writes that one itself,
    # and hands only the others to the I/O executor.
    async def body(engine):
        inner = engine.store.executor
        handed: list[str] = []

        class Counting:
            def submit(self, fn, *args, **kwargs):
                handed.append(fn.__name__)
                return inner.submit(fn, *args, **kwargs)

        engine.store.executor = Counting()
        try:
            await write_distinct_blocks(engine, 8, BS)
            await engine.commit_all()
        finally:
            engine.store.executor = inner
        assert handed.count("write_fragment") == 8 * handed_off
        ino = await ino_of(engine, b"blocks")
        assert len(await read_file(engine, ino)) == 8 * BS

    run_engine(body, policy=policy, ndisks=6)


# -- running out of space ----------------------------------------------------------------------

def test_full_pool_gives_enospc_and_keeps_existing_data(run_engine):
    cap = 4 * (BS + 128) + 1000  # four fragments of a full block per disk
    kept = os.urandom(2 * BS)
    seen: list[int] = []

    async def body(engine):
        await write_file(engine, b"kept", kept)
        fh, attr = await engine.create(ROOT, b"filler", 0o644, os.O_RDWR, ROOT_CTX)
        try:
            for i in range(64):
                await engine.write(fh, i * BS, os.urandom(BS))
            await engine.fsync(fh, False)
        except FsError as exc:
            seen.append(exc.errno)
        await engine.release(fh)
        await engine.forget([(attr.ino, 1)])
        assert await read_file(engine, await ino_of(engine, b"kept")) == kept

    path = run_engine(body, policy="rep:2", caps=[cap] * 4)
    assert seen == [errno.ENOSPC]

    async def after(engine):
        assert await read_file(engine, await ino_of(engine, b"kept")) == kept
        filler = await ino_of(engine, b"filler")
        size = (await engine.getattr(filler)).size
        # Whatever of the filler was committed reads back as it was written or not at all.
        assert len(await read_file(engine, filler)) == size

    run_engine(after, pool_path=path)


def test_enospc_at_fsync_when_sealing_fails(run_engine):
    async def body(engine):
        await write_file(engine, b"kept", b"k" * 100)
        for disk in engine.store.disks():
            engine.inject_fault(disk, Fault("write", "error", errno=errno.ENOSPC))
        fh, attr = await engine.create(ROOT, b"f", 0o644, os.O_RDWR, ROOT_CTX)
        await engine.write(fh, 0, os.urandom(1000))  # a partial block: sealed at fsync
        with pytest.raises(FsError) as info:
            await engine.fsync(fh, False)
        assert info.value.errno == errno.ENOSPC
        engine.clear_faults()
        await engine.release(fh)
        await engine.forget([(attr.ino, 1)])
        assert await read_file(engine, await ino_of(engine, b"kept")) == b"k" * 100

    run_engine(body)


def fill(per_disk: int) -> int:
    """A disk cap that holds exactly `per_disk` full-block fragments."""
    return per_disk * (BS + 128) + 1000


def test_replicas_over_three_disks_use_all_their_space(run_engine):
    # rep:2 over three equal disks holds 1.5 disks of data (pairs AB, BC, CA), as btrfs RAID1.
    async def body(engine):
        fh, attr = await engine.create(ROOT, b"filler", 0o644, os.O_RDWR, ROOT_CTX)
        try:
            for i in range(24):
                await engine.write(fh, i * BS, os.urandom(BS))
                await engine.fsync(fh, False)
        except FsError as exc:
            assert exc.errno == errno.ENOSPC
        await engine.release(fh)
        await engine.forget([(attr.ino, 1)])

    path = run_engine(body, policy="rep:2", ndisks=3, caps=[fill(8)] * 3)
    extents = db_rows(path, "SELECT COUNT(*) FROM extents")[0][0]
    # Placement never strands the last slot of one disk with no partner left.
    assert extents == 12, f"ENOSPC after {extents} of 12 blocks"


@pytest.mark.parametrize("policy,ndisks,blocks", [("rep:2", 3, 12), ("rep:1", 4, 32),
                                                  ("ec:2+1", 4, 20)])
def test_statfs_reports_what_the_pool_holds(run_engine, policy, ndisks, blocks):
    reported: list[int] = []

    async def body(engine):
        st = await engine.statfs()
        reported.extend([st.blocks * st.frsize, st.bavail * st.frsize])

    run_engine(body, policy=policy, ndisks=ndisks, caps=[fill(8)] * ndisks)
    # Headers and the slack of each cap make the truth slightly less than whole blocks.
    assert reported[0] >= blocks * BS and reported[1] >= blocks * BS, (reported, blocks * BS)


def test_write_that_fits_the_pool_is_accepted(run_engine):
    async def body(engine):
        fh, attr = await engine.create(ROOT, b"f", 0o644, os.O_RDWR, ROOT_CTX)
        await engine.write(fh, 0, os.urandom(12 * BS))  # 3 disks of 8 fragments hold 24
        await engine.fsync(fh, False)
        await engine.release(fh)
        await engine.forget([(attr.ino, 1)])

    run_engine(body, policy="rep:1", ndisks=3, caps=[fill(8)] * 3)


def test_missing_disk_gives_degraded_writes_that_fsck_reports(run_engine):
    data, other = os.urandom(2 * BS), os.urandom(2 * BS)

    async def first(engine):
        await write_file(engine, b"before", data)

    path = run_engine(first, policy="rep:3", ndisks=3)
    label = path.parent / "disk2" / "dynamicfs-disk.json"
    saved = label.read_bytes()
    label.unlink()

    async def degraded(engine):
        await write_file(engine, b"during", other)
        assert counters(engine)["degraded_writes"] == 2, counters(engine)
        assert await read_file(engine, await ino_of(engine, b"before")) == data

    # Under-replicated extents, and a disk whose fragments could not be checked.
    run_engine(degraded, pool_path=path,
               expect_problems={"disk_labels", "fragment_rows", "fragment_files"})
    label.write_bytes(saved)

    async def back(engine):
        assert await read_file(engine, await ino_of(engine, b"during")) == other

    run_engine(back, pool_path=path, expect_problems={"fragment_rows"})


def test_policy_change_applies_to_new_extents(run_engine):
    old, new = os.urandom(BS), os.urandom(BS)

    async def body(engine):
        a = await write_file(engine, b"old", old)
        engine.set_policy("ec:2+1")
        b = await write_file(engine, b"new", new)
        codec = {name: mext.get_extent(engine.db, mext.block_extent(engine.db, ino, 0))
                 for name, ino in ((b"old", a.ino), (b"new", b.ino))}
        assert (codec[b"old"].k, codec[b"old"].m) == (1, 1)
        assert (codec[b"new"].k, codec[b"new"].m) == (2, 1)
        with pytest.raises(DynamicFSError, match="needs 6 disks"):
            engine.set_policy("ec:4+2")

    path = run_engine(body)

    async def after(engine):
        assert await read_file(engine, await ino_of(engine, b"old")) == old
        assert await read_file(engine, await ino_of(engine, b"new")) == new
        assert str(engine.pool.policy) == "ec:2+1"

    run_engine(after, pool_path=path)


def test_small_extents_of_ec_files_are_replicated(run_engine, replica_zero_first):
    """Under ec:4+2 a 1 KiB file would be six fragments of one 4 KiB block each; it is stored
    as three replicas instead (same two lost disks survived, half the space and files), while
    a full block stays erasure coded. Each extent records its codec: reads after a remount and
    losing two of the three replicas still find the data."""
    small, big = os.urandom(1024), os.urandom(BS)
    paths: list = []

    async def first(engine):
        for name, data in ((b"small", small), (b"big", big)):
            attr = await write_file(engine, name, data)
            eid = mext.block_extent(engine.db, attr.ino, 0)
            ext = mext.get_extent(engine.db, eid)
            frags = extent_fragments(engine, attr.ino, 0)
            if name == b"small":
                assert (ext.codec_id, ext.k, ext.m, len(frags)) == (1, 1, 2, 3)
                assert counters(engine)["small_extents_replicated"] == 1
                paths.extend(frags)
            else:
                assert (ext.codec_id, ext.k, ext.m, len(frags)) == (2, 4, 2, 6)

    path = run_engine(first, policy="ec:4+2", ndisks=6)
    for p in paths[:2]:  # replicas 0 and 1, which reads try first (replica_zero_first)
        p.unlink()

    async def second(engine):
        assert await read_file(engine, await ino_of(engine, b"small")) == small
        assert await read_file(engine, await ino_of(engine, b"big")) == big
        assert counters(engine)["degraded_reads"] == 1

    run_engine(second, pool_path=path)
