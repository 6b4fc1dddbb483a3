"""Recovering a pool's metadata: restore the newest good copy from the disks, or rebuild the
extent and fragment tables from the fragment headers (DESIGN.md invariant 9).

Both work on an unmounted pool and may find its `meta.db` unusable, so neither opens the pool
the usual way first: they take the pool lock on the directory itself, judge the database file
without writing to it, and set a damaged one aside as `meta.db.damaged-<UTC time>` (with its
WAL) rather than delete it.

The disks are listed in the database that may be lost, so the copies themselves are used to
find them: every disk named with --disk, every disk the current database (if readable)
records, and every disk any copy found so far records, until no new disk turns up.

Rebuilding keeps the namespace and the block maps of the best database available (the current
one if healthy, else the newest good copy, else an empty schema). Block maps name extents by
row id, so an extent keeps its id when its hash is still recorded; extents found on the disks
that no block map uses are kept as files in /lost+found/extents/<extent id hex> (nothing found
on a disk is thrown away by a rebuild: delete those files once they are not needed), and block
maps whose extent exists on no disk become holes, each reported by file.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import stat
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..clock import now_ns
from ..codec import CODEC_REP, DecodeError, Policy, policy_for_codec
from ..disks import HEADER_SIZE, FragmentError, FragmentHeader, LabelError, LocalDisk
from ..disks.label import fsync_dir, read_label
from ..disks.local import TMP_PREFIX
from ..engine.metacopy import file_blake3
from ..engine.pool import CONFIG_NAME, DB_NAME, DEFAULT_BLOCK, POOL_FORMAT, Pool
from ..errors import DynamicFSError, PoolBusy
from ..meta import ROOT_INODE, Database
from ..meta import disks as mdisks
from ..meta import extents as mext
from ..meta import inodes as minodes
from ..meta import rebuild as mreb
from . import gc, repair

log = logging.getLogger(__name__)

UNATTACHED = b"extents"  # under /lost+found
EMPTY = "an empty schema (no usable database or copy)"


@dataclass
class Copy:
    disk: Path
    db: Path
    info: dict[str, Any]
    problem: str | None  # None: a good copy

    @property
    def time(self) -> float:
        t = self.info.get("time")
        return float(t) if isinstance(t, int | float) else 0.0


# -- the pool directory without its database --------------------------------------------------

def pool_uuid(path: Path, disks: list[Path]) -> uuid.UUID:
    """The pool's UUID from pool.json, or — if the directory lost it — from the disk labels
    named with --disk (pool.json is then written again)."""
    cfg = path / CONFIG_NAME
    try:
        return uuid.UUID(json.loads(cfg.read_text())["uuid"])
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DynamicFSError(f"cannot read {cfg}: {exc}") from None
    found = set()
    for disk in disks:
        try:
            found.add(read_label(disk).pool_uuid)
        except LabelError as exc:
            raise DynamicFSError(str(exc)) from None
    if not found:
        raise DynamicFSError(f"{path} has no {CONFIG_NAME}: name at least one of the pool's "
                             f"disks with --disk PATH")
    if len(found) > 1:
        raise DynamicFSError(f"the disks named with --disk belong to different pools: "
                             f"{', '.join(sorted(map(str, found)))}")
    pool = found.pop()
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps({"format": POOL_FORMAT, "uuid": str(pool),
                               "created": time.time()}, indent=2) + "\n")
    os.replace(tmp, cfg)
    fsync_dir(path)
    log.warning("recreated %s for pool %s from the disk labels", cfg, pool)
    return pool


def lock_directory(path: Path, purpose: str) -> int:
    """Take the pool lock without opening the database (it may be unusable)."""
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
        os.close(fd)
        raise PoolBusy(f"pool {path} is in use ({holder or 'locked'}); cannot {purpose}") \
            from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}: {purpose}\n".encode(), 0)
    return fd


def set_aside(path: Path) -> str | None:
    """Move meta.db (and its WAL and shared memory) out of the way; returns the new name."""
    db = path / DB_NAME
    if not db.exists():
        for suffix in ("-wal", "-shm"):
            (path / (DB_NAME + suffix)).unlink(missing_ok=True)  # would be applied to a new db
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = f"{DB_NAME}.damaged-{stamp}"
    n = 1
    while any((path / (name + suffix)).exists() for suffix in ("", "-wal", "-shm")):
        n += 1  # never overwrite the evidence of an earlier restore in the same second
        name = f"{DB_NAME}.damaged-{stamp}.{n}"
    for suffix in ("", "-wal", "-shm"):
        src = path / (DB_NAME + suffix)
        if src.exists():
            os.replace(src, path / (name + suffix))
    fsync_dir(path)
    return name


def install(copy: Path, path: Path) -> None:
    """Make `copy` the pool's meta.db, durably (nothing may be under the live name yet)."""
    tmp = path / (TMP_PREFIX + DB_NAME)
    shutil.copyfile(copy, tmp)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path / DB_NAME)
    fsync_dir(path)


