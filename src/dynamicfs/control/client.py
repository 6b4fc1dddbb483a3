"""A blocking client for the control socket, used by the CLI (which has no event loop)."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from ..errors import DynamicFSError, PoolBusy
from .protocol import MAX_LINE, ControlError, NotMounted, decode, encode, sun_path

CONNECT_TIMEOUT = 5.0
# add-disk labels a directory and syncs the database; status walks every disk. Generous, so a
# busy daemon is not mistaken for a dead one.
REPLY_TIMEOUT = 120.0

# Exit codes a reply may name, mapped back to the classes that carry them, so callers can
# catch "busy" as PoolBusy whichever side noticed it.
# NotMounted is left out on purpose: a daemon that answers is mounted, and the CLI must never
# fall back to writing the pool behind its back.
_BY_CODE: dict[int, type[DynamicFSError]] = {
    PoolBusy.exit_code: PoolBusy,
    ControlError.exit_code: ControlError,
}


def _connect(path: Path, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with sun_path(path) as name:
            sock.connect(name)
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        # No file, or a file left by a daemon that died: either way nothing is mounted.
        sock.close()
        raise NotMounted(f"no daemon listens on {path}") from None
    except PermissionError:
        sock.close()
        raise DynamicFSError(
            f"permission denied on {path}: only root and the pool owner may control the pool"
        ) from None
    except TimeoutError:
        sock.close()
        raise ControlError(f"the daemon on {path} does not accept connections") from None
    except OSError as exc:
        sock.close()
        raise ControlError(f"cannot connect to {path}: {exc.strerror}") from None
    return sock


def _read_line(sock: socket.socket, deadline: float, path: Path) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ControlError(f"the daemon on {path} did not answer in time")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise ControlError(f"the daemon on {path} did not answer in time") from None
        except OSError as exc:
            raise ControlError(f"connection to {path} failed: {exc.strerror}") from None
        if not chunk:
            raise ControlError(f"the daemon on {path} closed the connection without answering")
        buf += chunk
        if len(buf) > MAX_LINE:
            raise ControlError(f"the daemon on {path} sent an oversized reply")
    return bytes(buf[: buf.index(b"\n")])


def call(socket_path: Path, op: str, *, timeout: float = REPLY_TIMEOUT, **args: Any) -> Any:
    """Send one request and return its result; a refusal raises DynamicFSError (its exit code).

    Raises NotMounted when no daemon listens, so callers can fall back to the pool on disk.
    """
    sock = _connect(Path(socket_path), min(timeout, CONNECT_TIMEOUT))
    with sock:
        try:
            sock.sendall(encode({"op": op, "args": args}))
        except OSError as exc:
            raise ControlError(f"cannot send to {socket_path}: {exc.strerror}") from None
        line = _read_line(sock, time.monotonic() + timeout, Path(socket_path))
    try:
        reply = decode(line)
    except ValueError as exc:
        raise ControlError(f"bad reply from the daemon on {socket_path}: {exc}") from None
    if reply.get("ok") is True:
        return reply.get("result")
    message = str(reply.get("error") or "the daemon refused the request")
    code = reply.get("exit_code")
    code = code if isinstance(code, int) and 0 < code < 256 else 1
    err = _BY_CODE.get(code, DynamicFSError)(message)
    err.exit_code = code
    raise err
