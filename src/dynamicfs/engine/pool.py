"""The pool directory: config, metadata database, lock, disk registry and reports.

Layout of a pool directory (see docs/format.md): pool.json, meta.db (+WAL), lock,
control.sock (while mounted), daemon.log.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import time
import uuid
from pathlib import Path

from ..clock import now_ns
from ..codec import Policy
from ..disks import LabelError, LocalDisk, shared_usage
from ..errors import DynamicFSError, PoolBusy
from ..meta import Database, MetadataError
from ..meta import disks as mdisks
from ..meta import extents as mextents
from ..meta import inodes as minodes
from ..meta.schema import ROOT_INODE
from ..store.placement import usable_bytes

POOL_FORMAT = 1
CONFIG_NAME = "pool.json"
SOCKET_NAME = "control.sock"
DB_NAME = "meta.db"
# A mount sweeps the disks for orphans after an unclean stop, else at most this often.
SWEEP_INTERVAL = 24 * 3600.0
MIN_BLOCK, MAX_BLOCK = 4096, 64 * 1024 * 1024
DEFAULT_BLOCK = 1 << 20
# Erasure-coded pools default to blocks of up to this size, so that each data fragment is
# about 1 MiB (as JuiceFS's 4 MiB blocks, or a Ceph EC pool's 4 MiB objects): with 1 MiB
# blocks ec:4+2 wrote six 256 KiB files per MiB, and creating, syncing and reading that many
# small files bounded it at a third of what the disks do (bench/ANALYSIS.md).
MAX_EC_DEFAULT_BLOCK = 4 << 20


def default_block_size(policy: Policy) -> int:
    """The block size `init` picks for a pool of `policy` when none is given."""
    if policy.kind != "ec":
        return DEFAULT_BLOCK
    # The largest power of two of at most k MiB: data fragments of 0.5 to 1 MiB up to k = 8.
    return min(MAX_EC_DEFAULT_BLOCK, DEFAULT_BLOCK << (policy.k.bit_length() - 1))


def parse_size(text: str) -> int:
    """'1M', '512K', '10G', '4096' -> bytes (binary units)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        value = int(float(num) * units[unit])
    except ValueError:
        raise DynamicFSError(
            f"invalid size '{text}': expected a number with K, M, G or T") from None
    if value <= 0:
        raise DynamicFSError(f"invalid size '{text}': must be positive")
    return value


def detect_tier(path: Path) -> str:
    """fast for non-rotational block devices, slow otherwise (or when it cannot be told)."""
    try:
        dev = os.stat(path).st_dev
        sysdir = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
        for cand in (sysdir / "queue/rotational", sysdir / "../queue/rotational"):
            if cand.exists():
                return "fast" if cand.read_text().strip() == "0" else "slow"
    except OSError:
        pass
    return "slow"


