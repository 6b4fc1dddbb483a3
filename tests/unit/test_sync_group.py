"""Group durability of fragment writes (disks/durability.py)."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from dynamicfs.disks import durability
from dynamicfs.disks.durability import SyncGroup


def _write(path: Path) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"x" * 4096)
    return fd


def test_concurrent_writers_share_rounds(tmp_path: Path, monkeypatch) -> None:
    calls: list[int] = []
    real = durability.syncfs

    def slow_syncfs(fd: int) -> None:
        calls.append(fd)
        time.sleep(0.02)  # long enough for the other writers to queue behind the leader
        real(fd)

    monkeypatch.setattr(durability, "syncfs", slow_syncfs)
    group = SyncGroup()
    done: list[int] = []

    def writer(i: int) -> None:
        fd = _write(tmp_path / f"f{i}")
        try:
            group.make_durable(fd, tmp_path / f"f{i}")
            done.append(i)
        finally:
            os.close(fd)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(done) == list(range(16))
    # Every writer returned after a syncfs that began after its write; most shared one.
    assert 1 <= len(calls) == group.rounds < 16


def test_a_failed_round_fails_every_writer_in_it(tmp_path: Path, monkeypatch) -> None:
    gate = threading.Event()
    entered = threading.Event()

    def failing_syncfs(fd: int) -> None:
        entered.set()
        gate.wait(5)
        raise OSError(errno.EIO, "syncfs: I/O error")

    monkeypatch.setattr(durability, "syncfs", failing_syncfs)
    group = SyncGroup()
    errors: dict[int, int] = {}

    def writer(i: int) -> None:
        fd = _write(tmp_path / f"f{i}")
        try:
            group.make_durable(fd, tmp_path / f"f{i}")
        except OSError as exc:
            errors[i] = exc.errno or 0
        finally:
            os.close(fd)

    leader = threading.Thread(target=writer, args=(0,))
    leader.start()
    assert entered.wait(5)
    # These queue behind the failing round and lead the next ones, which fail too.
    others = [threading.Thread(target=writer, args=(i,)) for i in range(1, 4)]
    for t in others:
        t.start()
    time.sleep(0.05)
    gate.set()
    for t in [leader, *others]:
        t.join(10)
    assert errors == {i: errno.EIO for i in range(4)}


def test_without_syncfs_each_writer_fsyncs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(durability, "_syncfs", None)
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    group = SyncGroup()
    fd = _write(tmp_path / "f")
    try:
        group.make_durable(fd, tmp_path / "f")
    finally:
        os.close(fd)
    assert fd in synced and group.rounds == 0


@pytest.mark.skipif(durability._syncfs is None, reason="no syncfs(2) in this C library")
def test_real_syncfs_works_here(tmp_path: Path) -> None:
    fd = _write(tmp_path / "f")
    try:
        SyncGroup().make_durable(fd, tmp_path / "f")
    finally:
        os.close(fd)
