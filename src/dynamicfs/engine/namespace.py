"""The namespace: inodes, directory entries, links, symlinks and xattrs.

Every operation here is one SQLite transaction and runs on the trio thread: each is a handful
of indexed point queries (tens of microseconds), cheaper than a hop to a worker thread.
Transactions are opened with `mino.transaction` so the inode rows they write stay in the row
cache after the commit: getattr, and the parent row of the next create, cost no SQL. File
*data* is not handled here but in `blockcache`; this module only reports which inodes lost
their last name so the engine can free them once nothing holds them open.
"""

from __future__ import annotations

import errno
import stat
import time
from collections.abc import Callable

from ..clock import now_ns
from ..errors import FsError
from ..meta import Database
from ..meta import inodes as mino
from ..meta.schema import ROOT_INODE
from .types import RENAME_EXCHANGE, RENAME_NOREPLACE, XATTR_CREATE, XATTR_REPLACE, Attr, Ctx

NAME_MAX = 255
PATH_MAX = 4096
_LISTING_TTL = 1.0
_ATTRS_MAX = 1 << 15
_LISTING_BATCH = 2000
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536
# POSIX ACLs are not supported: the kernel checks mode bits (default_permissions) and the FUSE
# layer does not negotiate FUSE_POSIX_ACL, so the kernel would pass ACL xattrs through as plain
# ones and change no mode bits. Stored, they would be silently meaningless — `cp -a` sets a
# copy's mode through setxattr(system.posix_acl_access) and every copy would stay 0600.
# EOPNOTSUPP on every access makes tools fall back to chmod, as on a filesystem mounted
# without ACL support.
_UNSUPPORTED_XATTR_PREFIXES = (b"system.posix_acl_",)


def _check_name(name: bytes) -> None:
    if len(name) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG)
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise FsError(errno.EINVAL)