class Pool:
    def __init__(self, path: Path, config: dict, db: Database) -> None:
        self.path = path
        self.config = config
        self.db = db
        self.uuid = uuid.UUID(config["uuid"])
        self._lock_fd: int | None = None

    # -- creation and opening ----------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, policy: Policy, block_size: int) -> Pool:
        path = path.resolve()
        if not MIN_BLOCK <= block_size <= MAX_BLOCK or block_size & (block_size - 1):
            raise DynamicFSError(
                f"invalid block size {block_size}: must be a power of two between 4 KiB and 64 MiB")
        if (path / CONFIG_NAME).exists():
            raise DynamicFSError(f"{path} is already a DynamicFS pool")
        if path.exists() and any(path.iterdir()):
            raise DynamicFSError(f"{path} is not empty; a pool needs an empty directory")
        path.mkdir(parents=True, exist_ok=True)
        config = {"format": POOL_FORMAT, "uuid": str(uuid.uuid4()), "created": time.time()}
        db = Database(path / DB_NAME, create=True)
        now = now_ns()
        with db.transaction():
            mdisks.set_setting(db, "pool_uuid", config["uuid"])
            mdisks.set_setting(db, "block_size", str(block_size))
            mdisks.set_setting(db, "policy", str(policy))
            minodes.create_inode(db, 0o40755, 0, 0, 2, now, ino=ROOT_INODE)
        db.sync()
        tmp = path / (CONFIG_NAME + ".tmp")
        tmp.write_text(json.dumps(config, indent=2) + "\n")
        os.replace(tmp, path / CONFIG_NAME)
        return cls(path, config, db)

    @classmethod
    def open(cls, path: Path, readonly: bool = False) -> Pool:
        path = path.resolve()
        cfg_path = path / CONFIG_NAME
        try:
            config = json.loads(cfg_path.read_text())
        except FileNotFoundError:
            raise DynamicFSError(f"{path} is not a DynamicFS pool (no {CONFIG_NAME})") from None
        except (OSError, ValueError) as exc:
            raise DynamicFSError(f"cannot read {cfg_path}: {exc}") from None
        if not isinstance(config, dict) or "uuid" not in config:
            raise DynamicFSError(f"{cfg_path} is not a DynamicFS pool config")
        if int(config.get("format", 0)) > POOL_FORMAT:
            raise DynamicFSError(f"pool format {config['format']} is newer than this DynamicFS "
                                 f"supports ({POOL_FORMAT}); upgrade DynamicFS")
        try:
            db = Database(path / DB_NAME, readonly=readonly)
        except MetadataError as exc:
            raise DynamicFSError(str(exc)) from None
        return cls(path, config, db)

    def close(self) -> None:
        self.db.close()
        self.unlock()

    # -- the one-writer lock -----------------------------------------------------------------

    @property
    def lock_path(self) -> Path:
        return self.path / "lock"

    @property
    def socket_path(self) -> Path:
        return self.path / SOCKET_NAME

    @staticmethod
    def socket_path_of(path: Path) -> Path | None:
        """The control socket of the pool at `path`, found without opening its database (which
        the pool owner may not be able to read while root's daemon holds it); None if `path`
        is not a pool."""
        path = path.resolve()
        return path / SOCKET_NAME if (path / CONFIG_NAME).is_file() else None

    @property
    def log_path(self) -> Path:
        return self.path / "daemon.log"

    def lock(self, purpose: str) -> None:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            raise PoolBusy(f"pool {self.path} is in use ({holder or 'locked'}); "
                           f"cannot {purpose}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {purpose}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- mount bookkeeping -------------------------------------------------------------------

    def begin_mount(self, now: float) -> bool:
        """Record (durably) that the pool is mounted; whether an orphan sweep is due.

        A sweep walks every fragment file of every disk, which competes with the first
        minutes of use. Orphans come from crashes (fragments written for commits that never
        became durable, interrupted deletions), so the sweep runs after a stop that was not a
        clean unmount, and otherwise once per SWEEP_INTERVAL (for the rarer sources: a disk
        that was missing while files were deleted, a failed deletion).
        """
        clean = mdisks.get_setting(self.db, "unmounted_cleanly") == "1"
        last = float(mdisks.get_setting(self.db, "last_gc_sweep") or 0)
        with self.db.transaction():
            mdisks.set_setting(self.db, "unmounted_cleanly", "0")
        self.db.sync()
        return not clean or now - last >= SWEEP_INTERVAL

    def end_mount(self) -> None:
        """Record that everything was committed and unmounted cleanly."""
        with self.db.transaction():
            mdisks.set_setting(self.db, "unmounted_cleanly", "1")
        self.db.sync()

    def record_sweep(self, now: float) -> None:
        with self.db.transaction():
            mdisks.set_setting(self.db, "last_gc_sweep", str(now))

    # -- settings ----------------------------------------------------------------------------

    @functools.cached_property
    def block_size(self) -> int:
        # Fixed at init; asked for by every attribute reply, so not a query each time.
        return int(mdisks.get_setting(self.db, "block_size") or 1 << 20)

    @property
    def policy(self) -> Policy:
        return Policy.parse(mdisks.get_setting(self.db, "policy") or "rep:2")

    def set_policy(self, policy: Policy) -> None:
        self.check_policy(policy, len(mdisks.list_disks(self.db)))
        with self.db.transaction():
            mdisks.set_setting(self.db, "policy", str(policy))

    @staticmethod
    def check_policy(policy: Policy, ndisks: int) -> None:
        if ndisks < policy.n_fragments:
            raise DynamicFSError(
                f"policy {policy} needs {policy.n_fragments} disks but the pool has {ndisks}; "
                f"add disks with 'dynamicfs add-disk'")

    # -- disks -------------------------------------------------------------------------------

    def disk_rows(self) -> list[mdisks.DiskRow]:
        return mdisks.list_disks(self.db)

    def fragment_counts(self) -> dict[int, tuple[int, int]]:
        """disk id -> (fragments, bytes) as the metadata records them."""
        return mdisks.fragment_counts(self.db)

    def count_disk_errors(self, errors: dict[tuple[int, str], int]) -> None:
        with self.db.transaction():
            for (disk, kind), n in errors.items():
                mdisks.count_error(self.db, disk, kind, n)

    def open_disk(self, row: mdisks.DiskRow) -> LocalDisk:
        return LocalDisk(Path(row.path), self.uuid.bytes, row.capacity)

    def validate_new_disk(self, path: Path, mountpoint: Path | None = None) -> Path:
        path = path.resolve()
        if path == self.path or self.path in path.parents or path in self.path.parents:
            raise DynamicFSError(f"{path} overlaps the pool directory {self.path}")
        if mountpoint is not None and (path == mountpoint or mountpoint in path.parents):
            raise DynamicFSError(f"{path} is inside the pool's mountpoint {mountpoint}")
        for row in mdisks.list_disks(self.db):
            other = Path(row.path)
            if path == other:
                raise DynamicFSError(f"{path} is already disk {row.id} of this pool")
            if other in path.parents or path in other.parents:
                raise DynamicFSError(f"{path} overlaps disk {row.id} ({other})")
        if path.exists() and not path.is_dir():
            raise DynamicFSError(f"{path} is not a directory")
        return path

    def add_disk(
        self, path: Path, tier: str | None, capacity: int | None,
        mountpoint: Path | None = None,
    ) -> mdisks.DiskRow:
        path = self.validate_new_disk(path, mountpoint)
        disk_uuid = str(uuid.uuid4())
        try:
            LocalDisk.prepare(path, self.uuid.bytes, disk_uuid)
        except LabelError as exc:
            raise DynamicFSError(str(exc)) from None
        except OSError as exc:
            raise DynamicFSError(f"cannot prepare disk {path}: {exc.strerror}") from None
        tier = tier or detect_tier(path)
        with self.db.transaction():
            disk_id = mdisks.add_disk(self.db, disk_uuid, str(path), tier, capacity)
        self.db.sync()
        return next(r for r in mdisks.list_disks(self.db) if r.id == disk_id)

    def disk_report(self) -> list[dict]:
        counts = mdisks.fragment_counts(self.db)
        rows = mdisks.list_disks(self.db)
        disks = {}
        problems: dict[int, str] = {}
        for row in rows:
            disk = disks[row.id] = self.open_disk(row)
            disk.used = counts.get(row.id, (0, 0))[1] or 0
            try:
                disk.check_label()
            except (LabelError, OSError) as exc:
                problems[row.id] = str(exc)
        usage = shared_usage({d: disk for d, disk in disks.items() if d not in problems})
        out = []
        for row in rows:
            problem = problems.get(row.id)
            if problem is None and row.id not in usage:
                problem = f"{row.path}: cannot read its filesystem"
            state = "missing" if problem else row.state
            capacity, free = usage.get(row.id, (0, 0))
            nfrag, nbytes = counts.get(row.id, (0, 0))
            out.append({
                "id": row.id, "uuid": row.uuid, "path": row.path, "tier": row.tier,
                "state": state, "capacity": capacity, "free": free, "used": nbytes or 0,
                "fragments": nfrag, "capacity_cap": row.capacity,
                "read_errors": row.read_errors, "write_errors": row.write_errors,
                "checksum_errors": row.checksum_errors, "problem": problem,
            })
        return out

    def status(self) -> dict:
        disks = self.disk_report()
        totals = mextents.totals(self.db)
        policy = self.policy
        online = [d for d in disks if d["state"] != "missing"]
        return {
            "pool": str(self.path), "uuid": str(self.uuid), "policy": str(policy),
            "block_size": self.block_size,
            "disks": len(disks), "disks_online": len(online),
            "capacity": sum(d["capacity"] for d in online),
            "free": sum(d["free"] for d in online),
            # What files can still take under the policy (as df on the mount shows it).
            "usable_capacity": usable_bytes([d["capacity"] for d in online],
                                            policy.n_fragments, policy.k, policy.min_fragments),
            "usable_free": usable_bytes([d["free"] for d in online],
                                        policy.n_fragments, policy.k, policy.min_fragments),
            "inodes": minodes.count_inodes(self.db),
            **totals,
            "health": ("ok" if len(online) == len(disks) and len(disks) >= policy.n_fragments
                       else "degraded" if len(online) >= 1 else "unavailable"),
        }
