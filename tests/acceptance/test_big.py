"""Big and many: a 64 GiB sparse file on a pool of a few dozen MiB, and a directory of 100,000
entries that lists completely and answers lookups fast."""

from __future__ import annotations

import errno
import os
import random
import stat
import time
from collections import Counter
from collections.abc import Callable

import pytest
from acclib import MiB, Pool

GiB = 1 << 30
CAPS = ["40M", "60M", "80M"]


def test_64_gib_sparse_file(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool("rep:2", CAPS)
    path = pool.mnt / "huge.img"
    size = 64 * GiB
    rng = random.Random(64)
    writes = {
        size - MiB: rng.randbytes(MiB),  # the very end, block aligned
        32 * GiB + 12345: rng.randbytes(100_000),  # the middle, unaligned
        GiB - 10: rng.randbytes(20),  # across a block boundary
        0: rng.randbytes(4096),
        size - 1 - 2 * MiB: rng.randbytes(1),  # a single byte
    }
    t0 = time.monotonic()
    with open(path, "wb") as f:
        f.truncate(size)
    fd = os.open(path, os.O_RDWR)
    try:
        for off, data in writes.items():
            assert os.pwrite(fd, data, off) == len(data)
        os.fsync(fd)
    finally:
        os.close(fd)

    def check(when: str) -> None:
        st = os.stat(path)
        assert st.st_size == size, f"{when}: st_size {st.st_size}, expected {size}"
        written = sum(len(d) for d in writes.values())
        # Every touched block may be stored whole: at most 1 MiB per write (2 for straddles).
        assert st.st_blocks * 512 <= written + 8 * MiB, \
            f"{when}: st_blocks={st.st_blocks} ({st.st_blocks * 512} bytes) for ~{written} " \
            f"bytes of data in a sparse 64 GiB file"
        fd = os.open(path, os.O_RDONLY)
        try:
            for off, data in writes.items():
                got = os.pread(fd, len(data), off)
                assert got == data, f"{when}: {len(data)} bytes at {off} read back wrong"
            for off in (MiB, 16 * GiB, 48 * GiB + 7, size - 3 * MiB):
                assert os.pread(fd, 65536, off) == bytes(65536), f"{when}: hole at {off}"
            assert os.pread(fd, 100, size - 10) == writes[size - MiB][-10:]
            assert os.pread(fd, 100, size) == b"", f"{when}: bytes past EOF"
        finally:
            os.close(fd)

    check("mounted")
    pool.remount()
    check("after a remount")
    print(f"\n64 GiB sparse file: write, fsync, remount and checks took "
          f"{time.monotonic() - t0:.1f} s; st_blocks {os.stat(path).st_blocks}")
    # Shrinking it frees the far blocks; growing again shows zeros there, not old data.
    os.truncate(path, 40 * GiB)
    os.truncate(path, size)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, MiB, size - MiB) == bytes(MiB), "old data reappeared after regrow"
        assert os.pread(fd, 100_000, 32 * GiB + 12345) == writes[32 * GiB + 12345]
    finally:
        os.close(fd)


N_ENTRIES = 100_000


def test_directory_of_100k_entries(make_pool: Callable[..., Pool]) -> None:
    pool = make_pool("rep:2", CAPS, budget=240)
    d = pool.mnt / "many"
    d.mkdir()
    names = [f"entry-{i:06d}-{'x' * (i % 40)}" for i in range(N_ENTRIES)]
    t0 = time.monotonic()
    chunk_rates: list[float] = []  # creates/s per 10,000 entries: must not sink as it grows
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        t = t0
        for i, name in enumerate(names):
            if i % 2:
                os.mknod(name, 0o644 | stat.S_IFREG, dir_fd=dfd)
            else:
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644,
                                 dir_fd=dfd))
            if (i + 1) % 10_000 == 0:
                now = time.monotonic()
                chunk_rates.append(10_000 / (now - t))
                t = now
    finally:
        os.close(dfd)
    create_s = time.monotonic() - t0
    print(f"\ncreated {N_ENTRIES} entries in {create_s:.1f} s "
          f"({N_ENTRIES / create_s:.0f}/s, half mknod, half open+close); per 10k: "
          f"{[round(r) for r in chunk_rates]}")

    def listing(when: str) -> float:
        t = time.monotonic()
        got = os.listdir(d)
        secs = time.monotonic() - t
        assert len(got) == N_ENTRIES, f"{when}: listdir returned {len(got)} of {N_ENTRIES}"
        assert set(got) == set(names), f"{when}: listdir names differ"
        return secs

    def lookups(when: str) -> float:
        rng = random.Random(when)
        sample = rng.sample(names, 2000)
        t = time.monotonic()
        for name in sample:
            assert stat.S_ISREG(os.stat(d / name).st_mode)
        for i in range(200):
            with pytest.raises(FileNotFoundError):
                os.stat(d / f"absent-{i}")
        return 2200 / (time.monotonic() - t)

    list_s = listing("mounted")
    look = lookups("mounted")
    pool.remount()
    cold_look = lookups("after remount")
    cold_list_s = listing("after remount")
    print(f"listdir of {N_ENTRIES}: {list_s:.2f} s warm, {cold_list_s:.2f} s after remount; "
          f"random lookups: {look:.0f}/s, {cold_look:.0f}/s after remount")
    # Entries change while a listing is under way (stable readdir offsets): every entry that
    # stays is listed exactly once; removed or added ones may or may not show.
    rng = random.Random(7)
    removed = set(rng.sample(names, 300))
    seen: list[str] = []
    with os.scandir(d) as it:
        for n, entry in enumerate(it):
            seen.append(entry.name)
            if n == N_ENTRIES // 3:
                for name in removed:
                    (d / name).unlink()
                for i in range(300):
                    (d / f"late-{i}").touch()
    dup = [n for n, c in Counter(seen).items() if c > 1]
    assert not dup, f"entries listed twice while the directory changed: {dup[:10]}"
    lost = set(names) - removed - set(seen)
    assert not lost, f"{len(lost)} untouched entries missing from a listing: {sorted(lost)[:5]}"
    with pytest.raises(OSError) as exc:
        os.rmdir(d)
    assert exc.value.errno == errno.ENOTEMPTY
    # Creating must not slow down as the directory grows (a per-entry cost that grows with the
    # directory shows here whatever the machine's load). The absolute rate is printed, not
    # asserted: timings on a shared machine are noise; the benchmark suite measures speed.
    first, last = max(chunk_rates[:3]), max(chunk_rates[-3:])
    assert last >= first / 3, \
        f"creates slow down as the directory grows: {first:.0f}/s early, {last:.0f}/s late"
    print(f"created {N_ENTRIES} entries in {create_s:.0f} s ({N_ENTRIES / create_s:.0f}/s)")
