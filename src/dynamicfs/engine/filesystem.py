"""The engine: the filesystem as the FUSE layer and the control server see it.

It owns what outlives single operations: open handles, kernel lookup counts, the deferred
freeing of unlinked inodes, durability (group-committed metadata syncs, deletion of freed
fragments once that is durable) and the background commit timer. Namespace changes are
delegated to `Namespace`, file data to `BlockCache`. Nothing here knows about FUSE.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from ..clock import now_ns
from ..codec import Policy
from ..disks import Fault, LabelError
from ..errors import DynamicFSError, FsError
from ..meta import extents as mext
from ..meta import inodes as mino
from ..meta import maintenance as mmaint
from ..meta.schema import ROOT_INODE
from ..obs.stats import Stats
from ..store.extents import ExtentStore
from ..store.placement import usable_bytes
from .blockcache import BlockCache
from .metacopy import copy_metadata
from .namespace import Namespace
from .pool import Pool
from .types import Attr, Ctx, DirEntry, SetAttr, StatFs

log = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE = 256 << 20
COMMIT_INTERVAL = 5.0
METADATA_COPY_INTERVAL = 300.0
# Below this much usable space (plus twice the dirty data) close() waits for its file's seals.
_NEAR_FULL = 256 << 20
# Unlinked-but-open inodes and the like stay far below this; it is what statfs reports.
MAX_INODES = 1 << 32
# Rows of forgotten unlinked inodes are deleted this many at a time (or at the commit timer).
_PURGE_BATCH = 256


class _NoInvalidator:
    def invalidate_inode(self, ino: int) -> None:
        pass

    def invalidate_entry(self, parent: int, name: bytes) -> None:
        pass


class Engine:
    def __init__(
        self, pool: Pool, *, cache_size: int = DEFAULT_CACHE_SIZE,
        commit_interval: float = COMMIT_INTERVAL,
        metadata_copy_interval: float = METADATA_COPY_INTERVAL,
    ) -> None:
        self.pool = pool
        self.db = pool.db
        self.stats = Stats()
        self.commit_interval = commit_interval
        self.metadata_copy_interval = metadata_copy_interval
        self.executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="dynamicfs-io")
        self.store = ExtentStore(pool.uuid.bytes, self.executor, self.stats,
                                 on_disk_error=self._count_disk_error)
        self._policy = pool.policy
        self.ns = Namespace(self.db, pool.block_size)
        self.data = BlockCache(self.db, self.store, self.stats, pool.block_size, cache_size,
                               lambda: self._policy)
        self.ns.overlay = self.data.overlay
        self.data.request_deletion_flush = self._request_deletion_round
        self.invalidator: object = _NoInvalidator()
        self.readonly = False
        # True when the kernel maintains mtime/ctime itself (FUSE writeback cache).
        self.kernel_times = False
        self.lookups: Counter[int] = Counter()
        self.opens: Counter[int] = Counter()
        self.handles: dict[int, int] = {}
        self._atime_checked: set[int] = set()
        # Unlinked inodes the kernel forgot, whose data is already freed: their rows (nlink 0,
        # which mount-time recovery would purge too) are deleted in batches, because a
        # transaction of its own per FORGET doubled the cost of every unlink.
        self._purge: set[int] = set()
        self._next_fh = 1
        self._disk_errors: Counter[tuple[int, str]] = Counter()
        self._disk_errors_lock = threading.Lock()
        self._sync_lock = trio.Lock()
        self._sync_requested = 0
        self._synced = 0
        self._round_lock = trio.Lock()
        self.gc_lock = trio.Lock()  # one garbage collection at a time (maint/gc.py)
        self._nursery: trio.Nursery | None = None
        self._space_cache: tuple[float, int] = (0.0, 0)
        self._attach_disks()
        self.db.on_failure = self._metadata_failed

    def _metadata_failed(self, exc: Exception) -> None:
        if not self.readonly:
            log.critical("METADATA WRITE FAILED (%s): the pool is now READ-ONLY; data not yet "
                         "committed cannot be stored. Unmount, check the pool directory's disk "
                         "and run 'dynamicfs fsck'.", exc)
        self.readonly = True
        self.stats.incr("metadata_failures")

    # -- start and stop ----------------------------------------------------------------------

    def _attach_disks(self) -> None:
        for row in self.pool.disk_rows():
            disk = self.pool.open_disk(row)
            try:
                disk.check_label()
                ok = row.state not in ("failed", "draining")
            except (LabelError, OSError) as exc:
                log.error("disk %d (%s) is unavailable: %s", row.id, row.path, exc)
                ok = False
            self.store.attach(row.id, disk, writable=ok)
        self.refresh_disk_usage()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Engine]:
        """Run the background work; on exit flush everything and make it durable."""
        self._recover()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.data.nursery = nursery
            nursery.start_soon(self._commit_loop)
            try:
                yield self
            finally:
                with trio.CancelScope(shield=True):
                    # The kernel has dropped every reference by now (unmounted): files that
                    # were unlinked while open can go.
                    self.lookups.clear()
                    self.opens.clear()
                    self.handles.clear()
                    await self.data.flush_all()
                    await self.data.wait_idle()
                    self._recover()
                    await self.commit_all()
                    await trio.to_thread.run_sync(self.db.checkpoint_truncate)
                    await self.copy_metadata()
                nursery.cancel_scope.cancel()
        self.executor.shutdown(wait=True)
        log.info("engine stopped: all data committed and synced")

    def _recover(self) -> None:
        """Finish what a crash interrupted: inodes nobody links, extents nobody references."""
        with mino.transaction(self.db):
            for ino in mino.unlinked_inodes(self.db):
                if ino != ROOT_INODE:
                    self.data.drop_all_blocks(ino)
                    mino.delete_inode(self.db, ino)
            for eid in mmaint.unreferenced_extents(self.db):
                self.data.free_extent(eid)
        self._purge.clear()
        self.ns.gone.clear()
        if self.data.doomed:
            log.info("recovery: %d unreferenced extents queued for deletion",
                     len(self.data.doomed))

    async def _commit_loop(self) -> None:
        last_copy = trio.current_time()
        while True:
            await trio.sleep(self.commit_interval)
            await self.commit_all()
            self._purge_inodes()
            await trio.to_thread.run_sync(self.db.checkpoint)
            if trio.current_time() - last_copy >= self.metadata_copy_interval:
                await self.copy_metadata()
                last_copy = trio.current_time()

    async def copy_metadata(self) -> list[int]:
        """Copy the (committed) metadata database to two disks; returns their ids."""
        free = self.store.free_space()
        disks = self.store.disks()
        written = await trio.to_thread.run_sync(
            copy_metadata, self.db, self.pool.uuid, disks, free)
        self.stats.incr("metadata_copies", len(written))
        return written

    async def commit_all(self) -> None:
        """Commit every file's cached changes and make all metadata durable."""
        await self.data.flush_all()
        self._flush_disk_errors()
        await self.sync_metadata()
        await self._deletion_round()

    # -- durability --------------------------------------------------------------------------

    async def sync_metadata(self) -> None:
        """Group commit: one WAL fsync covers every caller that committed before it began."""
        self._sync_requested += 1
        mine = self._sync_requested
        async with self._sync_lock:
            if self._synced >= mine:
                return
            upto = self._sync_requested
            await trio.to_thread.run_sync(self.db.sync)
            self._synced = upto
        self.stats.incr("metadata_syncs")

    async def _deletion_round(self) -> None:
        """Delete fragments of freed extents once the metadata that freed them is durable."""
        async with self._round_lock:
            doomed, self.data.doomed = self.data.doomed, {}
            if not doomed:
                return
            # Until the files are gone a new seal of the same content must not write them
            # again (same content-addressed names): they stay visible as being deleted.
            self.data.deleting = doomed
            try:
                await self.sync_metadata()
                await trio.to_thread.run_sync(self._delete_fragments, doomed)
            finally:
                self.data.deleting = {}

    def _delete_fragments(self, doomed: dict[bytes, list[tuple[int, int]]]) -> None:
        for digest, frags in doomed.items():
            self.store.delete(digest, frags)
            self.stats.incr("fragments_deleted", len(frags))

    def _request_deletion_round(self) -> trio.Event:
        done = trio.Event()

        async def run() -> None:
            try:
                await self._deletion_round()
            finally:
                done.set()

        assert self._nursery is not None
        self._nursery.start_soon(run)
        return done

    def _count_disk_error(self, disk: int, kind: str) -> None:
        # Called from worker threads: counted in memory, written with the next commit.
        with self._disk_errors_lock:
            self._disk_errors[(disk, kind)] += 1

    def _flush_disk_errors(self) -> None:
        with self._disk_errors_lock:
            errors, self._disk_errors = self._disk_errors, Counter()
        if errors:
            self.pool.count_disk_errors(errors)

    # -- lookups and handles -----------------------------------------------------------------

    def remember(self, ino: int) -> None:
        self.lookups[ino] += 1

    def _entry(self, attr: Attr) -> Attr:
        self.lookups[attr.ino] += 1
        return attr

    async def forget(self, items: list[tuple[int, int]]) -> None:
        for ino, n in items:
            left = self.lookups[ino] - n
            if left > 0:
                self.lookups[ino] = left
            else:
                self.lookups.pop(ino, None)
                self._maybe_delete(ino, forgotten=True)

    def _new_handle(self, ino: int) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = ino
        self.opens[ino] += 1
        return fh

    def _ino(self, fh: int) -> int:
        try:
            return self.handles[fh]
        except KeyError:
            raise FsError(errno.EBADF) from None

    def _maybe_delete(self, ino: int, *, forgotten: bool = False) -> None:
        """Free an inode's data once it has no name and no open handle, and the inode itself
        once the kernel holds no reference either.

        The kernel's FORGET comes whenever it evicts the inode, often a moment after the
        unlink; without an open handle nobody can read the data any more, so its space is
        given back at once (a user who deletes files to make room can write right away).
        Called inside the transaction of the unlink, rmdir or rename that dropped the last
        name, the freeing commits with it. `forgotten`: the kernel's last reference went
        (FORGET); the data went when the last name or handle did, so only the row is left,
        and it is purged with others (`_purge_inodes`).
        """
        if ino == ROOT_INODE or self.opens.get(ino):
            return
        row = mino.get_inode(self.db, ino)
        if row is None or row.nlink > 0:
            return
        looked_up = bool(self.lookups.get(ino))
        if (forgotten and not looked_up and not row.size and not row.alloc
                and ino not in self.data.files):
            self._purge.add(ino)
            self.ns.gone.add(ino)
            if len(self._purge) >= _PURGE_BATCH:
                self._purge_inodes()
            return
        self.data.forget_file(ino)
        with mino.transaction(self.db):
            self.data.drop_all_blocks(ino)
            if not looked_up:
                mino.delete_inode(self.db, ino)
            elif row.size or row.alloc:
                mino.update_inode(self.db, ino, size=0, alloc=0)
        if not looked_up:
            self.ns.has_capability.discard(ino)
            self.stats.incr("inodes_freed")

    def _purge_inodes(self) -> None:
        """Delete the rows of forgotten unlinked inodes (see `_maybe_delete`)."""
        if not self._purge:
            return
        purge, self._purge = self._purge, set()
        with mino.transaction(self.db):
            for ino in purge:
                # Their blocks went when the data was freed; dropping again costs one read
                # and keeps a block row from outliving its inode whatever happened meanwhile.
                self.data.drop_all_blocks(ino)
                mino.delete_inode(self.db, ino)
        self.ns.gone.difference_update(purge)
        self.ns.has_capability.difference_update(purge)
        self.stats.incr("inodes_freed", len(purge))

    def _writable(self) -> None:
        if self.readonly:
            raise FsError(errno.EROFS)

    # -- namespace ---------------------------------------------------------------------------

    async def lookup(self, parent: int, name: bytes, ctx: Ctx | None = None) -> Attr:
        return self._entry(self.ns.lookup(parent, name))

    async def getattr(self, ino: int) -> Attr:
        return self.ns.getattr(ino)

    async def setattr(self, ino: int, changes: SetAttr, ctx: Ctx | None = None) -> Attr:
        self._writable()
        now = now_ns()
        row = self.ns.row(ino)
        if row.nlink == 0 and not self.opens.get(ino) and changes.size is None:
            # No name and no handle: nobody can see this inode again, and its row goes at
            # FORGET (or at the next mount). The kernel still sends one SETATTR per unlink
            # (fuse_update_ctime writes the ctime it set back); storing it would cost a commit.
            return self._unreachable_attr(row, changes, now)
        if changes.size is not None:
            if stat.S_ISDIR(row.mode):
                raise FsError(errno.EISDIR)
            if not stat.S_ISREG(row.mode):
                raise FsError(errno.EINVAL)
            if changes.size < 0:
                raise FsError(errno.EINVAL)
            if changes.size > row.size:
                self._check_space(changes.size - row.size, sparse=True)
            await self.data.truncate(ino, changes.size)
        if changes.size is None and self._defer_times(ino, changes, now):
            return self.ns.getattr(ino)
        fields: dict[str, int] = {}
        for name in ("mode", "uid", "gid", "atime_ns", "mtime_ns"):
            value = getattr(changes, name)
            if value is not None:
                fields[name] = value
        if "mode" in fields:
            fields["mode"] = (row.mode & ~0o7777) | (fields["mode"] & 0o7777)
        fields["ctime_ns"] = changes.ctime_ns if changes.ctime_ns is not None else now
        self.ns.set_attrs(ino, **fields)
        self.data.touch(ino, mtime_ns=fields.get("mtime_ns"), ctime_ns=fields["ctime_ns"])
        return self.ns.getattr(ino)

    def _defer_times(self, ino: int, changes: SetAttr, now: int) -> bool:
        """Keep a change of mtime/ctime alone with the file's uncommitted data, if it has any.

        With the writeback cache the kernel stamps the times of written files itself and
        sends them at close whenever a clock tick passed since the file was created: a
        transaction for each such file (more than half of a run of small files), for times
        that belong to data only committed later. They now commit with it, in the same
        transaction, and are lost with it in a crash. A change with anything else in it
        (atime, mode, owner) is a namespace change and commits at once.
        """
        c = changes
        if c.mode is not None or c.uid is not None or c.gid is not None or \
                c.atime_ns is not None:
            return False
        return self.data.defer_times(
            ino, c.mtime_ns, c.ctime_ns if c.ctime_ns is not None else now)

    def _unreachable_attr(self, row: mino.InodeRow, changes: SetAttr, now: int) -> Attr:
        c = changes
        return Attr(
            ino=row.id,
            mode=row.mode if c.mode is None else (row.mode & ~0o7777) | (c.mode & 0o7777),
            nlink=0, uid=row.uid if c.uid is None else c.uid,
            gid=row.gid if c.gid is None else c.gid, rdev=row.rdev, size=row.size,
            blocks=(row.alloc + 511) // 512, blksize=self.pool.block_size,
            atime_ns=row.atime_ns if c.atime_ns is None else c.atime_ns,
            mtime_ns=row.mtime_ns if c.mtime_ns is None else c.mtime_ns,
            ctime_ns=now if c.ctime_ns is None else c.ctime_ns)

    async def readlink(self, ino: int) -> bytes:
        target = self.ns.readlink(ino)
        self._touch_atime(ino)
        return target

    def _touch_atime(self, ino: int) -> None:
        if not self.readonly:
            self.ns.touch_atime(self.ns.row(ino))

    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int, ctx: Ctx) -> Attr:
        self._writable()
        if stat.S_IFMT(mode) == 0:
            mode |= stat.S_IFREG
        if stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
            raise FsError(errno.EINVAL)
        return self._entry(self.ns.make(parent, name, mode, ctx, rdev=rdev))

    async def mkdir(self, parent: int, name: bytes, mode: int, ctx: Ctx) -> Attr:
        self._writable()
        return self._entry(self.ns.make(parent, name, stat.S_IFDIR | (mode & 0o7777), ctx))

    async def symlink(self, parent: int, name: bytes, target: bytes, ctx: Ctx) -> Attr:
        self._writable()
        return self._entry(self.ns.make(parent, name, stat.S_IFLNK | 0o777, ctx, target=target))

    async def link(self, ino: int, new_parent: int, new_name: bytes, ctx: Ctx) -> Attr:
        self._writable()
        return self._entry(self.ns.link(ino, new_parent, new_name))

    async def unlink(self, parent: int, name: bytes, ctx: Ctx | None = None) -> None:
        self._writable()
        with mino.transaction(self.db):
            freed = self.ns.unlink(parent, name)
            if freed is not None:
                self._maybe_delete(freed)

    async def rmdir(self, parent: int, name: bytes, ctx: Ctx | None = None) -> None:
        self._writable()
        with mino.transaction(self.db):
            self._maybe_delete(self.ns.rmdir(parent, name))

    async def rename(
        self, parent_old: int, name_old: bytes, parent_new: int, name_new: bytes, flags: int,
        ctx: Ctx | None = None,
    ) -> None:
        self._writable()
        with mino.transaction(self.db):
            freed = self.ns.rename(parent_old, name_old, parent_new, name_new, flags)
            if freed is not None:
                self._maybe_delete(freed)

    async def opendir(self, ino: int, ctx: Ctx | None = None) -> int:
        row = self.ns.row(ino)
        if not stat.S_ISDIR(row.mode):
            raise FsError(errno.ENOTDIR)
        if not self.readonly:
            self.ns.touch_atime(row)
        return ino

    async def readdir(self, ino: int, offset: int) -> list[DirEntry]:
        return self.ns.readdir(ino, offset)

    async def releasedir(self, fh: int) -> None:
        pass

    async def fsyncdir(self, ino: int, datasync: bool) -> None:
        await self.sync_metadata()

    async def access(self, ino: int, mode: int, ctx: Ctx) -> None:
        row = self.ns.row(ino)
        if mode == os.F_OK or ctx.uid == 0 and not (mode & os.X_OK):
            return
        if ctx.uid == 0:
            if row.mode & 0o111 or stat.S_ISDIR(row.mode):
                return
            raise FsError(errno.EACCES)
        if ctx.uid == row.uid:
            granted = (row.mode >> 6) & 7
        elif ctx.gid == row.gid:
            granted = (row.mode >> 3) & 7
        else:
            granted = row.mode & 7
        if mode & ~granted & 7:
            raise FsError(errno.EACCES)

    # -- xattrs ------------------------------------------------------------------------------

    async def getxattr(self, ino: int, name: bytes, ctx: Ctx | None = None) -> bytes:
        return self.ns.getxattr(ino, name)

    async def setxattr(
        self, ino: int, name: bytes, value: bytes, ctx: Ctx | None = None, flags: int = 0
    ) -> None:
        self._writable()
        self.ns.setxattr(ino, name, value, flags)

    async def listxattr(self, ino: int, ctx: Ctx | None = None) -> list[bytes]:
        return self.ns.listxattr(ino)

    async def removexattr(self, ino: int, name: bytes, ctx: Ctx | None = None) -> None:
        self._writable()
        self.ns.removexattr(ino, name)

    # -- file data ---------------------------------------------------------------------------

    async def create(
        self, parent: int, name: bytes, mode: int, flags: int, ctx: Ctx
    ) -> tuple[int, Attr]:
        self._writable()
        attr = self._entry(self.ns.make(parent, name, stat.S_IFREG | (mode & 0o7777), ctx))
        return self._new_handle(attr.ino), attr

    async def open(self, ino: int, flags: int, ctx: Ctx | None = None) -> tuple[int, bool]:
        row = self.ns.row(ino)
        if stat.S_ISDIR(row.mode):
            raise FsError(errno.EISDIR)
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            self._writable()
        # The FUSE layer cannot turn off libfuse's atomic O_TRUNC, so the kernel sends O_TRUNC
        # in OPEN before some of its own checks (ETXTBSY for a running binary comes after).
        # For a read-only open that truncation is unspecified by POSIX and, here, could empty
        # a file whose open then fails: it is ignored. Writable opens truncate as asked.
        if (flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY
                and stat.S_ISREG(row.mode) and row.size):
            await self.data.truncate(ino, 0)
        fh = self._new_handle(ino)
        if flags & os.O_ACCMODE != os.O_WRONLY:
            # Reads served from the kernel's page cache never reach us, so relatime is applied
            # when a file is opened for reading rather than at its first read.
            self._atime_checked.add(fh)
            self._touch_atime(ino)
        # Every change reaches us through the kernel, so its page cache is never stale.
        return fh, True

    async def read(self, fh: int, offset: int, size: int) -> bytes | memoryview:
        ino = self._ino(fh)
        if fh not in self._atime_checked:
            self._atime_checked.add(fh)
            self._touch_atime(ino)
        return await self.data.read(ino, offset, size)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        self._writable()
        ino = self._ino(fh)
        await self._ensure_space(len(data))
        return await self.data.write(ino, offset, data, stamp=not self.kernel_times)

    async def flush(self, fh: int) -> None:
        ino = self._ino(fh)
        fs = self.data.files.get(ino)
        if fs is not None:
            # Start writing out what close leaves behind; the commit timer or the next fsync
            # commits it. Waiting here would make every close as slow as an fsync.
            for idx in list(fs.dirty):
                self.data.start_seal(fs, idx)
            if (self._free_cached() < 2 * self.data.dirty_bytes + _NEAR_FULL
                    and self._usable_free() < 2 * self.data.dirty_bytes + _NEAR_FULL):
                # Near full, a block may not find room: wait, so that close() can report
                # ENOSPC instead of the data being dropped after the file was closed.
                for done in list(fs.sealing.values()):
                    await done.wait()
            if fs.error is not None:
                err, fs.error = fs.error, None
                raise FsError(err)

    async def fsync(self, fh: int, datasync: bool) -> None:
        ino = self._ino(fh)
        await self.data.flush_file(ino)
        await self.sync_metadata()

    async def release(self, fh: int) -> None:
        ino = self.handles.pop(fh, None)
        self._atime_checked.discard(fh)
        if ino is None:
            return
        self.opens[ino] -= 1
        if self.opens[ino] <= 0:
            del self.opens[ino]
            self._maybe_delete(ino)

    async def _ensure_space(self, nbytes: int) -> None:
        """ENOSPC up front, unless deleting what was freed but not yet removed makes room."""
        try:
            self._check_space(nbytes)
        except FsError:
            if not self.data.doomed:
                raise
            # Space of deleted files comes back only once their fragments are gone; a user
            # who just removed files to make room should not have to wait for the timer.
            await self._deletion_round()
            self._space_cache = (0.0, 0)
            self._check_space(nbytes)

    def _free_cached(self) -> int:
        """Usable free bytes, at most 0.5 s old: statvfs of every disk per write or close
        showed up in profiles of small-file workloads. Callers that find too little ask
        `_usable_free` again before refusing anything."""
        now = time.monotonic()
        at, free = self._space_cache
        if now - at > 0.5:
            free = self._usable_free()
            self._space_cache = (now, free)
        return free

    def _check_space(self, nbytes: int, sparse: bool = False) -> None:
        """Refuse a write up front when the pool cannot hold it (ENOSPC at write time)."""
        free = self._free_cached()
        if sparse:
            return
        if free - self.data.dirty_bytes < nbytes:
            self._space_cache = (0.0, 0)
            if self._usable_free() - self.data.dirty_bytes < nbytes:
                self.stats.incr("write_enospc")
                raise FsError(errno.ENOSPC)

    # -- pool-wide reports and administration -------------------------------------------------

    def _usable_free(self) -> int:
        return self._usable(list(self.store.free_space().values()))

    def _usable(self, sizes: list[int]) -> int:
        policy = self._policy
        return usable_bytes(sizes, policy.n_fragments, policy.k, policy.min_fragments)

    async def statfs(self) -> StatFs:
        frsize = 4096
        total = self._usable([cap for cap, _ in self.store.usage().values()])
        free = self._usable_free()
        files = mino.count_inodes(self.db)
        return StatFs(
            bsize=self.pool.block_size, frsize=frsize, blocks=total // frsize,
            bfree=free // frsize, bavail=free // frsize, files=MAX_INODES,
            ffree=MAX_INODES - files, favail=MAX_INODES - files, namemax=255,
        )

    def memory_high(self, resident: int) -> bool:
        """Whether the daemon's resident size is over what the cache may cause."""
        return self.data.memory_high(resident)

    def memory_check(self, resident: int) -> None:
        """The daemon's resident size, after a trim: the cache gives way while it is high."""
        self.data.memory_check(resident)

    def status(self) -> dict:
        report = self.pool.status()
        report.update({
            "mounted": True, "readonly": self.readonly, "open_files": len(self.opens),
            "cache": {"size": self.data.cache_size, "dirty_bytes": self.data.dirty_bytes,
                      "clean_bytes": self.data.clean.used,
                      "files": len(self.data.files)},
            "counters": self.stats.snapshot(),
        })
        return report

    def list_disks(self) -> list[dict]:
        """The disks as the metadata records them, with what the engine knows newer: bytes
        used including fragments written but not yet committed (free space already counts
        them), and error counters not yet written to the metadata."""
        self._flush_disk_errors()
        report = self.pool.disk_report()
        live = self.store.disks()
        usage = self.store.usage()
        for d in report:
            disk = live.get(d["id"])
            if disk is not None and d["id"] in usage:
                d["used"] = disk.used
                d["capacity"], d["free"] = usage[d["id"]]
        return report

    async def add_disk(
        self, path: Path, tier: str | None = None, capacity: int | None = None,
        mountpoint: Path | None = None,
    ) -> dict:
        row = self.pool.add_disk(path, tier, capacity, mountpoint)
        self.store.attach(row.id, self.pool.open_disk(row), writable=True)
        self._space_cache = (0.0, 0)
        return next(d for d in self.pool.disk_report() if d["id"] == row.id)

    def set_policy(self, text: str) -> None:
        try:
            policy = Policy.parse(text)
        except ValueError as exc:
            raise DynamicFSError(str(exc)) from None
        self.pool.set_policy(policy)
        self._policy = policy

    # -- garbage collection --------------------------------------------------------------------

    def in_use(self, digest: bytes) -> bool:
        """Whether a write in flight, a pending commit or a queued deletion uses `digest`."""
        return self.data.in_use(digest)

    def fragment_recorded(self, digest: bytes, idx: int, disk: int) -> bool:
        return mext.fragment_recorded(self.db, digest, idx, disk)

    def refresh_disk_usage(self) -> None:
        """Re-read from metadata what each disk holds (after files were removed behind us)."""
        used = self.pool.fragment_counts()
        for disk_id, disk in self.store.disks().items():
            disk.used = used.get(disk_id, (0, 0))[1] or 0

    # -- fault injection (docs/operations.md) --------------------------------------------------

    def inject_fault(self, disk_id: int, fault: Fault) -> None:
        disk = self.store.disks().get(disk_id)
        if disk is None:
            raise DynamicFSError(f"no disk {disk_id} in this pool")
        disk.faults.add(fault)
        log.warning("fault injected on disk %d: %s", disk_id, fault.describe())

    def clear_faults(self, disk_id: int | None = None) -> None:
        for did, disk in self.store.disks().items():
            if disk_id is None or did == disk_id:
                disk.faults.clear()

    def list_faults(self) -> dict[int, list[dict]]:
        return {did: [f.describe() for f in disk.faults.list()]
                for did, disk in self.store.disks().items() if disk.faults.list()}