# -- copies -----------------------------------------------------------------------------------

def find_copies(path: Path, pool: uuid.UUID, disks: list[Path]) -> tuple[list[Copy], list[Path]]:
    """Every metadata copy reachable from the disks named, the current database and the
    copies themselves; and every disk directory looked at."""
    todo = [d.resolve() for d in disks]
    # The current database, or one set aside earlier, may still name the disks.
    set_aside_before = sorted((p for p in path.glob(f"{DB_NAME}.damaged-*")
                               if not p.name.endswith(("-wal", "-shm"))), reverse=True)
    for db in [path / DB_NAME, *set_aside_before]:
        todo += [Path(p) for p in mreb.recorded_disk_paths(db)]
    seen: list[Path] = []
    copies: list[Copy] = []
    while todo:
        disk = todo.pop(0)
        if disk in seen:
            continue
        seen.append(disk)
        found = LocalDisk(disk, pool.bytes).metadata_copy()
        if found is None:
            continue
        db, info = found
        copies.append(Copy(disk, db, info, judge_copy(db, info, pool)))
        todo += [Path(p) for p in mreb.recorded_disk_paths(db)]
    return copies, seen


def judge_copy(db: Path, info: dict[str, Any], pool: uuid.UUID) -> str | None:
    """Why a copy is not good, or None: it names this pool, matches its sidecar's size and
    BLAKE3, and passes SQLite's integrity check and the schema check."""
    if info.get("pool_uuid") != str(pool):
        return f"its sidecar names pool {info.get('pool_uuid')}"
    try:
        size = db.stat().st_size
        digest = file_blake3(db)
    except OSError as exc:
        return f"cannot read it: {exc.strerror}"
    if size != info.get("size") or digest != info.get("blake3"):
        return "its size or BLAKE3 does not match its sidecar (an interrupted copy?)"
    return mreb.database_problem(db, str(pool))


def _newest_good(path: Path, pool: uuid.UUID, disks: list[Path]) -> tuple[Copy | None, str]:
    copies, looked = find_copies(path, pool, disks)
    good = [c for c in copies if c.problem is None]
    if good:
        return max(good, key=lambda c: c.time), ""
    if copies:
        why = "; ".join(f"{c.db}: {c.problem}" for c in copies)
    elif looked:
        why = f"no copy on {', '.join(map(str, looked))}"
    else:
        why = "no disk to look at"
    return None, why


def _copy_report(copy: Copy) -> dict[str, Any]:
    return {"copy": str(copy.db), "disk": str(copy.disk), "time": copy.time,
            "age_seconds": max(0.0, time.time() - copy.time)}


def restore(path: Path, disks: list[Path], *, force: bool = False) -> dict[str, Any]:
    """`fsck --restore-metadata`: replace a missing or damaged meta.db with the newest good
    copy from the disks; returns which copy was used, its age and where the old file went."""
    pool = pool_uuid(path, disks)
    fd = lock_directory(path, "restore the metadata")
    try:
        problem = mreb.database_problem(path / DB_NAME, str(pool))
        if problem is None and not force:
            raise DynamicFSError(f"the metadata database of {path} is healthy (integrity and "
                                 f"schema checks pass); nothing to restore (use --force to "
                                 f"replace it with the newest copy anyway)")
        best, why = _newest_good(path, pool, disks)
        if best is None:
            raise DynamicFSError(f"no good metadata copy found ({why}); copies live on two of "
                                 f"the pool's disks: name the pool's disks with --disk PATH, "
                                 f"or rebuild with --rebuild-metadata")
        damaged = set_aside(path)
        install(best.db, path)
        report = {**_copy_report(best), "damaged": damaged,
                  "reason": problem or "replaced on request (--force)"}
        log.warning("restored the metadata of %s from %s (%.0f s old)", path, best.db,
                    report["age_seconds"])
        return report
    finally:
        os.close(fd)


# -- rebuild ----------------------------------------------------------------------------------

@dataclass
class Found:
    """The good fragment files of one extent, as their headers describe them."""

    headers: dict[int, FragmentHeader]  # index -> header
    where: dict[int, tuple[int, int]]  # index -> (disk id, file size)


