"""fsck --repair: fix what the checker found, where that is safe, and say what changed.

The repairs run on an unmounted pool whose lock the caller holds. Each is one small step in its
own transaction, logged and returned as a `Repair`; a step that loses data (a block whose extent
is gone becomes a hole) says so and names the file. Nothing is guessed: a symlink whose target
is lost, a disk whose label is gone or an extent too damaged to reconstruct is left for a person
(fsck keeps reporting it), because "fixing" it would only hide the loss. The fragments such a
disk held are rebuilt on the other disks, though: that only costs space, and should the disk
come back, its copies are orphans that GC removes.

The order matters: the namespace and block maps are made consistent first, then fragments are
rebuilt, then the derived figures (refcounts, alloc, nlink) are recomputed from what is left,
and orphan files are collected last, once the metadata that dropped them is durable.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import defaultdict, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from ..clock import now_ns
from ..codec import DecodeError, get_codec, policy_for_codec
from ..disks import HEADER_SIZE, FragmentError, LocalDisk
from ..engine.pool import Pool
from ..errors import DynamicFSError
from ..meta import ROOT_INODE
from ..meta import extents as mext
from ..meta import inodes as minodes
from ..meta import maintenance as mm
from ..meta import rebuild as mreb
from ..obs.stats import Stats
from ..store.extents import ExtentStore, ExtentUnreadable
from ..store.placement import choose_disks
from . import fsck, gc

log = logging.getLogger(__name__)

LOST_FOUND = b"lost+found"


@dataclass(frozen=True)
class Repair:
    check: str  # the fsck check whose finding this fixes
    action: str  # what was changed, in words
    subject: tuple[str, int] | None = None
    data_loss: bool = False  # user data became unreachable (named in `action`)

    def __str__(self) -> str:
        return f"[{self.check}] {'DATA LOSS: ' if self.data_loss else ''}{self.action}"

    def as_dict(self) -> dict:
        return asdict(self)


def path_of(db_pool: Pool, ino: int) -> str:
    """A path of `ino` for messages ("inode N" when it has none)."""
    parts: list[str] = []
    cur, seen = ino, set()
    while cur != ROOT_INODE:
        found = mreb.name_of(db_pool.db, cur)
        if found is None or cur in seen:
            return f"inode {ino}" + (f" (…/{'/'.join(reversed(parts))})" if parts else "")
        seen.add(cur)
        parent, name = found
        parts.append(os.fsdecode(name))
        cur = parent
    return "/" + "/".join(reversed(parts))


class Repairer:
    def __init__(self, pool: Pool, *, verify_data: bool = False) -> None:
        self.pool = pool
        self.db = pool.db
        self.verify_data = verify_data
        self.repairs: list[Repair] = []
        self.disks: dict[int, LocalDisk] = {}
        self._check = ""

    def run(self) -> list[Repair]:
        checker = fsck.Fsck(self.pool, verify_data=self.verify_data)
        problems = checker.run()
        self.disks = checker.disks
        damaged = {p.subject[1] for p in problems
                   if p.check in ("fragment_rows", "fragment_files") and p.subject
                   and p.subject[0] == "extent"}
        self._dentries()
        self._block_maps()
        self._fragment_rows()
        self._fragments(sorted(damaged))
        self._directory_names()
        self._nlink()
        self._tree()
        self._nlink()  # lost+found and moved directories changed the counts
        self._unlinked()
        self._symlinks_and_xattrs()
        self._refcounts()
        self._unreferenced()
        self._alloc()
        self._orphans()
        return self.repairs

    # -- bookkeeping -------------------------------------------------------------------------

    @contextmanager
    def step(self, check: str) -> Iterator[None]:
        """One repair's transaction (committed on leaving, rolled back on error)."""
        self._check = check
        with self.db.transaction():
            yield

    def did(self, action: str, subject: tuple[str, int] | None = None,
            data_loss: bool = False) -> None:
        repair = Repair(self._check, action, subject, data_loss)
        self.repairs.append(repair)
        (log.warning if data_loss else log.info)("fsck repair: %s", repair)

    # -- the namespace -----------------------------------------------------------------------

    def _dentries(self) -> None:
        for parent, name, ino, why in mm.dentries_with_bad_ends(self.db):
            with self.step("tree"):
                minodes.remove_dentry(self.db, parent, name)
                self.did(f"removed entry {os.fsdecode(name)!r} in directory {parent} "
                         f"(inode {ino}): {why}", ("inode", ino))

    def _directory_names(self) -> None:
        """A directory has exactly one name (the root none): drop the extra hard links."""
        for ino, mode, _nlink, names, _ in mm.link_counts(self.db):
            allowed = 0 if ino == ROOT_INODE else 1
            if not stat.S_ISDIR(mode) or names <= allowed:
                continue
            with self.step("link_counts"):
                for parent, name in mreb.names_of(self.db, ino)[allowed:]:
                    minodes.remove_dentry(self.db, parent, name)
                    self.did(f"removed extra name {os.fsdecode(name)!r} in {parent} of "
                             f"directory {ino}", ("inode", ino))

    def _nlink(self) -> None:
        for ino, mode, nlink, names, subdirs in mm.link_counts(self.db):
            if names == 0 and ino != ROOT_INODE:
                continue  # no name: lost+found or removal decides, not a count
            want = 2 + subdirs if stat.S_ISDIR(mode) else names
            if nlink != want:
                with self.step("link_counts"):
                    minodes.update_inode(self.db, ino, nlink=want)
                    self.did(f"inode {ino}: nlink {nlink} -> {want}", ("inode", ino))

    def _lost_found(self) -> int:
        """The /lost+found directory, created if needed (within the caller's transaction)."""
        if minodes.lookup(self.db, ROOT_INODE, LOST_FOUND) is None:
            ino = ensure_directory(self.pool, ROOT_INODE, LOST_FOUND)
            self.did(f"created /{LOST_FOUND.decode()} (inode {ino})", ("inode", ino))
            return ino
        return ensure_directory(self.pool, ROOT_INODE, LOST_FOUND)

    def _tree(self) -> None:
        """Move every linked inode the root cannot reach into /lost+found as '#<inode>'."""
        rows = mm.link_counts(self.db)
        if not any(ino == ROOT_INODE for ino, *_ in rows):
            return  # no root to hang anything on: reported, not repairable
        modes = {ino: mode for ino, mode, *_ in rows}
        linked = {ino for ino, _, nlink, names, _ in rows if nlink > 0 or names > 0}
        children: dict[int, list[int]] = defaultdict(list)
        for parent, child in mm.dentry_edges(self.db):
            children[parent].append(child)
        reach: set[int] = set()

        def visit(start: int) -> None:
            todo = deque([start])
            reach.add(start)
            while todo:
                for child in children.get(todo.popleft(), ()):
                    if child not in reach:
                        reach.add(child)
                        todo.append(child)

        visit(ROOT_INODE)
        while True:
            lost = sorted(linked - reach)
            if not lost:
                return
            # A directory first: moving it brings everything below it back with it.
            pick = next((i for i in lost if stat.S_ISDIR(modes[i])), lost[0])
            with self.step("tree"):
                lf = self._lost_found()
                reach.add(lf)
                if stat.S_ISDIR(modes[pick]):
                    for parent, name in mreb.names_of(self.db, pick):
                        minodes.remove_dentry(self.db, parent, name)
                        children[parent] = [c for c in children[parent] if c != pick]
                name = b"#%d" % pick
                minodes.add_dentry(self.db, lf, name, pick)
                children[lf].append(pick)
                self.did(f"inode {pick} was not reachable from the root: now "
                         f"/{LOST_FOUND.decode()}/{name.decode()}", ("inode", pick))
            visit(pick)

    def _unlinked(self) -> None:
        for ino, _, nlink, names, _ in mm.link_counts(self.db):
            if ino == ROOT_INODE or nlink > 0 or names > 0:
                continue
            with self.step("unlinked"):
                dropped = mext.drop_blocks_from(self.db, ino, 0)
                minodes.delete_inode(self.db, ino)
                self.did(f"removed inode {ino}: no names and no links left "
                         f"({len(dropped)} blocks released)", ("inode", ino))

    def _symlinks_and_xattrs(self) -> None:
        for ino, why in mm.stray_symlink_rows(self.db):
            with self.step("symlinks"):
                mreb.delete_symlink_row(self.db, ino)
                self.did(f"removed a symlink target recorded for inode {ino} ({why})",
                         ("inode", ino))
        for ino, size, length in mm.symlink_size_mismatches(self.db):
            with self.step("symlinks"):
                minodes.update_inode(self.db, ino, size=length)
                self.did(f"symlink {ino}: size {size} -> {length}", ("inode", ino))
        for ino, n in mm.stray_xattr_rows(self.db):
            with self.step("xattrs"):
                mreb.delete_xattrs_of(self.db, ino)
                self.did(f"removed {n} extended attributes of missing inode {ino}",
                         ("inode", ino))

    # -- block maps and extents --------------------------------------------------------------

    def _block_maps(self) -> None:
        bs = self.pool.block_size
        for ino, n in mm.blocks_without_inode(self.db):
            with self.step("block_map"):
                mext.drop_blocks_from(self.db, ino, 0)
                self.did(f"removed {n} block-map rows of missing inode {ino}", ("inode", ino))
        for ino, mode, n in mm.blocks_of_non_files(self.db):
            with self.step("block_map"):
                mext.drop_blocks_from(self.db, ino, 0)
                self.did(f"removed {n} block-map rows of non-file inode {ino} (mode {mode:o})",
                         ("inode", ino))
        for ino, _, size in mm.blocks_beyond_size(self.db, bs):
            with self.step("block_map"):
                # Past end of file nothing can read them: no data is lost.
                gone = mext.drop_blocks_from(self.db, ino, -(-size // bs))
                self.did(f"removed {len(gone)} blocks of inode {ino} beyond its size {size}",
                         ("inode", ino))
        for ino, idx, eid in mm.blocks_without_extent(self.db):
            with self.step("block_map"):
                mext.drop_block(self.db, ino, idx)
                self.did(f"{path_of(self.pool, ino)} lost block {idx} (bytes {idx * bs}.."
                         f"{(idx + 1) * bs - 1}): its extent {eid} no longer exists; it now "
                         f"reads as zeros", ("inode", ino), data_loss=True)

    def _fragment_rows(self) -> None:
        for eid, idx, disk in mm.fragments_without_extent(self.db):
            with self.step("fragment_rows"):
                mreb.delete_fragment_row(self.db, eid, idx)
                self.did(f"removed fragment row {idx} on disk {disk} of missing extent {eid}",
                         ("extent", eid))
        for eid, idx, disk in mm.fragments_on_unknown_disks(self.db):
            with self.step("fragment_rows"):
                mreb.delete_fragment_row(self.db, eid, idx)
                self.did(f"extent {eid}: forgot fragment {idx} on unregistered disk {disk}",
                         ("extent", eid))
        for ext in mm.iter_extent_fragments(self.db):
            seen: set[int] = set()
            extra = []
            for idx, disk, _ in ext.fragments:
                if disk in seen:
                    extra.append((idx, disk))
                seen.add(disk)
            if extra:
                with self.step("fragment_rows"):
                    for idx, disk in extra:
                        mreb.delete_fragment_row(self.db, ext.id, idx)
                        self.did(f"extent {ext.id}: fragment {idx} shared disk {disk} with "
                                 f"another fragment; it will be rebuilt elsewhere",
                                 ("extent", ext.id))

    def _good_fragments(self, ext: mm.ExtentFragments) -> dict[int, int]:
        """{index: disk} of the fragments verified good (on a disk that is there)."""
        good: dict[int, int] = {}
        for idx, disk_id, size in ext.fragments:
            disk = self.disks.get(disk_id)
            if disk is None:
                continue
            path = disk.fragment_path(ext.hash, idx)
            try:
                header = disk.read_header(path)
                disk.read_fragment(ext.hash, idx)
                actual = path.stat().st_size
            except (OSError, FragmentError):
                continue
            if (header.codec_id, header.k, header.m, header.extent_length) == (
                    ext.codec_id, ext.k, ext.m, ext.length) and actual == size:
                good[idx] = disk_id
        return good

    def _fragments(self, extents: list[int]) -> None:
        """Rebuild missing or bad fragments of extents that can still be reconstructed."""
        want = set(extents)
        used = self.pool.fragment_counts()
        for d, disk in self.disks.items():
            disk.used = used.get(d, (0, 0))[1] or 0  # what a capacity cap is measured against
        writable = {d: disk for d, disk in self.disks.items()
                    if self._disk_state(d) not in ("failed", "draining")}
        with ThreadPoolExecutor(max_workers=4) as pool:
            store = ExtentStore(self.pool.uuid.bytes, pool, Stats())
            for d, disk in self.disks.items():
                store.attach(d, disk, writable=d in writable)
            for ext in mm.iter_extent_fragments(self.db):
                # A fragment on a disk that is gone counts as missing: rebuilding it elsewhere
                # loses nothing even if the disk comes back (its copy is then an orphan).
                if ext.id in want or any(d not in self.disks for _, d, _ in ext.fragments):
                    self._rebuild_extent(store, ext, writable)

    def _disk_state(self, disk_id: int) -> str:
        return next((r.state for r in self.pool.disk_rows() if r.id == disk_id), "missing")

    def _rebuild_extent(self, store: ExtentStore, ext: mm.ExtentFragments,
                        writable: dict[int, LocalDisk]) -> None:
        try:
            policy = policy_for_codec(ext.codec_id, ext.k, ext.m)
        except DecodeError:
            return
        good = self._good_fragments(ext)
        recorded = {idx: disk for idx, disk, _ in ext.fragments}
        missing = [i for i in range(policy.n_fragments) if i not in good]
        if not missing or len(good) < policy.min_fragments:
            return  # nothing to do, or too little left: fsck keeps reporting it
        try:
            data = store.read(ext.hash, ext.length, ext.codec_id, ext.k, ext.m,
                              sorted(good.items()), what=f"extent {ext.id}")
        except ExtentUnreadable as exc:
            log.error("fsck repair: %s", exc)
            return
        payloads = get_codec(policy).encode(data)
        taken = set(good.values())
        free = {d: f for d, f in store.free_space().items() if d in writable}
        placed: list[tuple[int, int, int]] = []
        for idx in missing:
            # The disk that lost it first (it has no other fragment of this extent), else
            # the emptiest other one.
            first = recorded.get(idx)
            if first in free and first not in taken:
                target = first
            else:
                picks = choose_disks(free, 1, HEADER_SIZE + len(payloads[idx]), exclude=taken)
                if not picks:
                    log.error("fsck repair: no disk can take fragment %d of extent %d", idx,
                              ext.id)
                    continue
                target = picks[0]
            header = store.header(ext.hash, ext.length, policy, idx, payloads[idx])
            try:
                size = store.disks()[target].write_fragment(header, payloads[idx])
            except OSError as exc:
                log.error("fsck repair: writing fragment %d of extent %d to disk %d: %s",
                          idx, ext.id, target, exc)
                continue
            taken.add(target)
            placed.append((idx, target, size))
        if placed:
            # Data before metadata: the fragments are durable before any row names them.
            with self.step("fragment_files"):
                for idx, disk, size in placed:
                    mreb.put_fragment_row(self.db, ext.id, idx, disk, size)
                    self.did(f"extent {ext.id}: rebuilt fragment {idx} on disk {disk}",
                             ("extent", ext.id))

    def _refcounts(self) -> None:
        for eid, recorded, actual in mm.refcount_mismatches(self.db):
            with self.step("refcounts"):
                mreb.set_refcount(self.db, eid, actual)
                self.did(f"extent {eid}: refcount {recorded} -> {actual}", ("extent", eid))

    def _unreferenced(self) -> None:
        doomed: list[tuple[bytes, list[mext.FragmentRow]]] = []
        for eid in mm.unreferenced_extents(self.db):
            with self.step("refcounts"):
                row = mext.get_extent(self.db, eid)
                frags = mext.delete_extent(self.db, eid)
                if row is not None:
                    doomed.append((row.hash, frags))
                self.did(f"freed unreferenced extent {eid} ({len(frags)} fragments)",
                         ("extent", eid))
        if not doomed:
            return
        # Metadata before deletion: the frees are durable before any file goes.
        self.db.sync()
        for digest, frags in doomed:
            for f in frags:
                disk = self.disks.get(f.disk)
                if disk is None:
                    continue
                try:
                    disk.delete_fragment(digest, f.idx)
                except OSError as exc:
                    log.warning("fsck repair: could not remove fragment %s.%d: %s",
                                digest.hex(), f.idx, exc)

    def _alloc(self) -> None:
        for ino, recorded, actual in mm.alloc_mismatches(self.db):
            with self.step("alloc"):
                minodes.update_inode(self.db, ino, alloc=actual)
                self.did(f"inode {ino}: alloc {recorded} -> {actual}", ("inode", ino))

    def _orphans(self) -> None:
        self.db.sync()
        self._check = "orphan_files"
        report = collect_offline(self.pool, self.disks)
        if report.orphan_fragments or report.temp_files:
            self.did(f"removed {report.orphan_fragments} orphan fragments and "
                     f"{report.temp_files} temporary files ({report.bytes_reclaimed} bytes)")


def ensure_directory(pool: Pool, parent: int, name: bytes) -> int:
    """The directory `name` in `parent`, created (owner-only, owned like the pool directory)
    if missing; within the caller's transaction."""
    ino = minodes.lookup(pool.db, parent, name)
    if ino is not None:
        row = minodes.get_inode(pool.db, ino)
        if row is not None and stat.S_ISDIR(row.mode):
            return ino
        raise DynamicFSError(f"{path_of(pool, ino)} exists and is not a directory; rename it "
                             f"and run fsck again")
    st = os.stat(pool.path)
    ino = minodes.create_inode(pool.db, stat.S_IFDIR | 0o700, st.st_uid, st.st_gid, 2,
                               now_ns())
    minodes.add_dentry(pool.db, parent, name, ino)
    minodes.add_nlink(pool.db, parent, 1)
    return ino


def available_disks(pool: Pool) -> dict[int, LocalDisk]:
    """The pool's disks whose label names this pool and the disk the metadata expects."""
    out = {}
    for row in pool.disk_rows():
        disk = pool.open_disk(row)
        try:
            label = disk.check_label()
        except Exception:  # noqa: BLE001 - any unreadable label makes the disk unavailable
            continue
        if str(label.disk_uuid) == row.uuid:
            out[row.id] = disk
    return out


def collect_offline(pool: Pool, disks: dict[int, LocalDisk] | None = None,
                    dry_run: bool = False) -> gc.GcReport:
    """Garbage collection of an unmounted pool whose lock the caller holds."""
    def recorded(digest: bytes, idx: int, disk: int) -> bool:
        return mext.fragment_recorded(pool.db, digest, idx, disk)

    return gc.collect_offline(available_disks(pool) if disks is None else disks, recorded,
                              dry_run)


def repair(pool: Pool, *, verify_data: bool = False) -> list[Repair]:
    """Repair what can be repaired safely; returns what was changed, in order."""
    return Repairer(pool, verify_data=verify_data).run()
