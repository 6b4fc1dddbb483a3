"""The CLI's verbs. Each talks to the mounted pool's daemon when there is one, and otherwise
opens the pool directory itself: read-only for reports, under the pool lock for changes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..codec import Policy
from ..control.client import call
from ..control.mounts import is_dynamicfs_type, mount_type, pid_alive, pool_record
from ..control.protocol import ControlError, NotMounted
from ..engine.pool import Pool, default_block_size, parse_size
from ..errors import DynamicFSError, PoolBusy
from . import output

REPORT_TIMEOUT = 30.0
PING_TIMEOUT = 5.0


class UsageError(DynamicFSError):
    """A malformed argument value (argparse's own errors use the same status)."""

    exit_code = 2


def parse_policy(text: str) -> Policy:
    try:
        return Policy.parse(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def parse_size_arg(text: str, what: str) -> int:
    try:
        return parse_size(text)
    except DynamicFSError as exc:
        raise UsageError(f"{what}: {exc}") from None


# -- reaching the pool ------------------------------------------------------------------------

def _socket_of(pool_arg: str) -> Path:
    sock = Pool.socket_path_of(Path(pool_arg))
    if sock is None:
        Pool.open(Path(pool_arg), readonly=True).close()  # raises the "not a pool" message
        raise DynamicFSError(f"{pool_arg} is not a DynamicFS pool")
    return sock


def _ask(pool_arg: str, op: str, **args: Any) -> tuple[bool, Any]:
    """(True, the daemon's answer) when the pool is mounted, else (False, None)."""
    try:
        return True, call(_socket_of(pool_arg), op, **args)
    except NotMounted:
        return False, None


def _ask_report(pool_arg: str, op: str) -> tuple[bool, Any]:
    """Like `_ask`, for reports: a daemon that does not answer in time is read around (the
    database may always be read), with a warning, instead of failing the report."""
    try:
        return True, call(_socket_of(pool_arg), op, timeout=REPORT_TIMEOUT)
    except NotMounted:
        return False, None
    except ControlError as exc:
        print(f"dynamicfs: warning: {exc}", file=sys.stderr)
        return False, None


@contextmanager
def _reader(pool_arg: str) -> Iterator[Pool]:
    pool = Pool.open(Path(pool_arg), readonly=True)
    try:
        yield pool
    finally:
        pool.close()


@contextmanager
def _writer(pool_arg: str, purpose: str) -> Iterator[Pool]:
    """The pool opened for writing, under the one-writer lock."""
    pool = Pool.open(Path(pool_arg))
    try:
        try:
            pool.lock(purpose)
        except PoolBusy as exc:
            raise PoolBusy(f"{exc}: its daemon does not answer on the control socket (still "
                           f"starting, or stuck? see {pool.log_path})") from None
        yield pool
    finally:
        pool.close()


def _offline_identity(pool: Pool) -> dict[str, Any]:
    """How an unanswered pool looks: unmounted, or mounted by a daemon that is not answering."""
    rec = pool_record(pool.path)
    if rec is not None and pid_alive(rec.pid) and mount_type(rec.mountpoint) is None:
        print(f"dynamicfs: note: daemon pid {rec.pid} has unmounted {rec.mountpoint} and is "
              f"still flushing", file=sys.stderr)
    elif rec is not None and pid_alive(rec.pid):
        print(f"dynamicfs: warning: daemon pid {rec.pid} (mounted on {rec.mountpoint}) does not "
              f"answer on its control socket; showing the pool as stored on disk",
              file=sys.stderr)
        return {"mounted": True, "mountpoint": rec.mountpoint, "pid": rec.pid, "source": "disk"}
    if rec is not None and is_dynamicfs_type(mount_type(rec.mountpoint)):
        print(f"dynamicfs: warning: the daemon of {rec.mountpoint} is gone but its mount is left; "
              f"clear it with 'dynamicfs umount {rec.mountpoint}'", file=sys.stderr)
    return {"mounted": False, "mountpoint": None, "pid": None, "source": "disk"}


# -- verbs ------------------------------------------------------------------------------------

def cmd_init(args: argparse.Namespace) -> int:
    policy = parse_policy(args.policy)
    block_size = (default_block_size(policy) if args.block_size is None
                  else parse_size_arg(args.block_size, "--block-size"))
    pool = Pool.create(Path(args.pool), policy, block_size)
    try:
        report = {"pool": str(pool.path), "uuid": str(pool.uuid), "policy": str(policy),
                  "block_size": block_size}
    finally:
        pool.close()
    if args.json:
        output.print_json(report)
    else:
        print(f"created pool {report['pool']} (uuid {report['uuid']}, policy {policy}, "
              f"block size {output.human_size(block_size)})")
        print(f"next: add at least {policy.n_fragments} disks with "
              f"'dynamicfs add-disk {report['pool']} PATH'")
    return 0


def cmd_add_disk(args: argparse.Namespace) -> int:
    capacity = parse_size_arg(args.capacity, "--capacity") if args.capacity else None
    path = Path(args.path).resolve()
    mounted, disk = _ask(args.pool, "add-disk", path=str(path), tier=args.tier,
                         capacity=capacity)
    if not mounted:
        with _writer(args.pool, "add-disk") as pool:
            row = pool.add_disk(path, args.tier, capacity)
            disk = next(d for d in pool.disk_report() if d["id"] == row.id)
    if args.json:
        output.print_json(disk)
    else:
        cap = f", capped at {output.human_size(capacity)}" if capacity else ""
        print(f"added disk {disk['id']}: {disk['path']} (tier {disk['tier']}, "
              f"{output.human_size(disk['free'])} free{cap})")
    return 0


def cmd_list_disks(args: argparse.Namespace) -> int:
    mounted, disks = _ask_report(args.pool, "list-disks")
    if mounted:
        identity = call(_socket_of(args.pool), "ping")
        report = {**identity, "source": "daemon", "disks": disks}
    else:
        with _reader(args.pool) as pool:
            report = {"pool": str(pool.path), **_offline_identity(pool),
                      "disks": pool.disk_report()}
    if args.json:
        output.print_json(report)
    else:
        output.print_disks(report["disks"])
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    mounted, report = _ask_report(args.pool, "status")
    if mounted:
        report = {**report, "source": "daemon"}
    else:
        with _reader(args.pool) as pool:
            report = {**pool.status(), **_offline_identity(pool)}
    if args.json:
        output.print_json(report)
    else:
        output.print_status(report)
    return 0


def cmd_set_policy(args: argparse.Namespace) -> int:
    policy = parse_policy(args.policy)
    mounted, _ = _ask(args.pool, "set-policy", policy=str(policy))
    if not mounted:
        with _writer(args.pool, "set-policy") as pool:
            pool.set_policy(policy)
    if args.json:
        output.print_json({"policy": str(policy), "mounted": mounted})
    else:
        print(f"policy set to {policy}; new data is stored with it")
    return 0


def cmd_mount(args: argparse.Namespace) -> int:
    from .. import daemon  # trio and pyfuse3 are only needed here

    try:
        where = call(_socket_of(args.pool), "ping", timeout=PING_TIMEOUT)
    except (NotMounted, ControlError):
        pass  # not mounted, or not answering: then the pool lock has the last word
    else:
        raise PoolBusy(f"pool {where['pool']} is already mounted on {where['mountpoint']} "
                       f"(daemon pid {where['pid']})")
    return daemon.mount(Path(args.pool), Path(args.mountpoint), args.options, args.foreground)


def cmd_umount(args: argparse.Namespace) -> int:
    from .. import daemon

    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    print(daemon.umount(args.target, args.timeout))
    return 0