def rebuild(path: Path, disks: list[Path]) -> dict[str, Any]:
    """`fsck --rebuild-metadata`: see the module docstring. The caller runs a repair pass
    afterwards for the derived figures (alloc, nlink) and anything else fsck finds."""
    pool_id = pool_uuid(path, disks)
    fd = lock_directory(path, "rebuild the metadata")
    try:
        base, damaged = _base_database(path, pool_id, disks)
        pool = Pool.open(path)
        try:
            report = Rebuilder(pool, disks, fresh=base == EMPTY).run()
        finally:
            pool.close()
        return {"base": base, "damaged": damaged, **report}
    finally:
        os.close(fd)


def _base_database(path: Path, pool: uuid.UUID, disks: list[Path]) -> tuple[str, str | None]:
    problem = mreb.database_problem(path / DB_NAME, str(pool))
    if problem is None:
        return "the current database", None
    best, _ = _newest_good(path, pool, disks)
    damaged = set_aside(path)
    if best is not None:
        install(best.db, path)
        age = time.time() - best.time
        return f"the copy {best.db} ({age:.0f} s old)", damaged
    db = Database(path / DB_NAME, create=True)
    try:
        with db.transaction():
            mdisks.set_setting(db, "pool_uuid", str(pool))
            mdisks.set_setting(db, "block_size", str(DEFAULT_BLOCK))
            mdisks.set_setting(db, "policy", "rep:2")
            minodes.create_inode(db, stat.S_IFDIR | 0o755, 0, 0, 2, now_ns(),
                                 ino=ROOT_INODE)
        db.sync()
    finally:
        db.close()
    return EMPTY, damaged


