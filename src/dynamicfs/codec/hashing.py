"""Content hashing: BLAKE3-256 names extents and checks every fragment payload."""

from __future__ import annotations

import blake3

HASH_LEN = 32

# Below this size thread start-up costs more than it saves.
_MT_THRESHOLD = 1 << 20


def blake3_digest(data: bytes | memoryview) -> bytes:
    """The 32-byte BLAKE3 digest of `data`."""
    if len(data) >= _MT_THRESHOLD:
        return blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest()
    return blake3.blake3(data).digest()
