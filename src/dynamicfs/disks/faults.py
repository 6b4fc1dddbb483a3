"""Fault injection for disks: make a disk fail, fill up, rot or hang on purpose.

Tests use it to prove that failures never corrupt what is stored; users use it (through
`dynamicfs inject-fault` on a mounted pool) to see how their set-up behaves before a real disk
does it. Faults live in memory only: a remount clears them.

A fault applies to one operation of one disk:
  write   writing a fragment's bytes        error (errno) | hang
  fsync   making a written fragment durable error (errno) | hang
  read    reading a fragment                error (errno) | corrupt | hang
  delete  removing a fragment               error (errno) | hang
"""

from __future__ import annotations

import errno
import random
import threading
import time
from dataclasses import asdict, dataclass

OPS = ("write", "fsync", "read", "delete")
KINDS = ("error", "corrupt", "hang")
ERRNOS = {"EIO": errno.EIO, "ENOSPC": errno.ENOSPC, "EROFS": errno.EROFS,
          "EACCES": errno.EACCES, "EDQUOT": errno.EDQUOT}


class FaultError(ValueError):
    """A fault description that makes no sense."""


@dataclass
class Fault:
    op: str
    kind: str
    errno: int = errno.EIO
    seconds: float = 0.0
    count: int | None = None  # None: every time until cleared
    probability: float = 1.0

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise FaultError(f"unknown fault operation {self.op!r}; one of {', '.join(OPS)}")
        if self.kind not in KINDS:
            raise FaultError(f"unknown fault kind {self.kind!r}; one of {', '.join(KINDS)}")
        if self.kind == "corrupt" and self.op != "read":
            raise FaultError("only reads can be corrupted")
        if not 0.0 < self.probability <= 1.0:
            raise FaultError("probability must be in (0, 1]")
        if self.count is not None and self.count < 1:
            raise FaultError("count must be at least 1")
        if self.kind == "hang" and not 0 < self.seconds <= 3600:
            raise FaultError("hang needs 0 < seconds <= 3600")

    def describe(self) -> dict:
        return asdict(self)


class FaultSet:
    """The faults armed on one disk. Thread-safe: the store calls disks from worker threads."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._rng = random.Random()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def _take(self, op: str) -> Fault | None:
        if not self._faults:  # the common case costs one attribute read, no lock
            return None
        with self._lock:
            for fault in self._faults:
                if fault.op != op or self._rng.random() >= fault.probability:
                    continue
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                return fault
        return None

    def hit(self, op: str, what: str) -> bool:
        """Act out a fault armed for `op`: raise, or sleep; True means "corrupt the data"."""
        fault = self._take(op)
        if fault is None:
            return False
        if fault.kind == "hang":
            time.sleep(fault.seconds)
            return False
        if fault.kind == "corrupt":
            return True
        raise OSError(fault.errno, f"injected fault: {op} of {what}")
