"""Property tests of the codecs: any data under any parameters comes back from any sufficient
subset of fragments, and insufficient or damaged input is refused, never mis-decoded."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamicfs.codec import (
    CODEC_EC,
    CODEC_REP,
    DecodeError,
    ErasureCodec,
    Policy,
    ReplicationCodec,
    blake3_digest,
    get_codec,
    policy_for_codec,
)

DATA = st.binary(max_size=3000)


@st.composite
def ec_case(draw):
    k = draw(st.integers(1, 10))
    m = draw(st.integers(1, 5))
    data = draw(DATA)
    subset = draw(st.sets(st.integers(0, k + m - 1), min_size=k, max_size=k + m))
    return k, m, data, subset


@settings(max_examples=300, deadline=None)
@given(ec_case())
def test_any_k_shards_decode_to_the_data(case):
    k, m, data, subset = case
    codec = ErasureCodec(k, m)
    shards = codec.encode(data)
    assert len(shards) == k + m
    assert {len(s) for s in shards} == {codec.shard_size(len(data))}
    assert codec.decode({i: shards[i] for i in subset}, len(data)) == data


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), st.integers(1, 4), DATA)
def test_erasure_code_is_systematic(k, m, data):
    shards = ErasureCodec(k, m).encode(data)
    assert b"".join(shards[:k])[:len(data)] == data


@settings(max_examples=100, deadline=None)
@given(ec_case())
def test_fewer_than_k_shards_are_refused(case):
    k, m, data, subset = case
    codec = ErasureCodec(k, m)
    shards = codec.encode(data)
    few = sorted(subset)[:k - 1]
    if not data:
        return  # zero-length shards: nothing to reconstruct, covered below
    with pytest.raises(DecodeError):
        codec.decode({i: shards[i] for i in few}, len(data))


def test_data_shards_are_views_of_the_block_not_copies():
    # A seal holds a block and its fragments at once: copied shards cost another block.
    data = os.urandom(4 * 4096)
    shards = ErasureCodec(4, 2).encode(data)
    assert all(isinstance(s, memoryview) and s.obj is data for s in shards[:4])
    assert b"".join(shards[:4]) == data


def test_shards_of_the_wrong_size_are_not_used():
    codec = ErasureCodec(2, 1)
    data = bytes(range(100))
    shards = codec.encode(data)
    with pytest.raises(DecodeError):
        codec.decode({0: shards[0], 2: shards[2][:-1]}, len(data))
    assert codec.decode({0: shards[0], 1: shards[1], 2: shards[2][:-1]}, len(data)) == data


def test_empty_extent_round_trips():
    codec = ErasureCodec(4, 2)
    shards = codec.encode(b"")
    assert shards == [b""] * 6
    assert codec.decode({5: b"", 1: b"", 2: b"", 3: b""}, 0) == b""


@pytest.mark.parametrize("k,m", [(0, 1), (1, 0), (200, 57)])
def test_erasure_parameters_checked(k, m):
    with pytest.raises(ValueError):
        ErasureCodec(k, m)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5), DATA, st.data())
def test_any_replica_decodes(copies, data, draw):
    codec = ReplicationCodec(copies)
    replicas = codec.encode(data)
    assert len(replicas) == copies
    i = draw.draw(st.integers(0, copies - 1))
    assert codec.decode({i: replicas[i]}, len(data)) == data


def test_replicas_of_the_wrong_length_or_index_are_refused():
    codec = ReplicationCodec(2)
    with pytest.raises(DecodeError):
        codec.decode({0: b"abc"}, 4)
    with pytest.raises(DecodeError):
        codec.decode({2: b"abcd"}, 4)
    with pytest.raises(DecodeError):
        codec.decode({}, 4)


@given(st.one_of(
    st.integers(1, 16).map(lambda n: f"rep:{n}"),
    st.tuples(st.integers(1, 32), st.integers(1, 16)).filter(lambda t: sum(t) <= 48)
    .map(lambda t: f"ec:{t[0]}+{t[1]}"),
))
def test_policy_round_trips_through_text_and_codec_fields(text):
    policy = Policy.parse(text)
    assert str(policy) == text
    assert policy_for_codec(policy.codec_id, policy.k, policy.m) == policy
    codec = get_codec(policy)
    assert codec.codec_id == policy.codec_id
    assert len(codec.encode(b"xyz")) == policy.n_fragments


@pytest.mark.parametrize("text", ["rep:0", "rep:17", "ec:0+1", "ec:2+0", "ec:40+9", "raid5",
                                  "rep:2x", "ec:2-1", ""])
def test_invalid_policies_refused(text):
    with pytest.raises(ValueError):
        Policy.parse(text)


def test_policy_properties():
    assert Policy.parse(" REP:3 ").tolerates == 2
    ec = Policy.parse("ec:4+2")
    assert (ec.n_fragments, ec.min_fragments, ec.tolerates, ec.codec_id) == (6, 4, 2, CODEC_EC)
    assert Policy.parse("rep:1").codec_id == CODEC_REP
    with pytest.raises(DecodeError):
        policy_for_codec(9, 1, 1)


@pytest.mark.parametrize("size", [0, 1, 1 << 20, (1 << 20) + 3])
def test_blake3_digest_same_on_every_path(size):
    import blake3

    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert blake3_digest(data) == blake3.blake3(data).digest()
    assert blake3_digest(memoryview(data)) == blake3_digest(data)


@pytest.mark.parametrize("length,stored_as", [
    (1, "rep:3"), (4096 - 128, "rep:3"),  # one block either way per fragment: 3 beat 6
    (4096, "rep:3"),  # 3 x 2 blocks = 6 x 1 block: a tie goes to fewer files
    (8192, "ec:4+2"), (16384, "ec:4+2"), (1 << 20, "ec:4+2"),
])
def test_small_extents_of_an_ec_policy_are_replicated(length, stored_as):
    assert str(Policy.parse("ec:4+2").for_extent(length, 128)) == stored_as


@settings(max_examples=300, deadline=None)
@given(k=st.integers(1, 16), m=st.integers(1, 8), length=st.integers(0, 1 << 20),
       overhead=st.sampled_from([0, 128, 4096]))
def test_extent_policy_never_costs_space_or_safety(k, m, length, overhead):
    """Whatever it picks survives as many lost disks as the file's policy, and takes no more
    4 KiB blocks than erasure coding would."""
    policy = Policy("ec", k, m)
    chosen = policy.for_extent(length, overhead)
    assert chosen.tolerates == policy.tolerates

    def blocks(p: Policy) -> int:
        payload = -(-length // p.k) if p.kind == "ec" else length
        return p.n_fragments * -(-(payload + overhead) // 4096)

    assert blocks(chosen) <= blocks(policy)
    for text in ("rep:1", "rep:3"):
        assert Policy.parse(text).for_extent(length, overhead) == Policy.parse(text)
