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
from collections.abc import Callable

from ..clock import now_ns
from ..errors import FsError
from ..meta import Database
from ..meta import inodes as mino
from ..meta.schema import ROOT_INODE
from .types import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    XATTR_CREATE,
    XATTR_REPLACE,
    Attr,
    Ctx,
    DirEntry,
)

NAME_MAX = 255
PATH_MAX = 4096
_ATTRS_MAX = 1 << 15
# Directory entries read from SQLite at a time, and handed to one readdir call (the kernel's
# buffer holds fewer: what does not fit is asked for again from the offset reached).
_LISTING_BATCH = 2000
_LISTING_PAGE = 256
# Entries kept over all listings (~450 bytes each): a directory larger than this is listed
# in windows of a batch, read again for every listing.
_LISTED_MAX = 1 << 14
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
        # Directory inode -> its listing, oldest first; see readdir.
        self._listings: dict[int, _Listing] = {}
        self._listed = 0  # entries held by all listings

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

    def readdir(self, ino: int, offset: int) -> list[DirEntry]:
        """Up to _LISTING_PAGE entries after `offset` ("." is offset 1, ".." offset 2, then
        dentry id + 2); the listing goes on from the last one's `next_offset`, and ends with
        an empty page.

        Dentry ids only grow, so entries added or removed during a listing never make another
        entry repeat or vanish. `ls` and `find` list the same directories again and again, and
        the kernel asks for a buffer's worth of entries at a time: entries read from SQLite
        are kept per directory until any inode row or directory entry changes (the namespace
        generation), so a listing costs SQL only the first time. Files with data still in the
        write-back cache are shown with their live size and times.
        """
        generation = mino.namespace_generation(self.db)
        listings = self._listings
        listing = listings.pop(ino, None)  # put back below, as the newest
        at = None
        if listing is not None and listing.generation == generation:
            at = listing.index.get(offset)
            if at is not None and listing.ends_at(at) and at + _LISTING_BATCH > _LISTED_MAX:
                at = None  # too large to keep growing: a new window from here
        if at is None:
            if listing is not None:
                self._listed -= len(listing.entries)
            listing, at = _Listing(generation, offset), 0
        listings[ino] = listing
        if listing.ends_at(at):
            self._fill(ino, listing, offset)
        page = listing.entries[at:at + _LISTING_PAGE]
        overlay = self.overlay
        for i, row in enumerate(listing.rows[at:at + _LISTING_PAGE]):
            live = overlay(row)
            if live is not row:
                entry = page[i]
                page[i] = DirEntry(entry.name, self._make_attr(live), entry.next_offset)
        return page

    def _fill(self, ino: int, listing: _Listing, offset: int) -> None:
        """Append the next batch of entries after `offset`, the end of `listing`."""
        rows, complete = self._read_dir(ino, offset, _LISTING_BATCH)
        # Room first, by dropping the listings used longest ago (this one is the newest).
        listings = self._listings
        while self._listed + len(rows) > _LISTED_MAX:
            oldest = next(iter(listings))
            if oldest == ino:
                break
            self._listed -= len(listings.pop(oldest).entries)
        self._listed += len(rows)
        listing.complete = complete
        base = len(listing.entries)
        make_attr = self._make_attr
        for i, (name, row, next_offset) in enumerate(rows, base + 1):
            listing.rows.append(row)
            listing.entries.append(DirEntry(name, make_attr(row), next_offset))
            listing.index[next_offset] = i

    def _read_dir(
        self, ino: int, offset: int, limit: int,
    ) -> tuple[list[tuple[bytes, mino.InodeRow, int]], bool]:
        """(name, inode row, next offset) of up to `limit` entries after `offset`; and whether
        they reach the end of the directory."""
        drow = self._dir_row(ino)
        if drow.nlink == 0:
            return [], True  # removed while open: empty, as ext4 and tmpfs list it
        out: list[tuple[bytes, mino.InodeRow, int]] = []
        if offset < 1:
            out.append((b".", drow, 1))
        if offset < 2:
            out.append((b"..", self.row(self._parent(ino)), 2))
        dentries = mino.list_dir_plus(self.db, ino, max(0, offset - 2), limit)
        out += [(name, row, dentry_id + 2) for dentry_id, name, row in dentries]
        return out, len(dentries) < limit

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


class _Listing:
    """The entries of one directory from some offset on, as read at one namespace generation.

    `rows` holds each entry's inode row as read, so a readdir can tell from the write-back
    cache whether its attributes are still live; `index` maps a readdir offset to the entry
    that follows it.
    """

    __slots__ = ("generation", "rows", "entries", "index", "complete")

    def __init__(self, generation: int, offset: int) -> None:
        self.generation = generation
        self.rows: list[mino.InodeRow] = []
        self.entries: list[DirEntry] = []
        self.index: dict[int, int] = {offset: 0}
        self.complete = False

    def ends_at(self, at: int) -> bool:
        """Whether entry `at` is past what was read, and more is left in the directory."""
        return at == len(self.entries) and not self.complete
