"""Fixtures for engine tests: a real pool on directory disks, driven without FUSE.

Every run of an engine ends with a clean close and an fsck of the pool: a test that leaves the
metadata inconsistent fails even if its own asserts pass.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import pytest
import trio

from dynamicfs.codec import Policy
from dynamicfs.engine.filesystem import Engine
from dynamicfs.engine.pool import Pool
from dynamicfs.engine.types import ROOT_CTX, Attr
from dynamicfs.maint import fsck

ROOT = 1
BS = 64 * 1024


def make_pool(root: Path, ndisks: int = 4, policy: str = "rep:2",
              block_size: int = BS, caps: list[int | None] | None = None) -> Path:
    pool = Pool.create(root / "pool", Policy.parse(policy), block_size)
    caps = caps or [None] * ndisks
    for i in range(ndisks):
        pool.add_disk(root / f"disk{i}", "slow", caps[i])
    pool.close()
    return root / "pool"


EngineTest = Callable[[Engine], Awaitable[None]]


def fsck_problems(path: Path, verify_data: bool = True) -> list[fsck.Problem]:
    return fsck.check_path(path, verify_data=verify_data)


def run_in_pool(path: Path, body: EngineTest, *, cache_size: int = 64 << 20,
                expect_problems: Iterable[str] = ()) -> None:
    """Open the pool, run `body` against an engine, stop it cleanly, then fsck the pool and
    require exactly the problems `expect_problems` names (usually none)."""

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
    problems = fsck_problems(path)
    found = {p.check for p in problems}
    assert found == set(expect_problems), "fsck after the test:\n" + "\n".join(map(str, problems))


@pytest.fixture
def run_engine(tmp_path: Path):
    """Run an async test body against an engine; it is flushed, closed and fsck'd after.

    Small blocks (64 KiB) make multi-block files cheap; the commit interval is long so tests
    decide when things commit. `expect_problems` names the fsck checks a test that damages the
    pool on purpose expects to fire (exactly those, no others).
    """

    def runner(body: EngineTest, *, policy: str = "rep:2", ndisks: int = 4,
               pool_path: Path | None = None, caps: list[int | None] | None = None,
               cache_size: int = 64 << 20, block_size: int = BS,
               expect_problems: Iterable[str] = ()) -> Path:
        path = pool_path or make_pool(tmp_path / uuid.uuid4().hex[:8], ndisks, policy,
                                      block_size, caps=caps)
        run_in_pool(path, body, cache_size=cache_size, expect_problems=expect_problems)
        return path

    return runner


# -- helpers that make tests one-liners ------------------------------------------------------

async def write_file(engine: Engine, name: bytes, data: bytes, parent: int = ROOT,
                     fsync: bool = True) -> Attr:
    """Create `name` with `data`, fsync it, close it and drop the kernel reference."""
    fh, attr = await engine.create(parent, name, 0o644, os.O_RDWR, ROOT_CTX)
    if data:
        await engine.write(fh, 0, data)
    if fsync:
        await engine.fsync(fh, False)
    await engine.release(fh)
    await engine.forget([(attr.ino, 1)])
    return attr


async def read_file(engine: Engine, ino: int, size: int | None = None) -> bytes:
    fh, _ = await engine.open(ino, os.O_RDONLY)
    try:
        if size is None:
            size = (await engine.getattr(ino)).size
        return await engine.read(fh, 0, size)
    finally:
        await engine.release(fh)


async def lookup_ino(engine: Engine, path: bytes) -> int:
    """The inode of a slash-separated path below the root (the lookup is forgotten again)."""
    ino = ROOT
    for part in path.strip(b"/").split(b"/"):
        attr = await engine.lookup(ino, part)
        await engine.forget([(attr.ino, 1)])
        ino = attr.ino
    return ino


def db_rows(pool_path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read the metadata of a closed pool directly (tests only: src keeps SQL in meta/)."""
    conn = sqlite3.connect(f"file:{pool_path / 'meta.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def corrupt_db(pool_path: Path, *statements: str) -> None:
    """Change the metadata of a closed pool behind the engine's back (a crash, or damage)."""
    conn = sqlite3.connect(pool_path / "meta.db")
    try:
        for sql in statements:
            conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


def fragment_files(pool_path: Path) -> list[Path]:
    """Every fragment file on every disk of a test pool (disks sit next to the pool dir)."""
    return sorted(p for p in pool_path.parent.glob("disk*/fragments/*/*/*") if p.is_file())


def extent_fragments(engine: Engine, ino: int, idx: int) -> list[Path]:
    """The fragment files of block idx of a committed file, in fragment index order."""
    from dynamicfs.meta import extents as mext

    eid = mext.block_extent(engine.db, ino, idx)
    assert eid is not None, f"inode {ino} block {idx} is a hole or not committed"
    ext = mext.get_extent(engine.db, eid)
    assert ext is not None
    disks = engine.store.disks()
    return [disks[f.disk].fragment_path(ext.hash, f.idx)
            for f in mext.get_fragments(engine.db, eid)]


def flip_byte(path: Path, offset: int = -1) -> None:
    """Corrupt one byte of a file (default: the last byte, inside the payload)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def is_dir(attr: Attr) -> bool:
    return stat.S_ISDIR(attr.mode)
