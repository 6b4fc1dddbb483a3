"""Argument parsing and the top level: every failure becomes one line and an exit status.

Exit statuses: 0 ok, 1 error, 2 bad usage, 3 pool or mount busy, 4 not mounted, 5 the daemon
did not answer properly, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from importlib import metadata
from typing import NoReturn

from ..errors import DynamicFSError
from . import commands, maint

PROG = "dynamicfs"


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage text is one --help away)."""

    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see '{self.prog} --help')")
        raise SystemExit(2)


def _fail(message: str) -> None:
    one_line = " ".join(str(message).splitlines()) or "failed"
    print(f"{PROG}: error: {one_line}", file=sys.stderr)


def _version() -> str:
    try:
        return metadata.version("dynamicfs")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="A pooled, checksummed, redundant filesystem.")
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    def verb(name: str, func: object, help_text: str, json: bool = True) -> Parser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        if json:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = verb("init", commands.cmd_init, "create a pool in an empty or new directory")
    p.add_argument("pool", metavar="POOL")
    p.add_argument("--policy", default="rep:2", help="rep:N or ec:K+M (default rep:2)")
    p.add_argument("--block-size", metavar="SIZE",
                   help="logical block size, a power of two (default 1M; for ec:K+M the "
                   "largest power of two up to K MiB, at most 4M)")

    p = verb("add-disk", commands.cmd_add_disk, "add a directory as a disk of the pool")
    p.add_argument("pool", metavar="POOL")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--tier", choices=("fast", "slow"),
                   help="default: from the device's rotational flag, else slow")
    p.add_argument("--capacity", metavar="SIZE", help="use at most SIZE of the disk")

    p = verb("list-disks", commands.cmd_list_disks, "list the pool's disks")
    p.add_argument("pool", metavar="POOL")

    p = verb("status", commands.cmd_status, "show the pool's state and usage")
    p.add_argument("pool", metavar="POOL")

    p = verb("set-policy", commands.cmd_set_policy, "set the pool's redundancy policy")
    p.add_argument("pool", metavar="POOL")
    p.add_argument("policy", metavar="POLICY", help="rep:N or ec:K+M")

    p = verb("mount", commands.cmd_mount, "mount the pool (as a daemon unless --foreground)",
             json=False)
    p.add_argument("pool", metavar="POOL")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("--foreground", "-f", action="store_true",
                   help="stay in the foreground, logging to stderr too")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPTS",
                   help="FUSE mount options, comma-separated; may repeat")

    maint.add_verbs(verb)

    p = verb("umount", commands.cmd_umount,
             "unmount (flushes, then stops the daemon); MOUNTPOINT or POOL", json=False)
    p.add_argument("target", metavar="MOUNTPOINT")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="how long to wait for the daemon to flush and exit (default 300)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DynamicFSError as exc:
        _fail(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): not an error worth a message, but stdout must not
        # be flushed again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}")
        return 1
    except Exception as exc:
        if os.environ.get("DYNAMICFS_DEBUG") == "1":
            traceback.print_exc()
        _fail(f"unexpected {type(exc).__name__}: {exc} "
              f"(set DYNAMICFS_DEBUG=1 for a traceback)")
        return 1
