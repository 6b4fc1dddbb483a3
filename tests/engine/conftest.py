"""Fixtures for engine tests: a real pool on directory disks, driven without FUSE."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from dynamicfs.codec import Policy
from dynamicfs.engine.filesystem import Engine
from dynamicfs.engine.pool import Pool


def make_pool(root: Path, ndisks: int = 4, policy: str = "rep:2",
              block_size: int = 64 * 1024, caps: list[int | None] | None = None) -> Path:
    pool = Pool.create(root / "pool", Policy.parse(policy), block_size)
    caps = caps or [None] * ndisks
    for i in range(ndisks):
        pool.add_disk(root / f"disk{i}", "slow", caps[i])
    pool.close()
    return root / "pool"


EngineTest = Callable[[Engine], Awaitable[None]]


@pytest.fixture
def run_engine(tmp_path: Path):
    """Run an async test body against a fresh engine; the engine is flushed and closed after.

    Small blocks (64 KiB) make multi-block files cheap; the commit interval is long so tests
    decide when things commit.
    """

    def runner(body: EngineTest, *, policy: str = "rep:2", ndisks: int = 4,
               pool_path: Path | None = None, caps: list[int | None] | None = None,
               cache_size: int = 64 << 20) -> Path:
        path = pool_path or make_pool(tmp_path / uuid.uuid4().hex[:8], ndisks, policy,
                                      caps=caps)

        async def main() -> None:
            pool = Pool.open(path)
            pool.lock("engine test")
            try:
                engine = Engine(pool, cache_size=cache_size, commit_interval=3600)
                async with engine.running():
                    await body(engine)
            finally:
                pool.close()

        trio.run(main)
        return path

    return runner
