"""The mount daemon: checks, daemonizing, and the trio loop that serves FUSE and the control socket.

Daemonizing happens before any thread exists (fork copies only the calling thread, so a
thread started earlier would be silently missing in the child, holding whatever lock it held).
The parent stays until the child reports over a pipe: a JSON line saying the filesystem is
mounted, or the one-line error that stopped it.

Stopping: `dynamicfs umount` (the `shutdown` control op) and SIGTERM/SIGINT/SIGHUP unmount
through the kernel with `fusermount3 -u`. The kernel then writes back the dirty pages of the
writeback cache to us before the connection ends, after which `pyfuse3.main()` returns by
itself. `request_stop()` is only the fallback (a signal while the mount is busy, or no
fusermount3): the kernel is first made to write back its dirty pages (syncfs), but pyfuse3 then
closes /dev/fuse before unmounting, so writes still in flight at that instant are lost and
their writers get EIO from close() or fsync().
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .control.client import call
from .control.mounts import (
    MountRecord,
    canonical_mountpoint,
    forget_mount,
    is_dynamicfs_type,
    mount_type,
    mountpoint_record,
    pid_alive,
    pool_record,
    record_mount,
)
from .control.protocol import ControlError, NotMounted
from .engine.pool import CONFIG_NAME, SWEEP_INTERVAL, Pool
from .errors import DynamicFSError, PoolBusy
from .memory import limit_malloc_arenas, resident_bytes, trim_malloc
from .meta import MetadataError
from .obs.log import setup_logging

log = logging.getLogger(__name__)

START_TIMEOUT = 120.0  # opening a large pool may take a while; a silent child longer is stuck
UNMOUNT_TIMEOUT = 300.0  # the kernel writes back every dirty page before an unmount completes
SYNC_TIMEOUT = 60.0  # for writing back dirty pages before a forced stop
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Crash leftovers are swept this long after mounting: late enough not to compete with
# whatever the user does right after the mount, early enough that nobody has to run gc.
GC_DELAY = 5.0
TRIM_INTERVAL = 1.0  # seconds between malloc_trim calls (memory.trim_malloc) at the latest
# How often the resident size is read: above the cache's line (BlockCache.memory_high) the
# heap is trimmed at once rather than at the next TRIM_INTERVAL.
MEMORY_CHECK_INTERVAL = 0.2


def fusermount() -> str | None:
    return shutil.which("fusermount3") or next(
        (p for p in ("/usr/bin/fusermount3", "/bin/fusermount3") if os.access(p, os.X_OK)), None)


# -- checks made before anything is started ---------------------------------------------------

def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def _refuse_mounted(mnt_text: str) -> None:
    fstype = mount_type(mnt_text)
    if is_dynamicfs_type(fstype):
        rec = mountpoint_record(mnt_text)
        if rec is not None and pid_alive(rec.pid):
            state = f" (pool {rec.pool}, daemon pid {rec.pid})"
        else:
            state = " whose daemon is gone"
        raise PoolBusy(f"{mnt_text} already has a DynamicFS mount{state}; "
                       f"unmount it first with 'dynamicfs umount {mnt_text}'")
    if fstype is not None and fstype.startswith("fuse"):
        raise PoolBusy(f"{mnt_text} already has a FUSE filesystem ({fstype}) mounted on it")


def check_mountpoint(pool: Pool, mountpoint: Path) -> Path:
    """The resolved mountpoint, or DynamicFSError saying why it cannot be used."""
    # Look at the mount table before touching the path: stat() on a dead FUSE mount fails
    # (ENOTCONN), and on a stuck one it would hang.
    _refuse_mounted(canonical_mountpoint(mountpoint))
    try:
        mnt = mountpoint.resolve(strict=True)
    except FileNotFoundError:
        raise DynamicFSError(f"mountpoint {mountpoint} does not exist; create it first") from None
    except OSError as exc:
        raise DynamicFSError(f"cannot use mountpoint {mountpoint}: {exc.strerror}") from None
    _refuse_mounted(str(mnt))  # the same, if the name given was a symlink
    if not mnt.is_dir():
        raise DynamicFSError(f"mountpoint {mnt} is not a directory")
    # Mounting over the pool or a disk would hide our own files behind our own mount.
    if _overlaps(mnt, pool.path):
        raise DynamicFSError(f"mountpoint {mnt} overlaps the pool directory {pool.path}")
    for disk in pool.disk_report():
        if _overlaps(mnt, Path(disk["path"])):
            raise DynamicFSError(f"mountpoint {mnt} overlaps disk {disk['id']} ({disk['path']})")
    return mnt


def preflight(pool_path: Path, mountpoint: Path, user_options: list[str]) -> tuple[Path, Path,
                                                                                  set[str]]:
    """Everything that can be refused without starting: pool, disks vs policy, mountpoint,
    options. Returns (pool path, mountpoint, FUSE options)."""
    from .fuse.mount import build_options

    options = build_options(user_options)
    pool = Pool.open(pool_path, readonly=True)
    try:
        Pool.check_policy(pool.policy, len(pool.disk_report()))
        mnt = check_mountpoint(pool, mountpoint)
        return pool.path, mnt, options
    finally:
        pool.close()


# -- start-up reporting -----------------------------------------------------------------------

class Reporter:
    """Tells whoever started the mount that it is up, or why it is not."""

    def __init__(self) -> None:
        self.done = False
        self.error: DynamicFSError | None = None

    def ready(self, pool: Path, mnt: Path) -> None:
        self.done = True

    def failed(self, error: DynamicFSError) -> None:
        self.done = True
        self.error = error


class ConsoleReporter(Reporter):
    def ready(self, pool: Path, mnt: Path) -> None:
        super().ready(pool, mnt)
        print(f"mounted {pool} on {mnt} (pid {os.getpid()}); "
              f"stop with Ctrl-C or 'dynamicfs umount {mnt}'", flush=True)


class PipeReporter(Reporter):
    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def _send(self, obj: dict[str, Any]) -> None:
        try:
            os.write(self.fd, json.dumps(obj).encode() + b"\n")
            os.close(self.fd)
        except OSError:
            pass  # the parent is gone (killed); nobody is left to tell

    def ready(self, pool: Path, mnt: Path) -> None:
        super().ready(pool, mnt)
        self._send({"ok": True, "pid": os.getpid()})

    def failed(self, error: DynamicFSError) -> None:
        super().failed(error)
        self._send({"ok": False, "error": str(error), "exit_code": error.exit_code})


# -- the daemon's trio loop -------------------------------------------------------------------

async def unmount_through_kernel(mnt: Path) -> None:
    """Unmount `mnt` the way `umount` would, so the kernel flushes dirty pages to us first."""
    import trio

    from .fuse.mount import request_stop

    tool = fusermount()
    if mount_type(str(mnt)) is None or tool is None:
        request_stop()
        return
    with trio.move_on_after(UNMOUNT_TIMEOUT) as scope:
        proc = await trio.run_process([tool, "-u", str(mnt)], capture_stdout=True,
                                      capture_stderr=True, check=False)
    if scope.cancelled_caught:
        raise ControlError(f"unmounting {mnt} did not finish within {UNMOUNT_TIMEOUT:.0f} s")
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        detail = lines[-1] if lines else f"fusermount3 exited {proc.returncode}"
        raise PoolBusy(f"cannot unmount {mnt}: {detail}")


def _syncfs(mnt: Path) -> None:
    fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


async def _stop_on_signal(mnt: Path) -> None:
    import trio

    from .fuse.mount import request_stop

    try:
        await unmount_through_kernel(mnt)
    except DynamicFSError as exc:
        # A signal means "stop now": do not wait for the mount's users. But first have the
        # kernel write back what open files have written so far (from a worker thread, since
        # this thread must answer those writes): a forced stop drops any page still dirty.
        log.warning("%s; forcing the unmount", exc)
        with trio.move_on_after(SYNC_TIMEOUT):
            try:
                await trio.to_thread.run_sync(_syncfs, mnt, abandon_on_cancel=True)
            except OSError as err:
                log.warning("syncfs of %s failed: %s", mnt, err.strerror)
        request_stop()


async def _trim_memory(engine: Any) -> None:
    """Return freed heap pages to the kernel (see memory.trim_malloc), then tell the cache how
    much memory the daemon holds (BlockCache.memory_check).

    Every TRIM_INTERVAL, and sooner while the resident size is over the cache's line: a
    random writer frees its dirty runs in bursts, when their blocks are sealed, and until
    the next trim the freed pages stay resident next to the new blocks (ec:4+2 random writes,
    four runs each: peaks of 363-423 MiB trimming once a second, 351-376 so, IOPS ~5% lower).
    Reading the size costs a read of /proc; trimming walks the heap, and pages it gives back
    are faulted in again when reused, so it is not done more often than needed.
    """
    import trio

    # Half a check of slack, so the timed trim falls on the check nearest TRIM_INTERVAL.
    period = TRIM_INTERVAL - MEMORY_CHECK_INTERVAL / 2
    last = trio.current_time()
    while True:
        await trio.sleep(MEMORY_CHECK_INTERVAL)
        resident = resident_bytes()
        if trio.current_time() - last < period and (
                resident is None or not engine.memory_high(resident)):
            continue
        await trio.to_thread.run_sync(trim_malloc)
        last = trio.current_time()
        resident = resident_bytes()
        if resident is not None:
            engine.memory_check(resident)


async def _background_gc(engine: Any, due: bool) -> None:
    """One sweep of orphans shortly after mounting (mount-time recovery does not scan disks),
    if one is due (see Pool.begin_mount)."""
    import trio

    from .maint import gc

    if not due:
        log.info("background gc: not due (last unmount was clean and a sweep ran within "
                 "%d h); 'dynamicfs gc' sweeps on demand", SWEEP_INTERVAL // 3600)
        return
    await trio.sleep(GC_DELAY)
    try:
        report = await gc.collect_online(engine)
        engine.pool.record_sweep(time.time())
    except Exception:
        # A failed sweep costs only space; it must never take the mount down.
        log.exception("background gc failed")
        return
    log.info("background gc: removed %d orphan fragments and %d temporary files (%d bytes, "
             "%d files scanned in %.1f s, %d errors)", report.orphan_fragments,
             report.temp_files, report.bytes_reclaimed, report.files_scanned, report.seconds,
             report.errors)


async def _serve(pool: Pool, mnt: Path, options: set[str], reporter: Reporter) -> None:
    import trio

    from .control.server import ControlServer
    from .engine.filesystem import DEFAULT_CACHE_SIZE, Engine
    from .fuse.mount import engine_options, serve_fuse
    from .fuse.operations import Operations

    with trio.open_signal_receiver(*SIGNALS) as signals:
        options, own = engine_options(options)
        sweep_due = pool.begin_mount(time.time())
        engine = Engine(pool, cache_size=own.get("cache_size", DEFAULT_CACHE_SIZE))
        async with engine.running():
            ops = Operations(engine)
            engine.invalidator = ops
            server = ControlServer(engine, pool.socket_path, mountpoint=mnt,
                                   unmount=lambda: unmount_through_kernel(mnt))
            fuse_up = False
            async with trio.open_nursery() as nursery:

                async def fuse_task(task_status: trio.TaskStatus[None]) -> None:
                    try:
                        await serve_fuse(ops, mnt, options, task_status=task_status)
                    finally:
                        # Unmounted: the control server and signal watcher go too.
                        nursery.cancel_scope.cancel()

                async def watch_signals() -> None:
                    async for signum in signals:
                        log.info("%s received: unmounting", signal.Signals(signum).name)
                        if not fuse_up:
                            nursery.cancel_scope.cancel()
                            return
                        nursery.start_soon(_stop_on_signal, mnt)

                nursery.start_soon(watch_signals)
                await nursery.start(fuse_task)
                fuse_up = True
                await nursery.start(server.serve)
                record_mount(pool.path, str(mnt), pool.socket_path)
                log.info("mounted %s on %s", pool.path, mnt)
                reporter.ready(pool.path, mnt)
                nursery.start_soon(_background_gc, engine, sweep_due)
                nursery.start_soon(_trim_memory, engine)
            log.info("filesystem unmounted; flushing")
        if not engine.readonly:
            try:
                pool.end_mount()
            except MetadataError as exc:
                log.warning("could not record the clean unmount (a sweep runs next time): %s",
                            exc)
    if not reporter.done:
        raise DynamicFSError("interrupted before the mount was ready")


def _innermost(exc: BaseException) -> BaseException:
    """The error worth reporting inside trio's exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        leaves = list(exc.exceptions)
        exc = next((e for e in leaves if isinstance(e, DynamicFSError)), leaves[0])
    return exc


