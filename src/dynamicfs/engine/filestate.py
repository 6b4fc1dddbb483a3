"""The in-memory state of file data: pending extents, per-file state, the clean LRU.

The types `blockcache.BlockCache` works on (see its docstring for the life of a block); kept
apart so the mechanism there reads without the bookkeeping here.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import trio

from ..codec import Policy
from ..store.extents import SealedExtent
from .dirty import DirtyBlock


@dataclass(eq=False)
class PendingExtent:
    """An extent some uncommitted block map will point at, shared by all its users.

    `sealed` holds fragments this mount wrote (not yet in the database, and not durable until
    a commit syncs them); `extent_id` is set once a database row exists. While `users` > 0 the
    extent is pinned: a refcount drop to zero does not free it, since a commit is about to
    reference it. `lost`: its fragments failed to sync and could not be rebuilt.
    """

    digest: bytes
    length: int
    sealed: SealedExtent | None
    extent_id: int | None
    users: int = 0
    lost: bool = False


@dataclass(eq=False)
class PendingBlock:
    extent: PendingExtent | None  # None: the block becomes a hole
    gen: int


@dataclass(eq=False)
class FileState:
    """The in-memory state of one file with uncommitted or cached changes."""

    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    policy: Policy
    clock: int = 0
    dirty: dict[int, DirtyBlock[PendingExtent]] = field(default_factory=dict)
    dirty_gen: dict[int, int] = field(default_factory=dict)
    sealing: dict[int, trio.Event] = field(default_factory=dict)
    pending: dict[int, PendingBlock] = field(default_factory=dict)
    # Committed blocks at or after this index are gone (a truncate not yet committed).
    trunc_from: int | None = None
    # (first cut block, clock at the cut): seal results older than a cut are stale.
    cuts: list[tuple[int, int]] = field(default_factory=list)
    # Newest generation committed per block: an older seal finishing late is stale too.
    committed_gen: dict[int, int] = field(default_factory=dict)
    # Bumped by every change of size/times, and by every truncate; a commit compares them
    # with the values at its cut to know whether it captured the newest state.
    meta_gen: int = 0
    committed_meta_gen: int = 0
    trunc_gen: int = 0
    error: int | None = None
    commit_lock: trio.Lock = field(default_factory=trio.Lock)

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    @property
    def busy(self) -> bool:
        return bool(self.dirty or self.sealing or self.pending or self.trunc_from is not None
                    or self.meta_gen != self.committed_meta_gen)


class CleanCache:
    """An LRU of verified extent plaintexts, keyed by digest, bounded in bytes.

    The bound moves: clean data gets whatever part of the cache dirty data does not hold.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._items: OrderedDict[bytes, bytes] = OrderedDict()
        self._prefetched: set[bytes] = set()  # brought in by readahead, not yet read to the end

    def get(self, digest: bytes) -> bytes | None:
        data = self._items.get(digest)
        if data is not None:
            self._items.move_to_end(digest)
        return data

    def contains(self, digest: bytes) -> bool:
        """Whether digest is cached, without counting as a use."""
        return digest in self._items

    def put(self, digest: bytes, data: bytes, *, prefetched: bool = False) -> None:
        if len(data) > self.limit or digest in self._items:
            return
        self._items[digest] = data
        self.used += len(data)
        if prefetched:
            self._prefetched.add(digest)
        self._evict()

    def drop_prefetched(self, digest: bytes) -> None:
        """Forget digest if readahead brought it in (a reader has now consumed it)."""
        if digest in self._prefetched:
            self._prefetched.discard(digest)
            data = self._items.pop(digest, None)
            if data is not None:
                self.used -= len(data)

    def resize(self, limit: int) -> None:
        self.limit = max(0, limit)
        self._evict()

    def _evict(self) -> None:
        while self.used > self.limit:
            digest, old = self._items.popitem(last=False)
            self.used -= len(old)
            self._prefetched.discard(digest)
