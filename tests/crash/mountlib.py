"""kill -9 of a real mount daemon in the middle of a seeded workload, then recovery and checks.

One iteration (`run_iteration`) on a pool that is not mounted:
  1. mount it (`python -m dynamicfs mount --foreground POOL MNT`: the process is the daemon);
  2. run a seeded workload below MNT/it<N> with syscalls, journalled (crashlib.Journal) to a
     file outside the pool: create, write at random offsets, truncate, rename, link, unlink,
     mkdir, rmdir, fsync, fdatasync, fsync of directories. Every operation opens and closes
     its own descriptor; close() makes the kernel write its cached pages to the daemon
     (FUSE flush with the writeback cache), so the daemon sees each write before the next op;
  3. SIGKILL the daemon at a random moment, detach the dead mount (`fusermount3 -u -z`);
  4. offline fsck: nothing but what recovery and GC deal with (orphan fragments, inodes
     without links, unreferenced extent rows) — above all, no metadata references a missing
     fragment and no refcount disagrees with the block maps;
  5. mount again (recovery runs, no manual step), read everything, check it against the
     journal (crashlib.check): kill -9 loses no committed SQLite transaction, so the namespace
     is the one of the ops completed (or the one in flight); each file a state it had, at least
     its last fsynced one and at most commit-interval-plus-slack old; reads never fail;
  6. unmount cleanly, offline GC, fsck must be clean.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from crashlib import Generator, Journal, Observed, Verdict, check, payload, read_journal
from powerlib import offline_gc

from dynamicfs.maint import fsck

BS = 64 * 1024
MOUNT_TIMEOUT = 30.0
# Data whose op completed this long before the kill must have been committed: the commit
# interval (5 s) plus generous slack for a loaded machine.
STALE_AFTER = 12.0
FUSERMOUNT = shutil.which("fusermount3") or "fusermount3"
DEAD = {errno.ENOTCONN, errno.ECONNABORTED, errno.EIO, errno.ENOENT}


def cli(*args: str | os.PathLike[str]) -> str:
    cmd = [sys.executable, "-m", "dynamicfs", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} exited {proc.returncode}\n{proc.stdout}"
                           f"{proc.stderr}")
    return proc.stdout


def make_pool(base: Path, ndisks: int = 3, policy: str = "rep:2") -> Path:
    pool = base / "pool"
    cli("init", pool, "--policy", policy, "--block-size", "64K")
    for k in range(ndisks):
        disk = base / f"disk{k}"
        disk.mkdir()
        cli("add-disk", pool, disk)
    return pool


def in_mountinfo(path: Path) -> bool:
    target = str(path).replace("\\", "\\134").replace(" ", "\\040")
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        return any(line.split(" ")[4] == target for line in f)


class Daemon:
    def __init__(self, pool: Path, mnt: Path, log: Path) -> None:
        self.pool, self.mnt, self.log = pool, mnt, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dynamicfs", "mount", "--foreground", str(self.pool),
                 str(self.mnt)], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not in_mountinfo(self.mnt):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mount daemon exited {self.proc.returncode}:\n"
                                   f"{self.output()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"no mount after {MOUNT_TIMEOUT} s:\n{self.output()}")
            time.sleep(0.02)
        os.stat(self.mnt)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.detach()

    def detach(self) -> None:
        if in_mountinfo(self.mnt):
            subprocess.run([FUSERMOUNT, "-u", "-z", str(self.mnt)], capture_output=True)

    def stop(self) -> int | None:
        """Clean unmount; returns the daemon's exit status (None if it had to be killed)."""
        try:
            if in_mountinfo(self.mnt):
                subprocess.run([FUSERMOUNT, "-u", str(self.mnt)], capture_output=True)
            if self.proc is None:
                return None
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        finally:
            self.detach()


# -- the workload through syscalls ------------------------------------------------------------

