"""The offline consistency checker: every metadata invariant of a pool, as small named checks.

`run(pool)` opens nothing itself and writes nothing: it reads the database of an opened (not
mounted, or read-only opened) pool and the fragment files on its disks, and returns one
`Problem` per inconsistency found. Each problem names its check and, in `subject`, what it is
about (("extent", id), ("inode", ino), ...), so a repair step can be added per check later
without parsing messages.

Payload hashes are verified only with `verify_data=True`: that reads every byte on every disk
(a scrub); the default reads only the 128-byte fragment headers.
"""

from __future__ import annotations

import stat
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..codec import CODEC_REP, DecodeError, policy_for_codec
from ..disks import HEADER_SIZE, FragmentError, FragmentHeader, LabelError, LocalDisk
from ..disks.local import TMP_PREFIX
from ..engine.namespace import NAME_MAX
from ..engine.pool import Pool
from ..meta import ROOT_INODE
from ..meta import disks as mdisks
from ..meta import inodes as minodes
from ..meta import maintenance as mm


@dataclass(frozen=True)
class Problem:
    check: str  # the check that found it, e.g. "refcounts"
    message: str
    subject: tuple[str, int] | None = None

    def __str__(self) -> str:
        return f"[{self.check}] {self.message}"


class Fsck:
    """The checks, run in the order of `CHECKS` (later checks rely on what disk_labels found)."""

    CHECKS = (
        "settings", "disk_labels", "block_map", "refcounts", "alloc", "fragment_rows",
        "fragment_files", "orphan_files", "link_counts", "tree", "unlinked", "symlinks",
        "xattrs",
    )

    def __init__(self, pool: Pool, *, verify_data: bool = False) -> None:
        self.pool = pool
        self.db = pool.db
        self.verify_data = verify_data
        self.problems: list[Problem] = []
        self.disks: dict[int, LocalDisk] = {}  # disks whose label names this pool
        self._check = ""

    def run(self) -> list[Problem]:
        for name in self.CHECKS:
            self._check = name
            check: Callable[[], None] = getattr(self, f"check_{name}")
            check()
        return self.problems

    def report(self, message: str, subject: tuple[str, int] | None = None) -> None:
        self.problems.append(Problem(self._check, message, subject))

    # -- pool and disks ----------------------------------------------------------------------

    def check_settings(self) -> None:
        recorded = mdisks.get_setting(self.db, "pool_uuid")
        if recorded != str(self.pool.uuid):
            self.report(f"database names pool {recorded}, pool.json names {self.pool.uuid}")
        bs = mdisks.get_setting(self.db, "block_size")
        if bs is None or not bs.isdigit() or int(bs) <= 0 or int(bs) & (int(bs) - 1):
            self.report(f"block size setting {bs!r} is not a power of two")
        try:
            self.pool.policy  # noqa: B018 - parsing it is the check
        except ValueError as exc:
            self.report(f"pool policy setting is invalid: {exc}")

    def check_disk_labels(self) -> None:
        for row in mdisks.list_disks(self.db):
            disk = self.pool.open_disk(row)
            try:
                label = disk.check_label()
            except (LabelError, OSError) as exc:
                self.report(f"disk {row.id} ({row.path}): {exc}", ("disk", row.id))
                continue
            if str(label.disk_uuid) != row.uuid:
                self.report(f"disk {row.id} ({row.path}): label names disk {label.disk_uuid}, "
                            f"metadata expects {row.uuid}", ("disk", row.id))
                continue
            self.disks[row.id] = disk

    # -- block maps and extents --------------------------------------------------------------

    def check_block_map(self) -> None:
        for ino, idx, eid in mm.blocks_without_extent(self.db):
            self.report(f"inode {ino} block {idx} points at missing extent {eid}",
                        ("inode", ino))
        for ino, n in mm.blocks_without_inode(self.db):
            self.report(f"{n} block-map rows belong to missing inode {ino}", ("inode", ino))
        for ino, mode, n in mm.blocks_of_non_files(self.db):
            self.report(f"inode {ino} (mode {mode:o}) is not a regular file but has {n} "
                        f"block-map rows", ("inode", ino))
        for ino, idx, size in mm.blocks_beyond_size(self.db, self.pool.block_size):
            self.report(f"inode {ino} has block {idx} at or beyond its size {size}",
                        ("inode", ino))

    def check_refcounts(self) -> None:
        for eid, recorded, actual in mm.refcount_mismatches(self.db):
            self.report(f"extent {eid} has refcount {recorded} but {actual} block-map rows "
                        f"point at it", ("extent", eid))
        for eid in mm.unreferenced_extents(self.db):
            self.report(f"extent {eid} is unreferenced (refcount 0) but still recorded",
                        ("extent", eid))

    def check_alloc(self) -> None:
        for ino, recorded, actual in mm.alloc_mismatches(self.db):
            self.report(f"inode {ino} records {recorded} allocated bytes, its blocks' extents "
                        f"hold {actual}", ("inode", ino))

    # -- fragments ---------------------------------------------------------------------------

    def check_fragment_rows(self) -> None:
        for eid, idx, disk in mm.fragments_without_extent(self.db):
            self.report(f"fragment {idx} on disk {disk} belongs to missing extent {eid}",
                        ("extent", eid))
        for eid, idx, disk in mm.fragments_on_unknown_disks(self.db):
            self.report(f"extent {eid} fragment {idx} is on unregistered disk {disk}",
                        ("extent", eid))
        for ext in mm.iter_extent_fragments(self.db):
            try:
                policy = policy_for_codec(ext.codec_id, ext.k, ext.m)
            except DecodeError as exc:
                self.report(f"extent {ext.id}: {exc}", ("extent", ext.id))
                continue
            have = sorted(idx for idx, _, _ in ext.fragments)
            if have != list(range(policy.n_fragments)):
                self.report(f"extent {ext.id} ({policy}) has fragments {have}, expected "
                            f"0..{policy.n_fragments - 1}", ("extent", ext.id))
            disks = [disk for _, disk, _ in ext.fragments]
            if len(set(disks)) != len(disks):
                self.report(f"extent {ext.id} has several fragments on one disk: {disks}",
                            ("extent", ext.id))

    def check_fragment_files(self) -> None:
        unchecked: dict[int, int] = defaultdict(int)
        for ext in mm.iter_extent_fragments(self.db):
            for idx, disk_id, size in ext.fragments:
                disk = self.disks.get(disk_id)
                if disk is None:
                    unchecked[disk_id] += 1
                    continue
                problem = self._fragment_problem(disk, ext, idx, size)
                if problem:
                    self.report(f"extent {ext.id} fragment {idx} on disk {disk_id}: {problem}",
                                ("extent", ext.id))
        for disk_id, n in sorted(unchecked.items()):
            self.report(f"{n} fragments on unavailable disk {disk_id} were not checked",
                        ("disk", disk_id))

    def _fragment_problem(
        self, disk: LocalDisk, ext: mm.ExtentFragments, idx: int, size: int
    ) -> str | None:
        path = disk.fragment_path(ext.hash, idx)
        try:
            actual = path.stat().st_size
            header = disk.read_header(path)
        except FileNotFoundError:
            return f"file {path} is missing"
        except (OSError, FragmentError) as exc:
            return str(exc)
        if actual != size:
            return f"file {path} is {actual} bytes, metadata records {size}"
        expected = FragmentHeader(
            pool_uuid=self.pool.uuid.bytes, extent_id=ext.hash, index=idx,
            codec_id=ext.codec_id, k=ext.k, m=ext.m, extent_length=ext.length,
            payload_length=_payload_length(ext), payload_hash=header.payload_hash,
        )
        if header != expected:
            wrong = [f for f in expected.__dataclass_fields__
                     if getattr(header, f) != getattr(expected, f)]
            return f"header of {path} disagrees with metadata on {', '.join(wrong)}"
        if size != HEADER_SIZE + header.payload_length:
            return f"file {path} size {size} does not match its header's payload length"
        if ext.codec_id == CODEC_REP and header.payload_hash != ext.hash:
            return f"replica {path} carries a payload hash other than the extent id"
        if self.verify_data:
            try:
                disk.read_fragment(ext.hash, idx)
            except (OSError, FragmentError) as exc:
                return str(exc)
        return None

    def check_orphan_files(self) -> None:
        """Files under fragments/ that no metadata names (harmless; GC reclaims them)."""
        expected: dict[int, set[str]] = defaultdict(set)
        for ext in mm.iter_extent_fragments(self.db):
            for idx, disk_id, _ in ext.fragments:
                expected[disk_id].add(f"{ext.hash.hex()}.{idx}")
        for disk_id, disk in self.disks.items():
            names = expected.get(disk_id, set())
            for path in disk.iter_fragment_files():
                if path.name.startswith(TMP_PREFIX):
                    self.report(f"disk {disk_id}: leftover temporary file {path}",
                                ("disk", disk_id))
                elif path.name not in names:
                    self.report(f"disk {disk_id}: fragment file {path} is not in the metadata",
                                ("disk", disk_id))

    # -- the namespace -----------------------------------------------------------------------

    def check_link_counts(self) -> None:
        for ino, mode, nlink, names, subdirs in mm.link_counts(self.db):
            if stat.S_ISDIR(mode):
                # "." plus the entry in the parent (the root is its own parent), plus one ".."
                # per subdirectory.
                want = 2 + subdirs
                parents = 0 if ino == ROOT_INODE else 1
                if nlink > 0 and names != parents:
                    self.report(f"directory {ino} has {names} names, expected {parents}",
                                ("inode", ino))
            else:
                want = names
            if nlink > 0 and nlink != want:
                self.report(f"inode {ino} has nlink {nlink}, expected {want}", ("inode", ino))
            elif nlink <= 0 and names:
                self.report(f"inode {ino} has nlink {nlink} but {names} names", ("inode", ino))

    def check_tree(self) -> None:
        root_mode = mm.inode_mode(self.db, ROOT_INODE)
        if root_mode is not None and not stat.S_ISDIR(root_mode):
            self.report(f"the root inode is not a directory (mode {root_mode:o})",
                        ("inode", ROOT_INODE))
        for parent, name, ino in mm.bad_dentry_names(self.db, NAME_MAX):
            self.report(f"entry {name!r} in {parent} (inode {ino}) has an invalid name",
                        ("inode", parent))
        for parent, name, ino, why in mm.dentries_with_bad_ends(self.db):
            self.report(f"entry {name!r} in {parent} (inode {ino}): {why}", ("inode", parent))
        children: dict[int, list[int]] = defaultdict(list)
        for parent, child in mm.dentry_edges(self.db):
            children[parent].append(child)
        seen = {ROOT_INODE}
        todo = deque([ROOT_INODE])
        while todo:
            for child in children.get(todo.popleft(), ()):
                if child not in seen:
                    seen.add(child)
                    todo.append(child)
        linked = {ino for ino, _, nlink, _, _ in mm.link_counts(self.db) if nlink > 0}
        if ROOT_INODE not in linked:
            self.report("the root directory is missing or unlinked", ("inode", ROOT_INODE))
        for ino in sorted(linked - seen):
            self.report(f"inode {ino} is not reachable from the root", ("inode", ino))

    def check_unlinked(self) -> None:
        for ino in minodes.unlinked_inodes(self.db):
            self.report(f"inode {ino} has no links left but was not freed", ("inode", ino))

    def check_symlinks(self) -> None:
        for ino in mm.symlinks_without_target(self.db):
            self.report(f"symlink {ino} has no target", ("inode", ino))
        for ino, why in mm.stray_symlink_rows(self.db):
            self.report(f"symlink target recorded for inode {ino}: {why}", ("inode", ino))
        for ino, size, length in mm.symlink_size_mismatches(self.db):
            self.report(f"symlink {ino} has size {size}, its target is {length} bytes",
                        ("inode", ino))

    def check_xattrs(self) -> None:
        for ino, n in mm.stray_xattr_rows(self.db):
            self.report(f"{n} extended attributes belong to missing inode {ino}",
                        ("inode", ino))


def _payload_length(ext: mm.ExtentFragments) -> int:
    """The payload bytes each fragment of the extent holds (a replica, or one shard)."""
    if ext.codec_id == CODEC_REP:
        return ext.length
    return -(-ext.length // ext.k) if ext.k > 0 else 0


def run(pool: Pool, *, verify_data: bool = False) -> list[Problem]:
    """Check every invariant of `pool`; an empty list means the pool is consistent."""
    return Fsck(pool, verify_data=verify_data).run()


def check_path(path: Path, *, verify_data: bool = False) -> list[Problem]:
    """Open the pool at `path` read-only, check it and close it again."""
    pool = Pool.open(path, readonly=True)
    try:
        return run(pool, verify_data=verify_data)
    finally:
        pool.close()
