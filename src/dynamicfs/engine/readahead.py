"""Readahead: fetching the next blocks of a sequential reader before it asks for them.

A cold read of a block is a fragment read and a BLAKE3 pass in a worker thread; a reader that
asks for one block at a time would wait for each in turn. Once a reader finishes a block, the
blocks after it are fetched in parallel into the clean cache, and dropped from it as the reader
passes them (the kernel's page cache has them by then). A mixin of `BlockCache`, split off by
verb; the attributes it uses are `BlockCache`'s, listed below.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

import trio

from ..errors import FsError
from ..meta import Database
from ..meta import extents as mext
from .filestate import CleanCache, FileState

# How far ahead of a sequential reader blocks are fetched (clean cache permitting): a cold
# fragment read is mostly waiting for the disk, so many in flight hide it (16 reads of 1 MiB
# fragments ran at ~1.7 GiB/s here, 4 at ~1.2).
READAHEAD_BYTES = 16 << 20
# Files whose readahead marker is kept at once (then the markers are started afresh).
_MARKED_FILES = 4096


class Readahead:
    """Fetching ahead of sequential readers for `BlockCache`."""

    db: Database
    bs: int
    clean: CleanCache
    nursery: trio.Nursery | None
    _map_changes: int

    if TYPE_CHECKING:  # provided by BlockCache
        def _known_digest(self, ino: int, idx: int) -> bytes | None: ...
        async def block(self, fs: FileState, idx: int) -> bytes | bytearray | None: ...
        async def _load_committed(
            self, ino: int, idx: int, ext: mext.ExtentRow, frags: list[tuple[int, int]],
            changes: int, prefetch: bool = False) -> bytes: ...

    def _init_readahead(self, block_size: int) -> None:
        self.readahead_blocks = max(1, min(16, READAHEAD_BYTES // block_size))
        self._prefetching: set[tuple[int, int]] = set()  # (ino, block) being fetched
        # ino -> the first block past what readahead has asked for (see _read_on).
        self._ahead: dict[int, int] = {}

    def _forget_ahead(self, ino: int) -> None:
        """The file's block map changes: its next reader starts a whole window."""
        self._ahead.pop(ino, None)

    def _readahead(self, fs: FileState, first: int, last: int) -> None:
        """Fetch blocks first..last in the background, so a sequential reader finds them decoded.

        Blocks already cached or being fetched are skipped without starting a task, and the
        committed ones are looked up in one query: the trio thread answers the reader's
        requests meanwhile, and every SQLite call on it lets go of the GIL, which sixteen
        fetching threads then keep for milliseconds.
        """
        if self.nursery is None:
            return
        ino = fs.ino
        last = min(last, (fs.size - 1) // self.bs)
        wanted: list[int] = []
        for idx in range(first, last + 1):
            if (ino, idx) in self._prefetching or idx in fs.dirty:
                continue
            digest = self._known_digest(ino, idx)
            if digest is not None and self.clean.contains(digest):
                continue
            wanted.append(idx)
        if not wanted:
            return
        committed: dict[int, tuple[mext.ExtentRow, list[tuple[int, int]]]] = {}
        if fs.trunc_from is None or fs.trunc_from > wanted[0]:
            committed = mext.committed_range(self.db, ino, wanted[0], wanted[-1])
        changes = self._map_changes
        for idx in wanted:
            if idx in fs.pending or (fs.trunc_from is not None and idx >= fs.trunc_from):
                fetch = self.block(fs, idx)
            elif idx in committed:
                ext, frags = committed[idx]
                fetch = self._load_committed(ino, idx, ext, frags, changes, prefetch=True)
            else:
                continue  # a hole: nothing to fetch
            self._prefetching.add((ino, idx))
            self.nursery.start_soon(self._prefetch, (ino, idx), fetch)

    def _read_on(self, fs: FileState, idx: int) -> None:
        """A reader finished block idx and reads on: keep the next blocks being fetched in
        parallel, so fragment reads and verification overlap the kernel's consumption.

        The window is topped up a quarter window at a time, not one block per block read:
        each top-up is a query on the trio thread, and one per block was 17% of that thread's
        samples in a cold 1 GiB read on rep:2 (bench/ANALYSIS.md, session 18). A quarter, not
        a half as the kernel's readahead does: ec:4+2's window is four 4 MiB blocks, and two
        ahead instead of four cost its cold reads ~10% (there a quarter is one block, as
        before). A reader outside the window asked for (it jumped) starts a whole window.
        """
        ahead = self.readahead_blocks
        asked = self._ahead.get(fs.ino)  # blocks before this one have been asked for
        if asked is not None and idx < asked <= idx + ahead + 1:
            if asked - 1 - idx > ahead - max(1, ahead // 4):
                return
            first = asked
        else:
            first = idx + 1
        if len(self._ahead) >= _MARKED_FILES:
            self._ahead.clear()
        self._ahead[fs.ino] = idx + ahead + 1
        self._readahead(fs, first, idx + ahead)

    async def _prefetch(self, key: tuple[int, int], fetch: Awaitable[object]) -> None:
        try:
            await fetch
        except FsError:
            pass  # the reader will meet (and report) the same error itself
        finally:
            self._prefetching.discard(key)

    def _consumed(self, ino: int, idx: int) -> None:
        """A reader reached the end of block idx: a prefetched copy has served its purpose.

        The kernel's page cache now holds those pages (keep_cache), so keeping a sequential
        stream's blocks here too would only double-cache them, push out what random readers
        need, and make every new buffer fresh memory to fault in (a cold 1 GiB read took
        ~76,000 page faults). Blocks that came in for a reader itself stay cached.
        """
        digest = self._known_digest(ino, idx)
        if digest is not None:
            self.clean.drop_prefetched(digest)
