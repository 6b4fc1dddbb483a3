"""File commits: a file's cut, made durable and recorded in one transaction.

`BlockCache` (blockcache.py) keeps the data of files in memory and seals it into extents; this
part turns what is sealed into metadata: it syncs the fragments a commit will reference (data
before metadata, invariant 1 of DESIGN.md), writes the block map, sizes and times of one cut
of a file in one transaction, and keeps extent reference counts. A mixin of `BlockCache`,
split off by verb; the attributes it uses are `BlockCache`'s, listed below.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import trio

from ..errors import FsError
from ..meta import Database
from ..meta import extents as mext
from ..meta import inodes as mino
from ..obs.stats import Stats
from ..store.extents import ExtentStore
from .filestate import CleanCache, FileState, PendingBlock, PendingExtent

if TYPE_CHECKING:
    from ..codec import Policy
    from .dirty import DirtyBlock

log = logging.getLogger(__name__)


class FileCommits:
    """Committing, syncing and reference counting for `BlockCache`."""

    db: Database
    store: ExtentStore
    stats: Stats
    files: dict[int, FileState]
    clean: CleanCache
    seal_limiter: trio.CapacityLimiter
    doomed: dict[bytes, list[tuple[int, int]]]
    _pending_by_digest: dict[bytes, PendingExtent]
    _syncing: dict[bytes, trio.Event]

    if TYPE_CHECKING:  # provided by BlockCache
        def _release(self, pe: PendingExtent | None) -> None: ...
        def _thaw(self, db: DirtyBlock[PendingExtent]) -> None: ...
        def _drop_dirty(self, fs: FileState, idx: int) -> None: ...
        def _map_changed(self, ino: int) -> None: ...
        def forget_file(self, ino: int) -> None: ...
        def _worth_caching(self, db: DirtyBlock[PendingExtent]) -> bool: ...
        async def _content(
            self, ino: int, idx: int, db: DirtyBlock[PendingExtent]) -> bytes: ...
        async def _store_extent(
            self, data: bytes, policy: Policy, what: str) -> PendingExtent | None: ...

    def free_extent(self, extent_id: int) -> None:
        """Within a transaction: forget an extent with no references unless it is pinned."""
        row = mext.get_extent(self.db, extent_id)
        if row is None or row.refcount > 0:
            return
        pe = self._pending_by_digest.get(row.hash)
        if pe is not None and pe.users > 0:
            return
        frags = mext.delete_extent(self.db, extent_id)
        self.doomed.setdefault(row.hash, []).extend((f.idx, f.disk) for f in frags)
        self.stats.incr("extents_freed")

    def _unref(self, extent_id: int) -> int:
        """Within a transaction: drop one reference; returns the extent's length."""
        row = mext.get_extent(self.db, extent_id)
        if row is None:
            return 0
        if mext.decref(self.db, extent_id):
            self.free_extent(extent_id)
        return row.length

    async def commit_file(self, fs: FileState) -> None:
        """Commit the file exactly as it is now, in one transaction (not yet durable).

        The cut is taken without an await, so it is one state the file really had: the
        pending blocks and a snapshot of the dirty ones, with the size and times of that
        instant. Dirty snapshots are sealed first; writes go on meanwhile and are left for the
        next commit. Commits of one file are serialised so an older cut never lands last.
        """
        async with fs.commit_lock:
            # Seals already running turn dirty blocks into pending ones: waiting for them is
            # cheaper than hashing and storing the same bytes again for the cut.
            for done in list(fs.sealing.values()):
                await done.wait()
            if self.files.get(fs.ino) is not fs:
                return
            blocks = dict(fs.pending)
            for pb in blocks.values():
                if pb.extent is not None:
                    pb.extent.users += 1  # ours until the transaction references it
            # Dirty blocks are frozen rather than copied: a write to one meanwhile copies it.
            snaps = {idx: (db, fs.dirty_gen[idx]) for idx, db in fs.dirty.items()}
            for db, _ in snaps.values():
                db.frozen = True
            size, mtime_ns, ctime_ns = fs.size, fs.mtime_ns, fs.ctime_ns
            trunc_from, trunc_gen, meta_gen = fs.trunc_from, fs.trunc_gen, fs.meta_gen
            if not blocks and not snaps and trunc_from is None and meta_gen == \
                    fs.committed_meta_gen:
                return
            try:
                await self._seal_snapshots(fs, snaps, blocks)
                await self._make_durable(fs, blocks)
            except BaseException:
                for db, _ in snaps.values():
                    self._thaw(db)
                for pb in blocks.values():
                    self._release(pb.extent)
                raise
            if self.files.get(fs.ino) is not fs:
                # Deleted while its blocks were sealed or synced (the last name and handle
                # went: forget_file dropped its state and freed its blocks): what this cut
                # captured is garbage now, and the inode row may stay until FORGET.
                for pb in blocks.values():
                    self._release(pb.extent)
                return
            try:
                if not self._apply(fs, blocks, size, mtime_ns, ctime_ns, trunc_from):
                    self.forget_file(fs.ino)
                    return
            finally:
                for pb in blocks.values():
                    self._release(pb.extent)
            # Retire what this commit made permanent, unless something newer replaced it.
            for idx, pb in blocks.items():
                cur = fs.pending.get(idx)
                if cur is not None and cur.gen <= pb.gen:
                    self._release(fs.pending.pop(idx).extent)
                if fs.dirty_gen.get(idx, pb.gen + 1) <= pb.gen:
                    self._drop_dirty(fs, idx)
                fs.committed_gen[idx] = max(pb.gen, fs.committed_gen.get(idx, 0))
            if fs.trunc_gen == trunc_gen:
                fs.trunc_from = None
            fs.committed_meta_gen = meta_gen
            self.stats.incr("file_commits")
            if not fs.busy:
                del self.files[fs.ino]

    async def _seal_snapshots(
        self, fs: FileState, snaps: dict[int, tuple[DirtyBlock[PendingExtent], int]],
        blocks: dict[int, PendingBlock],
    ) -> None:
        """Seal frozen dirty blocks into `blocks` (replacing older pending ones); each is
        thawed as soon as it is stored, and all of them if this fails."""
        failed: list[FsError] = []

        async def seal(idx: int, db: DirtyBlock[PendingExtent], gen: int) -> None:
            try:
                async with self.seal_limiter:
                    keep = self._worth_caching(db)
                    data = await self._content(fs.ino, idx, db)
                    self._thaw(db)
                    pe = await self._store_extent(data, fs.policy, f"inode {fs.ino} block {idx}")
            except FsError as exc:
                failed.append(exc)
                return
            old = blocks.get(idx)
            blocks[idx] = PendingBlock(pe, gen)
            if old is not None:
                self._release(old.extent)
            if pe is not None and keep:
                self.clean.put(pe.digest, data)

        async with trio.open_nursery() as nursery:
            for idx, (db, gen) in snaps.items():
                nursery.start_soon(seal, idx, db, gen)
        if failed:
            self.stats.incr("seal_errors", len(failed))
            log.error("inode %d: could not store %d blocks: %s", fs.ino, len(failed), failed[0])
            raise failed[0]

    def _apply(
        self, fs: FileState, blocks: dict[int, PendingBlock], size: int, mtime_ns: int,
        ctime_ns: int, trunc_from: int | None,
    ) -> bool:
        """The commit transaction; False if the inode is gone (deleted meanwhile)."""
        self._map_changed(fs.ino)
        with self.db.transaction():
            row = mino.get_inode(self.db, fs.ino)
            if row is None:
                return False
            alloc = row.alloc
            if trunc_from is not None:
                for eid in mext.drop_blocks_from(self.db, fs.ino, trunc_from, keep=set(blocks)):
                    alloc -= self._unref(eid)
            for idx, pb in blocks.items():
                pe = pb.extent
                if pe is None:
                    old = mext.drop_block(self.db, fs.ino, idx)
                else:
                    if pe.extent_id is None:
                        se = pe.sealed
                        assert se is not None and se.durable, "data before metadata"
                        pe.extent_id = mext.add_extent(
                            self.db, se.digest, se.length, se.codec_id, se.k, se.m,
                            se.fragments)
                    mext.incref(self.db, pe.extent_id)
                    old = mext.set_block(self.db, fs.ino, idx, pe.extent_id)
                    alloc += pe.length
                if old is not None:
                    alloc -= self._unref(old)
            mino.update_inode(self.db, fs.ino, size=size, mtime_ns=mtime_ns,
                              ctime_ns=max(ctime_ns, row.ctime_ns), alloc=max(0, alloc))
        return True

    async def flush_file(self, ino: int) -> None:
        """Commit everything of one file written so far (not yet durable: Engine.fsync)."""
        fs = self.files.get(ino)
        if fs is None:
            return
        try:
            await self.commit_file(fs)
        except FsError as exc:
            fs.error = None
            raise FsError(exc.errno) from None
        if fs.error is not None:
            err, fs.error = fs.error, None
            raise FsError(err)

    async def flush_all(self) -> None:
        # One batch of fsyncs for everything sealed so far, rather than one per file.
        try:
            await self._sync_extents([pe for pe in self._pending_by_digest.values()
                                      if pe.users > 0])
        except OSError as exc:
            log.error("syncing sealed data failed: %s", exc)
        for ino in list(self.files):
            try:
                await self.flush_file(ino)
            except FsError as exc:
                log.error("inode %d: data lost at flush: %s", ino, exc)

    async def _sync_extents(self, pes: list[PendingExtent]) -> None:
        """Make sealed extents durable, sharing the work with syncs already running."""
        while True:
            todo = {pe.digest: pe for pe in pes
                    if pe.sealed is not None and not pe.sealed.durable and not pe.lost}
            waits = [ev for d in todo if (ev := self._syncing.get(d)) is not None]
            mine = [pe for d, pe in todo.items() if d not in self._syncing]
            if not mine and not waits:
                return
            if mine:
                done = trio.Event()
                for pe in mine:
                    self._syncing[pe.digest] = done
                try:
                    results = await trio.to_thread.run_sync(
                        self.store.sync, [pe.sealed for pe in mine])
                finally:
                    for pe in mine:
                        del self._syncing[pe.digest]
                    done.set()
                for pe, se in zip(mine, results, strict=True):
                    if se is not None:
                        pe.sealed = se
                        continue
                    # The store removed its fragments; a new seal of the same bytes must
                    # write them again rather than share this extent.
                    pe.lost = True
                    pe.sealed = replace(pe.sealed, fragments=[])
                    if self._pending_by_digest.get(pe.digest) is pe:
                        del self._pending_by_digest[pe.digest]
            for ev in waits:
                await ev.wait()

    async def _make_durable(self, fs: FileState, blocks: dict[int, PendingBlock]) -> None:
        """Sync what a commit of `blocks` will reference (data before metadata).

        Blocks whose extent was lost (its fragments failed to sync beyond repair) leave the
        commit and the file: their last committed content stays, and the file reports EIO at
        its next flush or fsync, as a disk filesystem does after a writeback error.
        """
        await self._sync_extents([pb.extent for pb in blocks.values() if pb.extent is not None])
        lost = [idx for idx, pb in blocks.items() if pb.extent is not None and pb.extent.lost]
        for idx in lost:
            pb = blocks.pop(idx)
            cur = fs.pending.get(idx)
            if cur is not None and cur.extent is pb.extent:
                self._release(fs.pending.pop(idx).extent)
            self._release(pb.extent)
        if lost:
            self.stats.incr("blocks_lost", len(lost))
            log.error("inode %d: %d blocks lost: their fragments could not be made durable",
                      fs.ino, len(lost))
            fs.error = errno.EIO

    def drop_all_blocks(self, ino: int) -> None:
        """Within a transaction: release every block of a file being deleted."""
        self._map_changed(ino)
        for eid in mext.drop_blocks_from(self.db, ino, 0):
            self._unref(eid)
