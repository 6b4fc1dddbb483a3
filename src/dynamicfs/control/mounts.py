"""Where each pool is mounted: state files, a per-host registry and /proc/self/mountinfo.

The kernel's mount table names a DynamicFS mount only as `dynamicfs`, not by pool, so the daemon
records each mount twice: `POOL/mounted` (for `umount POOL`) and a registry entry keyed by the
mountpoint (for `umount MNT`). Both hold {"pool", "mountpoint", "pid", "socket"}. Neither is trusted
alone: a record counts only while its pid is a live DynamicFS process or the mount exists.

Nothing here stat()s a mountpoint: if its daemon is stuck, that stat would hang too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

STATE_NAME = "mounted"


@dataclass(frozen=True)
class MountRecord:
    pool: str
    mountpoint: str
    pid: int
    socket: str


SYSTEM_REGISTRY = Path("/run/dynamicfs/mounts")


def registry_dir() -> Path:
    """Where this user's daemons record their mounts."""
    if os.geteuid() == 0:
        return SYSTEM_REGISTRY
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/dynamicfs-{os.getuid()}"
    return Path(base) / "dynamicfs" / "mounts"


def _entry_name(mountpoint: str) -> str:
    # Hashed because a mountpoint path can be longer than a file name may be.
    return hashlib.sha256(os.fsencode(mountpoint)).hexdigest()[:32]


def _registry_entry(mountpoint: str) -> Path:
    return registry_dir() / _entry_name(mountpoint)


def canonical_mountpoint(path: str | os.PathLike[str]) -> str:
    """An absolute path with symlinks resolved in the parent only (the last component may be
    a mount whose daemon no longer answers)."""
    absolute = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(absolute)
    if not name:
        return absolute
    absolute = os.path.join(os.path.realpath(parent), name)
    # A symlink to the mountpoint lives on the parent's filesystem: following it is safe.
    return os.path.realpath(absolute) if os.path.islink(absolute) else absolute


def _write_json(path: Path, obj: dict[str, object]) -> None:
    # Readable by all, whatever the daemon's umask: the pool owner's `umount` reads them, and
    # they hold nothing secret (paths and a pid).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o644)
        f.write(json.dumps(obj) + "\n")
    os.replace(tmp, path)


def _read_record(path: Path) -> MountRecord | None:
    try:
        obj = json.loads(path.read_text())
        return MountRecord(str(obj["pool"]), str(obj["mountpoint"]), int(obj["pid"]),
                           str(obj["socket"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_mount(pool: Path, mountpoint: str, socket: Path) -> None:
    obj: dict[str, object] = {"pool": str(pool), "mountpoint": mountpoint, "pid": os.getpid(),
                              "socket": str(socket)}
    _write_json(pool / STATE_NAME, obj)
    entry = _registry_entry(mountpoint)
    entry.parent.mkdir(parents=True, exist_ok=True)
    for directory in (entry.parent, entry.parent.parent):
        if directory.stat().st_uid == os.geteuid():
            os.chmod(directory, 0o755)
    _write_json(entry, obj)


def forget_mount(pool: Path, mountpoint: str, pid: int | None = None) -> None:
    """Remove both records, but only those written by `pid` (default: this process), so a
    late-exiting daemon cannot erase the records of the one that replaced it."""
    pid = os.getpid() if pid is None else pid
    for path in (pool / STATE_NAME, _registry_entry(mountpoint)):
        rec = _read_record(path)
        if rec is not None and rec.pid == pid:
            path.unlink(missing_ok=True)


def pool_record(pool: Path) -> MountRecord | None:
    return _read_record(pool / STATE_NAME)


def mountpoint_record(mountpoint: str) -> MountRecord | None:
    """The record of the mount at `mountpoint`: this user's daemons first, then root's (a
    pool owner may control a pool that root mounted for them)."""
    for directory in dict.fromkeys((registry_dir(), SYSTEM_REGISTRY)):
        rec = _read_record(directory / _entry_name(mountpoint))
        if rec is not None and rec.mountpoint == mountpoint:
            return rec
    return None


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a running DynamicFS process (a recycled pid running something else
    does not count)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie has exited; its parent just has not reaped it yet.
    state = status.rsplit(")", 1)[-1].split()[0:1]
    return b"dynamicfs" in cmdline and state != ["Z"]


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_type(mountpoint: str) -> str | None:
    """The filesystem type mounted exactly at `mountpoint` (the topmost one), or None."""
    found = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split(" ")
                if len(fields) < 5 or _unescape(fields[4]) != mountpoint:
                    continue
                try:
                    found = fields[fields.index("-") + 1]
                except (ValueError, IndexError):
                    found = "unknown"
    except OSError:
        return None
    return found


def is_dynamicfs_type(fstype: str | None) -> bool:
    return fstype is not None and fstype.startswith("fuse") and fstype.endswith("dynamicfs")
