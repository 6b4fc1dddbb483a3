"""Mounting: the FUSE mount options, the pyfuse3 main loop, and a clean way to stop it.

Request sizes: nothing needs asking for. libfuse 3 (3.14 here) sizes its buffer for
FUSE_MAX_MAX_PAGES (256 pages) and negotiates max_write = 1 MiB with max_pages in the INIT reply
on kernels >= 4.20, so the kernel already sends 1 MiB writes (measured: a 32 MiB dd arrives as
1 MiB WRITEs; the writeback cache gathers small ones). Unlike fuse 2, libfuse 3 rejects
`-o max_write=N` in fuse_session_new ("unknown option"): that knob moved into fuse_conn_info,
which pyfuse3 does not expose. `-o max_read=N` is still accepted, but can only shrink reads.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

import pyfuse3
import trio

from ..engine.pool import parse_size
from ..errors import DynamicFSError
from .operations import Operations

log = logging.getLogger(__name__)

FS_NAME = "dynamicfs"
# Kernel readahead on the mount: one maximal (1 MiB) FUSE read, see _raise_readahead.
READAHEAD_KB = 1024
BASE_OPTIONS = {
    "default_permissions": None,  # the kernel checks modes; access() is then never called
    "nosuid": None,
    "nodev": None,
    "fsname": FS_NAME,
    "subtype": FS_NAME,
}
# Options that would undo a safety default, or that libfuse 3 no longer takes as mount options.
REFUSED = {
    "suid": "suid would let set-user-ID files on the pool run with their owner's rights",
    "dev": "dev would let device nodes on the pool reach real devices",
    "max_write": "libfuse 3 negotiates 1 MiB writes itself and rejects max_write",
}
# Pairs where giving both is a contradiction libfuse would settle silently.
CONFLICTS = [("ro", "rw"), ("allow_other", "allow_root")]
# Options DynamicFS itself takes (never passed to libfuse): name -> smallest value.
ENGINE_OPTIONS = {"cache_size": 16 << 20}


def engine_options(options: set[str]) -> tuple[set[str], dict[str, int]]:
    """Split what build_options returned into FUSE options and DynamicFS's own."""
    fuse, own = set(), {}
    for item in options:
        key, _, value = item.partition("=")
        if key in ENGINE_OPTIONS:
            own[key] = int(value)
        else:
            fuse.add(item)
    return fuse, own


def build_options(user_options: list[str]) -> set[str]:
    """The mount options for pyfuse3.init: our fixed set plus the user's `-o` items."""
    opts: dict[str, str | None] = dict(BASE_OPTIONS)
    for group in user_options:
        for item in group.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            if key in REFUSED:
                raise DynamicFSError(f"mount option '{key}' refused: {REFUSED[key]}")
            if key in ENGINE_OPTIONS:
                size = parse_size(value) if sep else 0
                if size < ENGINE_OPTIONS[key]:
                    raise DynamicFSError(f"mount option '{key}' needs a size of at least "
                                         f"{ENGINE_OPTIONS[key] >> 20}M, e.g. {key}=512M")
                opts[key] = str(size)
                continue
            opts[key] = value if sep else None
    for a, b in CONFLICTS:
        if a in opts and b in opts:
            raise DynamicFSError(f"mount options '{a}' and '{b}' contradict each other")
    return {key if value is None else f"{key}={value}" for key, value in opts.items()}


def _unescape_mountinfo(field: str) -> str:
    # /proc/self/mountinfo writes space, tab, newline and backslash as \ooo octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def is_mounted(mountpoint: Path) -> bool:
    """Whether the kernel still has a mount at `mountpoint`.

    Reads /proc/self/mountinfo instead of stat()ing the path: once our main loop has
    returned, nobody answers FUSE requests and a stat of the mountpoint would hang.
    """
    try:
        return _mount_device(mountpoint) is not None
    except OSError:
        # Without /proc, assume still mounted: an unneeded unmount attempt is harmless.
        return True


def _mount_device(mountpoint: Path) -> str | None:
    """The "major:minor" of the mount at `mountpoint` (the last one, if stacked), or None."""
    target = os.path.abspath(mountpoint)
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4 and _unescape_mountinfo(fields[4]) == target:
                found = fields[2]
    return found


def _raise_readahead(mountpoint: Path) -> None:
    """Let the kernel read ahead READAHEAD_KB on this mount instead of its 128 KiB default.

    The INIT reply cannot raise it (the kernel takes the smaller of ours and its default, and
    sets it when it processes the reply, hence Operations.after_init), but root can through
    the mount's backing device in sysfs. Sequential reads then arrive as
    1 MiB requests with more of them in flight: measured 0.5-0.6 GiB/s at 128 KiB, 0.7-0.8
    GiB/s at 1 MiB, cold. Not being root only costs that speed.
    """
    try:
        dev = _mount_device(mountpoint)
        if dev is not None:
            Path(f"/sys/class/bdi/{dev}/read_ahead_kb").write_text(f"{READAHEAD_KB}\n")
    except OSError as exc:
        log.info("kept the kernel's default readahead on %s: %s", mountpoint, exc)


def _init(ops: Operations, mountpoint: Path, options: set[str]) -> None:
    """pyfuse3.init, turning its bare RuntimeError into a message that says why.

    libfuse prints the reason (an unknown option, a bad mountpoint) on stderr, which a
    daemonized mount has pointed at /dev/null, and pyfuse3 only raises "fuse_session_new()
    failed". So stderr is caught around the call and its last line goes into the error.
    """
    with tempfile.TemporaryFile() as caught:
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            pyfuse3.init(ops, str(mountpoint), options)
            failure = None
        except RuntimeError as exc:
            failure = exc
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        said = caught.read().decode(errors="replace").strip()
    if said:
        log.warning("libfuse: %s", said)
    if failure is not None:
        reason = said.splitlines()[-1] if said else str(failure)
        raise DynamicFSError(f"cannot mount {mountpoint}: {reason}")


async def serve_fuse(ops: Operations, mountpoint: Path, options: set[str], *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Mount `ops` at `mountpoint` and answer requests until unmounted or `request_stop()`."""
    ops.after_init = lambda: _raise_readahead(mountpoint)
    _init(ops, mountpoint, options)
    try:
        task_status.started()
        await pyfuse3.main()
    finally:
        # The notifier must be quiet before the session it writes to is destroyed.
        ops.notifier.stop()
        # `fusermount -u` has already unmounted by the time main() returns; stop requests,
        # signals and crashes leave the mount in place, and close() must take it down, or
        # every access would fail with ENOTCONN.
        unmount = is_mounted(mountpoint)
        log.debug("closing FUSE session (unmount=%s)", unmount)
        pyfuse3.close(unmount=unmount)


def request_stop() -> None:
    """Make a running `pyfuse3.main()` return; safe from the trio thread or any other thread."""
    token = pyfuse3.trio_token
    if token is None:
        return
    try:
        current = trio.lowlevel.current_trio_token()
    except RuntimeError:
        current = None
    if current is token:
        pyfuse3.terminate()
    else:
        trio.from_thread.run_sync(pyfuse3.terminate, trio_token=token)
