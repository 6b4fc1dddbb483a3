"""Power loss at the engine level, without FUSE.

A child process (fork) runs an `Engine` under trio with a workload. `Database.sync` — the one
call that makes metadata durable — is wrapped: holding the database lock (no commit can slip
in) and the checkpoint lock, it fsyncs as before and then copies meta.db and meta.db-wal byte
for byte into a numbered "durable image". Fragment files are made durable either when written
(repairs) or by a later `LocalDisk.sync_fragments` (seals); both are wrapped to log every
fragment that became durable, and every fragment written without being durable or deleted,
in `fragments.log`. The child is then SIGKILLed (it never leaves `Engine.running()`, so no
shutdown flush runs).

Power loss = the pool directory's database files replaced by the newest complete image
(meta.db-shm removed: SQLite rebuilds it from the WAL), and every fragment file that was not
durable at the crash removed or emptied (the worst a power loss can do to it). The pool is
then opened again, read through the engine and checked against the journal with
`crashlib.check`, and fsck must find nothing but orphan fragment files (GC's job), and
nothing at all after an offline GC.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import stat
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import ace
import trio
from crashlib import Generator, Journal, Observed, Verdict, check, payload, read_journal

from dynamicfs.codec import Policy
from dynamicfs.disks import LocalDisk
from dynamicfs.engine.filesystem import Engine
from dynamicfs.engine.pool import Pool
from dynamicfs.engine.types import ROOT_CTX, SetAttr
from dynamicfs.errors import FsError
from dynamicfs.maint import fsck, gc
from dynamicfs.meta import Database
from dynamicfs.meta import extents as mext

ROOT = 1
BS = 64 * 1024


def make_pool(base: Path, ndisks: int = 3, policy: str = "rep:2") -> Path:
    pool = Pool.create(base / "pool", Policy.parse(policy), BS)
    for k in range(ndisks):
        pool.add_disk(base / f"disk{k}", "slow", None)
    pool.close()
    return base / "pool"


# -- driving an engine by paths --------------------------------------------------------------

async def _resolve(engine: Engine, path: str) -> int:
    ino = ROOT
    for part in path.split("/") if path else []:
        attr = await engine.lookup(ino, part.encode())
        await engine.forget([(attr.ino, 1)])
        ino = attr.ino
    return ino


async def _parent(engine: Engine, path: str) -> tuple[int, bytes]:
    head, _, name = path.rpartition("/")
    return await _resolve(engine, head), name.encode()


async def run_op(engine: Engine, op: dict, seed: int) -> None:
    """Do one workload operation through the engine, the way the FUSE layer would."""
    name = op["op"]
    if name == "create":
        parent, leaf = await _parent(engine, op["p"])
        fh, attr = await engine.create(parent, leaf, 0o644, os.O_RDWR, ROOT_CTX)
        await engine.flush(fh)
        await engine.release(fh)
        await engine.forget([(attr.ino, 1)])
    elif name == "mkdir":
        parent, leaf = await _parent(engine, op["p"])
        attr = await engine.mkdir(parent, leaf, 0o755, ROOT_CTX)
        await engine.forget([(attr.ino, 1)])
    elif name == "write":
        fh, _ = await engine.open(await _resolve(engine, op["p"]), os.O_RDWR)
        try:
            await engine.write(fh, op["off"], payload(seed, op["i"], op["n"], op["kind"]))
            await engine.flush(fh)
        finally:
            await engine.release(fh)
    elif name == "trunc":
        await engine.setattr(await _resolve(engine, op["p"]), SetAttr(size=op["size"]))
    elif name == "rename":
        if op["src"] == op["dst"]:
            return
        po, no = await _parent(engine, op["src"])
        pn, nn = await _parent(engine, op["dst"])
        await engine.rename(po, no, pn, nn, 0)
    elif name == "link":
        pn, nn = await _parent(engine, op["dst"])
        attr = await engine.link(await _resolve(engine, op["src"]), pn, nn, ROOT_CTX)
        await engine.forget([(attr.ino, 1)])
    elif name == "unlink":
        await engine.unlink(*await _parent(engine, op["p"]))
    elif name == "rmdir":
        await engine.rmdir(*await _parent(engine, op["p"]))
    elif name in ("fsync", "fdatasync"):
        fh, _ = await engine.open(await _resolve(engine, op["p"]), os.O_RDWR)
        try:
            await engine.fsync(fh, name == "fdatasync")
        finally:
            await engine.release(fh)
    elif name == "fsyncdir":
        await engine.fsyncdir(await _resolve(engine, op["p"]), False)
    else:
        raise ValueError(f"unknown op {name}")


async def observe(engine: Engine) -> Observed:
    """Every path below the root with its kind, inode and (for files) content."""
    entries: dict[str, tuple[str, int, bytes | None, str | None]] = {}

    async def walk(ino: int, prefix: str) -> None:
        offset = 0
        listing = []
        while True:
            batch = await engine.readdir(ino, offset)
            if not batch:
                break
            listing.extend(batch)
            offset = batch[-1].next_offset
        for ent in listing:
            if ent.name in (b".", b".."):
                continue
            path = prefix + ent.name.decode()
            attr = ent.attr
            if stat.S_ISDIR(attr.mode):
                entries[path] = ("d", attr.ino, None, None)
                await walk(attr.ino, path + "/")
                continue
            try:
                fh, _ = await engine.open(attr.ino, os.O_RDONLY)
                try:
                    size = (await engine.getattr(attr.ino)).size
                    data = await engine.read(fh, 0, size + 1)
                finally:
                    await engine.release(fh)
                entries[path] = ("f", attr.ino, data, None)
            except FsError as exc:
                entries[path] = ("f", attr.ino, None,
                                 f"read failed: {errno.errorcode.get(exc.errno, exc.errno)}")

    await walk(ROOT, "")
    return Observed(entries)


# -- the child: workload, durable images, SIGKILL -------------------------------------------

@dataclass
class Counters:
    started: int = 0
    completed: int = 0


def _install_fragment_log(log_path: Path) -> None:
    """Log fragment files as they become durable ("+path") or not durable ("-path")."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def note(sign: str, path: Path) -> None:
        os.write(fd, f"{sign}{path}\n".encode())  # one O_APPEND write per line: atomic

    orig_write, orig_sync = LocalDisk.write_fragment, LocalDisk.sync_fragments
    orig_delete = LocalDisk.delete_fragment

    def write_fragment(self: LocalDisk, header, payload, *, durable: bool = True,
                       **kw) -> int:
        path = self.fragment_path(header.extent_id, header.index)
        made_durable = durable or path.exists()  # a replacement is always written durably
        if not made_durable:
            note("-", path)
        size = orig_write(self, header, payload, durable=durable, **kw)
        if made_durable:
            note("+", path)
        return size

    def sync_fragments(self: LocalDisk, fragments):
        failed = orig_sync(self, fragments)
        for key in fragments:
            if key not in failed:
                note("+", self.fragment_path(*key))
        return failed

    def delete_fragment(self: LocalDisk, extent_id: bytes, index: int) -> None:
        note("-", self.fragment_path(extent_id, index))
        orig_delete(self, extent_id, index)

    LocalDisk.write_fragment = write_fragment  # type: ignore[method-assign]
    LocalDisk.sync_fragments = sync_fragments  # type: ignore[method-assign]
    LocalDisk.delete_fragment = delete_fragment  # type: ignore[method-assign]