def run(pool_path: Path, mnt: Path, options: set[str], reporter: Reporter) -> int:
    """Open and lock the pool, serve until unmounted; the process's exit status."""
    import trio

    # Before any worker thread exists: threads pick their malloc arena when first allocating.
    limit_malloc_arenas()
    try:
        pool = Pool.open(pool_path)
    except DynamicFSError as exc:
        reporter.failed(exc)
        return exc.exit_code
    try:
        try:
            pool.lock(f"mounted on {mnt}")
        except PoolBusy as exc:
            try:
                holder = pool.lock_path.read_text().strip() or "locked"
            except OSError:
                holder = "locked"
            busy = PoolBusy(f"pool {pool.path} is already in use ({holder}); "
                            f"cannot mount it on {mnt}")
            reporter.failed(busy)
            return exc.exit_code
        log.info("starting: pool %s, mountpoint %s, options %s", pool.path, mnt,
                 ",".join(sorted(options)))
        try:
            trio.run(_serve, pool, mnt, options, reporter)
        except BaseException as group:
            exc = _innermost(group)
            if isinstance(exc, DynamicFSError):
                error = exc
                log.error("%s", exc)
            elif isinstance(exc, KeyboardInterrupt):
                # Ctrl-C before the signal handlers were in place.
                error = DynamicFSError("interrupted")
                error.exit_code = 130
            else:
                log.error("mount daemon failed", exc_info=group)
                error = DynamicFSError(f"cannot mount {mnt}: {type(exc).__name__}: {exc}; "
                                       f"see {pool.log_path}")
            if not reporter.done:
                reporter.failed(error)
            return error.exit_code
        log.info("unmounted %s cleanly", mnt)
        return 0
    finally:
        forget_mount(pool.path, str(mnt))
        pool.close()


