"""Values the engine hands to its callers (the FUSE layer, the control server, tests).

They are plain data: nothing here knows about FUSE or SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

# rename(2) flags, as the kernel passes them.
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

# setxattr(2) flags.
XATTR_CREATE = 1
XATTR_REPLACE = 2


@dataclass(frozen=True)
class Ctx:
    """Who asks: the caller's credentials and umask."""

    uid: int = 0
    gid: int = 0
    pid: int = 0
    umask: int = 0o022


ROOT_CTX = Ctx()


@dataclass(frozen=True)
class Attr:
    """The attributes of one inode, as stat(2) reports them (times in nanoseconds)."""

    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    blocks: int  # 512-byte units actually allocated (holes count nothing)
    blksize: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int


@dataclass(frozen=True)
class SetAttr:
    """The changes of one setattr call; None means "leave as is"."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None
    ctime_ns: int | None = None


@dataclass(frozen=True)
class DirEntry:
    name: bytes
    attr: Attr
    next_offset: int  # the readdir offset that continues after this entry


@dataclass(frozen=True)
class StatFs:
    bsize: int
    frsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    favail: int
    namemax: int
