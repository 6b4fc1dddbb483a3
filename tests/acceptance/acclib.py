"""Acceptance helpers: what issue 3's "How it will be checked" does, done first.

Everything goes through the real `dynamicfs` command (the console script of this venv) and a
real FUSE mount made by the daemonizing `dynamicfs mount`, taken down by `dynamicfs umount`.
A pool that is still mounted at teardown (a failed test, a hung daemon) is unmounted; if that
does not work the mount is detached lazily and the daemon we started is killed by its pid.

A plain module, not conftest, so test files import it by name: pool handling, the tree
generator, the tree comparison and fragment surgery, so the tests read as the checker's
script would.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fusemount import FUSERMOUNT, cli, detach, in_mountinfo, need_fuse, pid_running

_SCRIPT = Path(sys.executable).parent / "dynamicfs"
DYNAMICFS = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "dynamicfs"]
MiB = 1 << 20


# -- the command ---------------------------------------------------------------------------


def run(*args: object, check: bool = True,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run `dynamicfs ARGS` as a user would; a failure shows the command's own output."""
    return cli(*args, check=check, timeout=timeout, prog=DYNAMICFS)


def run_json(*args: object, check: bool = True) -> dict:
    proc = run(*args, "--json", check=check)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"dynamicfs {' '.join(map(str, args))} --json exited {proc.returncode} "
                    f"without JSON:\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")


def wait_until(predicate: object, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():  # type: ignore[operator]
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)


# -- pools ---------------------------------------------------------------------------------