# -- entry points -----------------------------------------------------------------------------

def mount(pool_path: Path, mountpoint: Path, user_options: list[str], foreground: bool) -> int:
    """`dynamicfs mount`: returns once mounted (daemon) or once unmounted (foreground)."""
    pool_path, mnt, options = preflight(pool_path, mountpoint, user_options)
    if foreground:
        setup_logging(pool_path / "daemon.log", to_stderr=True)
        os.umask(0o077)
        reporter = ConsoleReporter()
        code = run(pool_path, mnt, options, reporter)
        if reporter.error is not None:
            raise reporter.error
        return code
    return _daemonize(pool_path, mnt, options)


def _daemonize(pool_path: Path, mnt: Path, options: set[str]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    rfd, wfd = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(rfd)
        code = 1
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)  # the session leader goes, so the daemon can never get a terminal
            os.chdir("/")
            # Fragment files and logs hold user data; nobody but the owner should read them.
            os.umask(0o077)
            # stdout/stderr go to the log, not /dev/null: libfuse reports some failures (an
            # unknown -o option) only by printing them.
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            out = os.open(pool_path / "daemon.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.close(out)
            setup_logging(pool_path / "daemon.log", to_stderr=False)
            code = run(pool_path, mnt, options, PipeReporter(wfd))
        except BaseException:
            logging.getLogger(__name__).exception("mount daemon crashed")
        finally:
            os._exit(code)
    os.close(wfd)
    os.waitpid(child, 0)
    reply = _read_report(rfd, pool_path)
    if not reply.get("ok"):
        err = DynamicFSError(str(reply.get("error") or "the mount daemon failed"))
        code = reply.get("exit_code")
        err.exit_code = code if isinstance(code, int) and 0 < code < 256 else 1
        raise err
    print(f"mounted {pool_path} on {mnt} (daemon pid {reply.get('pid')}, "
          f"log {pool_path / 'daemon.log'})")
    return 0


def _read_report(fd: int, pool_path: Path) -> dict[str, Any]:
    buf = b""
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise ControlError(f"the mount daemon did not report within "
                                   f"{START_TIMEOUT:.0f} s; see {pool_path / 'daemon.log'}")
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    finally:
        os.close(fd)
    try:
        reply = json.loads(buf.split(b"\n", 1)[0])
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise DynamicFSError(f"the mount daemon exited while starting; "
                             f"see {pool_path / 'daemon.log'}")
    return reply


# -- umount -----------------------------------------------------------------------------------

def _find_mount(target: str) -> MountRecord | None:
    """The record of the mount `target` names (a mountpoint or a pool directory). None means
    a DynamicFS mount with no record (its daemon's state was lost): only the kernel knows it."""
    mnt = canonical_mountpoint(target)
    rec = mountpoint_record(mnt)
    if rec is not None:
        return rec
    fstype = mount_type(mnt)
    if fstype is not None:
        if not is_dynamicfs_type(fstype):
            raise DynamicFSError(f"{mnt} is not a DynamicFS mount (it is {fstype})")
        return None
    try:
        is_pool = (Path(mnt) / CONFIG_NAME).is_file()
    except OSError:
        is_pool = False
    if not is_pool:
        raise DynamicFSError(f"{target} is not mounted (neither a DynamicFS mountpoint nor a pool)")
    rec = pool_record(Path(mnt))
    if rec is None or (not pid_alive(rec.pid) and mount_type(rec.mountpoint) is None):
        raise DynamicFSError(f"pool {mnt} is not mounted")
    return rec


def _fusermount_u(mnt: str) -> None:
    tool = fusermount()
    if tool is None:
        raise DynamicFSError("fusermount3 is not installed (Debian package fuse3)")
    proc = subprocess.run([tool, "-u", mnt], capture_output=True, text=True, check=False)
    if proc.returncode != 0 and mount_type(mnt) is not None:
        lines = proc.stderr.strip().splitlines()
        raise PoolBusy(f"cannot unmount {mnt}: "
                       f"{lines[-1] if lines else f'fusermount3 exited {proc.returncode}'}")


def umount(target: str, timeout: float) -> str:
    """`dynamicfs umount MNT|POOL`: unmount, wait for the daemon to flush and exit; a report."""
    rec = _find_mount(target)
    if rec is None:
        mnt = canonical_mountpoint(target)
        _fusermount_u(mnt)
        return f"unmounted {mnt} (no daemon record; the kernel ended the mount)"
    mnt = rec.mountpoint
    try:
        call(Path(rec.socket), "shutdown", timeout=timeout)
    except (NotMounted, ControlError) as exc:
        if mount_type(mnt) is None and not pid_alive(rec.pid):
            forget_mount(Path(rec.pool), mnt, rec.pid)
            raise DynamicFSError(f"{mnt} is not mounted (removed a stale record)") from None
        if mount_type(mnt) is not None:
            print(f"dynamicfs: warning: {exc}; unmounting with fusermount3", file=sys.stderr)
            _fusermount_u(mnt)
    deadline = time.monotonic() + timeout
    while mount_type(mnt) is not None or pid_alive(rec.pid):
        if time.monotonic() > deadline:
            what = "the mount is still there" if mount_type(mnt) else \
                f"daemon pid {rec.pid} is still flushing"
            raise ControlError(f"unmount of {mnt} did not finish within {timeout:.0f} s "
                               f"({what}); see {Path(rec.pool) / 'daemon.log'}")
        time.sleep(0.05)
    forget_mount(Path(rec.pool), mnt, rec.pid)  # the daemon does this itself unless killed
    return f"unmounted {mnt} (pool {rec.pool})"
