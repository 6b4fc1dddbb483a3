"""The control socket server, run inside the mount daemon's trio loop.

Security: the socket file is created under a temporary name, made mode 0600 and given to the
pool directory's owner before it is renamed into place, so there is no moment at which others
could connect; every connection is still checked with SO_PEERCRED, because the file mode is
only as good as the directory it sits in.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from ..codec import Policy
from ..disks import Fault, FaultError
from ..disks.faults import ERRNOS
from ..errors import DynamicFSError, FsError
from ..maint import gc
from .protocol import MAX_LINE, decode, encode, error_reply, ok_reply, sun_path

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
# A client that connects and says nothing should not hold a task forever.
IDLE_TIMEOUT = 300.0
USAGE = 2


class Refused(DynamicFSError):
    """A request the server will not run (bad op, bad arguments)."""

    exit_code = USAGE


async def _maybe_await(value: Any) -> Any:
    # The engine may answer reports synchronously or as coroutines; accept both.
    if inspect.isawaitable(value):
        return await value
    return value


def _arg(args: dict[str, Any], name: str, kind: type | tuple[type, ...], *,
         required: bool = True) -> Any:
    value = args.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise Refused(f"argument '{name}' is missing or of the wrong type")
    return value


class ControlServer:
    """Answers control requests for one mounted pool.

    `mountpoint` and `pid` are reported with status so callers know they reached a live mount.
    `unmount` serves `shutdown`: it returns once the kernel has let go of the mount (the
    daemon then winds down by itself) or raises DynamicFSError, e.g. when the mount is busy.
    """

    def __init__(self, engine: Any, socket_path: Path, *, mountpoint: Path,
                 unmount: Callable[[], Awaitable[None]]) -> None:
        self.engine = engine
        self.socket_path = socket_path
        self.mountpoint = mountpoint
        self.unmount = unmount
        st = os.stat(socket_path.parent)
        self.owner_uid, self.owner_gid = st.st_uid, st.st_gid
        self._ops: dict[str, Callable[[dict[str, Any]], Any]] = {
            "ping": self._ping,
            "status": self._status,
            "list-disks": self._list_disks,
            "add-disk": self._add_disk,
            "set-policy": self._set_policy,
            "gc": self._gc,
            "inject-fault": self._inject_fault,
            "clear-faults": self._clear_faults,
            "list-faults": self._list_faults,
            "shutdown": self._shutdown,
        }
        self._inode: tuple[int, int] | None = None

    # -- the listening socket ------------------------------------------------------------------

    async def _bind(self) -> trio.socket.SocketType:
        tmp = self.socket_path.with_name(f".{self.socket_path.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with sun_path(tmp) as name:
                await sock.bind(name)
            os.chmod(tmp, 0o600)
            os.chown(tmp, self.owner_uid, self.owner_gid)
            sock.listen(16)
            # We hold the pool lock, so a socket file already there is a dead daemon's.
            os.replace(tmp, self.socket_path)
        except OSError as exc:
            sock.close()
            tmp.unlink(missing_ok=True)
            raise DynamicFSError(
                f"cannot create control socket {self.socket_path}: {exc.strerror}") from None
        st = os.stat(self.socket_path)
        self._inode = (st.st_dev, st.st_ino)
        return sock

    def remove_socket(self) -> None:
        """Unlink the socket file, unless someone else's has replaced it."""
        try:
            st = os.stat(self.socket_path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._inode:
            self.socket_path.unlink(missing_ok=True)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                    ) -> None:
        """Listen until cancelled; the socket file is removed on the way out."""
        sock = await self._bind()
        listener = trio.SocketListener(sock)
        log.info("control socket listening on %s", self.socket_path)
        try:
            task_status.started()
            await trio.serve_listeners(self._handle, [listener])
        finally:
            self.remove_socket()
            await listener.aclose()

    # -- connections ---------------------------------------------------------------------------

    def _peer(self, stream: trio.SocketStream) -> tuple[int, int]:
        raw = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        pid, uid, _gid = _UCRED.unpack(raw)
        return pid, uid

    async def _handle(self, stream: trio.SocketStream) -> None:
        # Nothing may escape from here: serve_listeners would take the whole daemon down.
        try:
            async with stream:
                pid, uid = self._peer(stream)
                if uid not in (0, self.owner_uid):
                    log.warning("control connection from uid %d (pid %d) refused", uid, pid)
                    await stream.send_all(encode(error_reply(
                        "permission denied: only root and the pool owner may control the pool")))
                    return
                await self._converse(stream, pid, uid)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            log.exception("control connection failed")

    async def _converse(self, stream: trio.SocketStream, pid: int, uid: int) -> None:
        buf = bytearray()
        while True:
            while b"\n" not in buf:
                with trio.move_on_after(IDLE_TIMEOUT) as idle:
                    chunk = await stream.receive_some(65536)
                if idle.cancelled_caught or not chunk:
                    return
                buf += chunk
                if len(buf) > MAX_LINE:
                    await stream.send_all(encode(error_reply("request too long", USAGE)))
                    return
            end = buf.index(b"\n")
            line, buf = bytes(buf[:end]), buf[end + 1:]
            reply = await self._dispatch(line, pid, uid)
            # A successful shutdown cancels this very task as the mount goes away; its caller
            # must still hear that it worked.
            with trio.CancelScope(shield=True):
                await stream.send_all(encode(reply))

    async def _dispatch(self, line: bytes, pid: int, uid: int) -> dict[str, Any]:
        op = "?"
        try:
            try:
                request = decode(line)
            except ValueError as exc:
                raise Refused(f"bad request: {exc}") from None
            op = str(request.get("op"))
            args = request.get("args") or {}
            if not isinstance(args, dict):
                raise Refused("bad request: 'args' must be an object")
            handler = self._ops.get(op)
            if handler is None:
                raise Refused(f"unknown control operation '{op}'")
            if op not in ("ping", "status", "list-disks", "list-faults"):
                log.info("control: %s %s from pid %d uid %d", op, args, pid, uid)
            result = await _maybe_await(handler(args))
        except DynamicFSError as exc:
            return error_reply(str(exc), exc.exit_code)
        except FsError as exc:
            return error_reply(f"{op} failed: {exc}")
        except Exception as exc:
            log.exception("control operation %s failed", op)
            return error_reply(f"internal error in the daemon during {op}: {exc!r}; "
                               f"see the pool's daemon.log")
        return ok_reply(result)

    # -- operations ----------------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        return {"pool": str(self.socket_path.parent), "mounted": True,
                "mountpoint": str(self.mountpoint), "pid": os.getpid()}

    def _ping(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._identity()

    async def _status(self, args: dict[str, Any]) -> dict[str, Any]:
        report = dict(await _maybe_await(self.engine.status()))
        report.update(self._identity())
        return report

    async def _list_disks(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return list(await _maybe_await(self.engine.list_disks()))

    async def _add_disk(self, args: dict[str, Any]) -> dict[str, Any]:
        path = Path(_arg(args, "path", str))
        tier = _arg(args, "tier", str, required=False)
        capacity = _arg(args, "capacity", int, required=False)
        if not path.is_absolute():
            raise Refused("add-disk needs an absolute path")
        if tier not in (None, "fast", "slow"):
            raise Refused(f"invalid tier '{tier}': expected fast or slow")
        if capacity is not None and capacity <= 0:
            raise Refused("capacity must be positive")
        # Checked here, by name only: resolving a path inside our own mount from the trio
        # thread would wait for a FUSE reply that only this thread can give.
        if path == self.mountpoint or self.mountpoint in path.parents:
            raise DynamicFSError(f"{path} is inside the pool's mountpoint {self.mountpoint}")
        return dict(await _maybe_await(
            self.engine.add_disk(path, tier, capacity, mountpoint=self.mountpoint)))

    async def _set_policy(self, args: dict[str, Any]) -> dict[str, Any]:
        text = _arg(args, "policy", str)
        try:
            policy = Policy.parse(text)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        await _maybe_await(self.engine.set_policy(str(policy)))
        return {"policy": str(policy)}

    async def _gc(self, args: dict[str, Any]) -> dict[str, Any]:
        dry_run = args.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise Refused("argument 'dry_run' must be true or false")
        report = await gc.collect_online(self.engine, dry_run)
        return report.as_dict()

    def _inject_fault(self, args: dict[str, Any]) -> dict[str, Any]:
        disk = _arg(args, "disk", int)
        # Not "op": that names the control request itself.
        op = _arg(args, "operation", str)
        kind = _arg(args, "kind", str)
        name = _arg(args, "errno", str, required=False) or "EIO"
        if name not in ERRNOS:
            raise Refused(f"unknown errno {name!r}; one of {', '.join(ERRNOS)}")
        seconds = _arg(args, "seconds", (int, float), required=False) or 0.0
        count = _arg(args, "count", int, required=False)
        probability = _arg(args, "probability", (int, float), required=False)
        try:
            fault = Fault(op, kind, ERRNOS[name], float(seconds), count,
                          1.0 if probability is None else float(probability))
        except FaultError as exc:
            raise Refused(str(exc)) from None
        self.engine.inject_fault(disk, fault)
        return {"disk": disk, **fault.describe()}

    def _clear_faults(self, args: dict[str, Any]) -> dict[str, Any]:
        disk = _arg(args, "disk", int, required=False)
        if disk is not None and disk not in self.engine.store.disks():
            raise DynamicFSError(f"no disk {disk} in this pool")
        cleared = sum(len(v) for d, v in self.engine.list_faults().items()
                      if disk is None or d == disk)
        self.engine.clear_faults(disk)
        return {"disk": disk, "cleared": cleared}

    def _list_faults(self, args: dict[str, Any]) -> dict[str, Any]:
        # JSON object keys are strings; a list of rows keeps disk ids integers.
        return {"faults": [{"disk": d, **f} for d, faults in sorted(
            self.engine.list_faults().items()) for f in faults]}

    async def _shutdown(self, args: dict[str, Any]) -> dict[str, Any]:
        identity = self._identity()
        with trio.CancelScope(shield=True):
            await self.unmount()
        return identity
