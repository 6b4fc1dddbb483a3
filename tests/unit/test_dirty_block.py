"""DirtyBlock against a plain bytearray model: any mix of writes and truncates over a base."""

from __future__ import annotations

from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamicfs.engine.dirty import DirtyBlock, materialize

BS = 256

ops = st.lists(
    st.one_of(
        st.tuples(st.just("w"), st.integers(0, BS - 1), st.integers(1, 64), st.integers(0, 255)),
        st.tuples(st.just("t"), st.integers(0, BS), st.just(0), st.just(0)),
    ),
    max_size=40,
)


def content(block: DirtyBlock, base: bytes) -> bytes:
    return bytes(materialize(base if block.needs_base else None, *block.snapshot()))


@pytest.mark.parametrize("apart", [DirtyBlock.KEEP_APART, 16])
@settings(max_examples=400, deadline=None)
@given(base=st.binary(max_size=BS), live=st.integers(0, BS), ops=ops)
def test_matches_a_bytearray(apart: int, base: bytes, live: int, ops: list) -> None:
    """With the real KEEP_APART every write here is small and touching runs merge; with 16,
    writes of 16 bytes or more are kept apart from runs they only touch."""
    # The model: the live part of the base (zeros where the base is shorter), edited in place.
    model = bytearray(base[:live]) + bytes(max(0, live - len(base)))
    block: DirtyBlock[str] = DirtyBlock("ref" if live else None, live)
    with patch.object(DirtyBlock, "KEEP_APART", apart):
        check_ops(block, model, base, apart, ops)


def check_ops(block: DirtyBlock, model: bytearray, base: bytes, apart: int, ops: list) -> None:
    for kind, a, n, fill in ops:
        if kind == "w":
            n = min(n, BS - a)
            data = bytes([fill]) * n
            if len(model) < a:
                model.extend(bytes(a - len(model)))
            model[a:a + n] = data
            block.write(a, data)
        else:
            del model[a:]
            block.truncate(a)
        assert block.nbytes == sum(len(r) for r in block.runs)
        # A block may end before the model where the model holds only zeros: reads pad a
        # short block with zeros up to the file size.
        got = content(block, base)
        assert block.length == len(got) <= len(model)
        assert got == bytes(model[:len(got)]) and not any(model[len(got):])
        # Runs stay sorted and disjoint; they touch only where writes were kept apart.
        ends = [s + len(r) for s, r in zip(block.starts, block.runs, strict=True)]
        gaps = [s - e for e, s in zip(ends[:-1], block.starts[1:], strict=True)]
        assert all(g > 0 for g in gaps) if apart > BS else all(g >= 0 for g in gaps)
        if not block.needs_base:
            assert block.base is None
        if block.whole:
            assert b"".join(block.runs) == got
    full = block.complete()
    if full is not None:
        assert block.whole and bytes(full) == content(block, base)


def test_sequential_writes_extend_one_run_without_copying_the_block() -> None:
    block: DirtyBlock[str] = DirtyBlock(None, 0)
    for i in range(16):
        assert block.write(i * 16, bytes([i]) * 16) == 16
    assert len(block.runs) == 1 and block.nbytes == 256
    assert block.complete() == b"".join(bytes([i]) * 16 for i in range(16))


def test_large_sequential_writes_are_kept_as_they_came() -> None:
    """A 4 MiB block written in 1 MiB requests keeps the four request objects (no copy on
    the trio thread); it is whole, joined when sealed. A small write that only touches
    them merges as before, and one that overlaps merges what it overlaps."""
    block: DirtyBlock[str] = DirtyBlock(None, 0)
    parts = [bytes([i]) * (1 << 20) for i in range(4)]
    for i, part in enumerate(parts):
        block.write(i << 20, part)
    assert all(r is p for r, p in zip(block.runs, parts, strict=True))
    assert block.starts == [0, 1 << 20, 2 << 20, 3 << 20]
    assert block.whole and block.complete() is None and block.nbytes == 4 << 20
    assert materialize(None, *block.snapshot()) == b"".join(parts)
    block.write(4 << 20, b"tail")  # small: merges into the run it touches
    assert len(block.runs) == 4 and block.runs[3][-4:] == b"tail"
    block.write((1 << 20) - 2, b"XYZW")  # overlaps the first two: they become one run
    assert block.starts == [0, 2 << 20, 3 << 20] and block.whole
    assert materialize(None, *block.snapshot())[(1 << 20) - 2:(1 << 20) + 2] == b"XYZW"
    # A gap: no longer whole.
    gapped: DirtyBlock[str] = DirtyBlock(None, 0)
    gapped.write(0, parts[0])
    gapped.write(2 << 20, parts[2])
    assert not gapped.whole


def test_random_small_writes_count_only_written_bytes() -> None:
    block: DirtyBlock[str] = DirtyBlock("old", 1 << 20)
    for off in (0x1000, 0x8000, 0x30000):
        block.write(off, b"x" * 4096)
    assert block.nbytes == 3 * 4096 and block.needs_base and block.base == "old"
    # Overwriting all of the live base makes the base irrelevant.
    block.write(0, bytes(1 << 20))
    assert not block.needs_base and block.base is None and block.nbytes == 1 << 20


def test_materialize_returns_one_immutable_block() -> None:
    got = materialize(b"a" * 10, 8, [(2, bytearray(b"XY")), (12, b"Z")])
    assert type(got) is bytes and got == b"aaXYaaaa\0\0\0\0Z"
