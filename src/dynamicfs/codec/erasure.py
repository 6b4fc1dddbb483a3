"""Reed-Solomon codec over zfec: K data shards + M parity shards, systematic.

zfec is C-backed and GPL-2+ (compatible with DynamicFS's licence); its shards 0..K-1 are the
data itself, so a healthy read joins them without decoding. The extent is padded with zeros
to a multiple of K; the true length is recorded in the fragment header and the extent row.
"""

from __future__ import annotations

from functools import lru_cache

import zfec

from .policy import CODEC_EC
from .replication import DecodeError


@lru_cache(maxsize=64)
def _encoder(k: int, n: int) -> zfec.Encoder:
    return zfec.Encoder(k, n)


@lru_cache(maxsize=64)
def _decoder(k: int, n: int) -> zfec.Decoder:
    return zfec.Decoder(k, n)


class ErasureCodec:
    codec_id = CODEC_EC

    def __init__(self, k: int, m: int) -> None:
        if k < 1 or m < 1 or k + m > 256:
            raise ValueError(f"invalid erasure code parameters k={k} m={m}")
        self.k = k
        self.m = m

    def shard_size(self, length: int) -> int:
        return -(-length // self.k) if length else 0

    def encode(self, data: bytes) -> list[bytes | memoryview]:
        """The k data shards (views of `data`, padded with zeros) and the m parity shards.

        Views, not copies: a seal of a 4 MiB block held a second 4 MiB for its shards (two
        seals at a time), and payloads are only written and hashed, never changed.
        """
        size = self.shard_size(len(data))
        if size == 0:
            return [b""] * (self.k + self.m)
        padded = data + bytes(size * self.k - len(data))  # data itself when no padding
        view = memoryview(padded)
        shards = [view[i * size:(i + 1) * size] for i in range(self.k)]
        parity = _encoder(self.k, self.k + self.m).encode(
            tuple(shards), tuple(range(self.k, self.k + self.m)))
        return [*shards, *(bytes(p) for p in parity)]

    def decode(self, fragments: dict[int, bytes], length: int) -> bytes:
        size = self.shard_size(length)
        good = {i: p for i, p in fragments.items()
                if 0 <= i < self.k + self.m and len(p) == size}
        if len(good) < self.k:
            raise DecodeError(f"{len(good)} usable shards, need {self.k}")
        if size == 0:
            return b""
        if all(i in good for i in range(self.k)):
            return b"".join(good[i] for i in range(self.k))[:length]
        nums = sorted(good)[: self.k]
        primary = _decoder(self.k, self.k + self.m).decode(
            [good[i] for i in nums], nums)
        return b"".join(bytes(p) for p in primary)[:length]

    def data_indexes(self, length: int) -> range:
        return range(self.k)

    def can_join(self, fragments: dict[int, bytes]) -> bool:
        return sum(1 for i in fragments if 0 <= i < self.k + self.m) >= self.k
