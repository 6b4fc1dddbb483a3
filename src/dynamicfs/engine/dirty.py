"""A dirty block: the bytes written to one block since it was last sealed, over a base.

A random 4 KiB write must not cost a 1 MiB read before it and a 1 MiB buffer while it waits:
only the written byte runs are kept, over the block's earlier content (the *base*), which is
read only when the block is read back or sealed. So the dirty-byte budget counts bytes really
written, and a block sealed under memory pressure carries every write it gathered meanwhile
rather than one (see docs/concurrency.md, "Dirty blocks").

The base is fixed when the block turns dirty: the caller pins the extent that held the block
then and hands it in as an opaque reference, so a seal that reads it later sees exactly the
content these runs were written over, not a newer one sealed meanwhile.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from typing import Generic, TypeVar

Ref = TypeVar("Ref")


class DirtyBlock(Generic[Ref]):
    """Written runs over the first `base_len` bytes of a base; nothing else of it is live.

    `base` is the pinned reference to the old content (None: a hole, read as zeros);
    `base_len` is how much of it still counts (a truncate or EOF cuts it). When the runs cover
    the whole live base, the base is dropped: the block is complete in memory.

    A write that touches no run is kept as the very `bytes` object it came in (the request
    buffer pyfuse3 made): a block written whole, as sequential writers do, is then never
    copied on the trio thread, neither here nor when sealed. A run is turned into a
    `bytearray` only when a later write merges into it. Runs that only touch merge, except
    when the new one is a `bytes` of at least KEEP_APART: a 4 MiB block written in 1 MiB
    requests is then four runs, joined once when sealed, where merging them copied each
    request into a growing bytearray on the trio thread (29% of its samples in an ec:4+2
    sequential write, bench/ANALYSIS.md session 18).
    """

    KEEP_APART = 64 << 10

    __slots__ = ("base", "base_len", "starts", "runs", "nbytes", "frozen", "detached")

    def __init__(self, base: Ref | None, base_len: int) -> None:
        self.base = base
        self.base_len = base_len
        self.starts: list[int] = []
        self.runs: list[bytes | bytearray] = []
        self.nbytes = 0  # bytes held in runs: what the dirty budget counts
        # A commit cut holds this block by reference: it must not change (copy on write).
        self.frozen = False
        # A frozen block replaced by its copy: the cut that holds it accounts for it.
        self.detached = False

    def clone(self) -> DirtyBlock[Ref]:
        """An unfrozen copy to write on (same base reference: the caller pins it again)."""
        other: DirtyBlock[Ref] = DirtyBlock(self.base, self.base_len)
        other.starts = list(self.starts)
        other.runs = [r if type(r) is bytes else bytearray(r) for r in self.runs]
        other.nbytes = self.nbytes
        return other

    @property
    def needs_base(self) -> bool:
        return self.base_len > 0

    @property
    def whole(self) -> bool:
        """Whether the runs alone are the block: no base needed, and they follow one another
        from 0 without a gap (one run, or runs kept apart)."""
        if self.base_len:
            return False
        pos = 0
        for s, r in zip(self.starts, self.runs, strict=True):
            if s != pos:
                return False
            pos += len(r)
        return True

    @property
    def length(self) -> int:
        end = self.starts[-1] + len(self.runs[-1]) if self.runs else 0
        return max(end, self.base_len)

    def write(self, start: int, data: bytes | memoryview) -> int:
        """Record `data` at `start`; returns the change in `nbytes`."""
        assert not self.frozen, "a frozen dirty block is copied before it is written"
        end = start + len(data)
        starts, runs = self.starts, self.runs
        # Runs lo..hi-1 overlap [start, end), or touch it unless it is kept apart: they merge
        # with the new bytes.
        apart = type(data) is bytes and len(data) >= self.KEEP_APART
        lo = bisect_right(starts, start) - 1
        if lo < 0 or starts[lo] + len(runs[lo]) < start or (
                apart and starts[lo] + len(runs[lo]) == start):
            lo += 1
        hi = (bisect_left if apart else bisect_right)(starts, end)
        before = sum(len(r) for r in runs[lo:hi])
        s0: int = start
        buf: bytes | bytearray
        if lo == hi and type(data) is bytes:
            buf = data  # immutable, so kept without a copy (see the class docstring)
        else:
            if lo < hi and starts[lo] <= start:
                s0, first = starts[lo], lo + 1
                buf = runs[lo] if type(runs[lo]) is bytearray else bytearray(runs[lo])
            else:
                buf, first = bytearray(), lo
            for j in range(first, hi):
                # A later run may reach past `end`: copy it whole, the new bytes go on top.
                off = starts[j] - s0
                if len(buf) < off:
                    buf.extend(bytes(off - len(buf)))
                buf[off:off + len(runs[j])] = runs[j]
            off = start - s0
            buf[off:off + len(data)] = data
        starts[lo:hi] = [s0]
        runs[lo:hi] = [buf]
        delta = len(buf) - before
        self.nbytes += delta
        if self.base_len and s0 == 0 and len(buf) >= self.base_len:
            self.base, self.base_len = None, 0  # every live byte of the base is overwritten
        return delta

    def truncate(self, keep: int) -> int:
        """Keep only the first `keep` bytes; returns the change in `nbytes`."""
        assert not self.frozen, "a frozen dirty block is copied before it is cut"
        self.base_len = min(self.base_len, keep)
        if not self.base_len:
            self.base = None
        cut = bisect_left(self.starts, keep)
        before = self.nbytes
        del self.starts[cut:]
        del self.runs[cut:]
        if self.runs and self.starts[-1] + len(self.runs[-1]) > keep:
            last, cut_at = self.runs[-1], keep - self.starts[-1]
            if type(last) is bytearray:
                del last[cut_at:]
            else:
                self.runs[-1] = last[:cut_at]
        self.nbytes = sum(len(r) for r in self.runs)
        return self.nbytes - before

    def snapshot(self) -> tuple[int, tuple[tuple[int, bytes], ...]]:
        """The runs as they are now (copied), with the live length of the base."""
        runs = zip(self.starts, self.runs, strict=True)
        return self.base_len, tuple((s, bytes(r)) for s, r in runs)

    def complete(self) -> bytes | bytearray | None:
        """The whole block as it is held, when it is `whole` in one run (or none), else None."""
        if len(self.runs) > 1 or not self.whole:
            return None
        return self.runs[0] if self.runs else bytearray()


def materialize(
    base: bytes | bytearray | None, base_len: int,
    runs: Iterable[tuple[int, bytes | bytearray]],
) -> bytes:
    """The block's content: `base_len` bytes of the base (zeros past its end), runs on top.

    `runs` are sorted and disjoint, as a DirtyBlock keeps them. The result is joined in one
    allocation: merging into a bytearray and then copying it to bytes for the store held two
    block-sized buffers per seal (8 MiB per seal with 4 MiB blocks, two seals at a time).
    """
    old = memoryview(base)[:base_len] if base is not None else memoryview(b"")
    pieces: list[bytes | bytearray | memoryview] = []
    pos = 0
    for s, r in [*runs, (base_len, b"")]:
        if s > pos:  # old content up to this run: the base, then zeros past its end
            have = max(pos, min(s, len(old)))
            pieces += [old[pos:have], bytes(s - have)]
        pieces.append(r)
        pos = max(pos, s + len(r))
    return b"".join(pieces)
