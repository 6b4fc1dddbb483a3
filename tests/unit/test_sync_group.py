"""Shared directory fsyncs of fragment writes (disks/durability.py)."""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path

from dynamicfs.disks import durability
from dynamicfs.disks.durability import SyncGroup


def test_concurrent_writers_share_directory_fsyncs(tmp_path: Path, monkeypatch) -> None:
    synced: list[str] = []
    real = durability.fsync_dir

    def slow_fsync_dir(path: Path) -> None:
        synced.append(str(path))
        time.sleep(0.02)  # long enough for the other writers to queue behind the leader
        real(path)

    monkeypatch.setattr(durability, "fsync_dir", slow_fsync_dir)
    group = SyncGroup()
    dirs = [tmp_path / f"d{i % 2}" for i in range(16)]
    for d in set(dirs):
        d.mkdir()
    done: list[int] = []

    def writer(i: int) -> None:
        group.sync_dir(dirs[i])
        done.append(i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(done) == list(range(16))
    # Every writer returned after an fsync of its directory that began after it asked; a
    # round fsyncs each directory once, so 16 writers over 2 directories need far fewer.
    assert set(synced) == {str(d) for d in set(dirs)}
    assert len(synced) < 16 and group.rounds < 16


def test_a_failed_directory_fails_only_its_writers(tmp_path: Path, monkeypatch) -> None:
    gate = threading.Event()
    entered = threading.Event()
    bad, good = tmp_path / "bad", tmp_path / "good"
    bad.mkdir()
    good.mkdir()

    def fsync_dir(path: Path) -> None:
        entered.set()
        gate.wait(5)
        if path == bad:
            raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(durability, "fsync_dir", fsync_dir)
    group = SyncGroup()
    results: dict[int, int] = {}

    def writer(i: int, d: Path) -> None:
        try:
            group.sync_dir(d)
            results[i] = 0
        except OSError as exc:
            results[i] = exc.errno or -1

    leader = threading.Thread(target=writer, args=(0, good))
    leader.start()
    assert entered.wait(5)
    # These queue behind the first round and share the next one.
    others = [threading.Thread(target=writer, args=(i, bad if i % 2 else good))
              for i in range(1, 5)]
    for t in others:
        t.start()
    time.sleep(0.05)
    gate.set()
    for t in [leader, *others]:
        t.join(10)
    assert results == {0: 0, 1: errno.EIO, 2: 0, 3: errno.EIO, 4: 0}
