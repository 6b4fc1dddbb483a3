"""Small operation sequences where crash bugs hide (after CrashMonkey's ACE).

Every case starts from the same durable state: `A` (three blocks: 150000 bytes) and `d0/B`
(70000 bytes) written and fsynced, the directory `d0` synced. Then up to three operations from
the menu below run, followed by one sync-type call, and power is lost either right after that
call returned ("after") or right before it was made ("before"). What must hold is what
crashlib.check derives from the journal: after the sync, everything before it is durable
(the engine syncs the whole metadata WAL on every fsync/fdatasync/fsyncdir); before it, the
pool is as the last durable point left it, and every file is a state it had.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from crashlib import Generator

BS = 64 * 1024

# name -> what it does to the generator's model (returns False when it does not apply).
Step = Callable[[Generator], bool]


def _has(g: Generator, path: str) -> bool:
    return path in g.model.ns


def _write(path: str, off: int | None, n: int, kind: str = "rand") -> Step:
    def step(g: Generator) -> bool:
        if not _has(g, path):
            return False
        start = g.sizes[g.model.ns[path]] if off is None else off
        g.emit({"op": "write", "p": path, "off": start, "n": n, "kind": kind})
        return True
    return step


def _trunc(path: str, size: int) -> Step:
    def step(g: Generator) -> bool:
        if not _has(g, path):
            return False
        g.emit({"op": "trunc", "p": path, "size": size})
        return True
    return step


def _simple(op: str, **paths: str) -> Step:
    def step(g: Generator) -> bool:
        src = paths.get("src") or paths.get("p")
        dst = paths.get("dst")
        if op in ("create", "mkdir"):
            if _has(g, paths["p"]) or not _has_parent(g, paths["p"]):
                return False
        elif not src or not _has(g, src):
            return False
        if op == "link" and (_has(g, dst) or g.model.kind[g.model.ns[src]] != "f"
                             or not _has_parent(g, dst)):
            return False
        if op == "rename":
            if not _has_parent(g, dst) or dst.startswith(src + "/"):
                return False
            if _has(g, dst) and g.model.kind[g.model.ns[dst]] != g.model.kind[g.model.ns[src]]:
                return False
            if _has(g, dst) and g.model.kind[g.model.ns[dst]] == "d" and g.model.children(dst):
                return False
        if op == "unlink" and g.model.kind[g.model.ns[src]] != "f":
            return False
        g.emit({"op": op, **paths})
        return True
    return step


def _has_parent(g: Generator, path: str) -> bool:
    head = path.rpartition("/")[0]
    return head == "" or (head in g.model.ns and g.model.kind[g.model.ns[head]] == "d")


MENU: dict[str, Step] = {
    "create C": _simple("create", p="C"),
    "create d0/C": _simple("create", p="d0/C"),
    "mkdir d1": _simple("mkdir", p="d1"),
    "overwrite A across blocks": _write("A", 60000, 70000),
    "append A": _write("A", None, 30000),
    "write C": _write("C", 0, 100000),
    "write B aligned dedup": _write("d0/B", 0, BS, "pat0"),
    "write A hole past EOF": _write("A", 300000, 5000),
    "truncate A shrink": _trunc("A", 50000),
    "truncate A to 0": _trunc("A", 0),
    "truncate B grow": _trunc("d0/B", 200000),
    "rename A -> d0/A2": _simple("rename", src="A", dst="d0/A2"),
    "rename d0/B -> A (replace)": _simple("rename", src="d0/B", dst="A"),
    "rename C -> A (replace)": _simple("rename", src="C", dst="A"),
    "rename d0 -> d1/d0": _simple("rename", src="d0", dst="d1/d0"),
    "link A -> d0/L": _simple("link", src="A", dst="d0/L"),
    "unlink A": _simple("unlink", p="A"),
    "unlink d0/B": _simple("unlink", p="d0/B"),
}

SYNCS = ("fsync last", "fdatasync last", "fsync other", "fsyncdir parent", "fsyncdir root")


def _generator(seed: int) -> tuple[Generator, list[dict]]:
    """A generator that has emitted the common durable set-up, and the list of its ops."""
    g = Generator(seed, block_size=BS)
    ops: list[dict] = []
    orig = g.emit

    def emit(op: dict) -> dict:
        ops.append(orig(op))
        return ops[-1]

    g.emit = emit  # type: ignore[method-assign]
    g.emit({"op": "mkdir", "p": "d0"})
    g.emit({"op": "create", "p": "A"})
    g.emit({"op": "write", "p": "A", "off": 0, "n": 150000, "kind": "rand"})
    g.emit({"op": "create", "p": "d0/B"})
    g.emit({"op": "write", "p": "d0/B", "off": 0, "n": 70000, "kind": "rand"})
    g.emit({"op": "fsync", "p": "A"})
    g.emit({"op": "fsync", "p": "d0/B"})
    g.emit({"op": "fsyncdir", "p": "d0"})
    return g, ops


def _touched(op: dict) -> str | None:
    return op.get("p") or op.get("dst")


@dataclass(frozen=True)
class Case:
    steps: tuple[str, ...]
    sync: str
    crash: str  # "after" (the sync returned) or "before" (it was never made)

    @property
    def name(self) -> str:
        return f"{' + '.join(self.steps)} | {self.sync} | crash {self.crash}"


def build(case: Case, seed: int = 1) -> tuple[list[dict], int] | None:
    """The ops of a case and the op index to crash at (None if the sequence does not apply)."""
    g, ops = _generator(seed)
    first = len(ops)
    for name in case.steps:
        if not MENU[name](g):
            return None
    if case.crash == "before":
        return ops, len(ops)
    model = g.model
    last = next((p for p in map(_touched, reversed(ops[first:])) if p in model.ns), None)
    if case.sync in ("fsync last", "fdatasync last"):
        if last is None or model.kind[model.ns[last]] != "f":
            return None
        g.emit({"op": case.sync.split()[0], "p": last})
    elif case.sync == "fsync other":
        others = [f for f in model.files() if f != last]
        if not others:
            return None
        g.emit({"op": "fsync", "p": others[0]})
    elif case.sync == "fsyncdir parent":
        if last is None:
            return None
        g.emit({"op": "fsyncdir", "p": last.rpartition("/")[0]})
    else:
        g.emit({"op": "fsyncdir", "p": ""})
    return ops, len(ops)


def all_cases(max_len: int = 3) -> Iterator[Case]:
    for n in range(1, max_len + 1):
        for steps in itertools.product(MENU, repeat=n):
            before = Case(steps, "no sync", "before")
            if build(before) is not None:
                yield before
            for sync in SYNCS:
                case = Case(steps, sync, "after")
                if build(case) is not None:
                    yield case
