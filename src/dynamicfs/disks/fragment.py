"""The fragment file format: a fixed, self-describing header followed by the payload.

Header (version 1, 128 bytes, little-endian):

    magic "DYNFSFRG" | u16 format | u16 header length | 16 pool UUID | 32 extent id (BLAKE3)
    | u16 fragment index | u8 codec id | u8 k | u8 m | u8 reserved | u64 extent length
    | u64 payload length | 32 payload BLAKE3 | 8 header check (BLAKE3 of the bytes before it)
    | zero padding to 128

The header names everything needed to rebuild metadata from fragments alone (fsck
--rebuild-metadata) and to tell a fragment of another pool or extent from the right one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import blake3

MAGIC = b"DYNFSFRG"
FORMAT_VERSION = 1
HEADER_SIZE = 128
_BODY = struct.Struct("<8sHH16s32sHBBBBQQ32s")
_CHECK_LEN = 8


class FragmentError(Exception):
    """A fragment file exists but is not what it should be (corrupt, foreign, truncated)."""


class FragmentMissing(FragmentError):
    """The fragment file does not exist."""


@dataclass(frozen=True)
class FragmentHeader:
    pool_uuid: bytes
    extent_id: bytes
    index: int
    codec_id: int
    k: int
    m: int
    extent_length: int
    payload_length: int
    payload_hash: bytes

    def pack(self) -> bytes:
        body = _BODY.pack(
            MAGIC, FORMAT_VERSION, HEADER_SIZE, self.pool_uuid, self.extent_id, self.index,
            self.codec_id, self.k, self.m, 0, self.extent_length, self.payload_length,
            self.payload_hash,
        )
        check = blake3.blake3(body).digest()[:_CHECK_LEN]
        return (body + check).ljust(HEADER_SIZE, b"\0")

    @classmethod
    def unpack(cls, raw: bytes | memoryview, where: str = "fragment") -> FragmentHeader:
        if len(raw) < HEADER_SIZE:
            raise FragmentError(f"{where}: truncated header ({len(raw)} bytes)")
        body = bytes(raw[:_BODY.size])
        check = bytes(raw[_BODY.size:_BODY.size + _CHECK_LEN])
        (magic, version, hlen, pool, extent, index, codec, k, m, _reserved, elen, plen,
         phash) = _BODY.unpack(body)
        if magic != MAGIC:
            raise FragmentError(f"{where}: bad magic, not a DynamicFS fragment")
        if version > FORMAT_VERSION:
            raise FragmentError(f"{where}: fragment format {version} is newer than supported "
                                f"({FORMAT_VERSION})")
        if hlen != HEADER_SIZE or blake3.blake3(body).digest()[:_CHECK_LEN] != check:
            raise FragmentError(f"{where}: header checksum mismatch")
        return cls(pool, extent, index, codec, k, m, elen, plen, phash)
