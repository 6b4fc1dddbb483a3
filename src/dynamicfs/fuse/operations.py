"""pyfuse3 request handlers: a pure translation layer in front of the engine.

Every handler converts pyfuse3's arguments into one engine call and the engine's plain values
(`Attr`, `DirEntry`, `StatFs`) into pyfuse3 structures. The engine decides everything; nothing
here looks at SQL, fragments or disks. The single error boundary is `_boundary`.

About `security.capability`: the kernel asks getxattr("security.capability") before every
write(2) because FUSE clears SB_NOSEC on its superblock. Only FUSE_CAP_HANDLE_KILLPRIV_V2 makes
the kernel set SB_NOSEC again (the server then kills suid/sgid/caps on write itself). It is not
to be had here: libfuse 3.14 on this system has no KILLPRIV_V2 (libfuse PR #916, 2024), its
HANDLE_KILLPRIV (v1) only spares getattr calls around setattr (and 3.14's do_init drops it,
libfuse issue #884), and pyfuse3 3.5's fuse_init gives Python no access to `conn.want`.
Answering ENOSYS would stop the probes but also switch off every xattr. So the request keeps
coming; it is forwarded to the engine, which answers it from memory without SQL.
"""

from __future__ import annotations

import errno
import functools
import logging
import queue
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import pyfuse3
import trio

from ..engine.types import Attr, Ctx, SetAttr, StatFs
from ..errors import FsError

if TYPE_CHECKING:
    from ..engine.filesystem import Engine

log = logging.getLogger(__name__)

# The engine is the only writer of the namespace, so cached entries and attributes stay valid
# until the engine itself invalidates them through the invalidator callbacks.
ENTRY_TIMEOUT = 60.0
ATTR_TIMEOUT = 60.0

_DOTS = (b".", b"..")


P = ParamSpec("P")
R = TypeVar("R")


