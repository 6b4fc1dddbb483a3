"""File data under pressure: random I/O against a local model, concurrent writers, a full pool."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fusemount import drop_cache

if TYPE_CHECKING:
    from conftest import MountedPool

pytestmark = pytest.mark.mount

MiB = 1 << 20


def test_random_io_matches_local_file(workdir: Path, tmp_path: Path) -> None:
    """Seeded random writes and truncates around block boundaries; a local file is the model."""
    rng = random.Random(20261206)
    ours, model = workdir / "f", tmp_path / "model"
    fd, md = (os.open(p, os.O_CREAT | os.O_RDWR, 0o644) for p in (ours, model))
    try:
        for step in range(300):
            size = os.fstat(md).st_size
            op = rng.random()
            if op < 0.7:
                # Offsets cluster near 1 MiB multiples, where block maps split.
                base = rng.choice([0, MiB, 2 * MiB, 3 * MiB, size])
                off = max(0, base + rng.randint(-5000, 5000))
                data = rng.randbytes(rng.choice([1, 100, 4096, 70000, MiB + 3]))
                assert os.pwrite(fd, data, off) == os.pwrite(md, data, off)
            elif op < 0.85:
                length = rng.randint(0, 4 * MiB)
                os.ftruncate(fd, length)
                os.ftruncate(md, length)
            elif op < 0.95:
                off, n = rng.randint(0, size + 10), rng.randint(0, 2 * MiB)
                assert os.pread(fd, n, off) == os.pread(md, n, off), f"step {step}"
            else:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            assert os.fstat(fd).st_size == os.fstat(md).st_size, f"step {step}"
    finally:
        os.close(fd)
        os.close(md)
    drop_cache(ours)
    assert ours.read_bytes() == model.read_bytes()


def test_concurrent_writers(workdir: Path) -> None:
    """Threads writing their own files and disjoint regions of a shared one, all at once."""
    shared = workdir / "shared"
    shared.write_bytes(b"")
    digests: dict[str, str] = {}
    errors: list[BaseException] = []
    region = 3 * MiB + 7

    def worker(n: int) -> None:
        try:
            rng = random.Random(n)
            own = rng.randbytes(6 * MiB + n)
            (workdir / f"own{n}").write_bytes(own)
            digests[f"own{n}"] = hashlib.sha256(own).hexdigest()
            part = rng.randbytes(region)
            fd = os.open(shared, os.O_WRONLY)
            try:
                for off in range(0, region, 65536):
                    os.pwrite(fd, part[off:off + 65536], n * region + off)
            finally:
                os.close(fd)
            digests[f"part{n}"] = hashlib.sha256(part).hexdigest()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for path in workdir.iterdir():
        drop_cache(path)
    for n in range(6):
        got = (workdir / f"own{n}").read_bytes()
        assert hashlib.sha256(got).hexdigest() == digests[f"own{n}"]
    data = shared.read_bytes()
    assert len(data) == 6 * region
    for n in range(6):
        part = data[n * region:(n + 1) * region]
        assert hashlib.sha256(part).hexdigest() == digests[f"part{n}"]


def test_append_from_two_processes(workdir: Path) -> None:
    f = workdir / "log"
    f.write_bytes(b"")
    fds = [os.open(f, os.O_WRONLY | os.O_APPEND) for _ in range(2)]
    try:
        for i in range(200):
            os.write(fds[i % 2], b"%04d\n" % i)
    finally:
        for fd in fds:
            os.close(fd)
    drop_cache(f)
    assert f.read_bytes() == b"".join(b"%04d\n" % i for i in range(200))


def test_full_pool_reports_enospc(small_pool: MountedPool) -> None:
    """Filling the pool fails with ENOSPC (not EIO), and deleting makes room again."""
    f = small_pool.mnt / "filler"
    failed_with = None
    fd = os.open(f, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        for _ in range(64):  # four times what the pool can hold
            # Fresh bytes each time: identical blocks are deduplicated and would all fit.
            os.write(fd, os.urandom(MiB))
        os.fsync(fd)
    except OSError as exc:
        failed_with = exc.errno
    finally:
        try:
            os.close(fd)
        except OSError as exc:
            failed_with = failed_with or exc.errno
    assert failed_with == errno.ENOSPC, f"got {failed_with and errno.errorcode[failed_with]}"
    f.unlink()
    os.sync()
    g = small_pool.mnt / "after"
    chunk = os.urandom(MiB)
    g.write_bytes(chunk)
    drop_cache(g)
    assert g.read_bytes() == chunk
