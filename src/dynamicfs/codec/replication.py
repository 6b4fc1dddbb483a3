"""Replication codec: every fragment payload is the whole extent."""

from __future__ import annotations

from .policy import CODEC_REP


class DecodeError(ValueError):
    """Fragments given to a codec cannot reconstruct the extent."""


class ReplicationCodec:
    codec_id = CODEC_REP

    def __init__(self, copies: int) -> None:
        if copies < 1:
            raise ValueError(f"replication needs at least 1 copy, got {copies}")
        self.copies = copies

    def encode(self, data: bytes) -> list[bytes | memoryview]:
        # The same object N times: payloads are written, never mutated, so copies would only
        # cost memory.
        return [data] * self.copies

    def decode(self, fragments: dict[int, bytes], length: int) -> bytes:
        for index, payload in fragments.items():
            if not 0 <= index < self.copies:
                raise DecodeError(f"replica index {index} out of range 0..{self.copies - 1}")
            if len(payload) != length:
                raise DecodeError(
                    f"replica {index} holds {len(payload)} bytes, expected {length}")
            return bytes(payload)
        raise DecodeError("no replica available")

    def data_indexes(self, length: int) -> range:
        return range(1)

    def can_join(self, fragments: dict[int, bytes]) -> bool:
        return any(0 <= i < self.copies for i in fragments)
