"""A small Python rendering of pjdfstest's `fstest` tool and `misc.sh` helpers.

pjdfstest (github.com/pjd/pjdfstest) drives every syscall through one C program and checks its
output line with `expect RESULT [-u UID] [-g GID[,GID...]] [-U UMASK] SYSCALL ARGS...`. Here the
same shape is a Python call:

    expect("EACCES", "link", d / "n0", d / "n1", u=65534)

runs link(2) as uid 65534 (gid and groups stay root's, as `fstest -u` leaves them), and fails
with the exact call, credentials, wanted and seen result. RESULT is "0" for success, an errno
name, a value (an int or str the op returns), or several separated by "|" as in pjdfstest.

Acting as another user forks a child that calls setgroups/setresgid/setresuid, runs the op and
sends its outcome back through a pipe; root calls run in-process. Like fstest, every call runs
with umask 0 unless `U=` gives one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import pickle
import socket
import stat
import time
from collections.abc import Callable, Sequence
from pathlib import Path

NAP = 0.05  # pjdfstest sleeps 1 s between time stamps; all our clocks have ns resolution
TYPES = ("regular", "dir", "fifo", "block", "char", "socket", "symlink")
NONDIR = ("regular", "fifo", "block", "char", "socket", "symlink")

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100

# Paths in messages are shown relative to this (the conformance root), to keep them short.
ROOT: list[Path] = []


def _short(arg: object) -> str:
    if isinstance(arg, Path) and ROOT:
        try:
            return str(arg.relative_to(ROOT[0]))
        except ValueError:
            return str(arg)
    if isinstance(arg, int) and not isinstance(arg, bool) and arg > 7:
        return oct(arg) if arg < 0o10000 else str(arg)
    return repr(arg)


# -- the syscalls, as fstest names them ----------------------------------------------------------

def _create(path: Path, mode: int) -> int:
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode))
    return 0


def _open(path: Path, flags: int, mode: int = 0o644) -> int:
    os.close(os.open(path, flags, mode))
    return 0


def _mknod(path: Path, kind: str, mode: int, major: int = 0, minor: int = 0) -> int:
    fmt = {"b": stat.S_IFBLK, "c": stat.S_IFCHR, "f": stat.S_IFIFO}[kind]
    os.mknod(path, fmt | mode, os.makedev(major, minor))
    return 0


def _bind(path: Path) -> int:
    # sun_path holds 108 bytes: bind a short relative name from inside the directory.
    here = os.open(".", os.O_RDONLY)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.chdir(path.parent)
        s.bind(path.name)
    finally:
        s.close()
        os.fchdir(here)
        os.close(here)
    return 0


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _utimensat(path: Path, asec: int, ansec: int, msec: int, mnsec: int,
               flags: int = 0) -> int:
    """utimensat(AT_FDCWD, path, {{asec, ansec}, {msec, mnsec}}, flags), UTIME_NOW/OMIT too."""
    times = (_Timespec * 2)(_Timespec(asec, ansec), _Timespec(msec, mnsec))
    if _libc.utimensat(AT_FDCWD, os.fsencode(path), times, flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    return 0


def _fd_sequence(path: Path, flags: int, *steps: tuple) -> object:
    """fstest's `open PATH FLAGS : step : step`: the last step's result is the outcome."""
    return _fd_sequence_mode(path, flags, 0o644, *steps)


def _fd_sequence_mode(path: Path, flags: int, mode: int, *steps: tuple) -> object:
    """fstest's `open PATH FLAGS MODE : step : ...` (O_CREAT with a mode)."""
    fd = os.open(path, flags, mode)
    try:
        out: object = 0
        for step in steps:
            name, *args = step
            if name == "write":
                os.write(fd, args[0])
                out = 0
            elif name == "ftruncate":
                os.ftruncate(fd, args[0])
                out = 0
            elif name == "fstat":
                st = os.fstat(fd)
                out = _field(st, args[0])
            elif name == "unlink":
                os.unlink(args[0])
                out = 0
            elif name == "pwrite":
                out = os.pwrite(fd, args[0], args[1])
            elif name == "pread":
                out = os.pread(fd, args[0], args[1])
            else:
                raise ValueError(f"unknown step {name}")
        return out
    finally:
        os.close(fd)


OPS: dict[str, Callable[..., object]] = {
    "create": _create,
    "open": _open,
    "mkdir": lambda p, mode: os.mkdir(p, mode),
    "mkfifo": lambda p, mode: os.mkfifo(p, mode),
    "mknod": _mknod,
    "bind": _bind,
    "chmod": lambda p, mode: os.chmod(p, mode),
    "chown": lambda p, uid, gid: os.chown(p, uid, gid),
    "lchown": lambda p, uid, gid: os.lchown(p, uid, gid),
    "link": lambda a, b: os.link(a, b, follow_symlinks=False),
    "symlink": lambda target, p: os.symlink(target, p),
    "readlink": lambda p: os.readlink(p),
    "rename": lambda a, b: os.rename(a, b),
    "unlink": lambda p: os.unlink(p),
    "rmdir": lambda p: os.rmdir(p),
    "truncate": lambda p, size: os.truncate(p, size),
    "utimensat": _utimensat,
    "seq": _fd_sequence,
    "seqm": _fd_sequence_mode,
    "stat": lambda p, fields: _stat(p, fields, follow=True),
    "lstat": lambda p, fields: _stat(p, fields, follow=False),
}


# -- running an op as some user ----------------------------------------------------------------

def _outcome(fn: Callable[..., object], args: Sequence[object]) -> object:
    try:
        out = fn(*args)
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return 0 if out is None else out