def do_op(root: Path, op: dict, seed: int) -> None:
    name = op["op"]

    def p(key: str = "p") -> Path:
        return root / op[key] if op[key] else root

    if name == "create":
        os.close(os.open(p(), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    elif name == "mkdir":
        os.mkdir(p())
    elif name == "write":
        fd = os.open(p(), os.O_WRONLY)
        try:
            view = memoryview(payload(seed, op["i"], op["n"], op["kind"]))
            off = op["off"]
            while view:
                n = os.pwrite(fd, view, off)
                view, off = view[n:], off + n
        finally:
            os.close(fd)
    elif name == "trunc":
        os.truncate(p(), op["size"])
    elif name == "rename":
        os.rename(p("src"), p("dst"))
    elif name == "link":
        os.link(p("src"), p("dst"))
    elif name == "unlink":
        os.unlink(p())
    elif name == "rmdir":
        os.rmdir(p())
    elif name in ("fsync", "fdatasync"):
        fd = os.open(p(), os.O_RDWR)
        try:
            (os.fsync if name == "fsync" else os.fdatasync)(fd)
        finally:
            os.close(fd)
    elif name == "fsyncdir":
        fd = os.open(p(), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    else:
        raise ValueError(name)


def observe_tree(root: Path) -> Observed:
    entries: dict[str, tuple[str, int, bytes | None, str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            full = Path(dirpath) / n
            rel = str(full.relative_to(root))
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                entries[rel] = ("d", st.st_ino, None, None)
                continue
            try:
                entries[rel] = ("f", st.st_ino, full.read_bytes(), None)
            except OSError as exc:
                entries[rel] = ("f", st.st_ino, None, f"read failed: {exc}")
    return Observed(entries)


def recoverable(prob: fsck.Problem) -> bool:
    """Leftovers a crash may leave that mount-time recovery (Engine._recover) or GC clears:
    orphan fragment files, inodes without links, extent rows nobody references (pinned by a
    commit in flight at the crash). A refcount that disagrees with the block maps, a block
    pointing at a missing extent or fragment, is not among them."""
    return (prob.check in ("orphan_files", "unlinked")
            or prob.check == "refcounts" and "is unreferenced (refcount 0)" in prob.message)


@dataclass
class IterationResult:
    seed: int
    ops_started: int
    ops_completed: int
    kill_after: float
    verdict: Verdict
    fsck_after_kill: dict[str, int] = field(default_factory=dict)
    gc_removed: int = 0
    seconds: float = 0.0
    stale_bound: int = 0  # ops [0, stale_bound) had to be committed by the timer

    def summary(self) -> str:
        v = self.verdict
        return (f"seed {self.seed}: killed after {self.kill_after:.2f} s, "
                f"{self.ops_completed}/{self.ops_started} ops done, {v.files_checked} files "
                f"({v.exact_latest} newest, {v.older} older, {v.torn} torn last write), "
                f"ops before {self.stale_bound} bound by the commit interval, "
                f"fsck after kill {self.fsck_after_kill or 'clean'}, gc removed "
                f"{self.gc_removed}, {self.seconds:.1f} s")


def run_iteration(pool: Path, mnt: Path, work: Path, seed: int,
                  kill_range: tuple[float, float] = (0.2, 7.0)) -> IterationResult:
    t0 = time.monotonic()
    rng = random.Random(seed)
    kill_after = rng.uniform(*kill_range)
    work.mkdir(parents=True, exist_ok=True)
    sub = f"it{seed}"
    daemon = Daemon(pool, mnt, work / "daemon.log")
    daemon.start()
    killed = threading.Event()
    kill_time: list[float] = []

    def kill() -> None:
        kill_time.append(time.monotonic())
        killed.set()
        if daemon.proc is not None:
            daemon.proc.send_signal(signal.SIGKILL)

    gen = Generator(seed, block_size=BS, sync_scale=rng.choice([0.1, 0.5, 1.0]))
    journal = Journal(work / "journal.jsonl", {"seed": seed, "root": sub})
    timer = threading.Timer(kill_after, kill)
    try:
        os.mkdir(mnt / sub)
        root = mnt / sub
        ops = gen.setup()
        timer.start()
        pace = rng.choice([0.0, 0.002, 0.01])
        k = 0
        while not killed.is_set():
            op = ops[k] if k < len(ops) else gen.next()
            k += 1
            journal.start(op, time.monotonic())
            try:
                do_op(root, op, seed)
            except OSError as exc:
                if killed.is_set() or exc.errno in (errno.ENOTCONN, errno.ECONNABORTED):
                    break
                raise RuntimeError(f"seed {seed}: op {op} failed before the kill: {exc}\n"
                                   f"{daemon.output()}") from exc
            journal.done(op["i"], time.monotonic())
            if pace:
                time.sleep(rng.uniform(0, pace))
        killed.wait()
    finally:
        timer.cancel()
        journal.close()
        daemon.kill()
    rep = read_journal(work / "journal.jsonl")
    # Offline, before any recovery: nothing that needs repair.
    problems = fsck.check_path(pool, verify_data=True)
    kinds: dict[str, int] = {}
    for prob in problems:
        kinds[prob.check] = kinds.get(prob.check, 0) + 1
    violations = [f"fsck right after kill -9: {prob}" for prob in problems
                  if not recoverable(prob)]
    daemon.start()
    try:
        seen = observe_tree(mnt / sub)
    finally:
        status = daemon.stop()
    if status != 0:
        violations.append(f"the remounted daemon exited {status}:\n{daemon.output()}")
    stale_t = kill_time[0] - STALE_AFTER
    must = 0
    while must in rep.done_t and rep.done_t[must] < stale_t:
        must += 1
    verdict = check(rep.ops, seed, rep.completed, rep.started, seen, must_have_before=must,
                    allow_torn=True)
    verdict.violations[:0] = violations
    report = offline_gc(pool)
    verdict.violations.extend(f"fsck after remount, unmount and gc: {prob}"
                              for prob in fsck.check_path(pool, verify_data=True))
    return IterationResult(seed, rep.started, rep.completed, kill_after, verdict, kinds,
                           report.orphan_fragments + report.temp_files,
                           time.monotonic() - t0, must)
