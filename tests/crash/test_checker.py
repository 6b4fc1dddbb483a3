"""The crash checker itself must reject what the guarantees forbid (a checker that accepts
everything would make every crash test pass)."""

from __future__ import annotations

from crashlib import Generator, Model, Observed, apply_data, check

SEED = 7


def _workload() -> list[dict]:
    g = Generator(SEED)
    ops = [g.emit({"op": "create", "p": "a"}),
           g.emit({"op": "write", "p": "a", "off": 0, "n": 100000, "kind": "rand"}),
           g.emit({"op": "fsync", "p": "a"}),
           g.emit({"op": "write", "p": "a", "off": 50000, "n": 100000, "kind": "rand"}),
           g.emit({"op": "write", "p": "a", "off": 0, "n": 10, "kind": "rand"}),
           g.emit({"op": "rename", "src": "a", "dst": "b"}),
           g.emit({"op": "link", "src": "b", "dst": "c"})]
    return ops


def _content(ops: list[dict], upto: int) -> bytes:
    buf = bytearray()
    for op in ops[:upto]:
        if op["op"] in ("write", "trunc"):
            apply_data(buf, op, SEED)
    return bytes(buf)


def _seen(ops: list[dict], ns_prefix: int, data: bytes, inos: dict[str, int] | None = None
          ) -> Observed:
    m = Model()
    for op in ops[:ns_prefix]:
        m.apply(op)
    inos = inos or {}
    return Observed({p: ("f", inos.get(p, 100), data, None) for p in m.ns})


def test_accepts_every_allowed_state() -> None:
    ops = _workload()
    for j in (2, 4, 5):  # after the fsync: the fsynced state, or any newer one
        assert not check(ops, SEED, 7, 7, _seen(ops, 7, _content(ops, j))).violations


def test_rejects_lost_fsynced_data() -> None:
    ops = _workload()
    v = check(ops, SEED, 7, 7, _seen(ops, 7, b""))
    assert any("equal no state" in x for x in v.violations), v.violations


def test_rejects_a_mix_of_two_states() -> None:
    ops = _workload()
    old, new = _content(ops, 2), _content(ops, 4)
    # Block 0 of the newer state, block 1 of the fsynced one: never written together.
    mixed = new[:65536] + old[65536:] + new[len(old):]
    assert len(mixed) == len(new) and mixed not in (old, new, _content(ops, 5))
    v = check(ops, SEED, 7, 7, _seen(ops, 7, mixed))
    assert any("equal no state" in x for x in v.violations), v.violations


def test_rejects_garbage_and_read_errors() -> None:
    ops = _workload()
    garbage = bytes(len(_content(ops, 5)))
    assert check(ops, SEED, 7, 7, _seen(ops, 7, garbage)).violations
    seen = _seen(ops, 7, _content(ops, 5))
    seen.entries["b"] = ("f", 100, None, "read failed: EIO")
    assert any("EIO" in x for x in check(ops, SEED, 7, 7, seen).violations)


def test_rejects_a_lost_namespace_change() -> None:
    ops = _workload()
    # The rename (op 5) completed before the crash; showing the old name is a violation.
    v = check(ops, SEED, 7, 7, _seen(ops, 5, _content(ops, 5)))
    assert any("namespace" in x for x in v.violations), v.violations
    # ...unless it was the op in flight.
    assert not check(ops, SEED, 5, 6, _seen(ops, 5, _content(ops, 5))).violations


def test_rejects_hard_links_that_are_two_files() -> None:
    ops = _workload()
    v = check(ops, SEED, 7, 7, _seen(ops, 7, _content(ops, 5), {"b": 100, "c": 101}))
    assert any("link structure" in x for x in v.violations), v.violations


def test_commit_interval_bound() -> None:
    ops = _workload()
    old = _seen(ops, 7, _content(ops, 2))
    assert not check(ops, SEED, 7, 7, old).violations
    assert check(ops, SEED, 7, 7, old, must_have_before=5).violations


def test_torn_last_write_only_when_allowed_and_only_the_last() -> None:
    ops = _workload()
    before, after = _content(ops, 3), _content(ops, 4)
    torn = after[:65536] + before[65536:]  # op 3 applied to its first pages only
    torn = torn + bytes(len(after) - len(torn))
    assert check(ops, SEED, 7, 7, _seen(ops, 7, torn)).violations
    assert not check(ops, SEED, 7, 7, _seen(ops, 7, torn), allow_torn=True).violations


def test_generated_workloads_are_valid_posix_and_match_the_model(tmp_path) -> None:
    """Every op the generator emits succeeds on a local filesystem, and with no crash the
    checker accepts only the newest state (lo = hi = all ops)."""
    from mountlib import do_op, observe_tree

    for seed in (1, 2, 3):
        root = tmp_path / f"s{seed}"
        root.mkdir()
        g = Generator(seed)
        ops = g.setup() + [g.next() for _ in range(800)]
        for op in ops:
            do_op(root, op, seed)
        v = check(ops, seed, len(ops), len(ops), observe_tree(root))
        assert not v.violations, v.violations
        assert v.files_checked and v.exact_latest == v.files_checked
