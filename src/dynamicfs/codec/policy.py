"""Redundancy policies: `rep:N` (N full replicas) or `ec:K+M` (Reed-Solomon, K data + M parity)."""

from __future__ import annotations

import re
from dataclasses import dataclass

CODEC_REP = 1
CODEC_EC = 2

# The least a file takes on a disk: filesystems allocate whole blocks (ext4, XFS, Btrfs and
# ZFS with ashift=12 all use 4 KiB). What `Policy.for_extent` compares extents by.
ALLOC_UNIT = 4096

_REP_RE = re.compile(r"rep:(\d+)")
_EC_RE = re.compile(r"ec:(\d+)\+(\d+)")


@dataclass(frozen=True)
class Policy:
    """How an extent is spread over disks. For replication k=1 and m=N-1."""

    kind: str
    k: int
    m: int

    @classmethod
    def parse(cls, text: str) -> Policy:
        """Parse "rep:N" or "ec:K+M"; raises ValueError with a one-line message otherwise."""
        spec = text.strip().lower()
        if match := _REP_RE.fullmatch(spec):
            n = int(match.group(1))
            if not 1 <= n <= 16:
                raise ValueError(f"invalid policy {text!r}: rep:N needs 1 <= N <= 16")
            return cls("rep", 1, n - 1)
        if match := _EC_RE.fullmatch(spec):
            k, m = int(match.group(1)), int(match.group(2))
            if not (1 <= k <= 32 and 1 <= m <= 16 and k + m <= 48):
                raise ValueError(
                    f"invalid policy {text!r}: ec:K+M needs 1 <= K <= 32, 1 <= M <= 16, "
                    f"K+M <= 48")
            return cls("ec", k, m)
        raise ValueError(f"invalid policy {text!r}: expected rep:N or ec:K+M")

    def __str__(self) -> str:
        if self.kind == "rep":
            return f"rep:{self.k + self.m}"
        return f"ec:{self.k}+{self.m}"

    def for_extent(self, length: int, overhead: int) -> Policy:
        """The policy a new extent of `length` bytes is stored under.

        This one, except that under erasure coding an extent too small to gain from it is
        kept as M+1 replicas: the same number of lost disks survived, in no more space, and
        in fewer fragment files (a 2 KiB file under ec:4+2 is six fragments of one 4 KiB
        block each; as three replicas, three blocks). `overhead` is what each fragment file
        holds besides its payload (the fragment header). Every extent records its own codec,
        so reads, repair and fsck follow it whatever the file's policy says.
        """
        if self.kind != "ec" or length <= 0:
            return self

        def blocks(payload: int) -> int:
            return -(-(payload + overhead) // ALLOC_UNIT)

        coded = (self.k + self.m) * blocks(-(-length // self.k))
        replicated = (self.m + 1) * blocks(length)
        return Policy("rep", 1, self.m) if replicated <= coded else self

    @property
    def n_fragments(self) -> int:
        return self.k + self.m

    @property
    def min_fragments(self) -> int:
        return 1 if self.kind == "rep" else self.k

    @property
    def codec_id(self) -> int:
        return CODEC_REP if self.kind == "rep" else CODEC_EC

    @property
    def tolerates(self) -> int:
        """How many fragments may be lost with the extent still readable."""
        return self.n_fragments - self.min_fragments
