"""Codecs: BLAKE3 hashing, replication and Reed-Solomon erasure coding."""

from __future__ import annotations

from .erasure import ErasureCodec
from .hashing import HASH_LEN, blake3_digest
from .policy import CODEC_EC, CODEC_REP, Policy
from .replication import DecodeError, ReplicationCodec

Codec = ReplicationCodec | ErasureCodec


def get_codec(policy: Policy) -> Codec:
    """The codec that stores extents under `policy`."""
    if policy.kind == "rep":
        return ReplicationCodec(policy.n_fragments)
    return ErasureCodec(policy.k, policy.m)


def policy_for_codec(codec_id: int, k: int, m: int) -> Policy:
    """The policy an extent was written under, from the codec fields recorded with it."""
    if codec_id == CODEC_REP:
        return Policy("rep", 1, m)
    if codec_id == CODEC_EC:
        return Policy("ec", k, m)
    raise DecodeError(f"unknown codec id {codec_id}")


__all__ = [
    "CODEC_EC", "CODEC_REP", "HASH_LEN", "Codec", "DecodeError", "ErasureCodec", "Policy",
    "ReplicationCodec", "blake3_digest", "get_codec", "policy_for_codec",
]
