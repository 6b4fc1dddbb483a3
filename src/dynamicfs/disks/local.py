"""A disk that is a local directory: label, `fragments/` tree, space accounting.

Fragment files live at fragments/<h0h1>/<h2h3>/<extent hex>.<index>. Every write goes to a
temporary name in the same directory and is renamed into place, so a fragment is either wholly
there or absent; temporary names start with ".tmp." so that GC can tell interrupted writes
from fragments.

Durability comes in two forms. A durable write fsyncs the file before the rename and the
directory after it (that fsync shared with the other writers on the filesystem, see
durability.py). A deferred write (`durable=False`, the engine's seals) does neither: the
engine calls `sync_fragments` for the fragments a metadata commit is about to reference,
and only then commits (invariant 1 of DESIGN.md). One batch of fsyncs per commit, issued
together, costs far less than two fsyncs inside every seal; fragments that never get
committed (data overwritten or deleted within the commit interval) are never synced at all.
Until then a power loss can leave such a file empty or absent: nothing refers to it.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..codec import blake3_digest
from .durability import sync_group
from .faults import FaultSet
from .fragment import HEADER_SIZE, FragmentError, FragmentHeader, FragmentMissing
from .label import Label, LabelError, fsync_dir, read_label, write_label

TMP_PREFIX = ".tmp."


class LocalDisk:
    """One disk directory. Thread-safe: the store calls it from worker threads."""

    def __init__(self, root: Path, pool_uuid: bytes, capacity: int | None = None) -> None:
        self.root = root
        self.pool_uuid = pool_uuid
        self.capacity_cap = capacity
        self.frag_root = root / "fragments"
        # Bytes of fragments this pool keeps here; seeded from metadata by the engine and
        # kept current on every write and delete, so a capacity cap needs no directory walk.
        self.used = 0
        self._lock = threading.Lock()
        # Per fan-out leaf directory (fragments/<h0h1>/<h2h3>, 65,536 of them): 0 not known to
        # exist, _DIR_MADE, _DIR_DURABLE (its path fsynced). A byte each rather than a set of
        # path strings, which reached tens of MiB on a full-grown pool.
        self._dirs = bytearray(1 << 16)
        self.faults = FaultSet()
        self._durability = sync_group(root) if root.exists() else None

    # -- set-up ------------------------------------------------------------------------------

    @classmethod
    def prepare(cls, root: Path, pool_uuid: bytes, disk_uuid: str) -> None:
        """Label a directory as a new disk of the pool (creating it if needed)."""
        root.mkdir(parents=True, exist_ok=True)
        try:
            existing = read_label(root)
        except LabelError as exc:
            if (root / "dynamicfs-disk.json").exists():
                raise LabelError(f"{root} has an unreadable disk label; refusing it ({exc})") \
                    from None
        else:
            if existing.pool_uuid.bytes == pool_uuid:
                raise LabelError(f"{root} is already a disk of this pool")
            raise LabelError(f"{root} is a disk of another pool ({existing.pool_uuid}); "
                             f"remove its label only if that pool is gone")
        (root / "fragments").mkdir(exist_ok=True)
        fsync_dir(root)
        write_label(root, Label(uuid.UUID(bytes=pool_uuid), uuid.UUID(disk_uuid)))

    def check_label(self) -> Label:
        label = read_label(self.root)
        if label.pool_uuid.bytes != self.pool_uuid:
            raise LabelError(f"{self.root} belongs to pool {label.pool_uuid}, not this one")
        return label

    def usage(self) -> tuple[int, int]:
        """(capacity, free) in bytes as the pool may use them (honouring a capacity cap)."""
        st = os.statvfs(self.root)
        total = st.f_blocks * st.f_frsize
        free = st.f_bavail * st.f_frsize
        if self.capacity_cap is not None:
            total = min(total, self.capacity_cap)
            free = max(0, min(free, self.capacity_cap - self.used))
        return total, free

    # -- metadata copies ---------------------------------------------------------------------

    @property
    def metadata_dir(self) -> Path:
        return self.root / "metadata"

    def metadata_copy_tmp(self) -> Path:
        """Where to write a new copy of the pool's database before `commit_metadata_copy`."""
        self.metadata_dir.mkdir(exist_ok=True)
        return self.metadata_dir / (TMP_PREFIX + "meta.db")

    def commit_metadata_copy(self, info: dict) -> None:
        """Make the copy written at `metadata_copy_tmp()` the disk's current one, durably.

        The sidecar (`meta.json`: time, pool, size, BLAKE3 of the file) is replaced after the
        database file, so a crash in between leaves a copy whose hash no longer matches, which
        restore skips as not good.
        """
        tmp = self.metadata_copy_tmp()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.metadata_dir / "meta.db")
        side = self.metadata_dir / (TMP_PREFIX + "meta.json")
        with open(side, "w") as f:
            json.dump(info, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(side, self.metadata_dir / "meta.json")
        fsync_dir(self.metadata_dir)

    def metadata_copy(self) -> tuple[Path, dict] | None:
        """The disk's copy of the pool database and its sidecar, if it has one."""
        try:
            info = json.loads((self.metadata_dir / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        path = self.metadata_dir / "meta.db"
        return (path, info) if path.exists() and isinstance(info, dict) else None

    # -- fragments ---------------------------------------------------------------------------

    def fragment_path(self, extent_id: bytes, index: int) -> Path:
        h = extent_id.hex()
        return self.frag_root / h[0:2] / h[2:4] / f"{h}.{index}"

    def _ensure_dir(self, d: Path) -> None:
        """Create fan-out directory `d` if needed (its path is made durable with the first
        fragment synced in it, see _make_dirs_durable)."""
        leaf = _leaf(d)
        if self._dirs[leaf]:
            return
        for part in (d.parent, d):
            if not part.is_dir():
                try:
                    part.mkdir()
                except FileExistsError:
                    pass
        with self._lock:
            self._dirs[leaf] = max(self._dirs[leaf], _DIR_MADE)

    def _make_dirs_durable(self, dirs: set[Path], *, grouped: bool = True) -> None:
        """fsync fragment directories and, for those not yet durable, their two ancestors.

        `grouped`: through the filesystem's SyncGroup (one writer's directory, shared with
        the others writing at the same time); a batch of `sync_fragments` is already the
        group, and its callers run several batches at once, which a group would serialise.
        """
        todo = set(dirs)
        for d in dirs:
            if self._dirs[_leaf(d)] != _DIR_DURABLE:
                todo.update((d.parent, d.parent.parent))
        for d in sorted(todo, key=lambda p: -len(p.parts)):
            if grouped:
                self._sync_dir(d)
            else:
                fsync_dir(d)
        with self._lock:
            for d in dirs:
                self._dirs[_leaf(d)] = _DIR_DURABLE

    def write_fragment(
        self, header: FragmentHeader, payload: bytes | memoryview, *, durable: bool = True,
        writeback: bool = True,
    ) -> int:
        """Write one fragment; returns its size on disk.

        With `durable=False` the file and its name are not yet on stable storage: nothing may
        reference it before `sync_fragments` has returned for it. Its writeback is queued at
        once unless `writeback` is False (see _start_writeback).
        """
        size = HEADER_SIZE + len(payload)
        path = self.fragment_path(header.extent_id, header.index)
        replaced = path.exists()
        # Replacing a file in place is repair's business (its fragment may be referenced):
        # never leave that to a later sync.
        durable = durable or replaced
        # Reserve the space before writing: fragments of several extents are written at once,
        # and each must see the others' bytes or together they overshoot a capacity cap.
        with self._lock:
            if (not replaced and self.capacity_cap is not None
                    and self.used + size > self.capacity_cap):
                raise OSError(errno.ENOSPC, f"disk {self.root} reached its capacity cap")
            if not replaced:
                self.used += size
        try:
            self._write_file(path, header, payload, replaced, durable, writeback)
        except BaseException:
            if not replaced:
                with self._lock:
                    self.used -= size
            raise
        return size

    def _write_file(
        self, path: Path, header: FragmentHeader, payload: bytes | memoryview, replacing: bool,
        durable: bool, writeback: bool,
    ) -> None:
        self._ensure_dir(path.parent)
        tmp = path.parent / f"{TMP_PREFIX}{path.name}.{os.getpid()}.{threading.get_ident()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        renamed = False
        try:
            self.faults.hit("write", str(path))
            view = memoryview(header.pack() + bytes(payload)) if len(payload) < 65536 else None
            if view is not None:
                _write_all(fd, view)
            else:
                _write_all(fd, memoryview(header.pack()))
                _write_all(fd, memoryview(payload))
            if durable:
                self.faults.hit("fsync", str(path))
                os.fsync(fd)
            elif writeback:
                _start_writeback(fd)
            os.rename(tmp, path)
            renamed = True
            if durable:
                self._make_dirs_durable({path.parent})
        except BaseException:
            if not renamed:
                _unlink_quiet(tmp)
            elif not replacing:
                _unlink_quiet(path)  # its name may not be durable: nothing may refer to it
            raise
        finally:
            os.close(fd)

    def sync_fragments(
        self, fragments: list[tuple[bytes, int]]
    ) -> dict[tuple[bytes, int], OSError]:
        """Make fragments written with `durable=False` durable: each file, then each of their
        directories (and its path, if new) once. Returns the fragments that failed, which
        must never be referenced: after a failed fsync their content is not to be trusted.
        """
        failed: dict[tuple[bytes, int], OSError] = {}
        dirs: dict[Path, list[tuple[bytes, int]]] = defaultdict(list)
        for key in fragments:
            path = self.fragment_path(*key)
            try:
                self.faults.hit("fsync", str(path))
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                failed[key] = exc
            else:
                dirs[path.parent].append(key)
        for d, keys in dirs.items():
            try:
                self._make_dirs_durable({d}, grouped=False)
            except OSError as exc:
                failed.update(dict.fromkeys(keys, exc))
        return failed

    def _sync_dir(self, directory: Path) -> None:
        if self._durability is not None:
            self._durability.sync_dir(directory)
        else:
            fsync_dir(directory)

    def read_fragment(self, extent_id: bytes, index: int) -> bytes:
        """The payload of a fragment, verified against the BLAKE3 in its header."""
        path = self.fragment_path(extent_id, index)
        corrupt = self.faults.hit("read", str(path))
        # Header and payload in two reads: the payload is then the bytes object returned,
        # where slicing one read would copy a megabyte per fragment with the GIL held.
        try:
            with open(path, "rb", buffering=0) as f:
                header = FragmentHeader.unpack(f.read(HEADER_SIZE), str(path))
                payload = f.read(header.payload_length + 1)
        except FileNotFoundError:
            raise FragmentMissing(f"fragment {path} is missing") from None
        if header.pool_uuid != self.pool_uuid:
            raise FragmentError(f"{path}: belongs to another pool")
        if header.extent_id != extent_id or header.index != index:
            raise FragmentError(f"{path}: header names another extent or index")
        if corrupt and payload:
            payload = payload[:-1] + bytes([payload[-1] ^ 0xFF])
        if len(payload) != header.payload_length:
            raise FragmentError(f"{path}: payload is {len(payload)} bytes, header says "
                                f"{header.payload_length}")
        if blake3_digest(payload) != header.payload_hash:
            raise FragmentError(f"{path}: payload checksum mismatch")
        return payload

    def read_header(self, path: Path) -> FragmentHeader:
        with open(path, "rb") as f:
            return FragmentHeader.unpack(f.read(HEADER_SIZE), str(path))

    def delete_fragment(self, extent_id: bytes, index: int) -> None:
        path = self.fragment_path(extent_id, index)
        self.faults.hit("delete", str(path))
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        with self._lock:
            self.used = max(0, self.used - size)

    def remove_orphan(self, path: Path) -> None:
        """Remove a file of fragments/ that no metadata names (GC); space accounting is
        untouched, since `used` only counts fragments the metadata records or that this
        process wrote and has not yet deleted."""
        if self.frag_root not in path.parents:
            raise ValueError(f"{path} is not under {self.frag_root}")
        path.unlink()

    def iter_fragment_files(self) -> Iterator[Path]:
        """Every fragment file and temporary file under fragments/ (for GC and fsck).

        Walked with os.scandir and the entries' types rather than pathlib and a stat per
        directory: a pool has up to 65,536 fan-out directories, and a background sweep runs
        in a thread beside the trio thread, which waits for the GIL while this runs Python.
        """
        if not self.frag_root.is_dir():
            return
        for top in _subdirs(str(self.frag_root)):
            for sub in _subdirs(top):
                for name in sorted(os.listdir(sub)):
                    yield Path(sub, name)


_DIR_MADE, _DIR_DURABLE = 1, 2

_libc = ctypes.CDLL(None, use_errno=True)
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int) -> None:
    """Start writing a deferred fragment to the disk now, without waiting for it.

    sync_file_range(2) with SYNC_FILE_RANGE_WRITE only queues the file's dirty pages for
    writeback (it makes nothing durable: the commit's fsync still does that). Without it a
    large write left everything to the commit's fsyncs, since the kernel starts background
    writeback only past dirty_background_ratio (gigabytes here): the disk idled while data
    came in, then the commit waited for all of it. A hint only: errors are ignored, and the
    fsync reports any that matter.

    Whether it is worth it is the writer's call (`write_fragment(writeback=...)`): for a
    16 KiB fragment it cost 60-100 µs of system time, more than a later batch of fsyncs.
    """
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def _leaf(d: Path) -> int:
    """The number of fan-out leaf directory fragments/<h0h1>/<h2h3> (0..65535)."""
    return int(d.parent.name + d.name, 16)


def _subdirs(path: str) -> list[str]:
    with os.scandir(path) as it:
        return sorted(e.path for e in it if e.is_dir())


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _unlink_quiet(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def shared_usage(disks: Mapping[int, LocalDisk]) -> dict[int, tuple[int, int]]:
    """(capacity, free) per reachable disk, telling the truth about shared filesystems.

    Several disks of a pool may be directories on one filesystem (a test set-up, or a user
    splitting one big disk). Counting its space once per directory would overstate what the
    pool can hold, so a capped disk gets what its cap leaves, and the uncapped disks on a
    filesystem split the rest of it evenly. Disks whose filesystem cannot be read are left out.
    """
    groups: dict[int, list[tuple[int, LocalDisk, os.statvfs_result]]] = defaultdict(list)
    for disk_id, disk in disks.items():
        try:
            st = os.statvfs(disk.root)
            dev = os.stat(disk.root).st_dev
        except OSError:
            continue
        groups[dev].append((disk_id, disk, st))
    out: dict[int, tuple[int, int]] = {}
    for members in groups.values():
        st = members[0][2]
        fs_total, fs_free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        capped_total = capped_free = 0
        uncapped = []
        for disk_id, disk, _ in members:
            if disk.capacity_cap is None:
                uncapped.append(disk_id)
                continue
            total = min(fs_total, disk.capacity_cap)
            free = max(0, min(fs_free, disk.capacity_cap - disk.used))
            out[disk_id] = (total, free)
            capped_total += total
            capped_free += free
        for disk_id in uncapped:
            out[disk_id] = (max(0, fs_total - capped_total) // len(uncapped),
                            max(0, fs_free - capped_free) // len(uncapped))
    return out