@dataclass
class Pool:
    """A pool of directory disks with capacity caps, mounted by the daemonizing CLI."""

    base: Path
    policy: str
    caps: list[str]
    pool: Path = field(init=False)
    mnt: Path = field(init=False)
    disks: list[Path] = field(default_factory=list)
    pid: int | None = None  # the mount daemon we started (for kill -9 and cleanup)
    pids: list[int] = field(default_factory=list)
    block_size: int = 0  # what `init` chose for the policy (read back once created)

    def __post_init__(self) -> None:
        self.pool = self.base / "pool"
        self.mnt = self.base / "mnt"

    def create(self) -> None:
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.block_size = run_json("init", "--policy", self.policy, self.pool)["block_size"]
        for i, cap in enumerate(self.caps):
            disk = self.base / f"disk{i}-{cap}"
            disk.mkdir()
            run("add-disk", "--capacity", cap, self.pool, disk)
            self.disks.append(disk)

    # mounting

    def mount(self) -> None:
        assert not in_mountinfo(self.mnt), f"{self.mnt} is already mounted"
        run("mount", self.pool, self.mnt, timeout=60)
        if not in_mountinfo(self.mnt):
            pytest.fail(f"`dynamicfs mount` returned but {self.mnt} is not mounted\n{self.log()}")
        st = self.status()
        assert st.get("mounted") is True and isinstance(st.get("pid"), int), st
        self.pid = st["pid"]
        self.pids.append(st["pid"])
        os.stat(self.mnt)  # it must answer, not only appear in the mount table

    def umount(self) -> None:
        """`dynamicfs umount`: it must flush, stop the daemon and leave no mount behind."""
        run("umount", "--timeout", "120", self.mnt, timeout=150)
        assert not in_mountinfo(self.mnt), f"{self.mnt} still mounted after umount"
        pid = self.pid
        if pid is not None:
            assert wait_until(lambda: not pid_running(pid), 10), \
                f"daemon {pid} still running after umount"
        self.pid = None

    def remount(self) -> None:
        self.umount()
        self.mount()

    def kill9(self) -> None:
        """SIGKILL the daemon, then lazily detach its dead mount with fusermount3 -u -z."""
        assert self.pid is not None
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not pid_running(pid), 10), f"daemon {pid} survived SIGKILL"
        subprocess.run([FUSERMOUNT or "fusermount3", "-u", "-z", str(self.mnt)],
                       capture_output=True, check=False)
        assert wait_until(lambda: not in_mountinfo(self.mnt), 10)
        self.pid = None

    def kill_hung(self) -> None:
        """Watchdog/cleanup: kill our daemons by pid so no syscall on the mount blocks forever."""
        for pid in self.pids:
            if pid_running(pid) and _is_dynamicfs(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def cleanup(self) -> None:
        """Teardown: whatever state the test left, no mount and no daemon remain."""
        if in_mountinfo(self.mnt):
            subprocess.run([*DYNAMICFS, "umount", "--timeout", "30", str(self.mnt)],
                           capture_output=True, timeout=60, check=False)
        if in_mountinfo(self.mnt):
            self.kill_hung()
            detach(self.mnt)
        for pid in self.pids:
            if not wait_until(lambda p=pid: not pid_running(p), 5):
                self.kill_hung()

    # reporting

    def status(self) -> dict:
        return run_json("status", self.pool)

    def list_disks(self) -> list[dict]:
        return run_json("list-disks", self.pool)["disks"]

    def log(self) -> str:
        try:
            return (self.pool / "daemon.log").read_text(errors="replace")[-8000:]
        except OSError:
            return "(no daemon.log)"


def _is_dynamicfs(pid: int) -> bool:
    try:
        return b"dynamicfs" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@contextmanager
def pool_session(base: Path, policy: str, caps: list[str], mount: bool = True,
                 budget: float = 240) -> Iterator[Pool]:
    """A created (and mounted) pool that is always unmounted at the end, whatever happened.
    After `budget` seconds a watchdog kills the daemon so a hang fails instead of blocking."""
    need_fuse()
    p = Pool(base, policy, caps)
    watchdog = threading.Timer(budget, p.kill_hung)
    watchdog.daemon = True
    try:
        p.create()
        if mount:
            p.mount()
        watchdog.start()
        yield p
    finally:
        watchdog.cancel()
        p.cleanup()


# -- a real tree -------------------------------------------------------------------------

XATTR_VALUES = [b"", b"v", b"\x00\x01\xffbinary", b"x" * 3000]


def build_tree(root: Path, seed: int = 1, small_files: int = 2000) -> dict[str, object]:
    """A tree like a real user's: thousands of small files, a few large random ones, sparse
    files, hard links, symlinks (relative, absolute, dangling), xattrs on files and dirs, odd
    names, empty files and dirs, a FIFO, many modes, other owners, nanosecond mtimes.
    Returns facts the tests use (e.g. which paths are sparse)."""
    rng = random.Random(seed)
    root.mkdir()
    facts: dict[str, object] = {"sparse": [], "large": []}
    dirs = [root]
    for i in range(60):
        parent = rng.choice(dirs)
        d = parent / f"dir{i:03d}"
        d.mkdir()
        dirs.append(d)
    files: list[Path] = []
    for i in range(small_files):
        d = rng.choice(dirs)
        f = d / f"file{i:05d}.dat"
        size = rng.choice([0, 1, 17, 100, 511, 512, 4095, 4096, 4097, 9000, 65536, 70001,
                           rng.randrange(0, 20000)])
        # Some repeated contents: identical files share extents (dedup) and must still copy.
        data = b"same content\n" * 40 if i % 50 == 7 else rng.randbytes(size)
        f.write_bytes(data)
        files.append(f)
    # Large files with random data (multi-MiB, unaligned tails, one exactly aligned).
    big = root / "big"
    big.mkdir()
    for name, size in [("random-5MiB", 5 * MiB), ("random-3MiB+12345", 3 * MiB + 12345),
                       ("random-2MiB-1", 2 * MiB - 1), ("random-7MiB+1", 7 * MiB + 1)]:
        (big / name).write_bytes(rng.randbytes(size))
        facts["large"].append(f"big/{name}")  # type: ignore[union-attr]
    # Sparse files: data at offsets past EOF, holes at start, middle and end.
    sp = root / "sparse"
    sp.mkdir()
    layouts: dict[str, list[tuple[int, int]]] = {
        "hole-then-data": [(9 * MiB, 4096)],
        "data-hole-data": [(0, 5000), (6 * MiB + 100, 70000)],
        "unaligned": [(3, 3), (1 * MiB + 7, 10), (4 * MiB - 1, 2)],
        "many-holes": [(i * 2 * MiB + i, 1000 + i) for i in range(8)],
    }
    for name, writes in layouts.items():
        fd = os.open(sp / name, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for off, n in writes:
                os.pwrite(fd, rng.randbytes(n), off)
        finally:
            os.close(fd)
        facts["sparse"].append(f"sparse/{name}")  # type: ignore[union-attr]
    with open(sp / "all-hole-10MiB", "wb") as fh:
        fh.truncate(10 * MiB)
    with open(sp / "data-then-hole-to-12MiB", "wb") as fh:
        fh.write(rng.randbytes(3000))
        fh.truncate(12 * MiB)
    facts["sparse"] += ["sparse/all-hole-10MiB", "sparse/data-then-hole-to-12MiB"]  # type: ignore[operator]
    # Hard links: pairs and a group of four across directories, one on a large file.
    hl = root / "hardlinks"
    hl.mkdir()
    os.link(big / "random-3MiB+12345", hl / "big-link")
    for i in range(0, 40, 4):
        os.link(files[i], hl / f"link{i}")
    os.link(files[1], hl / "quad-a")
    os.link(files[1], rng.choice(dirs) / "quad-b")
    os.link(files[1], root / "quad-c")
    # Symlinks: relative, absolute, dangling (relative and absolute), to a dir, a chain, long
    # and unicode targets.
    sl = root / "symlinks"
    sl.mkdir()
    os.symlink("../big/random-5MiB", sl / "rel-to-big")
    os.symlink(str(files[2]), sl / "absolute")
    os.symlink("/nonexistent/dangling/target", sl / "dangling-abs")
    os.symlink("no-such-file", sl / "dangling-rel")
    os.symlink("../dir000", sl / "to-dir")
    os.symlink("rel-to-big", sl / "chain")
    os.symlink("a/" * 500 + "long-target", sl / "long-target")
    os.symlink("ünïcødé target ☃", sl / "unicode-target")
    # Odd names.
    odd = root / "odd names"
    odd.mkdir()
    for name in ["with space", " leading space", "trailing space ", "tab\tin name",
                 "newline\nin name", "ünïcødé ☃ 文件", "-dash-first", "*star?*", "back\\slash",
                 "quote'\"", "#hash", "...", ".hidden", "e\u0301combining", "x" * 255,
                 "é" * 127 + "x", "☃" * 85]:
        assert len(name.encode()) <= 255, name
        (odd / name).write_bytes(name.encode() * 3)
    (odd / ("d" * 255)).mkdir()
    (odd / ("d" * 255) / ("f" * 255)).write_bytes(b"deep long names")
    (odd / bytes(range(0x80, 0x90)).decode("utf-8", "surrogateescape")).write_bytes(b"latin-1")
    # Empty files and dirs.
    emp = root / "empty"
    emp.mkdir()
    (emp / "empty-file").write_bytes(b"")
    (emp / "empty-dir").mkdir()
    (emp / "nested" / "empty" / "dirs").mkdir(parents=True)
    os.mkfifo(emp / "fifo", 0o640)
    # Xattrs on files and directories (user.* only: that is what cp -a and tar carry).
    for i, target in enumerate([files[3], files[4], big / "random-5MiB", dirs[1], dirs[2], root,
                                emp / "empty-file", emp / "empty-dir", odd / "with space"]):
        for j in range(1 + i % 4):
            os.setxattr(target, f"user.attr{j}", XATTR_VALUES[(i + j) % len(XATTR_VALUES)])
    os.setxattr(files[5], "user.ünïcødé", "värde".encode())
    os.setxattr(files[5], "user." + "n" * 200, b"long name")
    # Modes and owners (as root: other uids and gids, set-id bits, sticky dirs, mode 000).
    modes = [0o644, 0o600, 0o755, 0o700, 0o444, 0o000, 0o777, 0o640, 0o4755, 0o2755, 0o6711]
    for i, f in enumerate(files[6:40]):
        os.chown(f, 1000 + i, 2000 + i % 3)
        os.chmod(f, modes[i % len(modes)])
    os.chown(dirs[3], 4242, 4343)
    os.chmod(dirs[3], 0o1777)
    os.chmod(dirs[4], 0o2750)
    os.chmod(dirs[5], 0o555)
    os.chmod(emp / "empty-dir", 0o700)
    os.chown(sl / "rel-to-big", 777, 888, follow_symlinks=False)
    # Nanosecond mtimes everywhere, including before 1970 and far ahead; directories last
    # (children change a directory's mtime).
    all_paths: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames + dirnames:
            all_paths.append(Path(dirpath) / n)
    special = [-123_456_789, 1, 4_102_444_800_123_456_789, 1_700_000_000_000_000_001]
    for i, p in enumerate(sorted(all_paths, key=lambda p: -len(p.parts))):
        mtime = special[i] if i < len(special) else rng.randrange(10**18, 17 * 10**17)
        os.utime(p, ns=(rng.randrange(10**18, 2 * 10**18), mtime), follow_symlinks=False)
    os.utime(root, ns=(1_600_000_000_111_111_111, 1_600_000_000_222_222_222))
    return facts


# -- comparing trees -----------------------------------------------------------------------


def _hash_file(path: bytes) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def snapshot(root: Path, contents: bool = True) -> dict[bytes, dict[str, object]]:
    """Everything we compare about a tree, keyed by relative path (bytes)."""
    base = os.fsencode(root)
    out: dict[bytes, dict[str, object]] = {}
    inode_paths: dict[tuple[int, int], list[bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in [b"", *dirnames, *filenames] if dirpath == base else [*dirnames, *filenames]:
            full = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(full, base)
            st = os.lstat(full)
            kind = stat.S_IFMT(st.st_mode)
            e: dict[str, object] = {
                "type": {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
                         stat.S_IFIFO: "fifo"}.get(kind, oct(kind)),
                "mode": oct(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
                "mtime_ns": st.st_mtime_ns, "nlink": st.st_nlink,
            }
            if kind != stat.S_IFDIR:
                e["size"] = st.st_size
            if kind == stat.S_IFLNK:
                e["target"] = os.readlink(full)
            if kind == stat.S_IFREG:
                if contents:
                    e["sha256"] = _hash_file(full)
                if st.st_nlink > 1:
                    inode_paths.setdefault((st.st_dev, st.st_ino), []).append(rel)
            xattrs = {}
            for n in os.listxattr(full, follow_symlinks=False):
                if n == "security.selinux":
                    continue
                xattrs[n] = os.getxattr(full, n, follow_symlinks=False)
            e["xattrs"] = xattrs
            out[rel] = e
    # Hard-link grouping: each linked path names the other paths of its inode.
    for group in inode_paths.values():
        for p in group:
            out[p]["links"] = tuple(sorted(group))
    return out


def compare_trees(src: Path, dst: Path, contents: bool = True) -> list[str]:
    """Differences between two trees: type, mode, owner, size, mtime_ns, nlink, hard-link
    groups, symlink targets, xattrs and content hashes (not atime or ctime)."""
    a = snapshot(src, contents)
    b = snapshot(dst, contents)
    diffs: list[str] = []
    for p in sorted(a.keys() - b.keys()):
        diffs.append(f"missing on the mount: {p!r}")
    for p in sorted(b.keys() - a.keys()):
        diffs.append(f"extra on the mount: {p!r}")
    for p in sorted(a.keys() & b.keys()):
        ea, eb = a[p], b[p]
        for k in sorted(ea.keys() | eb.keys()):
            if ea.get(k) != eb.get(k):
                va, vb = ea.get(k), eb.get(k)
                if k == "xattrs":
                    va = {n: v[:40] for n, v in va.items()}  # type: ignore[union-attr]
                    vb = {n: v[:40] for n, v in vb.items()}  # type: ignore[union-attr]
                diffs.append(f"{p!r}: {k} source={va!r} mount={vb!r}")
    return diffs


def assert_same_tree(src: Path, dst: Path, what: str) -> None:
    diffs = compare_trees(src, dst)
    if diffs:
        shown = "\n  ".join(diffs[:40])
        pytest.fail(f"{what}: {len(diffs)} differences between {src} and {dst}:\n  {shown}")


# -- fragments on the disks ----------------------------------------------------------------


def fragment_files(disks: list[Path]) -> dict[str, list[tuple[int, Path]]]:
    """extent id (hex) -> [(fragment index, path)] over all disks."""
    out: dict[str, list[tuple[int, Path]]] = {}
    for disk in disks:
        for p in (disk / "fragments").rglob("*"):
            if p.is_file() and not p.name.startswith("."):
                h, _, idx = p.name.partition(".")
                out.setdefault(h, []).append((int(idx), p))
    return out


def extent_owners(root: Path, block_size: int = MiB) -> dict[str, set[str]]:
    """BLAKE3 of each non-hole block of every regular file -> the files (relative) holding it.
    Extent ids are the BLAKE3 of the block's plaintext (tail blocks at their real length)."""
    import blake3

    owners: dict[str, set[str]] = {}
    zero = bytes(block_size)
    for dirpath, _, filenames in os.walk(root):
        for n in filenames:
            p = Path(dirpath) / n
            if not p.is_file() or p.is_symlink():
                continue
            with open(p, "rb") as f:
                while block := f.read(block_size):
                    if block == zero[:len(block)]:
                        continue
                    h = blake3.blake3(block).hexdigest()
                    owners.setdefault(h, set()).add(str(p.relative_to(root)))
    return owners


def most_allocated(path: Path, block_size: int) -> int:
    """The most a copy of `path` may allocate: its blocks that hold any data, in full (up to
    EOF). Holes are block-sized: zeros inside a block with data are stored with it."""
    size = path.stat().st_size
    zero = bytes(block_size)
    total = 0
    with open(path, "rb") as f:
        for start in range(0, size, block_size):
            if f.read(block_size) != zero[:min(block_size, size - start)]:
                total += min(block_size, size - start)
    return total


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


HEADER = 128


def read_errno(path: Path) -> int | None:
    """Read a whole file; None if it read, else the errno of the failure."""
    try:
        _hash_file(os.fsencode(path))
    except OSError as exc:
        return exc.errno
    return None

