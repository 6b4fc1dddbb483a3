"""DirtyBlock against a plain bytearray model: any mix of writes and truncates over a base."""

from __future__ import annotations

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


@settings(max_examples=400, deadline=None)
@given(base=st.binary(max_size=BS), live=st.integers(0, BS), ops=ops)
def test_matches_a_bytearray(base: bytes, live: int, ops: list) -> None:
    # The model: the live part of the base (zeros where the base is shorter), edited in place.
    model = bytearray(base[:live]) + bytes(max(0, live - len(base)))
    block: DirtyBlock[str] = DirtyBlock("ref" if live else None, live)
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
        # Runs stay sorted, disjoint and never touching (touching ones merge).
        ends = [s + len(r) for s, r in zip(block.starts, block.runs, strict=True)]
        assert all(e < s for e, s in zip(ends[:-1], block.starts[1:], strict=True))
        if not block.needs_base:
            assert block.base is None
    full = block.complete()
    if full is not None:
        assert bytes(full) == content(block, base)


def test_sequential_writes_extend_one_run_without_copying_the_block() -> None:
    block: DirtyBlock[str] = DirtyBlock(None, 0)
    for i in range(16):
        assert block.write(i * 16, bytes([i]) * 16) == 16
    assert len(block.runs) == 1 and block.nbytes == 256
    assert block.complete() == b"".join(bytes([i]) * 16 for i in range(16))


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
