"""The profile tables of `bench/run.py --profile` (issue 5): py-spy's raw stacks summed per
kind of thread and per function, as the report shows them."""

from __future__ import annotations

from types import ModuleType

import pyspy_summary
import pytest

RAW = """\
thread (10): MainThread;run (trio/_run.py:1);handler (fuse/ops.py:5);get_row (meta/db.py:9) 20
thread (10): MainThread;run (trio/_run.py:7);handler (fuse/ops.py:6) 10
thread (10): MainThread;run (trio/_run.py:2);get_events (trio/_epoll.py:3) 70
thread (11): blake3_digest from x._seal;_work (trio/_cache.py:1);blake3_digest (hashing.py:4) 40
thread (12): Trio thread 3;_work (trio/_cache.py:2);recurse (x.py:1);recurse (x.py:2) 10
thread (13): dynamicfs-io_0;_worker (concurrent/futures/thread.py:1) 3
thread (14): dynamicfs-io_1;_worker (concurrent/futures/thread.py:1) 2
thread (15);_work (trio/_cache.py:3) 1
not a stack line
"""


@pytest.fixture
def summary() -> ModuleType:
    return pyspy_summary


def test_threads_are_grouped_by_kind(summary: ModuleType) -> None:
    assert summary.thread_kind("MainThread") == "trio thread (FUSE requests)"
    assert summary.thread_kind("Trio thread 12") == "trio worker threads"
    assert summary.thread_kind("blake3_digest from x.y") == "trio worker threads"
    assert summary.thread_kind("dynamicfs-io_15") == "dynamicfs-io"
    assert summary.thread_kind("ThreadPoolExecutor-0_3") == "ThreadPoolExecutor-0"
    assert summary.thread_kind("") == "threads py-spy could not name"


def test_samples_are_summed_per_kind_and_per_function(summary: ModuleType) -> None:
    kinds = summary.parse(RAW)
    trio = kinds["trio thread (FUSE requests)"]
    assert trio.samples == 100 and trio.tids == {"10"}
    # Lines of one function count as one function; a stack counts once per function in it.
    assert trio.inclusive["handler (fuse/ops.py)"] == 30
    assert trio.own["handler (fuse/ops.py)"] == 10
    assert trio.own["get_row (meta/db.py)"] == 20
    assert trio.inclusive["run (trio/_run.py)"] == 100
    workers = kinds["trio worker threads"]
    assert workers.samples == 50 and workers.tids == {"11", "12"}
    assert workers.inclusive["recurse (x.py)"] == 10  # recursion is not counted twice
    assert kinds["dynamicfs-io"].samples == 5 and len(kinds["dynamicfs-io"].tids) == 2
    assert kinds["threads py-spy could not name"].tids == {"15"}
    assert set(kinds) == {"trio thread (FUSE requests)", "trio worker threads", "dynamicfs-io",
                          "threads py-spy could not name"}


def test_the_markdown_shows_shares_and_leaves_out_the_spine(summary: ModuleType) -> None:
    md = summary.summarize(RAW, title="seqread on rep:2", rate=250, seconds=0.62)
    lines = md.splitlines()
    assert lines[0] == "### seqread on rep:2"
    assert "0.6 s sampled at 250 Hz, 156 samples" in md
    assert "| trio thread (FUSE requests) | 1 | 100 | 64% |" in lines
    assert "| trio worker threads | 2 | 50 | 32% |" in lines
    assert "| dynamicfs-io | 2 | 5 | 3% |" in lines
    assert "| threads py-spy could not name | 1 | 1 | 1% |" in lines
    assert "| `handler (fuse/ops.py)` | 30.0% | 10.0% |" in lines
    assert "| `get_events (trio/_epoll.py)` | 70.0% | 70.0% |" in lines
    # trio's run loop and the worker threads' loop are under every sample of their threads
    # with none of their own: no rows for them.
    assert "run (trio/_run.py)" not in md
    assert "| `_work (trio/_cache.py)` | 100.0% | 0.0% |" not in lines
    assert "| `blake3_digest (hashing.py)` | 80.0% | 80.0% |" in lines
    # A kind with under 5% of the samples gets its line in the first table, no table.
    assert "**dynamicfs-io**" not in md and "**trio worker threads**" in md
    # Rows are in order of inclusive share.
    trio_rows = md.split("**trio thread (FUSE requests)**")[1].split("**")[0]
    assert trio_rows.index("get_events") < trio_rows.index("handler") < trio_rows.index("get_row")


def test_top_limits_the_rows(summary: ModuleType) -> None:
    md = summary.summarize(RAW, title="t", rate=250, seconds=1.0, top=1)
    trio_rows = md.split("**trio thread (FUSE requests)**")[1].split("**")[0]
    assert "get_events" in trio_rows and "handler" not in trio_rows


def test_an_empty_profile_says_so(summary: ModuleType) -> None:
    md = summary.summarize("", title="t", rate=250, seconds=1.0)
    assert "No samples." in md and "| threads |" not in md