def _drop_undurable_fragments(log_path: Path) -> int:
    """Remove the fragment files a power loss may have taken; returns how many."""
    if not log_path.exists():
        return 0
    durable: dict[str, bool] = {}
    for line in log_path.read_text().splitlines():
        durable[line[1:]] = line[0] == "+"
    dropped = 0
    for path, ok in durable.items():
        if not ok and os.path.exists(path):
            # Either outcome is possible: the name never reached the disk, or it did and the
            # data did not (an empty file).
            if dropped % 2:
                os.truncate(path, 0)
            else:
                os.unlink(path)
            dropped += 1
    return dropped


def _install_images(images: Path, counters: Counters) -> None:
    orig = Database.sync
    state = {"n": 0}

    def durable_sync(self: Database) -> None:
        with self.lock, self._ckpt_lock:
            lo = counters.completed
            orig(self)
            state["n"] += 1
            tmp = images / f".tmp{state['n']}"
            tmp.mkdir()
            for suffix in ("", "-wal"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    shutil.copyfile(src, tmp / f"meta.db{suffix}")
            (tmp / "info.json").write_text(json.dumps(
                {"lo": lo, "hi": counters.started, "t": time.monotonic()}))
            os.rename(tmp, images / f"{state['n']:06d}")

    Database.sync = durable_sync  # type: ignore[method-assign]


def child_main(pool_path: Path, work: Path, seed: int, ops: list[dict],
               commit_interval: float, kill_after_op: int | None,
               kill_after_s: float | None) -> None:
    """Runs in the forked child; never returns (SIGKILLs itself)."""
    try:
        images = work / "images"
        counters = Counters()
        _install_images(images, counters)
        _install_fragment_log(work / "fragments.log")
        journal = Journal(work / "journal.jsonl", {"seed": seed})
        if kill_after_s is not None:
            threading.Timer(kill_after_s, os.kill, (os.getpid(), signal.SIGKILL)).start()

        async def main() -> None:
            pool = Pool.open(pool_path)
            pool.lock("crash simulation")
            engine = Engine(pool, cache_size=32 << 20, commit_interval=commit_interval)
            async with engine.running():
                for op in ops:
                    if kill_after_op is not None and op["i"] >= kill_after_op:
                        break
                    journal.start(op, time.monotonic())
                    counters.started += 1
                    await run_op(engine, op, seed)
                    counters.completed += 1
                    journal.done(op["i"], time.monotonic())
                    await trio.sleep(0)
                journal.write({"ev": "end"})
                os.kill(os.getpid(), signal.SIGKILL)  # power loss: no clean shutdown

        trio.run(main)
    except BaseException:
        (work / "child-error.txt").write_text(traceback.format_exc())
    finally:
        os.kill(os.getpid(), signal.SIGKILL)


def run_child(pool_path: Path, work: Path, seed: int, ops: list[dict], *,
              commit_interval: float = 3600.0, kill_after_op: int | None = None,
              kill_after_s: float | None = None, timeout: float = 60.0) -> None:
    work.mkdir(parents=True, exist_ok=True)
    # Image 0: the pool as the parent left it (closed, so everything in it is durable).
    first = work / "images" / "000000"
    first.mkdir(parents=True)
    for suffix in ("", "-wal"):
        src = pool_path / f"meta.db{suffix}"
        if src.exists():
            shutil.copyfile(src, first / f"meta.db{suffix}")
    (first / "info.json").write_text(json.dumps({"lo": 0, "hi": 0, "t": time.monotonic()}))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            child_main(pool_path, work, seed, ops, commit_interval, kill_after_op,
                       kill_after_s)
        finally:
            os._exit(99)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"crash child hung for {timeout} s (seed {seed})")
        time.sleep(0.01)
    err = work / "child-error.txt"
    if err.exists():
        raise AssertionError(f"the workload failed before the crash (seed {seed}):\n"
                             f"{err.read_text()}")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