def _boundary(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """The one place where engine errors become errnos for the kernel."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except FsError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        except Exception:
            # An unexpected failure must not take the mount down or leave the caller hanging:
            # the kernel gets EIO, the log gets the traceback.
            log.exception("FUSE %s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def to_ctx(ctx: pyfuse3.RequestContext) -> Ctx:
    return Ctx(uid=ctx.uid, gid=ctx.gid, pid=ctx.pid, umask=ctx.umask)


def to_entry(attr: Attr) -> pyfuse3.EntryAttributes:
    entry = pyfuse3.EntryAttributes()
    entry.st_ino = attr.ino
    entry.generation = 0
    entry.entry_timeout = ENTRY_TIMEOUT
    entry.attr_timeout = ATTR_TIMEOUT
    entry.st_mode = attr.mode
    entry.st_nlink = attr.nlink
    entry.st_uid = attr.uid
    entry.st_gid = attr.gid
    entry.st_rdev = attr.rdev
    entry.st_size = attr.size
    entry.st_blksize = attr.blksize
    entry.st_blocks = attr.blocks
    entry.st_atime_ns = attr.atime_ns
    entry.st_mtime_ns = attr.mtime_ns
    entry.st_ctime_ns = attr.ctime_ns
    return entry


def to_statvfs(st: StatFs) -> pyfuse3.StatvfsData:
    out = pyfuse3.StatvfsData()
    out.f_bsize = st.bsize
    out.f_frsize = st.frsize
    out.f_blocks = st.blocks
    out.f_bfree = st.bfree
    out.f_bavail = st.bavail
    out.f_files = st.files
    out.f_ffree = st.ffree
    out.f_favail = st.favail
    out.f_namemax = st.namemax
    return out


def to_setattr(attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields) -> SetAttr:
    # pyfuse3 has already resolved UTIME_NOW into a concrete time in `attr`.
    return SetAttr(
        mode=attr.st_mode if fields.update_mode else None,
        uid=attr.st_uid if fields.update_uid else None,
        gid=attr.st_gid if fields.update_gid else None,
        size=attr.st_size if fields.update_size else None,
        atime_ns=attr.st_atime_ns if fields.update_atime else None,
        mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
        ctime_ns=attr.st_ctime_ns if fields.update_ctime else None,
    )


class KernelNotifier:
    """Sends cache invalidations to the kernel from a thread of its own.

    A notification may block: invalidating an inode waits for its dirty writeback pages, which
    need write requests that only the trio thread can answer, and invalidating an entry waits
    for related requests in flight. Both would deadlock on the trio thread. pyfuse3's own
    `invalidate_entry_async` thread is not used because it outlives `pyfuse3.main()` and could
    touch the session after `pyfuse3.close()`; this one is stopped before close.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[int, bytes | None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def invalidate_inode(self, ino: int) -> None:
        self._put((ino, None))

    def invalidate_entry(self, parent: int, name: bytes) -> None:
        self._put((parent, name))

    def _put(self, item: tuple[int, bytes | None]) -> None:
        with self._lock:
            if self._stopped:
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="fuse-notify", daemon=True)
                self._thread.start()
            self._queue.put(item)

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued, then stop; later invalidations are dropped."""
        with self._lock:
            self._stopped = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)
            if thread.is_alive():
                log.warning("kernel notification thread still blocked at shutdown")

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            ino, name = item
            try:
                if name is None:
                    pyfuse3.invalidate_inode(ino)
                else:
                    pyfuse3.invalidate_entry(ino, name)
            except OSError as exc:
                # ENOENT only means the kernel had nothing cached for it.
                if exc.errno != errno.ENOENT:
                    log.warning("kernel invalidation of %d/%r failed: %s", ino, name, exc)
            except Exception:
                log.exception("kernel invalidation of %d/%r failed", ino, name)


class Operations(pyfuse3.Operations):
    """Translate pyfuse3 requests into calls on an `Engine`."""

    enable_writeback_cache = True
    # Not offered: export support (NFS, open_by_handle_at) lets file handles outlive the kernel's
    # inode cache, and the engine may reuse an inode number with no generation to tell the two
    # apart, so a stale handle could open another file. Without it such handles get ESTALE.
    supports_dot_lookup = False

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        # With the writeback cache the kernel keeps mtime/ctime and sends them with SETATTR;
        # WRITEs it flushes later must not restamp the file with the time of the flush.
        engine.kernel_times = self.enable_writeback_cache
        self.notifier = KernelNotifier()
        # readdir and fsyncdir only receive the directory handle; the engine wants the inode.
        self._dir_inodes: dict[int, int] = {}
        # Run once the kernel has the INIT reply (see init).
        self.after_init: Callable[[], None] | None = None

    def init(self) -> None:
        # Called while libfuse answers the kernel's INIT, before the reply is written; what
        # the kernel sets from that reply (the mount's readahead) can only be changed after
        # it, so the callback runs at the trio loop's next turn, once the reply is sent.
        if self.after_init is not None:
            trio.lowlevel.current_trio_token().run_sync_soon(self.after_init)

    # -- kernel cache invalidation, handed to the engine as its invalidator ---------------------

    def invalidate_inode(self, ino: int) -> None:
        self.notifier.invalidate_inode(ino)

    def invalidate_entry(self, parent: int, name: bytes) -> None:
        self.notifier.invalidate_entry(parent, name)

    # -- lookups and attributes -------------------------------------------------------------------

    @_boundary
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        try:
            attr = await self.engine.lookup(parent_inode, name, to_ctx(ctx))
        except FsError as exc:
            if exc.errno != errno.ENOENT:
                raise
            # st_ino 0 tells the kernel to cache the miss for entry_timeout: builds, git and
            # Python imports probe many absent names. Names that appear other than through
            # this mount are announced by the engine with invalidate_entry.
            miss = pyfuse3.EntryAttributes()
            miss.st_ino = 0
            miss.entry_timeout = ENTRY_TIMEOUT
            return miss
        return to_entry(attr)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        # forget answers no request, so it may not raise anything at all.
        try:
            await self.engine.forget(list(inode_list))
        except Exception:
            log.exception("FUSE forget failed")

    @_boundary
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return to_entry(await self.engine.getattr(inode))

    @_boundary
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        changes = to_setattr(attr, fields)
        return to_entry(await self.engine.setattr(inode, changes, to_ctx(ctx)))

    @_boundary
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return await self.engine.readlink(inode)

    @_boundary
    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        # The engine raises FsError(EACCES) on denial; reaching the end means allowed.
        await self.engine.access(inode, mode, to_ctx(ctx))
        return True

    @_boundary
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        return to_statvfs(await self.engine.statfs())

    # -- namespace changes ------------------------------------------------------------------------

    @_boundary
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return to_entry(await self.engine.mknod(parent_inode, name, mode, rdev, to_ctx(ctx)))

    @_boundary
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return to_entry(await self.engine.mkdir(parent_inode, name, mode, to_ctx(ctx)))

    @_boundary
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return to_entry(await self.engine.symlink(parent_inode, name, target, to_ctx(ctx)))

    @_boundary
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return to_entry(await self.engine.link(inode, new_parent_inode, new_name, to_ctx(ctx)))

    @_boundary
    async def unlink(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> None:
        await self.engine.unlink(parent_inode, name, to_ctx(ctx))

    @_boundary
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.engine.rmdir(parent_inode, name, to_ctx(ctx))

    @_boundary
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        await self.engine.rename(parent_inode_old, name_old, parent_inode_new, name_new,
                                 flags, to_ctx(ctx))

    # -- files ------------------------------------------------------------------------------------

    @_boundary
    async def open(self, inode: int, flags: int,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        fh, keep_cache = await self.engine.open(inode, flags, to_ctx(ctx))
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep_cache)

    @_boundary
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext,
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        fh, attr = await self.engine.create(parent_inode, name, mode, flags, to_ctx(ctx))
        # A new file has nothing stale in the page cache.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True), to_entry(attr)

    @_boundary
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        return await self.engine.read(fh, off, size)

    @_boundary
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.engine.write(fh, off, buf)

    @_boundary
    async def flush(self, fh: int) -> None:
        await self.engine.flush(fh)

    @_boundary
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.engine.fsync(fh, datasync)

    @_boundary
    async def release(self, fh: int) -> None:
        await self.engine.release(fh)

    # -- directories ------------------------------------------------------------------------------

    @_boundary
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        fh = await self.engine.opendir(inode, to_ctx(ctx))
        self._dir_inodes[fh] = inode
        return fh

    @_boundary
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        ino = self._dir_ino(fh)
        offset = start_id
        sent = False
        while True:
            try:
                entries = await self.engine.readdir(ino, offset)
            except Exception:
                if not sent:
                    raise
                # An error reply would throw away a buffer whose entries were already counted
                # as kernel references, leaking them. Reply short; the next call will fail.
                log.debug("readdir of %d stopped early at offset %d", ino, offset,
                          exc_info=True)
                return
            if not entries:
                return
            for entry in entries:
                if not pyfuse3.readdir_reply(token, entry.name, to_entry(entry.attr),
                                             entry.next_offset):
                    return
                # readdirplus gave the kernel a lookup reference, except for the dot entries:
                # the kernel neither caches nor counts those, so it never forgets them either
                # (pyfuse3's Operations.readdir contract; libfuse passthrough_hp, PR #987).
                if entry.name not in _DOTS:
                    self.engine.remember(entry.attr.ino)
                sent = True
                offset = entry.next_offset

    @_boundary
    async def releasedir(self, fh: int) -> None:
        self._dir_inodes.pop(fh, None)
        await self.engine.releasedir(fh)

    @_boundary
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        await self.engine.fsyncdir(self._dir_ino(fh), datasync)

    def _dir_ino(self, fh: int) -> int:
        try:
            return self._dir_inodes[fh]
        except KeyError:
            raise FsError(errno.EBADF) from None

    # -- extended attributes ----------------------------------------------------------------------

    @_boundary
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        return await self.engine.getxattr(inode, name)

    @_boundary
    async def setxattr(self, inode: int, name: bytes, value: bytes,
                       ctx: pyfuse3.RequestContext) -> None:
        # pyfuse3 checks XATTR_CREATE/XATTR_REPLACE itself with a getxattr before calling us.
        await self.engine.setxattr(inode, name, value, to_ctx(ctx))

    @_boundary
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return list(await self.engine.listxattr(inode))

    @_boundary
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.engine.removexattr(inode, name, to_ctx(ctx))
