"""A rule-based model test of file block maps: random writes, truncates, reads, fsyncs, closes
and engine restarts on two files, checked against in-memory bytearrays, and fsck at the end.

The engine runs in its own trio loop on a helper thread, so that hypothesis can drive it one
rule at a time; a restart stops that loop (a clean unmount) and starts a new one.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from conftest import ROOT, fsck_problems, make_pool
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dynamicfs.engine.filesystem import Engine
from dynamicfs.engine.pool import Pool
from dynamicfs.engine.types import ROOT_CTX, SetAttr

BS = 4096
MAX_END = 12 * BS
NAMES = (b"a", b"b")


class EngineThread:
    """One engine serving calls from other threads until stopped."""

    def __init__(self, path: Path, cache_size: int) -> None:
        self.engine: Engine | None = None
        self.error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        ready = threading.Event()

        async def serve() -> None:
            pool = Pool.open(path)
            pool.lock("block map model test")
            try:
                engine = Engine(pool, cache_size=cache_size, commit_interval=3600)
                async with engine.running():
                    self.engine = engine
                    self._token = trio.lowlevel.current_trio_token()
                    self._stop = trio.Event()
                    ready.set()
                    await self._stop.wait()
            finally:
                pool.close()

        def main() -> None:
            try:
                trio.run(serve)
            except BaseException as exc:  # re-raised in the test thread by stop()
                self.error = exc
            finally:
                ready.set()

        self._thread = threading.Thread(target=main, name="engine-under-test")
        self._thread.start()
        ready.wait()
        if self.error is not None:
            raise self.error

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def stop(self) -> None:
        assert self._stop is not None
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()
        if self.error is not None:
            raise self.error


def payload(seed: int, length: int, fill: int | None) -> bytes:
    """Random bytes, or one repeated byte (zeros make holes, equal blocks dedup)."""
    if fill is not None:
        return bytes([fill]) * length
    return random.Random(seed).randbytes(length)


class BlockMapModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="dynfs-model-"))
        self.path = make_pool(self.tmp, 3, "rep:2", block_size=BS)
        self.model = {name: bytearray() for name in NAMES}
        self.inos: dict[bytes, int] = {}
        self.fhs: dict[bytes, int] = {}
        self.runner: EngineThread | None = None

    @property
    def engine(self) -> Engine:
        assert self.runner is not None and self.runner.engine is not None
        return self.runner.engine

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        assert self.runner is not None
        return self.runner.call(fn, *args)

    # A small write-back cache (a few blocks) so memory pressure seals blocks mid-sequence.
    @initialize(cache_size=st.sampled_from([16 * BS, 64 << 20]))
    def start(self, cache_size: int) -> None:
        self.cache_size = cache_size
        self.runner = EngineThread(self.path, cache_size)
        for name in NAMES:
            fh, attr = self.call(self.engine.create, ROOT, name, 0o644, os.O_RDWR, ROOT_CTX)
            self.inos[name], self.fhs[name] = attr.ino, fh

    def _open_all(self) -> None:
        for name in NAMES:
            attr = self.call(self.engine.lookup, ROOT, name)
            fh, _ = self.call(self.engine.open, attr.ino, os.O_RDWR)
            assert attr.ino == self.inos[name]
            self.fhs[name] = fh

    def _close_all(self) -> None:
        for name in NAMES:
            self.call(self.engine.release, self.fhs.pop(name))
            self.call(self.engine.forget, [(self.inos[name], 1)])

    @rule(name=st.sampled_from(NAMES), offset=st.integers(0, MAX_END),
          length=st.integers(1, 3 * BS), seed=st.integers(0, 2**16),
          fill=st.none() | st.sampled_from([0, 1]))
    def write(self, name: bytes, offset: int, length: int, seed: int, fill: int | None,
              data: bytes | None = None) -> None:
        data = data if data is not None else payload(seed, length, fill)
        length = len(data)
        assert self.call(self.engine.write, self.fhs[name], offset, data) == length
        m = self.model[name]
        if offset > len(m):
            m.extend(bytes(offset - len(m)))
        m[offset:offset + length] = data

    @rule(name=st.sampled_from(NAMES), size=st.integers(0, MAX_END + BS))
    def truncate(self, name: bytes, size: int) -> None:
        self.call(self.engine.setattr, self.inos[name], SetAttr(size=size))
        m = self.model[name]
        if size < len(m):
            del m[size:]
        else:
            m.extend(bytes(size - len(m)))

    @rule(name=st.sampled_from(NAMES), offset=st.integers(0, MAX_END + BS),
          size=st.integers(0, 4 * BS))
    def read(self, name: bytes, offset: int, size: int) -> None:
        got = self.call(self.engine.read, self.fhs[name], offset, size)
        assert got == bytes(self.model[name][offset:offset + size])

    @rule(name=st.sampled_from(NAMES))
    def fsync(self, name: bytes) -> None:
        self.call(self.engine.fsync, self.fhs[name], False)

    @rule(src=st.sampled_from(NAMES), block=st.integers(0, MAX_END // BS),
          to_block=st.integers(0, MAX_END // BS))
    def copy_block(self, src: bytes, block: int, to_block: int) -> None:
        """Copy a whole block to the other file: equal content, so the extent is shared."""
        dst = NAMES[1 - NAMES.index(src)]
        data = bytes(self.model[src][block * BS:(block + 1) * BS])
        if not data:
            return
        self.write(dst, to_block * BS, len(data), 0, None, data=data)

    @rule(name=st.sampled_from(NAMES))
    def unlink_and_recreate(self, name: bytes) -> None:
        ino = self.inos[name]
        self.call(self.engine.unlink, ROOT, name)
        self.call(self.engine.release, self.fhs.pop(name))
        self.call(self.engine.forget, [(ino, 1)])
        fh, attr = self.call(self.engine.create, ROOT, name, 0o644, os.O_RDWR, ROOT_CTX)
        self.inos[name], self.fhs[name] = attr.ino, fh
        self.model[name] = bytearray()

    @rule()
    def close_and_reopen(self) -> None:
        self._close_all()
        self._open_all()

    @rule()
    def restart(self) -> None:
        self._close_all()
        assert self.runner is not None
        self.runner.stop()
        self.runner = EngineThread(self.path, self.cache_size)
        self._open_all()

    @precondition(lambda self: self.runner is not None)
    @invariant()
    def sizes_match(self) -> None:
        for name in NAMES:
            attr = self.call(self.engine.getattr, self.inos[name])
            assert attr.size == len(self.model[name])

    def teardown(self) -> None:
        try:
            if self.runner is not None and self.runner.engine is not None:
                for name in NAMES:
                    m = self.model[name]
                    assert self.call(self.engine.read, self.fhs[name], 0, len(m) + 1) == m
                self._close_all()
                self.runner.stop()
                assert fsck_problems(self.path) == []
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


BlockMapModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("DYNAMICFS_MODEL_EXAMPLES", "30")),
    stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestBlockMapModel = BlockMapModel.TestCase
