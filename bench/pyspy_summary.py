"""A profile as tables: where each kind of daemon thread spent its samples.

`bench/run.py --profile` records py-spy twice at once: a flame graph (SVG) to browse, and the
same kind of samples in py-spy's "raw" collapsed format, one line per distinct stack:

    thread (TID): THREAD NAME;func (file:line);func (file:line);... COUNT

This module turns the raw file into markdown that fits a report: for each kind of thread (the
trio thread that answers FUSE requests, trio's worker threads, the store's pools, ...) its share
of the samples, and the functions those samples were in. py-spy drops samples of threads it
sees waiting, but it reads their state without stopping the daemon and does not always see
a wait (a `Condition.wait`, trio's `epoll` call): such rows are waits, not work.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# A function is left out of a thread kind's table when most samples are under it and hardly
# any in it (the daemon's start-up chain, trio's run loop, a pool's worker loop): it says
# nothing about where the time went.
SPINE_INCLUSIVE = 0.5
SPINE_OWN = 0.02


@dataclass
class ThreadKind:
    name: str
    tids: set[str] = field(default_factory=set)
    samples: int = 0
    inclusive: Counter[str] = field(default_factory=Counter)
    own: Counter[str] = field(default_factory=Counter)


def thread_kind(name: str) -> str:
    """Threads of one pool share a kind: trio names its workers after the job they run
    ("blake3_digest from ...BlockCache._seal") or "Trio thread N" when idle between jobs."""
    if not name:
        return "threads py-spy could not name"
    if name == "MainThread":
        return "trio thread (FUSE requests)"
    if name.startswith("Trio thread") or " from " in name:
        return "trio worker threads"
    return re.sub(r"[-_ ]?\d+$", "", name) or name


def function(frame: str) -> str:
    """`func (file:line)` -> `func (file)`: a function's share, not one line's."""
    return re.sub(r":\d+\)$", ")", frame)


def parse(text: str) -> dict[str, ThreadKind]:
    kinds: dict[str, ThreadKind] = {}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack.startswith("thread (") or not count.isdigit():
            continue
        head, *frames = stack.split(";")
        # "thread (TID): NAME", or "thread (TID)" for a thread py-spy read no name of.
        tid, _, tname = head.removeprefix("thread (").partition(")")
        tname = tname.removeprefix(": ")
        name = thread_kind(tname)
        kind = kinds.get(name)
        if kind is None:
            kind = kinds[name] = ThreadKind(name)
        n = int(count)
        kind.tids.add(tid)
        kind.samples += n
        funcs = [function(f) for f in frames]
        for f in set(funcs):
            kind.inclusive[f] += n
        if funcs:
            kind.own[funcs[-1]] += n
    return kinds


def summarize(text: str, *, title: str, rate: int, seconds: float, top: int = 12) -> str:
    """Markdown: a table of thread kinds, then each busy kind's functions."""
    kinds = sorted(parse(text).values(), key=lambda k: -k.samples)
    total = sum(k.samples for k in kinds)
    out = [f"### {title}", "",
           f"{seconds:.1f} s sampled at {rate} Hz, {total:,} samples. Waits py-spy saw are "
           "not sampled; `Condition.wait`, `WorkerThread._work` and `get_events` (epoll) "
           "are waits it did not see.", ""]
    if not total:
        return "\n".join([*out, "No samples.", ""])
    out += ["| threads | how many | samples | of all samples |",
            "| --- | ---: | ---: | ---: |"]
    for k in kinds:
        out.append(f"| {k.name} | {len(k.tids)} | {k.samples:,} | {k.samples / total:.0%} |")
    out.append("")
    for k in kinds:
        if k.samples < 0.05 * total:
            continue
        rows = [(f, n) for f, n in k.inclusive.most_common()
                if n < SPINE_INCLUSIVE * k.samples or k.own[f] >= SPINE_OWN * k.samples][:top]
        out += [f"**{k.name}**: functions by share of its samples (inclusive, and in the "
                "function itself)", "",
                "| function | inclusive | itself |", "| --- | ---: | ---: |"]
        out += [f"| `{f}` | {n / k.samples:.1%} | {k.own[f] / k.samples:.1%} |"
                for f, n in rows]
        out.append("")
    return "\n".join(out)


def summarize_file(raw: Path, *, title: str, rate: int, seconds: float) -> str:
    return summarize(raw.read_text(errors="replace"), title=title, rate=rate, seconds=seconds)