# -- after the crash -------------------------------------------------------------------------

def lose_power(pool_path: Path, work: Path) -> dict:
    """Put the newest durable image in place of the pool's database; returns its info."""
    images = sorted(p for p in (work / "images").iterdir() if not p.name.startswith("."))
    assert images, "no durable image: the pool's creation is synced before the child runs"
    last = images[-1]
    for suffix in ("", "-wal", "-shm"):
        (pool_path / f"meta.db{suffix}").unlink(missing_ok=True)
    for suffix in ("", "-wal"):
        src = last / f"meta.db{suffix}"
        if src.exists():
            shutil.copyfile(src, pool_path / f"meta.db{suffix}")
    info = json.loads((last / "info.json").read_text())
    info["image"] = last.name
    info["fragments_dropped"] = _drop_undurable_fragments(work / "fragments.log")
    return info


@dataclass
class Outcome:
    verdict: Verdict
    lo: int
    hi: int
    image: str
    fsck_before_gc: list[str]


def recover_and_check(pool_path: Path, work: Path, seed: int, *,
                      power_loss: bool = True) -> Outcome:
    """Lose power (or not: a plain kill), mount the pool again, compare with the journal."""
    rep = read_journal(work / "journal.jsonl")
    if power_loss:
        info = lose_power(pool_path, work)
        lo, hi, image = info["lo"], info["hi"], info["image"]
    else:
        lo, hi, image = rep.completed, rep.started, "(kill -9: everything committed)"
    # The journal's completed ops are a superset of the image's: never claim more.
    lo = min(lo, rep.completed)
    hi = min(hi, rep.started)
    result: dict = {}

    async def main() -> None:
        pool = Pool.open(pool_path)
        pool.lock("crash check")
        try:
            engine = Engine(pool, cache_size=32 << 20, commit_interval=3600)
            async with engine.running():
                result["seen"] = await observe(engine)
                # Metadata must never point at a missing fragment, before anything repairs.
                result["dangling"] = _dangling(engine)
        finally:
            pool.close()

    trio.run(main)
    verdict = check(rep.ops, seed, lo, hi, result["seen"], completed=rep.completed)
    verdict.violations.extend(result["dangling"])
    problems = fsck.check_path(pool_path, verify_data=True)
    before = [str(p) for p in problems]
    bad = [p for p in before if not p.startswith("[orphan_files]")]
    verdict.violations.extend(f"fsck after recovery: {p}" for p in bad)
    offline_gc(pool_path)
    verdict.violations.extend(f"fsck after gc: {p}" for p in
                              fsck.check_path(pool_path, verify_data=True))
    return Outcome(verdict, lo, hi, image, before)


