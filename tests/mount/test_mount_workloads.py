"""Real programs on a mounted pool: cp -a/diff, SQLite, git — and all of it after a remount."""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil
import sqlite3
import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import MountedPool

pytestmark = pytest.mark.mount

DOC = Path("/usr/share/doc")


def tree(root: Path) -> dict[str, tuple]:
    """What `cp -a` must preserve, per path: type, mode, owner, mtime, content or target."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                what: object = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                what = None
            out[str(p.relative_to(root))] = (
                stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                st.st_size if not stat.S_ISDIR(st.st_mode) else None, st.st_mtime_ns, what)
    return out


def run(*cmd: str | os.PathLike[str], cwd: Path | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def sqlite_fill(db: Path, rows: int, journal: str) -> None:
    con = sqlite3.connect(db)
    try:
        con.execute(f"PRAGMA journal_mode={journal}")
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, blob BLOB)")
        with con:
            con.executemany("INSERT INTO t (name, blob) VALUES (?, ?)",
                            ((f"row {i}", os.urandom(i % 300)) for i in range(rows)))
        with con:
            con.execute("DELETE FROM t WHERE id % 7 = 0")
            con.execute("UPDATE t SET name = name || '!' WHERE id % 5 = 0")
        con.execute("CREATE INDEX t_name ON t(name)")
    finally:
        con.close()


def sqlite_check(db: Path, rows: int) -> None:
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        expected = sum(1 for i in range(1, rows + 1) if i % 7)
        assert con.execute("SELECT count(*) FROM t").fetchone()[0] == expected
        assert con.execute("SELECT count(*) FROM t WHERE name LIKE '%!'").fetchone()[0] > 0
    finally:
        con.close()


@pytest.mark.skipif(not DOC.is_dir() or not shutil.which("diff"), reason="needs /usr/share/doc")
def test_cp_a_and_diff(workdir: Path, mounted: MountedPool) -> None:
    dest = workdir / "doc"
    run("cp", "-a", DOC, dest)
    run("diff", "-r", "--no-dereference", DOC, dest)
    original = tree(DOC)
    assert tree(dest) == original
    mounted.remount()
    run("diff", "-r", "--no-dereference", DOC, dest)
    assert tree(dest) == original


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_sqlite(workdir: Path, mounted: MountedPool, journal: str) -> None:
    db = workdir / "test.db"
    sqlite_fill(db, 5000, journal)
    sqlite_check(db, 5000)
    mounted.remount()
    sqlite_check(db, 5000)


@pytest.mark.skipif(not shutil.which("git"), reason="needs git")
def test_git(workdir: Path, mounted: MountedPool) -> None:
    repo = workdir / "repo"
    env_args = ("-c", "user.name=Test", "-c", "user.email=test@example.com",
                "-c", "init.defaultBranch=main", "-c", "gc.auto=0")
    run("git", *env_args, "init", "-q", repo)
    for i in range(30):
        (repo / f"file{i}.txt").write_text(f"content {i}\n" * (i + 1))
    (repo / "sub").mkdir()
    (repo / "sub" / "bin").write_bytes(os.urandom(200000))
    run("git", *env_args, "add", "-A", cwd=repo)
    run("git", *env_args, "commit", "-q", "-m", "first", cwd=repo)
    (repo / "file3.txt").write_text("changed\n")
    run("git", *env_args, "mv", "file4.txt", "moved.txt", cwd=repo)
    run("git", *env_args, "commit", "-q", "-am", "second", cwd=repo)
    run("git", *env_args, "gc", "-q", cwd=repo)
    mounted.remount()
    run("git", "fsck", "--full", "--strict", cwd=repo)
    assert run("git", "status", "--porcelain", cwd=repo) == ""
    assert run("git", "log", "--format=%s", cwd=repo).split() == ["second", "first"]


def test_persistence_after_remount(workdir: Path, mounted: MountedPool) -> None:
    (workdir / "d").mkdir(mode=0o700)
    f = workdir / "d" / "f"
    data = os.urandom(2 * 1024 * 1024 + 17)
    f.write_bytes(data)
    os.utime(f, ns=(1_000_000_001, 2_000_000_002))
    os.chown(f, 4321, 8765)
    os.setxattr(f, "user.kept", b"yes")
    os.link(f, workdir / "hard")
    os.symlink("d/f", workdir / "sym")
    sparse = workdir / "sparse"
    with open(sparse, "wb") as w:
        w.seek(5 * 1024 * 1024)
        w.write(b"tail")
    mapped = workdir / "mapped"
    mapped.write_bytes(bytes(1024 * 1024))
    with open(mapped, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as m:
        m[4096:4100] = b"MMAP"
        m.flush()
    before = {p: os.lstat(workdir / p) for p in ("d", "d/f", "hard", "sym", "sparse", "mapped")}

    mounted.remount()

    # Stat before reading: with relatime, reading may move an atime older than the mtime.
    st = os.stat(f)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_001, 2_000_000_002)
    assert f.read_bytes() == data
    assert (st.st_uid, st.st_gid, st.st_nlink) == (4321, 8765, 2)
    assert os.getxattr(f, "user.kept") == b"yes"
    assert os.stat(workdir / "hard").st_ino == st.st_ino
    assert os.readlink(workdir / "sym") == "d/f"
    assert stat.S_IMODE(os.stat(workdir / "d").st_mode) == 0o700
    assert sparse.read_bytes() == bytes(5 * 1024 * 1024) + b"tail"
    assert mapped.read_bytes()[4096:4100] == b"MMAP"
    for p, old in before.items():
        new = os.lstat(workdir / p)
        assert (new.st_ino, new.st_mode, new.st_size, new.st_mtime_ns) == (
            old.st_ino, old.st_mode, old.st_size, old.st_mtime_ns), p


def test_times_stable_across_remount(workdir: Path, mounted: MountedPool) -> None:
    """What stat shows must not change by unmounting. With the writeback cache the kernel keeps
    mtime and ctime itself and writes dirty pages back later; a store that stamps its own clock
    on those late writes shows other times after a remount. Many files make the race certain.
    """
    before = {}
    for i in range(30):
        f = workdir / f"m{i}"
        f.write_bytes(bytes(64 * 1024))
        with open(f, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as m:
            m[100:104] = b"MMAP"
            m.flush()
        st = os.stat(f)
        before[f.name] = (st.st_mtime_ns, st.st_ctime_ns)
    mounted.remount()
    after = {}
    for name in before:
        st = os.stat(workdir / name)
        after[name] = (st.st_mtime_ns, st.st_ctime_ns)
    changed = {n: (before[n], after[n]) for n in before if before[n] != after[n]}
    assert not changed, f"{len(changed)} of {len(before)} (mtime, ctime) moved: {changed}"
