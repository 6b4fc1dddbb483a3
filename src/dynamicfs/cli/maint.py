"""The maintenance verbs: gc, fsck (check, repair, restore and rebuild the metadata) and fault
injection. gc and the fault verbs go through the daemon of a mounted pool; fsck refuses a
mounted pool and works on the pool directory under its lock.
"""

from __future__ import annotations

import argparse
import errno
from pathlib import Path
from typing import Any

from ..control.client import call
from ..control.protocol import ControlError, NotMounted
from ..disks import Fault, FaultError
from ..disks.faults import ERRNOS
from ..engine.pool import SOCKET_NAME, Pool
from ..errors import DynamicFSError, PoolBusy
from ..obs.log import setup_logging
from . import output
from .commands import UsageError, _socket_of, _writer

GC_TIMEOUT = 24 * 3600.0  # a walk of every fragment file of a big pool takes its time


def _gc_line(report: dict[str, Any]) -> str:
    verb = "would remove" if report["dry_run"] else "removed"
    reclaim = "would reclaim" if report["dry_run"] else "reclaimed"
    line = (f"{verb} {report['orphan_fragments']} orphan fragments and {report['temp_files']} "
            f"temporary files; {reclaim} {output.human_size(report['bytes_reclaimed'])} "
            f"({report['files_scanned']} files scanned in {report['seconds']:.1f} s)")
    if report.get("errors"):
        line += f"; {report['errors']} errors, see the log"
    return line


def cmd_gc(args: argparse.Namespace) -> int:
    from ..maint import repair

    try:
        report = call(_socket_of(args.pool), "gc", timeout=GC_TIMEOUT, dry_run=args.dry_run)
        mounted = True
    except NotMounted:
        mounted = False
    if not mounted:
        with _writer(args.pool, "gc") as pool:
            setup_logging(pool.log_path, to_stderr=False)
            report = repair.collect_offline(pool, dry_run=args.dry_run).as_dict()
    report = {**report, "mounted": mounted}
    if args.json:
        output.print_json(report)
    else:
        print(_gc_line(report))
    return 1 if report.get("errors") else 0


# -- fsck -------------------------------------------------------------------------------------

def _refuse_mounted(pool_arg: str) -> None:
    # The socket is looked for by name: the pool directory may have lost pool.json.
    try:
        where = call(Path(pool_arg).resolve() / SOCKET_NAME, "ping", timeout=5.0)
    except NotMounted:
        return
    except ControlError:
        return  # a daemon that does not answer still holds the lock: that refusal follows
    raise PoolBusy(f"pool {where['pool']} is mounted on {where['mountpoint']}; fsck checks "
                   f"an unmounted pool only: unmount it first with "
                   f"'dynamicfs umount {where['mountpoint']}'")


def _problem(p: Any) -> dict[str, Any]:
    return {"check": p.check, "message": p.message,
            "subject": list(p.subject) if p.subject else None}


def cmd_fsck(args: argparse.Namespace) -> int:
    if args.force and not args.restore_metadata:
        raise UsageError("--force only goes with --restore-metadata")
    if args.disk and not (args.restore_metadata or args.rebuild_metadata):
        raise UsageError("--disk only goes with --restore-metadata or --rebuild-metadata")
    path = Path(args.pool)
    if path.exists() and not path.is_dir():
        raise DynamicFSError(f"{path} is not a directory")
    if not path.is_dir():
        raise DynamicFSError(f"{path} does not exist")
    _refuse_mounted(args.pool)
    # What fsck changes is recorded in the pool's log, next to what the daemon did.
    setup_logging(path / "daemon.log", to_stderr=False)
    disks = [Path(d) for d in args.disk]
    report: dict[str, Any] = {"pool": str(path.resolve())}
    if args.restore_metadata or args.rebuild_metadata:
        from ..maint import metadata

        if args.restore_metadata:
            report["restored"] = metadata.restore(path, disks, force=args.force)
        else:
            report["rebuilt"] = metadata.rebuild(path, disks)
    report.update(_check(args.pool, repair=args.repair or args.rebuild_metadata,
                         verify_data=args.verify_data))
    if args.json:
        output.print_json(report)
    else:
        output.print_fsck(report)
    return 0 if report["clean"] else 1


def _open_locked(pool_arg: str) -> Pool:
    try:
        pool = Pool.open(Path(pool_arg))
    except DynamicFSError as exc:
        raise DynamicFSError(f"{exc}; if the metadata database is lost or damaged, run "
                             f"'dynamicfs fsck {pool_arg} --restore-metadata'") from None
    try:
        pool.lock("fsck")
    except PoolBusy:
        pool.close()
        raise
    return pool