def call(op: str, *args: object, u: int | None = None, g: int | Sequence[int] | None = None,
         U: int = 0) -> object:
    """Run `op(*args)` as uid `u` with gid/groups `g` and umask `U`; returns its outcome."""
    fn = OPS[op]
    if u is None and g is None:
        old = os.umask(U)
        try:
            return _outcome(fn, args)
        finally:
            os.umask(old)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            os.close(rfd)
            if g is not None:
                gids = [g] if isinstance(g, int) else list(g)
                os.setgroups(gids)
                os.setresgid(gids[0], gids[0], gids[0])
            if u is not None:
                os.setresuid(u, u, u)
            os.umask(U)
            data = pickle.dumps(("ok", _outcome(fn, args)))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            data = pickle.dumps(("crash", repr(exc)))
            code = 1
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(wfd, view):]
        finally:
            os._exit(code)
    os.close(wfd)
    chunks = []
    with os.fdopen(rfd, "rb") as f:
        while chunk := f.read():
            chunks.append(chunk)
    os.waitpid(pid, 0)
    kind, value = pickle.loads(b"".join(chunks))
    if kind != "ok":
        raise AssertionError(f"child running {op} crashed: {value}")
    return value


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(_show(v) for v in value)
    return _short(value) if isinstance(value, int) else str(value)


def describe(op: str, args: Sequence[object], u: object, g: object, U: int) -> str:
    who = []
    if u is not None:
        who.append(f"-u {u}")
    if g is not None:
        who.append(f"-g {g if isinstance(g, int) else ','.join(map(str, g))}")
    if U:
        who.append(f"-U {U:#o}")
    return " ".join([*who, op, *map(_short, args)])


def expect(want: object, op: str, *args: object, u: int | None = None,
           g: int | Sequence[int] | None = None, U: int = 0) -> object:
    """pjdfstest's `expect`: run the op and compare its outcome with `want`."""
    got = call(op, *args, u=u, g=g, U=U)
    if isinstance(want, str):  # "0", "EACCES", "EACCES|EPERM", "65533|65535"
        ok = str(got) in want.split("|")
    else:
        ok = got == want
    assert ok, f"{describe(op, args, u, g, U)}: expected {_show(want)}, got {_show(got)}"
    return got


# -- stat fields as fstest prints them ---------------------------------------------------------

_TYPE_NAMES = {
    stat.S_IFREG: "regular", stat.S_IFDIR: "dir", stat.S_IFIFO: "fifo", stat.S_IFBLK: "block",
    stat.S_IFCHR: "char", stat.S_IFSOCK: "socket", stat.S_IFLNK: "symlink",
}


def _one(st: os.stat_result, name: str) -> object:
    if name == "type":
        return _TYPE_NAMES.get(stat.S_IFMT(st.st_mode), "unknown")
    if name == "mode":
        return stat.S_IMODE(st.st_mode)
    if name in ("major", "minor"):
        return getattr(os, name)(st.st_rdev)
    if name in ("atime", "mtime", "ctime"):
        return getattr(st, f"st_{name}_ns")  # nanoseconds: finer than fstest's seconds
    if name.endswith("_ns"):  # fstest's atime_ns etc.: the sub-second part
        return getattr(st, f"st_{name}") % 1_000_000_000
    return {"inode": st.st_ino, "nlink": st.st_nlink, "uid": st.st_uid, "gid": st.st_gid,
            "size": st.st_size}[name]


def _field(st: os.stat_result, fields: str) -> object:
    values = [_one(st, f) for f in fields.split(",")]
    return values[0] if len(values) == 1 else tuple(values)


# When set (the mount run), every stat is taken twice: as the kernel has it cached, then
# after dropping the kernel's unused inodes, so the daemon answers a fresh lookup. A
# difference means the kernel showed something the pool did not store.
RECHECK: list[bool] = [False]


def drop_kernel_caches() -> None:
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")


def _stat(path: Path | str, fields: str, *, follow: bool) -> object:
    get = os.stat if follow else os.lstat
    value = _field(get(path), fields)
    if RECHECK[0] and os.geteuid() == 0:
        drop_kernel_caches()
        try:
            fresh = _field(get(path), fields)
        except OSError as exc:
            fresh = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        assert fresh == value, (
            f"{'stat' if follow else 'lstat'} {_short(path)} {fields}: the kernel's cached "
            f"{_show(value)} but the daemon, asked afresh, says {_show(fresh)}")
    return value


def lstat(path: Path, fields: str) -> object:
    return _stat(path, fields, follow=False)


def stat_(path: Path, fields: str) -> object:
    return _stat(path, fields, follow=True)


def seconds(ns: int) -> int:
    return ns // 1_000_000_000


# -- misc.sh -----------------------------------------------------------------------------------

def create_file(kind: str, path: Path, *ids: int, mode: int | None = None) -> None:
    """misc.sh `create_file TYPE NAME [UID GID]`; `mode` is set with chmod afterwards."""
    if kind == "none":
        return
    if kind == "regular":
        expect("0", "create", path, 0o644)
    elif kind == "dir":
        expect("0", "mkdir", path, 0o755)
    elif kind == "fifo":
        expect("0", "mkfifo", path, 0o644)
    elif kind == "block":
        expect("0", "mknod", path, "b", 0o644, 1, 2)
    elif kind == "char":
        expect("0", "mknod", path, "c", 0o644, 1, 2)
    elif kind == "socket":
        expect("0", "bind", path)
    elif kind == "symlink":
        expect("0", "symlink", "test", path)
    else:
        raise ValueError(kind)
    if mode is not None:
        expect("0", "chmod", path, mode)
    if ids:
        expect("0", "lchown", path, ids[0], ids[1])


def remove(kind: str, path: Path) -> None:
    if kind == "none":
        return
    expect("0", "rmdir" if kind == "dir" else "unlink", path)


def nap() -> None:
    time.sleep(NAP)