class Rebuilder:
    def __init__(self, pool: Pool, extra: list[Path], *, fresh: bool = False) -> None:
        self.pool = pool
        self.fresh = fresh  # an empty schema: block size and policy are guessed from extents
        self.db = pool.db
        self.extra = [p.resolve() for p in extra]
        self.report: dict[str, Any] = {
            "disks_scanned": 0, "disks_added": [], "fragments": 0, "bad_fragments": 0,
            "extents": 0, "incomplete_extents": 0, "holes": [], "unattached_extents": 0,
            "unattached_bytes": 0, "unattached_dir": "/lost+found/extents",
        }

    def run(self) -> dict[str, Any]:
        self._register_disks()
        disks = repair.available_disks(self.pool)
        self.report["disks_scanned"] = len(disks)
        found = self._scan(disks)
        if self.fresh:
            self._guess_settings(found)
        self._record(found)
        self._attach_unattached()
        self.db.sync()
        return self.report

    def _register_disks(self) -> None:
        """Disks named with --disk that the database does not know (or knows elsewhere)."""
        by_uuid = mreb.disk_ids_by_uuid(self.db)
        for root in self.extra:
            try:
                label = read_label(root)
            except LabelError as exc:
                raise DynamicFSError(str(exc)) from None
            if label.pool_uuid != self.pool.uuid:
                raise DynamicFSError(f"{root} is a disk of pool {label.pool_uuid}, not this one")
            with self.db.transaction():
                disk_id = by_uuid.get(str(label.disk_uuid))
                if disk_id is None:
                    disk_id = mdisks.add_disk(self.db, str(label.disk_uuid), str(root), "slow",
                                              None)
                    self.report["disks_added"].append(str(root))
                else:
                    mreb.set_disk_path(self.db, disk_id, str(root))

    def _scan(self, disks: dict[int, LocalDisk]) -> dict[bytes, Found]:
        found: dict[bytes, Found] = defaultdict(lambda: Found({}, {}))
        for disk_id, disk in sorted(disks.items()):
            for file in disk.iter_fragment_files():
                parsed = gc.parse_fragment_name(file.name)
                if file.name.startswith(TMP_PREFIX) or parsed is None:
                    continue
                self.report["fragments"] += 1
                header = self._good_header(disk, file, *parsed)
                if header is None:
                    self.report["bad_fragments"] += 1
                    continue
                ext = found[header.extent_id]
                if header.index in ext.headers or disk_id in {d for d, _ in ext.where.values()}:
                    continue  # a second copy of one fragment, or two on one disk: one is kept
                ext.headers[header.index] = header
                ext.where[header.index] = (disk_id, HEADER_SIZE + header.payload_length)
        return found

    def _guess_settings(self, found: dict[bytes, Found]) -> None:
        """Block size and policy for a pool whose settings were lost with its database.

        Full blocks are stored at the block size, so a power of two among the longest extents
        is taken for it; otherwise the default (or the next power of two above the longest).
        The policy most extents were written with becomes the pool's.
        """
        headers = [h for ext in found.values() for h in ext.headers.values()]
        if not headers:
            return
        longest = max(h.extent_length for h in headers)
        if longest >= 4096 and longest & (longest - 1) == 0:
            block = longest
        else:
            block = max(DEFAULT_BLOCK, 1 << max(0, longest - 1).bit_length())
        shapes = Counter((h.codec_id, h.k, h.m) for h in headers)
        try:
            policy = policy_for_codec(*shapes.most_common(1)[0][0])
        except DecodeError:
            policy = Policy.parse("rep:2")
        with self.db.transaction():
            mdisks.set_setting(self.db, "block_size", str(block))
            mdisks.set_setting(self.db, "policy", str(policy))
        self.report["guessed_settings"] = {"block_size": block, "policy": str(policy)}

    def _good_header(self, disk: LocalDisk, file: Path, digest: bytes,
                     idx: int) -> FragmentHeader | None:
        try:
            header = disk.read_header(file)
            size = file.stat().st_size
            disk.read_fragment(digest, idx)  # verifies the payload's BLAKE3
        except (OSError, FragmentError) as exc:
            log.warning("rebuild: ignoring %s: %s", file, exc)
            return None
        if (header.pool_uuid != self.pool.uuid.bytes or header.extent_id != digest
                or header.index != idx or size != HEADER_SIZE + header.payload_length
                or (header.codec_id == CODEC_REP and header.payload_hash != digest)):
            log.warning("rebuild: ignoring %s: its header does not describe it", file)
            return None
        return header

    def _record(self, found: dict[bytes, Found]) -> None:
        ids = mreb.extent_ids_by_hash(self.db)
        with self.db.transaction():
            mreb.clear_fragments(self.db)
            for digest, ext in found.items():
                shape = self._consistent(ext)
                if shape is None:
                    continue
                length, codec_id, k, m = shape
                eid = mreb.replace_extent(self.db, ids.get(digest), digest, length, codec_id,
                                          k, m)
                for idx, (disk, size) in ext.where.items():
                    mreb.put_fragment_row(self.db, eid, idx, disk, size)
                self.report["extents"] += 1
            gone = [eid for digest, eid in ids.items() if digest not in found]
            for eid in gone:
                for ino, idx in mreb.blocks_of_extent(self.db, eid):
                    mext.drop_block(self.db, ino, idx)
                    self.report["holes"].append(
                        {"inode": ino, "block": idx, "path": repair.path_of(self.pool, ino),
                         "extent": eid})
            mreb.drop_extent_rows(self.db, gone)
            mreb.recompute_refcounts(self.db)
        self.report["holes"].sort(key=lambda h: (h["path"], h["block"]))
        for hole in self.report["holes"]:
            log.warning("rebuild: DATA LOSS: %s block %d: extent %d exists on no disk",
                        hole["path"], hole["block"], hole["extent"])

    def _consistent(self, ext: Found) -> tuple[int, int, int, int] | None:
        """(length, codec, k, m) most fragments agree on; the others are dropped as bad."""
        votes = Counter((h.extent_length, h.codec_id, h.k, h.m) for h in ext.headers.values())
        shape, _ = votes.most_common(1)[0]
        for idx, h in list(ext.headers.items()):
            if (h.extent_length, h.codec_id, h.k, h.m) != shape:
                del ext.headers[idx], ext.where[idx]
                self.report["bad_fragments"] += 1
        try:
            policy: Policy = policy_for_codec(shape[1], shape[2], shape[3])
        except DecodeError:
            self.report["bad_fragments"] += len(ext.headers)
            return None
        for idx in [i for i in ext.where if i >= policy.n_fragments]:
            del ext.headers[idx], ext.where[idx]
            self.report["bad_fragments"] += 1
        if not ext.where:
            return None
        if len(ext.where) < policy.min_fragments:
            # Kept anyway: a disk not scanned now may bring the rest back later.
            self.report["incomplete_extents"] += 1
        return shape

    def _attach_unattached(self) -> None:
        rows = mreb.unreferenced_extent_rows(self.db)
        if not rows:
            return
        owner = os.stat(self.pool.path)
        with self.db.transaction():
            lost = repair.ensure_directory(self.pool, ROOT_INODE, repair.LOST_FOUND)
            home = repair.ensure_directory(self.pool, lost, UNATTACHED)
            now = now_ns()
            for eid, digest, length in rows:
                name = digest.hex().encode()
                if minodes.lookup(self.db, home, name) is not None:
                    continue
                ino = minodes.create_inode(self.db, stat.S_IFREG | 0o600, owner.st_uid,
                                           owner.st_gid, 1, now)
                minodes.update_inode(self.db, ino, size=length, alloc=length)
                mext.set_block(self.db, ino, 0, eid)
                mext.incref(self.db, eid)
                minodes.add_dentry(self.db, home, name, ino)
                self.report["unattached_extents"] += 1
                self.report["unattached_bytes"] += length
        log.warning("rebuild: %d extents (%d bytes) belong to no file; kept in %s",
                    self.report["unattached_extents"], self.report["unattached_bytes"],
                    self.report["unattached_dir"])
