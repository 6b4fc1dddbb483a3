"""Metadata before deletion, while new writes bring the same content back.

Found by the power-loss simulation (seed 12 of test_powerloss.py, about one run in 30):
fragments are content-addressed, so rewriting content whose old extent is being deleted
writes to the very file names the deletion round is about to unlink. A referenced fragment
must never be removed (DESIGN.md invariant 2, issue 4), with or without a crash.

No crash is needed to show it: a `hang` fault on fragment deletion holds a deletion round
open while another file is written with the freed content and fsynced.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio
from powerlib import BS, ROOT, make_pool

from dynamicfs.disks import Fault
from dynamicfs.engine.filesystem import Engine
from dynamicfs.engine.pool import Pool
from dynamicfs.engine.types import ROOT_CTX
from dynamicfs.errors import FsError
from dynamicfs.maint import fsck


async def _write(engine: Engine, name: bytes, data: bytes, *, create: bool = True) -> int:
    if create:
        fh, attr = await engine.create(ROOT, name, 0o644, os.O_RDWR, ROOT_CTX)
        ino = attr.ino
    else:
        ino = (await engine.lookup(ROOT, name)).ino
        fh, _ = await engine.open(ino, os.O_RDWR)
    await engine.write(fh, 0, data)
    await engine.fsync(fh, False)
    await engine.release(fh)
    return ino


def test_rewrite_of_content_being_deleted_keeps_its_fragments(tmp_path: Path) -> None:
    # One disk: the new fragment lands on the very path of the one being deleted.
    path = make_pool(tmp_path, ndisks=1, policy="rep:1")
    old = b"content that is freed and written again " * (BS // 40 + 1)
    old = old[:BS]
    result: dict = {}

    async def main() -> None:
        pool = Pool.open(path)
        pool.lock("test")
        try:
            engine = Engine(pool, commit_interval=3600)
            async with engine.running():
                await _write(engine, b"a", old)
                # Overwriting a's only block drops the last reference to `old`: its
                # fragments are queued for deletion after the next metadata sync.
                await _write(engine, b"a", os.urandom(BS), create=False)
                for disk_id in engine.store.disks():
                    engine.inject_fault(disk_id, Fault("delete", "hang", seconds=0.5,
                                                       count=1))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(engine.commit_all)  # the deletion round starts
                    await trio.sleep(0.2)  # ...and hangs before its first unlink
                    await _write(engine, b"b", old)  # the same content again
                engine.clear_faults()
        finally:
            pool.close()

    async def reread() -> None:
        pool = Pool.open(path)
        pool.lock("test")
        try:
            engine = Engine(pool, commit_interval=3600)
            async with engine.running():
                ino = (await engine.lookup(ROOT, b"b")).ino
                fh, _ = await engine.open(ino, os.O_RDONLY)
                try:
                    result["read"] = await engine.read(fh, 0, BS)
                except FsError as exc:
                    result["read"] = exc
                await engine.release(fh)
        finally:
            pool.close()

    trio.run(main)
    trio.run(reread)
    problems = [str(p) for p in fsck.check_path(path, verify_data=True)
                if p.check != "orphan_files"]
    assert result["read"] == old and not problems, (
        "a file written and fsynced while a deletion round was removing fragments of the "
        "same content lost its data: the round deleted the fragment files the new write had "
        "just (re)created under the same content-addressed names.\n"
        f"read of b after reopening the pool: "
        f"{'correct' if result['read'] == old else repr(result['read'])[:80]}"
        f"\nfsck: {problems}")
