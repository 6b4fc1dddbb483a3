"""Group durability of fragment writes: one syncfs(2) covers every fragment written before it.

A fragment used to cost an fsync of its file and one of its directory, ~40% of the time of a
sequential write on ext4, and concurrent seals paid them one by one. Writers on one
filesystem now join a group: one of them (the leader) calls syncfs(2), which makes every file
written and every rename done before the call durable; the others wait for it and return
without a syscall of their own (the group commit of fsync(2), as databases do for their logs).
Callers still return only once their own fragment is durable, so the store's promise — a
SealedExtent is on stable storage before metadata can reference it — is unchanged.

Where syncfs(2) is missing, each writer fsyncs its file and its directory as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections import deque
from pathlib import Path

from .label import fsync_dir


def _load_syncfs():  # noqa: ANN202 - a ctypes function or None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_syncfs = _load_syncfs()


def syncfs(fd: int) -> None:
    """syncfs(2): write back and commit everything of the filesystem holding `fd`."""
    assert _syncfs is not None
    if _syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs: {os.strerror(err)}")


class SyncGroup:
    """Writers on one filesystem share syncfs calls. Thread-safe."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._requested = 0  # tickets handed out, in order
        self._synced = 0  # every ticket up to this one is durable (or failed, see _failed)
        self._leading = False
        # (first ticket, last ticket, error) of recent failed rounds: their writers must fail.
        self._failed: deque[tuple[int, int, OSError]] = deque(maxlen=64)
        self.rounds = 0

    def make_durable(self, fd: int, path: Path) -> None:
        """Return once the file open at `fd` (named `path`) and its name are durable."""
        if _syncfs is None:
            os.fsync(fd)
            fsync_dir(path.parent)
            return
        with self._cv:
            self._requested += 1
            ticket = self._requested
            while self._synced < ticket and self._leading:
                self._cv.wait()
            if self._synced >= ticket:
                self._raise_if_failed(ticket)
                return
            # Lead a round for every ticket handed out so far (ours included).
            self._leading = True
            first, upto = self._synced + 1, self._requested
        err: OSError | None = None
        try:
            syncfs(fd)
        except OSError as exc:
            err = exc
        with self._cv:
            self._leading = False
            self._synced = upto
            self.rounds += 1
            if err is not None:
                self._failed.append((first, upto, err))
            self._cv.notify_all()
        if err is not None:
            raise err

    def _raise_if_failed(self, ticket: int) -> None:
        for first, last, err in self._failed:
            if first <= ticket <= last:
                raise OSError(err.errno, f"writing back this fragment failed: {err.strerror}")


_groups: dict[int, SyncGroup] = {}
_groups_lock = threading.Lock()


def sync_group(path: Path) -> SyncGroup:
    """The group of the filesystem holding `path` (disks sharing one filesystem share it)."""
    dev = os.stat(path).st_dev
    with _groups_lock:
        group = _groups.get(dev)
        if group is None:
            group = _groups[dev] = SyncGroup()
        return group
