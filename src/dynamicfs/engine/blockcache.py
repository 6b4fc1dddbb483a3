"""File data: the write-back block cache and sealing of blocks into extents (file commits:
commit.py, and readahead: readahead.py, mixins of BlockCache).

The life of a block (see docs/concurrency.md):

    write ──▶ dirty buffer ──seal (threads: hash, encode, write fragments)──▶ pending extent
          ──commit (one transaction per file)──▶ block map row

* A dirty block is the newest content of a block and lives only in memory: the byte runs
  written to it over its earlier content, which is read only when the block is read back or
  sealed (`dirty.DirtyBlock`). A write that completes a block seals it in the background;
  random writes stay dirty until an fsync, a release, the commit timer or memory pressure
  seals them.
* A pending extent is written to disks but not yet referenced by metadata; the commit that
  first references it makes its fragments durable first. A file's pending extents, its size
  and times are committed together in one transaction, so after a crash a file shows the
  state of one of its commits, never a mix of blocks from different ones.
* Every change to a block takes a new generation number from the file's clock. A seal result
  is kept only if it is newer than what is pending, and dropped if a truncate cut the block
  after the seal started (so stale bytes never come back when the file grows again).

Everything here runs on the trio thread except the work handed to `trio.to_thread`: hashing,
coding and fragment I/O. No transaction spans an await.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

from ..clock import now_ns
from ..codec import Policy, blake3_digest
from ..errors import FsError
from ..meta import Database
from ..meta import extents as mext
from ..meta import inodes as mino
from ..obs.stats import Stats
from ..store.extents import ExtentStore, ExtentUnreadable, SealedExtent
from .commit import FileCommits
from .dirty import DirtyBlock, materialize
from .filestate import CleanCache, FileState, PendingBlock, PendingExtent
from .readahead import Readahead

log = logging.getLogger(__name__)

SEAL_BYTES = 8 << 20  # blocks being sealed at once, at most (but two blocks at least)
# What the daemon may hold beyond its cache before the clean cache gives way (memory_check):
# the interpreter, libraries and SQLite take ~30 MiB, requests and seals in flight the rest.
# Well under the 150 MiB promised on top of the cache: freed heap pages are given back once a
# second, or within 0.2 s while the daemon is over this line (daemon._trim_memory), and in
# between an ec:4+2 random writer still grows tens of MiB (64 MiB: peaks of 374-376 MiB there,
# 381-390 with 100 MiB, same throughput, when the check ran only once a second).
MEMORY_OVERHEAD = 64 << 20
# Blocks this small are hashed on the trio thread: 64 KiB takes ~12 µs, less than handing it
# to a worker thread and back, which small-file writes paid per file.
_HASH_HERE = 64 << 10
# Files whose block digests reads remember at once (then the memory is started afresh).
_DIGEST_FILES = 4096


class BlockCache(FileCommits, Readahead):
    """Reads, writes, truncates and commits file data for the engine (commits: commit.py,
    fetching ahead of sequential readers: readahead.py)."""

    def __init__(
        self, db: Database, store: ExtentStore, stats: Stats, block_size: int,
        cache_size: int, default_policy: Callable[[], Policy],
    ) -> None:
        self.db = db
        self.store = store
        self.stats = stats
        self.bs = block_size
        self.default_policy = default_policy
        self.files: dict[int, FileState] = {}
        # One budget, as in ZFS's ARC: dirty data may take up to half of it (then writers
        # wait for seals), clean data the rest of whatever dirty data does not use. A random
        # reader whose working set fits the cache then stops reading from the disks.
        self.cache_size = cache_size
        self.clean = CleanCache(cache_size)
        self.dirty_limit = max(cache_size // 2, 4 * block_size)
        self._dirty_bytes = 0
        # Bytes that running seals and fetches hold outside both (a block being coded, its
        # parity, fragments being read) also come out of the clean part: with 4 MiB ec:4+2
        # blocks two seals hold 12 MiB and a readahead window of fetches 16 MiB more.
        self._held = 0
        # Taken off the clean part while the daemon's memory is over cache + MEMORY_OVERHEAD
        # (memory_check): freed buffers the heap cannot give back count too.
        self._squeeze = 0
        self._space_freed = trio.Condition()
        self._zero = bytes(block_size)
        self._pending_by_digest: dict[bytes, PendingExtent] = {}
        self._sealing_digest: dict[bytes, trio.Event] = {}
        self._loading: dict[bytes, trio.Event] = {}
        self._syncing: dict[bytes, trio.Event] = {}  # digests whose fragments are being synced
        self.seals_running = 0
        self._init_readahead(block_size)
        # ino -> {block: extent digest} of committed blocks read lately. A read whose block is
        # in the clean cache then needs no query: a 1 MiB block is read in eight 128 KiB
        # requests, and each ran three (a third of a cold sequential read's time on the trio
        # thread). Every change of a block map goes through _apply or drop_all_blocks, which
        # forget the file's entries.
        self._digests: dict[int, dict[int, bytes]] = {}
        self._map_changes = 0
        # Fragments of freed extents, deleted only after the metadata that dropped them is
        # durable (invariant 2); digests listed here are not rewritten until then.
        self.doomed: dict[bytes, list[tuple[int, int]]] = {}
        # The doomed of the deletion round under way (their files are being removed).
        self.deleting: dict[bytes, list[tuple[int, int]]] = {}
        # Seals mostly wait for fragment file writes: more in flight overlap more. Each holds
        # one block copy and its fragments, so larger blocks get fewer: eight of 1 MiB, two of
        # 4 MiB (eight 4 MiB ec:4+2 seals took the daemon to 419 MiB, over its 406 MiB target).
        self.seal_limiter = trio.CapacityLimiter(max(2, min(8, SEAL_BYTES // block_size)))
        self.nursery: trio.Nursery | None = None
        self.request_deletion_flush: Callable[[], trio.Event] = lambda: _set_event()

    @property
    def dirty_bytes(self) -> int:
        return self._dirty_bytes

    @dirty_bytes.setter
    def dirty_bytes(self, value: int) -> None:
        self._dirty_bytes = value
        self._fit_clean()

    def _fit_clean(self) -> None:
        self.clean.resize(self.cache_size - self._dirty_bytes - self._held - self._squeeze)

    def memory_high(self, resident: int) -> bool:
        """Whether the process holds more than the cache size plus MEMORY_OVERHEAD."""
        return self._memory_over(resident) > 0

    def _memory_over(self, resident: int) -> int:
        return resident - (self.cache_size + MEMORY_OVERHEAD)

    def memory_check(self, resident: int) -> None:
        """Shrink the clean cache while the process holds more than the cache size plus
        MEMORY_OVERHEAD, and let it grow back as memory comes down (as ZFS's ARC gives way
        to memory pressure).

        The budget counts the data the cache holds, not what the heap keeps around it: after
        random writes free thousands of small runs, new 4 MiB blocks no longer fit in the
        holes, and an ec:4+2 daemon measured up to ~200 MiB over its cache. Called after
        malloc_trim with the resident set size: every second, and within 0.2 s while
        memory_high.
        """
        over = self._memory_over(resident)
        # At most the share dirty data never takes: beyond it there is nothing left to drop.
        room = max(0, self.cache_size - self.dirty_limit)
        squeeze = min(max(0, self._squeeze + over), room)
        if squeeze != self._squeeze:
            if not self._squeeze:
                self.stats.incr("cache_squeezes")
            self._squeeze = squeeze
            self._fit_clean()

    @contextmanager
    def _holding(self, nbytes: int) -> Iterator[None]:
        """Count `nbytes` held by a seal or fetch against the cache while it runs."""
        self._held += nbytes
        self._fit_clean()
        try:
            yield
        finally:
            self._held -= nbytes
            self._fit_clean()

    # -- file state --------------------------------------------------------------------------

    def state(self, ino: int, *, keep: bool = True) -> FileState:
        """The live state of a file; `keep=False` gives a throwaway one for pure reads."""
        fs = self.files.get(ino)
        if fs is None:
            row = mino.get_inode(self.db, ino)
            if row is None:
                raise FsError(errno.ENOENT)
            policy = Policy.parse(row.policy) if row.policy else self.default_policy()
            fs = FileState(ino, row.size, row.mtime_ns, row.ctime_ns, policy)
            if keep:
                self.files[ino] = fs
        return fs

    def overlay(self, row: mino.InodeRow) -> mino.InodeRow:
        """The live view of an inode row: size, times and an allocation estimate."""
        fs = self.files.get(row.id)
        if fs is None or not fs.busy:
            return row
        extra = sum(b.nbytes for b in fs.dirty.values()) + sum(
            p.extent.length for p in fs.pending.values() if p.extent is not None)
        return mino.InodeRow(
            row.id, row.mode, row.uid, row.gid, fs.size, row.nlink, row.rdev, row.atime_ns,
            fs.mtime_ns, max(fs.ctime_ns, row.ctime_ns), row.policy,
            min(row.alloc + extra, fs.size + self.bs),
        )

    def touch(self, ino: int, mtime_ns: int | None = None, ctime_ns: int | None = None) -> None:
        """Record time changes of a file that has a live state (kept with its next commit)."""
        fs = self.files.get(ino)
        if fs is not None:
            if mtime_ns is not None:
                fs.mtime_ns = mtime_ns
            if ctime_ns is not None:
                fs.ctime_ns = ctime_ns

    def defer_times(self, ino: int, mtime_ns: int | None, ctime_ns: int) -> bool:
        """Set times of a file with uncommitted changes, to be committed with them; False if
        it has none (then the caller stores the times itself)."""
        fs = self.files.get(ino)
        if fs is None or not fs.busy:
            return False
        self.touch(ino, mtime_ns, ctime_ns)
        fs.meta_gen += 1
        return True

    # -- reading -----------------------------------------------------------------------------

    async def _extent_data(
        self, digest: bytes, load: Callable[[], bytes], what: str, prefetch: bool = False
    ) -> bytes:
        data = self.clean.get(digest)
        while data is None:
            busy = self._loading.get(digest)
            if busy is not None:
                # Someone is already fetching it (a readahead, say): share the result.
                await busy.wait()
                data = self.clean.get(digest)
                continue
            busy = self._loading[digest] = trio.Event()
            try:
                with self._holding(self.bs):  # the fragments read, until decoded
                    data = await trio.to_thread.run_sync(load)
            except ExtentUnreadable as exc:
                log.error("%s: %s", what, exc)
                raise FsError(errno.EIO) from None
            finally:
                del self._loading[digest]
                busy.set()
            self.clean.put(digest, data, prefetched=prefetch)
        return data

    def _known_digest(self, ino: int, idx: int) -> bytes | None:
        """The digest a read last found for committed block idx (None: not remembered)."""
        known = self._digests.get(ino)
        return None if known is None else known.get(idx)

    async def _committed_block(self, ino: int, idx: int) -> bytes | None:
        digest = self._known_digest(ino, idx)
        if digest is not None:
            data = self.clean.get(digest)
            if data is not None:
                return data
        changes = self._map_changes
        ext = self._committed_extent(ino, idx)
        if ext is None:
            return None
        frags = [(f.idx, f.disk) for f in mext.get_fragments(self.db, ext.id)]
        return await self._load_committed(ino, idx, ext, frags, changes)

    async def _load_committed(
        self, ino: int, idx: int, ext: mext.ExtentRow, frags: list[tuple[int, int]],
        changes: int, prefetch: bool = False,
    ) -> bytes:
        """Read committed block idx from `ext`, looked up when the map had seen `changes`."""
        what = f"inode {ino} block {idx}"
        data = await self._extent_data(ext.hash, lambda: self.store.read(
            ext.hash, ext.length, ext.codec_id, ext.k, ext.m, frags, what), what, prefetch)
        if changes == self._map_changes:  # else the mapping may be stale already
            if len(self._digests) >= _DIGEST_FILES:
                self._digests.clear()
            self._digests.setdefault(ino, {})[idx] = ext.hash
        return data

    def _committed_extent(self, ino: int, idx: int) -> mext.ExtentRow | None:
        """The extent the committed block map names for block idx (None for a hole)."""
        eid = mext.block_extent(self.db, ino, idx)
        if eid is None:
            return None
        ext = mext.get_extent(self.db, eid)
        if ext is None:
            log.error("inode %d block %d points at missing extent %d", ino, idx, eid)
            raise FsError(errno.EIO)
        return ext

    def _map_changed(self, ino: int) -> None:
        """The block map of `ino` changes: forget what reads learnt of it."""
        self._digests.pop(ino, None)
        self._forget_ahead(ino)
        self._map_changes += 1

    async def _pending_block(self, ino: int, idx: int, pe: PendingExtent) -> bytes:
        what = f"inode {ino} block {idx}"
        if pe.sealed is not None:
            se = pe.sealed
            frags = [(i, d) for i, d, _ in se.fragments]
            return await self._extent_data(pe.digest, lambda: self.store.read(
                se.digest, se.length, se.codec_id, se.k, se.m, frags, what), what)
        assert pe.extent_id is not None
        ext = mext.get_extent(self.db, pe.extent_id)
        assert ext is not None, "a pinned extent is never freed"
        frags = [(f.idx, f.disk) for f in mext.get_fragments(self.db, pe.extent_id)]
        return await self._extent_data(ext.hash, lambda: self.store.read(
            ext.hash, ext.length, ext.codec_id, ext.k, ext.m, frags, what), what)

    async def _base_data(self, ino: int, idx: int, base: PendingExtent | None) -> bytes | None:
        """The content of a dirty block's base, pinned while it loads."""
        if base is None:
            return None
        base.users += 1
        try:
            return await self._pending_block(ino, idx, base)
        finally:
            self._release(base)

    async def block(self, fs: FileState, idx: int) -> bytes | bytearray | None:
        """The current content of block idx (None for a hole); may be shorter than a block."""
        db = fs.dirty.get(idx)
        if db is not None:
            full = db.complete()
            if full is not None:
                return full
            # Merged for this read only: converting the block would charge the whole block
            # to the dirty budget for the sake of one small read.
            base_len, runs = db.snapshot()
            return materialize(await self._base_data(fs.ino, idx, db.base), base_len, runs)
        pb = fs.pending.get(idx)
        if pb is not None:
            return None if pb.extent is None else await self._pending_block(
                fs.ino, idx, pb.extent)
        if fs.trunc_from is not None and idx >= fs.trunc_from:
            return None
        return await self._committed_block(fs.ino, idx)

    async def read(self, ino: int, offset: int, size: int) -> bytes | memoryview:
        """The file's bytes in [offset, offset + size), short at EOF.

        A read inside one stored block is a view of it, not a copy: pyfuse3 writes the reply
        to the kernel straight from the block, where copying it out first cost a megabyte
        copy per request on the trio thread, with the GIL held (ec:4+2 cold 1 GiB reads,
        six runs each: 664 -> 724 MiB/s median). Only immutable blocks are lent out this
        way; a dirty block's bytes are copied, as they may change after this returns.
        """
        fs = self.state(ino, keep=False)
        end = min(offset + size, fs.size)
        if offset >= end:
            return b""
        bs = self.bs
        parts: list[bytes | memoryview] = []
        pos = offset
        while pos < end:
            idx, start = divmod(pos, bs)
            stop = min(bs, end - idx * bs)
            data = await self.block(fs, idx)
            if stop == bs:
                self._read_on(fs, idx)
                self._consumed(fs.ino, idx)
            if data is None:
                chunk: bytes | memoryview = bytes(stop - start)
            elif type(data) is bytes and len(data) >= stop:
                chunk = memoryview(data)[start:stop]
            else:
                chunk = bytes(memoryview(data)[start:stop])  # one copy, not slice + bytes()
                if len(chunk) < stop - start:
                    chunk += bytes(stop - start - len(chunk))
            parts.append(chunk)
            pos = idx * bs + stop
        self.stats.incr("read_bytes", end - offset)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # -- writing -----------------------------------------------------------------------------

    async def _wait_for_space(self) -> None:
        while self.dirty_bytes > self.dirty_limit:
            self.stats.incr("dirty_throttled")
            self._seal_oldest()
            async with self._space_freed:
                await self._space_freed.wait()

    def _seal_oldest(self) -> None:
        for fs in list(self.files.values()):
            for idx in list(fs.dirty):
                if idx not in fs.sealing:
                    self.start_seal(fs, idx)
                    return

    def _pin_base(self, fs: FileState, idx: int) -> PendingExtent | None:
        """The extent holding block idx now (None for a hole), pinned for a dirty block."""
        pb = fs.pending.get(idx)
        if pb is not None:
            pe = pb.extent
        elif fs.trunc_from is not None and idx >= fs.trunc_from:
            return None
        else:
            row = self._committed_extent(fs.ino, idx)
            if row is None:
                return None
            pe = self._pending_by_digest.get(row.hash)
            if pe is None:
                pe = self._pending_by_digest[row.hash] = PendingExtent(
                    row.hash, row.length, None, row.id)
        if pe is not None:
            pe.users += 1
        return pe

    def _dirty_block(
        self, fs: FileState, idx: int, covers_all: bool
    ) -> DirtyBlock[PendingExtent]:
        """The dirty block idx, made over the block's current content unless overwritten."""
        db = fs.dirty.get(idx)
        if db is not None and db.frozen:
            # A commit cut holds this one by reference: write on a copy. The frozen one stays
            # counted in the dirty budget until the cut's seal is done with it.
            db.detached = True
            db = fs.dirty[idx] = db.clone()
            if db.base is not None:
                db.base.users += 1
            self.dirty_bytes += db.nbytes
        if db is None:
            # Only the live part of the old content counts: stale bytes past EOF (left by an
            # uncommitted shrink) must read back as zeros.
            live = max(0, min(self.bs, fs.size - idx * self.bs))
            base = None if covers_all or not live else self._pin_base(fs, idx)
            db = fs.dirty[idx] = DirtyBlock(base, live if base is not None else 0)
        return db

    def _edit(self, db: DirtyBlock[PendingExtent], delta: int, base: PendingExtent | None) -> None:
        """Account an edit of a dirty block; unpin its base if the edit made it irrelevant."""
        self.dirty_bytes += delta
        if base is not None and db.base is None:
            self._release(base)

    async def write(self, ino: int, offset: int, data: bytes, *, stamp: bool = True) -> int:
        """Write `data` at `offset`; `stamp` sets mtime/ctime to now (unless the kernel does)."""
        if not data:
            return 0
        await self._wait_for_space()
        bs = self.bs
        # No await from here on: the write is one step no other task can interleave with,
        # so it needs no lock (a dirty block never waits for its old content).
        fs = self.state(ino)
        if fs.error is not None:
            err, fs.error = fs.error, None
            raise FsError(err)
        pos, view, end = offset, memoryview(data), offset + len(data)
        while pos < end:
            idx, start = divmod(pos, bs)
            n = min(bs - start, end - pos)
            # Old content is not needed when this write replaces all of it that is live.
            covers = idx * bs >= fs.size or (start == 0 and (n == bs or pos + n >= fs.size))
            db = self._dirty_block(fs, idx, covers)
            base = db.base
            # A write within one block goes in as the caller's object: DirtyBlock keeps bytes
            # without copying them.
            chunk = data if n == len(data) else view[pos - offset:pos - offset + n]
            self._edit(db, db.write(start, chunk), base)
            fs.dirty_gen[idx] = fs.tick()
            pos += n
            # A block written to its end is sealed now if it is whole in memory (written
            # sequentially); a random write that lands last stays dirty to gather more.
            if start + n == bs and db.whole:
                self.start_seal(fs, idx)
        fs.size = max(fs.size, end)
        if stamp:
            fs.mtime_ns = fs.ctime_ns = now_ns()
        fs.meta_gen += 1
        self.stats.incr("write_bytes", len(data))
        return len(data)

    async def truncate(self, ino: int, size: int) -> None:
        fs = self.state(ino)  # no await below: see write
        bs = self.bs
        if size < fs.size:
            cut = -(-size // bs)  # first block wholly beyond the new end
            clock = fs.tick()
            fs.cuts.append((size // bs, clock))
            for idx in [i for i in fs.dirty if i >= cut]:
                self._drop_dirty(fs, idx)
            for idx in [i for i in fs.pending if i >= cut]:
                self._release(fs.pending.pop(idx).extent)
            fs.trunc_from = cut if fs.trunc_from is None else min(fs.trunc_from, cut)
            fs.trunc_gen += 1
            if size % bs:
                # The block holding the new end keeps only its head: make it dirty, cut.
                idx = size // bs
                db = self._dirty_block(fs, idx, False)
                base = db.base
                self._edit(db, db.truncate(size - idx * bs), base)
                fs.dirty_gen[idx] = fs.tick()
        fs.size = size
        fs.mtime_ns = fs.ctime_ns = now_ns()
        fs.meta_gen += 1

    def _drop_dirty(self, fs: FileState, idx: int) -> None:
        db = fs.dirty.pop(idx)
        fs.dirty_gen.pop(idx, None)
        self.dirty_bytes -= db.nbytes
        self._release(db.base)

    async def _content(self, ino: int, idx: int, db: DirtyBlock[PendingExtent]) -> bytes:
        """The bytes a seal stores for a dirty block.

        Copies are made here, inside the seal limiter, so at most as many exist as seals run
        (a copy per queued seal used to hold hundreds of MiB outside the dirty budget). The
        runs are copied before awaiting the base unless the block is frozen (then they cannot
        change); the base is pinned while it loads.
        """
        full = db.complete()
        if full is not None:
            return bytes(full)
        base, base_len = db.base, db.base_len
        runs = zip(db.starts, db.runs, strict=True) if db.frozen else db.snapshot()[1]
        if db.whole:
            # Runs kept apart (a block written in large requests): joined in a worker thread,
            # so that copying the block does not hold up the trio thread.
            return await trio.to_thread.run_sync(materialize, None, 0, list(runs))
        if base is None:
            return materialize(None, base_len, runs)
        base.users += 1
        try:
            data = await self._pending_block(ino, idx, base)
        finally:
            self._release(base)
        return materialize(data, base_len, runs)

    def _thaw(self, db: DirtyBlock[PendingExtent]) -> None:
        """A commit cut is done with a frozen block."""
        if db.detached:
            # Replaced by its copy meanwhile: nothing else accounts for it any more.
            self.dirty_bytes -= db.nbytes
            self._release(db.base)
        db.frozen = db.detached = False

    # -- sealing -----------------------------------------------------------------------------

    def start_seal(self, fs: FileState, idx: int) -> None:
        """Seal block idx in the background (no-op if a seal of it is already running)."""
        if idx in fs.sealing or idx not in fs.dirty:
            return
        assert self.nursery is not None
        done = trio.Event()
        fs.sealing[idx] = done
        self.seals_running += 1
        self.nursery.start_soon(self._seal, fs, idx, done)

    async def _seal(self, fs: FileState, idx: int, done: trio.Event) -> None:
        try:
            async with self.seal_limiter:
                # The block as it is when the seal really starts (it may be gone by now).
                db = fs.dirty.get(idx)
                if db is None or self.files.get(fs.ino) is not fs:
                    return
                gen = fs.dirty_gen[idx]
                keep = self._worth_caching(db)
                try:
                    data = await self._content(fs.ino, idx, db)
                    pe = await self._store_extent(
                        data, fs.policy, f"inode {fs.ino} block {idx}")
                except FsError as exc:
                    fs.error = exc.errno
                    log.error("inode %d: could not store block %d: %s", fs.ino, idx, exc)
                    self.stats.incr("seal_errors")
                    if fs.dirty_gen.get(idx) == gen:
                        self._drop_dirty(fs, idx)  # reported at fsync/close, as Linux does
                else:
                    self._accept_seal(fs, idx, gen, pe, data if keep else None)
        finally:
            del fs.sealing[idx]
            self.seals_running -= 1
            done.set()
            async with self._space_freed:
                self._space_freed.notify_all()

    def _seal_bytes(self, policy: Policy) -> int:
        """What storing a block holds: the block and, under erasure coding, its parity (the
        data shards are views of the block; replicas are the block itself)."""
        return self.bs + (-(-self.bs // policy.k) * policy.m if policy.kind == "ec" else 0)

    @staticmethod
    def _worth_caching(db: DirtyBlock[PendingExtent]) -> bool:
        """Whether a sealed block's bytes go to the clean cache: only those written in pieces
        over older content, whose next partial write needs them as its base. A block written
        whole (sequentially) stays in the kernel's page cache anyway; caching it too filled
        the clean cache during every large write (a daemon peak of 420 MiB instead of ~300)."""
        return not db.whole

    def _accept_seal(
        self, fs: FileState, idx: int, gen: int, pe: PendingExtent | None, data: bytes | None
    ) -> None:
        """Make a finished seal the block's pending content unless something newer exists."""
        stale = gen <= fs.committed_gen.get(idx, 0) or any(
            idx >= first and gen <= at for first, at in fs.cuts)
        current = fs.pending.get(idx)
        if stale or (current is not None and current.gen > gen) or self.files.get(
                fs.ino) is not fs:
            self._release(pe)
            return
        if current is not None:
            self._release(current.extent)
        fs.pending[idx] = PendingBlock(pe, gen)  # takes over the reference we were handed
        if fs.dirty_gen.get(idx) == gen:
            self._drop_dirty(fs, idx)
            if pe is not None and data is not None:
                self.clean.put(pe.digest, data)
        if len(fs.sealing) <= 1:
            fs.cuts.clear()  # no seal that started before a cut is still running

    async def _store_extent(
        self, data: bytes, policy: Policy, what: str
    ) -> PendingExtent | None:
        """A referenced PendingExtent holding `data` (None for all zeros: a hole)."""
        if data == self._zero[:len(data)]:
            return None
        if len(data) <= _HASH_HERE:
            digest = blake3_digest(data)
        else:
            digest = await trio.to_thread.run_sync(blake3_digest, data)
        while True:
            pe = self._pending_by_digest.get(digest)
            if pe is not None:
                pe.users += 1
                self.stats.incr("dedup_hits")
                return pe
            busy = self._sealing_digest.get(digest)
            if busy is not None:
                await busy.wait()
                continue
            if digest in self.doomed or digest in self.deleting:
                await self.request_deletion_flush().wait()
                continue
            break
        row = mext.find_extent(self.db, digest)
        if row is not None:
            pe = PendingExtent(digest, row.length, None, row.id, users=1)
            self._pending_by_digest[digest] = pe
            self.stats.incr("dedup_hits")
            return pe
        busy = self._sealing_digest[digest] = trio.Event()
        stored_as = policy.for_extent(len(data), self.store.fragment_overhead)
        if stored_as != policy:
            self.stats.incr("small_extents_replicated")
            policy = stored_as
        try:
            with self._holding(self._seal_bytes(policy)):
                try:
                    sealed = await trio.to_thread.run_sync(
                        self._write_deferred, data, policy, digest)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC or not self.doomed:
                        raise
                    # Freed extents still hold space until their deletion round: run it, retry.
                    await self.request_deletion_flush().wait()
                    sealed = await trio.to_thread.run_sync(
                        self._write_deferred, data, policy, digest)
        except OSError as exc:
            raise FsError(exc.errno or errno.EIO, f"{what}: {exc}") from None
        finally:
            del self._sealing_digest[digest]
            busy.set()
        pe = PendingExtent(digest, len(data), sealed, None, users=1)
        self._pending_by_digest[digest] = pe
        return pe

    def _write_deferred(self, data: bytes, policy: Policy, digest: bytes) -> SealedExtent:
        # Not durable yet: the commit that first references it syncs it (_make_durable). Only
        # whole blocks, a large file's stream, start their writeback at once: the fsync of a
        # small file's fragments costs less in the commit's batch than queued one by one.
        return self.store.write(data, policy, digest, durable=False,
                                writeback=len(data) >= self.bs)

    async def wait_idle(self) -> None:
        """Wait until no background seal runs (also those of files deleted meanwhile, whose
        results become orphans to delete)."""
        while self.seals_running:
            async with self._space_freed:
                await self._space_freed.wait()

    def in_use(self, digest: bytes) -> bool:
        """Whether fragments of `digest` are being written, awaited by a commit or deleted."""
        return (digest in self._pending_by_digest or digest in self._sealing_digest
                or digest in self.doomed or digest in self.deleting)

    def _release(self, pe: PendingExtent | None) -> None:
        """Drop one user of a pending extent; forget it (and its fragments) when unused."""
        if pe is None:
            return
        pe.users -= 1
        if pe.users > 0:
            return
        if self._pending_by_digest.get(pe.digest) is pe:
            del self._pending_by_digest[pe.digest]
        if pe.extent_id is None:
            # Never committed: its fragments are orphans now.
            assert pe.sealed is not None
            self.doomed.setdefault(pe.digest, []).extend(
                (i, d) for i, d, _ in pe.sealed.fragments)
        else:
            row = mext.get_extent(self.db, pe.extent_id)
            if row is not None and row.refcount == 0:
                with self.db.transaction():
                    self.free_extent(pe.extent_id)

    def forget_file(self, ino: int) -> None:
        """Drop all cached state of a deleted file (its uncommitted data is garbage)."""
        fs = self.files.pop(ino, None)
        if fs is None:
            return
        for idx in list(fs.dirty):
            self._drop_dirty(fs, idx)
        for pb in fs.pending.values():
            self._release(pb.extent)
        fs.pending.clear()


def _set_event() -> trio.Event:
    ev = trio.Event()
    ev.set()
    return ev
