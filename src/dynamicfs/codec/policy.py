"""Redundancy policies: `rep:N` (N full replicas) or `ec:K+M` (Reed-Solomon, K data + M parity)."""

from __future__ import annotations

import re
from dataclasses import dataclass

CODEC_REP = 1
CODEC_EC = 2

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
