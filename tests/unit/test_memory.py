"""The mount daemon caps glibc's malloc arenas before its worker threads start, and reads its
own resident size for the cache's memory check."""

from __future__ import annotations

import ctypes
import mmap
from pathlib import Path

import pytest

from dynamicfs import daemon, memory
from dynamicfs.errors import DynamicFSError


def _has_mallopt() -> bool:
    try:
        ctypes.CDLL(None).mallopt  # noqa: B018 - probing for the symbol
    except (OSError, AttributeError):
        return False
    return True


@pytest.mark.skipif(not _has_mallopt(), reason="not glibc")
def test_limit_applies_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    # The process keeps the cap; 1 is the daemon's own setting, so this changes nothing else.
    assert memory.limit_malloc_arenas(1) is True


def test_user_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert memory.limit_malloc_arenas(1) is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")
    assert memory.limit_malloc_arenas(1) is False


def test_daemon_limits_arenas_before_opening_the_pool(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    calls: list[str] = []
    monkeypatch.setattr(daemon, "limit_malloc_arenas", lambda: calls.append("mallopt") or True)

    def refuse(path: Path) -> None:
        calls.append("open")
        raise DynamicFSError("no pool here")

    monkeypatch.setattr(daemon.Pool, "open", staticmethod(refuse))
    reporter = daemon.Reporter()
    assert daemon.run(tmp_path, tmp_path / "mnt", set(), reporter) != 0
    assert calls == ["mallopt", "open"]
    assert reporter.error is not None


def test_trim_malloc_gives_freed_heap_pages_back() -> None:
    """Freed buffers inside the heap stay resident until trimmed (glibc only)."""
    import ctypes

    from dynamicfs import memory

    if not hasattr(ctypes.CDLL(None), "malloc_trim"):
        memory.trim_malloc()  # not glibc: must simply do nothing
        return

    def rss_kib() -> int:
        resident = memory.resident_bytes()
        assert resident is not None
        return resident // 1024

    # Many small buffers (below the mmap threshold: heap memory), every other one freed, so
    # the free space sits inside the heap where glibc does not return it by itself.
    keep, drop = [], []
    for i in range(4000):
        (keep if i % 2 else drop).append(bytearray(60000))
    del drop
    before = rss_kib()
    memory.trim_malloc()
    after = rss_kib()
    assert before - after > 50 * 1024  # ~115 MiB freed inside the heap; most comes back
    del keep


def test_resident_bytes_follows_what_the_process_touches() -> None:
    before = memory.resident_bytes()
    assert before is not None and before > 1 << 20
    # A fresh mapping (a heap allocation might reuse pages already resident), every page
    # written once.
    with mmap.mmap(-1, 64 << 20) as block:
        for off in range(0, len(block), mmap.PAGESIZE):
            block[off] = 1
        after = memory.resident_bytes()
    assert after is not None and after - before >= 60 << 20


def test_the_trim_loop_reports_the_resident_size_to_the_cache(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import trio

    seen: list[int] = []

    class Engine:
        def memory_check(self, resident: int) -> None:
            seen.append(resident)

    monkeypatch.setattr(daemon, "TRIM_INTERVAL", 0.01)
    monkeypatch.setattr(daemon, "MEMORY_CHECK_INTERVAL", 0.01)

    async def run() -> None:
        with trio.move_on_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(daemon._trim_memory, Engine())
                while len(seen) < 2:
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()

    trio.run(run)
    assert len(seen) >= 2 and all(r > 1 << 20 for r in seen)


def test_the_daemon_trims_at_once_while_memory_is_high(monkeypatch: pytest.MonkeyPatch) -> None:
    # Once a second at the latest; within MEMORY_CHECK_INTERVAL while the resident size is over
    # the cache's line, so pages freed in a burst do not stay resident until the next second.
    import trio
    import trio.testing

    resident = [100]
    trims: list[float] = []
    checks: list[int] = []

    class Engine:
        def memory_high(self, rss: int) -> bool:
            return rss > 300

        def memory_check(self, rss: int) -> None:
            checks.append(rss)

    async def in_this_thread(fn, *args):  # a worker thread would let the mock clock jump
        return fn(*args)

    monkeypatch.setattr(daemon, "resident_bytes", lambda: resident[0])
    monkeypatch.setattr(daemon, "trim_malloc", lambda: trims.append(trio.current_time()))
    monkeypatch.setattr(trio.to_thread, "run_sync", in_this_thread)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daemon._trim_memory, Engine())
            await trio.sleep(3.05)
            low = len(trims)
            resident[0] = 400
            await trio.sleep(1.0)
            high = len(trims) - low
            nursery.cancel_scope.cancel()
        assert low == 3, trims  # at 1, 2 and 3 s
        assert high >= 1.0 / daemon.MEMORY_CHECK_INTERVAL - 1, trims
        assert checks[-1] == 400 and len(checks) == len(trims)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
