"""Error classes shared by the layers. The CLI turns them into one line and an exit code."""

from __future__ import annotations

import os


class DynamicFSError(Exception):
    """A user-facing failure: its message is printed as one line, with `exit_code`."""

    exit_code = 1


class PoolBusy(DynamicFSError):
    exit_code = 3


class FsError(Exception):
    """A filesystem operation failed with `errno` (the FUSE layer turns it into FUSEError)."""

    def __init__(self, errno: int, message: str | None = None) -> None:
        super().__init__(message or os.strerror(errno))
        self.errno = errno