def offline_gc(pool_path: Path) -> gc.GcReport:
    """What `dynamicfs gc POOL` does on an unmounted pool."""
    pool = Pool.open(pool_path)
    pool.lock("gc")
    try:
        disks = {row.id: pool.open_disk(row) for row in pool.disk_rows()}
        return gc.collect_offline(
            disks, lambda d, i, k: mext.fragment_recorded(pool.db, d, i, k))
    finally:
        pool.close()


def _dangling(engine: Engine) -> list[str]:
    out = []
    for ext in fsck.mm.iter_extent_fragments(engine.db):
        for idx, disk_id, _ in ext.fragments:
            disk = engine.store.disks().get(disk_id)
            if disk is None or not disk.fragment_path(ext.hash, idx).exists():
                out.append(f"extent {ext.id} fragment {idx} on disk {disk_id} is missing")
    return out


def describe(ops: list[dict]) -> str:
    return "; ".join(
        f"{op['i']}:{op['op']}(" + ", ".join(f"{k}={v}" for k, v in op.items()
                                            if k not in ("i", "op", "node")) + ")"
        for op in ops)


# -- whole scenarios (tests and scripts/soak_crash.py) -------------------------------------

def run_random(base: Path, seed: int) -> str:
    """One random workload, power lost at a random moment; returns a summary line."""
    rng = random.Random(seed)
    pool = make_pool(base, policy=rng.choice(["rep:2", "rep:1"]))
    gen = Generator(seed, sync_scale=rng.choice([0.05, 0.3, 1.0]))
    ops = gen.setup() + [gen.next() for _ in range(400)]
    work = base / "work"
    run_child(pool, work, seed, ops, commit_interval=rng.choice([0.05, 0.5, 5.0]),
              kill_after_s=rng.uniform(0.05, 2.0))
    out = recover_and_check(pool, work, seed)
    v = out.verdict
    assert not v.violations, (
        f"power loss, seed {seed} (image {out.image}: ops [0, {out.lo}) durable, "
        f"{out.hi} started):\n" + "\n".join(v.violations[:20])
        + ("\n(a missing fragment of a rewritten block: see test_deletion_race.py)"
           if any("is missing" in x for x in v.violations) else ""))
    return (f"seed {seed}: {out.hi} ops started, image {out.image} (lo {out.lo}), namespace "
            f"prefix {v.prefix}, {v.files_checked} files ({v.exact_latest} newest, "
            f"{v.older} older)")


def run_case(base: Path, case: ace.Case) -> None:
    built = ace.build(case)
    assert built is not None
    ops, crash_at = built
    pool = make_pool(base)
    work = base / "work"
    run_child(pool, work, 1, ops, kill_after_op=crash_at)
    out = recover_and_check(pool, work, 1)
    assert not out.verdict.violations, (
        f"{case.name}\nops: {describe(ops[8:])}\n(image {out.image}: ops [0, {out.lo}) "
        f"durable, {out.hi} started)\n" + "\n".join(out.verdict.violations))