def _check(pool_arg: str, *, repair: bool, verify_data: bool) -> dict[str, Any]:
    from ..maint import fsck
    from ..maint import repair as mrepair

    pool = _open_locked(pool_arg)
    try:
        problems = fsck.run(pool, verify_data=verify_data)
        result: dict[str, Any] = {"checks": list(fsck.Fsck.CHECKS),
                                  "problems": [_problem(p) for p in problems]}
        if repair:
            done = mrepair.repair(pool, verify_data=verify_data) if problems else []
            result["repairs"] = [r.as_dict() for r in done]
            remaining = fsck.run(pool, verify_data=verify_data) if done else problems
        else:
            remaining = problems
        result["remaining"] = [_problem(p) for p in remaining]
        result["clean"] = not remaining
        return result
    finally:
        pool.close()


# -- fault injection --------------------------------------------------------------------------

def _ask_mounted(pool_arg: str, request: str, **kwargs: Any) -> Any:
    try:
        return call(_socket_of(pool_arg), request, **kwargs)
    except NotMounted:
        raise NotMounted(f"pool {pool_arg} is not mounted: faults live in the mount daemon's "
                         f"memory only (and vanish at unmount); mount the pool first") from None


def cmd_inject_fault(args: argparse.Namespace) -> int:
    if args.error is not None:
        kind, name = "error", args.error
    elif args.corrupt:
        kind, name = "corrupt", "EIO"
    else:
        kind, name = "hang", "EIO"
    try:
        # Checked here too, so a bad combination is refused before reaching a daemon.
        Fault(args.op, kind, ERRNOS.get(name, errno.EIO), args.hang or 0.0, args.count,
              args.probability)
    except FaultError as exc:
        raise UsageError(str(exc)) from None
    result = _ask_mounted(args.pool, "inject-fault", disk=args.disk, operation=args.op, kind=kind,
                          errno=name, seconds=args.hang, count=args.count,
                          probability=args.probability)
    if args.json:
        output.print_json(result)
    else:
        print(f"armed on disk {args.disk}: {output.fault_text(result)}")
    return 0


def cmd_clear_faults(args: argparse.Namespace) -> int:
    result = _ask_mounted(args.pool, "clear-faults", disk=args.disk)
    if args.json:
        output.print_json(result)
    else:
        where = f"disk {args.disk}" if args.disk is not None else "all disks"
        print(f"cleared {result['cleared']} faults on {where}")
    return 0


def cmd_list_faults(args: argparse.Namespace) -> int:
    result = _ask_mounted(args.pool, "list-faults")
    if args.json:
        output.print_json(result)
    else:
        output.print_faults(result["faults"])
    return 0


def add_verbs(verb: Any) -> None:
    """Register the maintenance verbs with the parser's `verb` helper (cli/main.py)."""
    p = verb("gc", cmd_gc, "remove orphan fragments and leftover temporary files")
    p.add_argument("pool", metavar="POOL")
    p.add_argument("--dry-run", action="store_true", help="only report what would be removed")

    p = verb("fsck", cmd_fsck, "check an unmounted pool; optionally repair, restore or rebuild "
                               "its metadata")
    p.add_argument("pool", metavar="POOL")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--repair", action="store_true",
                      help="fix what can be fixed safely and report every change")
    mode.add_argument("--restore-metadata", action="store_true",
                      help="replace a lost or damaged meta.db with the newest good copy from "
                           "the disks")
    mode.add_argument("--rebuild-metadata", action="store_true",
                      help="rebuild the extent and fragment tables from the fragment headers")
    p.add_argument("--verify-data", action="store_true",
                   help="also read every fragment and check its checksum (reads all data)")
    p.add_argument("--force", action="store_true",
                   help="with --restore-metadata: restore even if meta.db looks healthy")
    p.add_argument("--disk", action="append", default=[], metavar="PATH",
                   help="a disk directory to look at for copies and fragments (repeatable)")

    p = verb("inject-fault", cmd_inject_fault,
             "make a disk of a mounted pool fail on purpose (for testing a set-up)")
    p.add_argument("pool", metavar="POOL")
    p.add_argument("--disk", type=int, required=True, metavar="ID")
    p.add_argument("--op", required=True, choices=("write", "fsync", "read", "delete"))
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--error", choices=sorted(ERRNOS), metavar="ERRNO",
                      help=f"fail with this error: {', '.join(sorted(ERRNOS))}")
    kind.add_argument("--corrupt", action="store_true", help="flip a byte of what is read")
    kind.add_argument("--hang", type=float, metavar="SECONDS", help="stall for SECONDS")
    p.add_argument("--count", type=int, metavar="N", help="fire N times, then disarm")
    p.add_argument("--probability", type=float, default=1.0, metavar="P",
                   help="fire with probability P in (0, 1] (default 1)")

    p = verb("clear-faults", cmd_clear_faults, "disarm injected faults of a mounted pool")
    p.add_argument("pool", metavar="POOL")
    p.add_argument("--disk", type=int, metavar="ID", help="only this disk (default: all)")

    p = verb("list-faults", cmd_list_faults, "list the faults armed on a mounted pool")
    p.add_argument("pool", metavar="POOL")
