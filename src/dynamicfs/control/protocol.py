"""Wire format of the control socket and the errors it can carry.

One request per line, one reply per line, both JSON objects:

    {"op": "status", "args": {}}
    {"ok": true, "result": ...}
    {"ok": false, "error": "one line", "exit_code": 3}

A connection may carry several requests in turn. Replies carry an exit code so the CLI exits
with the same status whether it talked to a daemon or opened the pool itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import DynamicFSError

OPS = ("ping", "status", "list-disks", "add-disk", "set-policy", "gc", "inject-fault",
       "clear-faults", "list-faults", "shutdown")
# A request line is a few hundred bytes; a cap keeps a confused peer from growing our buffer.
MAX_LINE = 1 << 20
UNIX_PATH_MAX = 108  # sizeof(sockaddr_un.sun_path), including the terminating NUL


class NotMounted(DynamicFSError):
    """Nobody listens on the control socket (no socket file, or a stale one)."""

    exit_code = 4


class ControlError(DynamicFSError):
    """The daemon could not be talked to properly (timeout, broken reply)."""

    exit_code = 5


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One JSON object from one line; ValueError with a short reason otherwise."""
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    return obj


def error_reply(message: str, exit_code: int = 1) -> dict[str, Any]:
    # The CLI prints the message as one line, so any newline would break that promise.
    return {"ok": False, "error": " ".join(message.split()), "exit_code": exit_code}


def ok_reply(result: Any) -> dict[str, Any]:
    return {"ok": True, "result": result}


@contextmanager
def sun_path(path: Path) -> Iterator[str]:
    """A name for `path` that fits in sockaddr_un: the path itself or, when too long (pools
    deep in a tree), the same file reached through /proc/self/fd of its directory."""
    text = os.fspath(path)
    if len(os.fsencode(text)) < UNIX_PATH_MAX:
        yield text
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