class Namespace:
    """Namespace operations over the metadata database.

    `overlay` lets the engine report the live size/alloc of files whose newest data still sits
    in the write-back cache (the database has their last committed state).
    """

    def __init__(self, db: Database, blksize: int) -> None:
        self.db = db
        self.blksize = blksize
        self.overlay: Callable[[mino.InodeRow], mino.InodeRow] = lambda row: row
        # Inodes that carry security.capability: the kernel asks for it on every write, and
        # answering from this set keeps SQLite out of the write path.
        self.has_capability = set(mino.inodes_with_xattr(db, b"security.capability"))
        # Unlinked inodes the kernel forgot whose rows wait to be purged (Engine._purge_inodes):
        # no longer there for anyone.
        self.gone: set[int] = set()
        # ino -> (the row it was made from, Attr): see attr().
        self._attrs: dict[int, tuple[mino.InodeRow, Attr]] = {}
        # ino -> (when read, entries, next_offset -> index): see readdir.
        self._listings: dict[int, tuple[float, list[tuple[bytes, Attr, int]], dict[int, int]]] = {}

    # -- reading -----------------------------------------------------------------------------

    def row(self, ino: int) -> mino.InodeRow:
        row = mino.get_inode(self.db, ino)
        if row is None or ino in self.gone:
            raise FsError(errno.ENOENT)
        return self.overlay(row)

    def attr(self, row: mino.InodeRow) -> Attr:
        # Cached rows are never modified, only replaced: an Attr made from the very same row
        # object is still exact, and skips a frozen dataclass (~2 µs of every getattr/lookup).
        made = self._attrs.get(row.id)
        if made is not None and made[0] is row:
            return made[1]
        attr = self._make_attr(row)
        attrs = self._attrs
        attrs[row.id] = (row, attr)
        if len(attrs) > _ATTRS_MAX:
            del attrs[next(iter(attrs))]
        return attr

    def _make_attr(self, row: mino.InodeRow) -> Attr:
        return Attr(
            ino=row.id, mode=row.mode, nlink=row.nlink, uid=row.uid, gid=row.gid, rdev=row.rdev,
            size=row.size, blocks=(row.alloc + 511) // 512, blksize=self.blksize,
            atime_ns=row.atime_ns, mtime_ns=row.mtime_ns, ctime_ns=row.ctime_ns,
        )

    def getattr(self, ino: int) -> Attr:
        return self.attr(self.row(ino))

    def lookup(self, parent: int, name: bytes) -> Attr:
        if len(name) > NAME_MAX:
            raise FsError(errno.ENAMETOOLONG)
        if name == b".":
            return self.getattr(parent)
        if name == b"..":
            return self.getattr(self._parent(parent))
        ino = mino.lookup(self.db, parent, name)
        if ino is None:
            self._dir_row(parent)
            raise FsError(errno.ENOENT)
        return self.getattr(ino)

    def _parent(self, ino: int) -> int:
        if ino == ROOT_INODE:
            return ROOT_INODE
        parent = mino.parent_of(self.db, ino)
        if parent is None:
            raise FsError(errno.ENOENT)
        return parent

    def _dir_row(self, ino: int) -> mino.InodeRow:
        row = self.row(ino)
        if not stat.S_ISDIR(row.mode):
            raise FsError(errno.ENOTDIR)
        return row

    def readlink(self, ino: int) -> bytes:
        target = mino.get_symlink(self.db, ino)
        if target is None:
            row = self.row(ino)
            raise FsError(errno.EINVAL if not stat.S_ISLNK(row.mode) else errno.EIO)
        return target

    def readdir(self, ino: int, offset: int) -> list[tuple[bytes, Attr, int]]:
        """Entries after `offset`: "." is offset 1, ".." offset 2, then dentry id + 2.

        Dentry ids only grow, so entries added or removed during a listing never make another
        entry repeat or vanish. The kernel asks for a page of entries at a time, so one batch
        read from SQLite serves the following calls of the same listing for up to a second;
        any change to the directory drops it.
        """
        cached = self._listings.get(ino)
        now = time.monotonic()
        if cached is not None and now - cached[0] < _LISTING_TTL:
            at = cached[2].get(offset)
            if at is not None and at + 1 < len(cached[1]):
                return cached[1][at + 1:]
        batch = self._read_dir(ino, offset, _LISTING_BATCH)
        if len(self._listings) > 64:
            self._listings.clear()
        self._listings[ino] = (now, batch, {e[2]: i for i, e in enumerate(batch)})
        return batch

    def _changed(self, *dirs: int) -> None:
        for d in dirs:
            self._listings.pop(d, None)

    def _read_dir(self, ino: int, offset: int, limit: int) -> list[tuple[bytes, Attr, int]]:
        if self._dir_row(ino).nlink == 0:
            return []  # removed while open: empty, as ext4 and tmpfs list it
        out: list[tuple[bytes, Attr, int]] = []
        if offset < 1:
            out.append((b".", self.attr(self._dir_row(ino)), 1))
        if offset < 2:
            out.append((b"..", self.getattr(self._parent(ino)), 2))
        for dentry_id, name, row in mino.list_dir_plus(self.db, ino, max(0, offset - 2), limit):
            # Rows read here are fresh objects, never cached: nothing to reuse or keep.
            out.append((name, self._make_attr(self.overlay(row)), dentry_id + 2))
        return out

    # -- creating ----------------------------------------------------------------------------

    def _new_owner(self, parent: mino.InodeRow, mode: int, ctx: Ctx) -> tuple[int, int]:
        # BSD group semantics for setgid directories, as ext4 and XFS do.
        if parent.mode & stat.S_ISGID:
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
            return mode, parent.gid
        return mode, ctx.gid

    def make(
        self, parent: int, name: bytes, mode: int, ctx: Ctx, *, rdev: int = 0,
        target: bytes | None = None,
    ) -> Attr:
        """Create a file, directory, symlink or special file named `name` in `parent`."""
        _check_name(name)
        if target is not None and len(target) >= PATH_MAX:
            raise FsError(errno.ENAMETOOLONG)
        self._changed(parent)
        now = now_ns()
        with mino.transaction(self.db):
            prow = self._dir_row(parent)
            if prow.nlink == 0:
                raise FsError(errno.ENOENT)
            if mino.lookup(self.db, parent, name) is not None:
                raise FsError(errno.EEXIST)
            mode, gid = self._new_owner(prow, mode, ctx)
            is_dir = stat.S_ISDIR(mode)
            ino = mino.create_inode(self.db, mode, ctx.uid, gid, 2 if is_dir else 1, now,
                                    rdev=rdev, policy=prow.policy)
            if target is not None:
                mino.set_symlink(self.db, ino, target)
                mino.update_inode(self.db, ino, size=len(target))
            mino.add_dentry(self.db, parent, name, ino)
            mino.update_inode(self.db, parent, mtime_ns=now, ctime_ns=now,
                              nlink=prow.nlink + (1 if is_dir else 0))
        return self.getattr(ino)

    def link(self, ino: int, new_parent: int, new_name: bytes) -> Attr:
        _check_name(new_name)
        self._changed(new_parent)
        now = now_ns()
        with mino.transaction(self.db):
            row = self.row(ino)
            if stat.S_ISDIR(row.mode):
                raise FsError(errno.EPERM)
            if row.nlink == 0 or self._dir_row(new_parent).nlink == 0:
                raise FsError(errno.ENOENT)
            if mino.lookup(self.db, new_parent, new_name) is not None:
                raise FsError(errno.EEXIST)
            mino.add_dentry(self.db, new_parent, new_name, ino)
            mino.update_inode(self.db, ino, nlink=row.nlink + 1, ctime_ns=now)
            mino.update_inode(self.db, new_parent, mtime_ns=now, ctime_ns=now)
        return self.getattr(ino)

    # -- removing ----------------------------------------------------------------------------

    def _entry(self, parent: int, name: bytes) -> int:
        if len(name) > NAME_MAX:
            raise FsError(errno.ENAMETOOLONG)
        self._dir_row(parent)
        ino = mino.lookup(self.db, parent, name)
        if ino is None:
            raise FsError(errno.ENOENT)
        return ino

    def _drop_name(self, ino: int, now: int) -> int | None:
        """One name of `ino` went away; returns ino if that was its last link."""
        row = mino.get_inode(self.db, ino)
        assert row is not None
        if stat.S_ISDIR(row.mode):
            mino.update_inode(self.db, ino, nlink=0, ctime_ns=now)
            return ino
        mino.update_inode(self.db, ino, nlink=row.nlink - 1, ctime_ns=now)
        return ino if row.nlink - 1 <= 0 else None

    def unlink(self, parent: int, name: bytes) -> int | None:
        """Remove a non-directory entry; returns the inode if it lost its last link."""
        self._changed(parent)
        now = now_ns()
        with mino.transaction(self.db):
            ino = self._entry(parent, name)
            if stat.S_ISDIR(self.row(ino).mode):
                raise FsError(errno.EISDIR)
            mino.remove_dentry(self.db, parent, name)
            mino.update_inode(self.db, parent, mtime_ns=now, ctime_ns=now)
            return self._drop_name(ino, now)

    def rmdir(self, parent: int, name: bytes) -> int:
        if name == b".":
            raise FsError(errno.EINVAL)
        if name == b"..":
            raise FsError(errno.ENOTEMPTY)
        self._changed(parent)
        now = now_ns()
        with mino.transaction(self.db):
            ino = self._entry(parent, name)
            if not stat.S_ISDIR(self.row(ino).mode):
                raise FsError(errno.ENOTDIR)
            if mino.has_children(self.db, ino):
                raise FsError(errno.ENOTEMPTY)
            mino.remove_dentry(self.db, parent, name)
            prow = self.row(parent)
            mino.update_inode(self.db, parent, nlink=prow.nlink - 1, mtime_ns=now, ctime_ns=now)
            mino.update_inode(self.db, ino, nlink=0, ctime_ns=now)
            return ino

    # -- rename ------------------------------------------------------------------------------

    def _is_ancestor(self, maybe_ancestor: int, ino: int) -> bool:
        while ino != ROOT_INODE:
            if ino == maybe_ancestor:
                return True
            ino = self._parent(ino)
        return maybe_ancestor == ROOT_INODE

    def rename(
        self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes, flags: int
    ) -> int | None:
        """Move an entry; returns the inode that lost its last link by being replaced."""
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == (
                RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise FsError(errno.EINVAL)
        _check_name(new_name)
        self._changed(old_parent, new_parent)
        now = now_ns()
        with mino.transaction(self.db):
            src = self._entry(old_parent, old_name)
            if self._dir_row(new_parent).nlink == 0:
                raise FsError(errno.ENOENT)  # a removed directory takes no new entries
            dst = mino.lookup(self.db, new_parent, new_name)
            src_row = self.row(src)
            src_dir = stat.S_ISDIR(src_row.mode)
            if src_dir and new_parent != old_parent and self._is_ancestor(src, new_parent):
                raise FsError(errno.EINVAL)
            if flags & RENAME_EXCHANGE:
                if dst is None:
                    raise FsError(errno.ENOENT)
                self._exchange(old_parent, old_name, src, new_parent, new_name, dst, now)
                return None
            if dst == src:
                return None  # same inode under both names: POSIX says do nothing
            freed = None
            if dst is not None:
                if flags & RENAME_NOREPLACE:
                    raise FsError(errno.EEXIST)
                dst_dir = stat.S_ISDIR(self.row(dst).mode)
                if src_dir and not dst_dir:
                    raise FsError(errno.ENOTDIR)
                if dst_dir and not src_dir:
                    raise FsError(errno.EISDIR)
                if dst_dir:
                    if mino.has_children(self.db, dst):
                        raise FsError(errno.ENOTEMPTY)
                    mino.add_nlink(self.db, new_parent, -1)
                mino.remove_dentry(self.db, new_parent, new_name)
                freed = self._drop_name(dst, now)
            mino.move_dentry(self.db, old_parent, old_name, new_parent, new_name)
            if src_dir and new_parent != old_parent:
                mino.add_nlink(self.db, old_parent, -1)
                mino.add_nlink(self.db, new_parent, 1)
            mino.update_inode(self.db, src, ctime_ns=now)
            for p in {old_parent, new_parent}:
                mino.update_inode(self.db, p, mtime_ns=now, ctime_ns=now)
            return freed

    def _exchange(
        self, old_parent: int, old_name: bytes, src: int, new_parent: int, new_name: bytes,
        dst: int, now: int,
    ) -> None:
        if old_parent != new_parent:
            dst_dir = stat.S_ISDIR(self.row(dst).mode)
            src_dir = stat.S_ISDIR(self.row(src).mode)
            if dst_dir and self._is_ancestor(dst, old_parent):
                raise FsError(errno.EINVAL)
            if src_dir != dst_dir:
                delta = 1 if src_dir else -1
                mino.add_nlink(self.db, old_parent, -delta)
                mino.add_nlink(self.db, new_parent, delta)
        mino.retarget_dentry(self.db, old_parent, old_name, dst)
        mino.retarget_dentry(self.db, new_parent, new_name, src)
        for ino in (src, dst):
            mino.update_inode(self.db, ino, ctime_ns=now)
        for p in {old_parent, new_parent}:
            mino.update_inode(self.db, p, mtime_ns=now, ctime_ns=now)

    # -- attributes --------------------------------------------------------------------------

    def set_attrs(self, ino: int, **fields: int) -> None:
        """Store attribute changes (mode, uid, gid, times); ctime follows any change."""
        with mino.transaction(self.db):
            self.row(ino)
            mino.update_inode(self.db, ino, **fields)

    def touch_atime(self, row: mino.InodeRow) -> None:
        """relatime: update atime when it is older than mtime/ctime or than a day."""
        now = now_ns()
        if (row.atime_ns <= row.mtime_ns or row.atime_ns <= row.ctime_ns
                or now - row.atime_ns > 86400 * 10**9):
            with mino.transaction(self.db):
                mino.update_inode(self.db, row.id, atime_ns=now)

    # -- xattrs ------------------------------------------------------------------------------

    def getxattr(self, ino: int, name: bytes) -> bytes:
        if name == b"security.capability" and ino not in self.has_capability:
            raise FsError(errno.ENODATA)
        if name.startswith(_UNSUPPORTED_XATTR_PREFIXES):
            raise FsError(errno.EOPNOTSUPP)
        value = mino.get_xattr(self.db, ino, name)
        if value is None:
            self.row(ino)
            raise FsError(errno.ENODATA)
        return value

    def setxattr(self, ino: int, name: bytes, value: bytes, flags: int = 0) -> None:
        if name.startswith(_UNSUPPORTED_XATTR_PREFIXES):
            raise FsError(errno.EOPNOTSUPP)
        if not name or len(name) > XATTR_NAME_MAX:
            raise FsError(errno.ERANGE)
        if len(value) > XATTR_SIZE_MAX:
            raise FsError(errno.E2BIG)
        with mino.transaction(self.db):
            self.row(ino)
            exists = mino.get_xattr(self.db, ino, name) is not None
            if flags & XATTR_CREATE and exists:
                raise FsError(errno.EEXIST)
            if flags & XATTR_REPLACE and not exists:
                raise FsError(errno.ENODATA)
            mino.set_xattr(self.db, ino, name, value)
            mino.update_inode(self.db, ino, ctime_ns=now_ns())
        if name == b"security.capability":
            self.has_capability.add(ino)

    def listxattr(self, ino: int) -> list[bytes]:
        self.row(ino)
        return mino.list_xattrs(self.db, ino)

    def removexattr(self, ino: int, name: bytes) -> None:
        if name.startswith(_UNSUPPORTED_XATTR_PREFIXES):
            raise FsError(errno.EOPNOTSUPP)
        with mino.transaction(self.db):
            self.row(ino)
            if not mino.remove_xattr(self.db, ino, name):
                raise FsError(errno.ENODATA)
            mino.update_inode(self.db, ino, ctime_ns=now_ns())
        if name == b"security.capability":
            self.has_capability.discard(ino)
