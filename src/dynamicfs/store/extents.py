"""Write extents as fragments on distinct disks, and read them back verified.

The store never touches the database: `write` returns a `SealedExtent` whose fragments are
durable (file and directory fsynced), or, for the engine's seals, written but not yet durable
(`durable=False`): the engine then calls `sync` for the extents a commit is about to reference
before that commit (data before metadata), so every fsync of a commit is issued in one batch.
The engine records the extent in the same transaction as the block-map change that uses it.
Deleting fragments is only done by the engine after the transaction that dropped the last
reference has committed.
"""

from __future__ import annotations

import errno
import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, replace

from ..codec import DecodeError, Policy, blake3_digest, get_codec, policy_for_codec
from ..disks import FragmentError, FragmentHeader, FragmentMissing, LocalDisk, shared_usage
from ..disks.fragment import HEADER_SIZE
from ..obs.stats import Stats
from .placement import choose_disks

log = logging.getLogger(__name__)

# Errors that mean "this disk cannot take this fragment now": try another disk.
_RETRY_ELSEWHERE = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM}


class ExtentUnreadable(Exception):
    """Too few good fragments survive to reconstruct an extent."""


@dataclass(frozen=True)
class SealedExtent:
    digest: bytes
    length: int
    codec_id: int
    k: int
    m: int
    fragments: list[tuple[int, int, int]]  # (index, disk id, bytes on disk)
    durable: bool = True  # False: nothing may reference it before ExtentStore.sync


# Fragments of one disk synced by one worker job (the jobs of a batch run in parallel).
SYNC_CHUNK = 16


ErrorSink = Callable[[int, str], None]


class ExtentStore:
    def __init__(
        self, pool_uuid: bytes, executor: Executor, stats: Stats,
        on_disk_error: ErrorSink | None = None,
    ) -> None:
        self.pool_uuid = pool_uuid
        self.executor = executor
        self.stats = stats
        self.on_disk_error = on_disk_error or (lambda disk, kind: None)
        self._disks: dict[int, LocalDisk] = {}
        self._writable: set[int] = set()
        self._lock = threading.Lock()

    # -- disk set ----------------------------------------------------------------------------

    def attach(self, disk_id: int, disk: LocalDisk, writable: bool = True) -> None:
        with self._lock:
            self._disks[disk_id] = disk
            if writable:
                self._writable.add(disk_id)
            else:
                self._writable.discard(disk_id)

    def disks(self) -> dict[int, LocalDisk]:
        with self._lock:
            return dict(self._disks)

    def free_space(self) -> dict[int, int]:
        """Free bytes per writable, reachable disk."""
        with self._lock:
            writable = {d: self._disks[d] for d in self._writable}
        return {d: free for d, (_, free) in shared_usage(writable).items()}

    def usage(self) -> dict[int, tuple[int, int]]:
        """(capacity, free) per reachable disk, writable or not."""
        return shared_usage(self.disks())

    # -- writing -----------------------------------------------------------------------------

    def header(
        self, digest: bytes, length: int, policy: Policy, index: int,
        payload: bytes | memoryview,
    ) -> FragmentHeader:
        """The self-describing header of fragment `index` of an extent (see docs/format.md)."""
        return FragmentHeader(
            pool_uuid=self.pool_uuid, extent_id=digest, index=index,
            codec_id=policy.codec_id, k=policy.k, m=policy.m, extent_length=length,
            payload_length=len(payload),
            # A replica is the extent itself: its hash is the extent id, no need to hash again.
            payload_hash=digest if policy.kind == "rep" else blake3_digest(payload),
        )

    # What each fragment file holds besides its payload (for Policy.for_extent).
    fragment_overhead = HEADER_SIZE

    def write(
        self, data: bytes, policy: Policy, digest: bytes | None = None, *, durable: bool = True,
        writeback: bool = True,
    ) -> SealedExtent:
        """Encode `data` under `policy` and write every fragment on distinct disks; durably
        unless `durable` is False (then `sync` must run before anything references it, and
        `writeback` says whether the disks start writing the fragments back at once).

        With fewer writable disks than the policy has fragments (disks went missing), the
        extent is written degraded: the data shards (or as many replicas as there are disks)
        first, as long as it stays readable; a rebuild restores full redundancy later. Full
        disks never cause a degraded write: that is ENOSPC.
        """
        digest = digest or blake3_digest(data)
        codec = get_codec(policy)
        payloads = codec.encode(data)
        headers = [self.header(digest, len(data), policy, i, p) for i, p in enumerate(payloads)]
        need = HEADER_SIZE + (len(payloads[0]) if payloads else 0)
        free = self.free_space()
        want = min(len(payloads), len(free))
        if want < policy.min_fragments or want < 1:
            self.stats.incr("write_no_disks")
            raise OSError(errno.EIO, f"only {len(free)} writable disks; {policy} needs at "
                          f"least {max(1, policy.min_fragments)} to store anything")
        if want < len(payloads):
            self.stats.incr("degraded_writes")
            log.warning("writing extent %s degraded: %d of %d fragments (%d writable disks)",
                        digest.hex(), want, len(payloads), len(free))
        placed: dict[int, tuple[int, int]] = {}  # index -> (disk, size)
        tried: set[int] = set()
        broken: set[int] = set()  # disks whose write failed with an I/O-type error
        full: set[int] = set()
        pending = list(range(want))
        while pending:
            used = {d for d, _ in placed.values()}
            targets = choose_disks(free, len(pending), need, exclude=used | tried)
            if len(targets) < len(pending):
                self._discard(digest, placed)
                if broken and not full:
                    # Disks failed rather than filled up: that is an I/O error, not "full".
                    self.stats.incr("write_eio")
                    raise OSError(errno.EIO, f"writing fragments of {policy} failed on disks "
                                  f"{sorted(broken)}; not enough working disks left")
                self.stats.incr("write_enospc")
                raise OSError(errno.ENOSPC, f"no set of {want} disks can hold "
                              f"a {need}-byte fragment under {policy}")
            futures: dict[int, tuple[int, Future[int]]] = {}
            jobs = list(zip(pending, targets, strict=True))
            for index, disk_id in jobs[1:]:
                disk = self._disks[disk_id]
                futures[index] = (disk_id, self.executor.submit(
                    disk.write_fragment, headers[index], payloads[index], durable=durable,
                    writeback=writeback))
            # The first fragment is written here: this thread would only wait for it, and
            # every hand-off to another thread is a GIL switch and a wake-up (rep:1 had two
            # threads per block, of which one idled).
            index, disk_id = jobs[0]
            futures[index] = (disk_id, _run_here(
                self._disks[disk_id].write_fragment, headers[index], payloads[index],
                durable=durable, writeback=writeback))
            pending = []
            for index, (disk_id, fut) in futures.items():
                try:
                    placed[index] = (disk_id, fut.result())
                except OSError as exc:
                    tried.add(disk_id)
                    pending.append(index)
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        full.add(disk_id)
                        free[disk_id] = 0
                        self.stats.incr("fragment_write_enospc")
                    elif exc.errno in _RETRY_ELSEWHERE:
                        broken.add(disk_id)
                        self.stats.incr("fragment_write_errors")
                        self.on_disk_error(disk_id, "write_errors")
                        log.warning("write of fragment %s.%d to disk %d failed: %s",
                                    digest.hex(), index, disk_id, exc)
                    else:
                        self._discard(digest, placed)
                        raise
        self.stats.incr("extents_written")
        self.stats.incr("bytes_written", len(data))
        return SealedExtent(
            digest=digest, length=len(data), codec_id=codec.codec_id, k=policy.k, m=policy.m,
            fragments=[(i, d, s) for i, (d, s) in sorted(placed.items())], durable=durable,
        )

    def sync(self, extents: list[SealedExtent]) -> list[SealedExtent | None]:
        """Make extents written with `durable=False` durable, all their fsyncs issued at once.

        Returns, per extent, what may now be referenced: the extent itself (durable), a
        durable rewrite of it when some fragments failed to sync (rebuilt from those that
        did), or None when too few survived to rebuild it (its data is lost; never reference
        it). A fragment whose fsync failed is never trusted again, even if a retry succeeded:
        the kernel may have dropped its pages.
        """
        per_disk: dict[int, list[tuple[bytes, int]]] = {}
        for se in extents:
            if not se.durable:
                for index, disk_id, _ in se.fragments:
                    per_disk.setdefault(disk_id, []).append((se.digest, index))
        jobs: list[tuple[int, Future[dict[tuple[bytes, int], OSError]]]] = []
        failed: dict[tuple[bytes, int], int] = {}  # fragment -> disk
        for disk_id, frags in per_disk.items():
            disk = self._disks.get(disk_id)
            for i in range(0, len(frags), SYNC_CHUNK):
                chunk = frags[i:i + SYNC_CHUNK]
                if disk is None:
                    failed.update(dict.fromkeys(chunk, disk_id))
                else:
                    jobs.append((disk_id, self.executor.submit(disk.sync_fragments, chunk)))
        for disk_id, fut in jobs:
            errors = fut.result()
            for key, exc in errors.items():
                failed[key] = disk_id
                log.warning("fsync of fragment %s.%d on disk %d failed: %s",
                            key[0].hex(), key[1], disk_id, exc)
            if errors:
                self.stats.incr("fragment_sync_errors", len(errors))
                self.on_disk_error(disk_id, "write_errors")
        out: list[SealedExtent | None] = []
        for se in extents:
            bad = [(i, d) for i, d, _ in se.fragments if (se.digest, i) in failed]
            if se.durable or not bad:
                out.append(se if se.durable else replace(se, durable=True))
            else:
                out.append(self._rewrite(se, bad))
        self.stats.incr("extents_synced", len(extents))
        return out

    def _rewrite(self, se: SealedExtent, bad: list[tuple[int, int]]) -> SealedExtent | None:
        """A durable copy of an extent some of whose fragments failed to sync, or None."""
        good = [(i, d) for i, d, _ in se.fragments if (i, d) not in bad]
        old = {(i, d) for i, d, _ in se.fragments}
        try:
            policy = policy_for_codec(se.codec_id, se.k, se.m)
            data = self.read(se.digest, se.length, se.codec_id, se.k, se.m, good, "sync")
            new = self.write(data, policy, se.digest)
        except (ExtentUnreadable, DecodeError, OSError) as exc:
            log.error("extent %s lost: %d fragments failed to sync and it cannot be rebuilt "
                      "(%s)", se.digest.hex(), len(bad), exc)
            self.stats.incr("extents_lost_at_sync")
            self._discard(se.digest, {i: (d, 0) for i, d in old})
            return None
        # What the rewrite did not overwrite in place is left over (the failed files too).
        kept = {(i, d) for i, d, _ in new.fragments}
        self.delete(se.digest, sorted(old - kept))
        self.stats.incr("extents_rewritten_at_sync")
        return new

    def _discard(self, digest: bytes, placed: dict[int, tuple[int, int]]) -> None:
        for index, (disk_id, _) in placed.items():
            try:
                self._disks[disk_id].delete_fragment(digest, index)
            except OSError:
                log.warning("could not remove fragment %s.%d after a failed write",
                            digest.hex(), index)

    def delete(self, digest: bytes, fragments: list[tuple[int, int]]) -> None:
        """Remove fragment files [(index, disk)] of an extent no metadata references any more."""
        for index, disk_id in fragments:
            disk = self._disks.get(disk_id)
            if disk is None:
                continue
            try:
                disk.delete_fragment(digest, index)
            except OSError as exc:
                # Left behind as an orphan: GC removes it later; the data is already unreachable.
                log.warning("could not delete fragment %s.%d on disk %d: %s",
                            digest.hex(), index, disk_id, exc)

    # -- reading -----------------------------------------------------------------------------

    def read(
        self, digest: bytes, length: int, codec_id: int, k: int, m: int,
        fragments: list[tuple[int, int]], what: str = "",
    ) -> bytes:
        """Return the verified plaintext of an extent, reconstructing around bad fragments."""
        try:
            policy = policy_for_codec(codec_id, k, m)
        except DecodeError as exc:
            raise ExtentUnreadable(str(exc)) from None
        codec = get_codec(policy)
        where = dict(fragments)  # index -> disk
        got: dict[int, bytes] = {}
        bad: list[int] = []
        order = list(codec.data_indexes(length))
        if policy.kind == "rep":
            order = list(where)
            random.shuffle(order)
        # The systematic shards (or one replica) first; others only when something is bad.
        rest = [i for i in sorted(where) if i not in order]
        for index in order + rest:
            if len(got) >= policy.min_fragments:
                break
            if index not in where:
                bad.append(index)
                continue
            payload = self._read_one(digest, index, where[index], what)
            if payload is None:
                bad.append(index)
            else:
                got[index] = payload
        try:
            data = codec.decode(got, length)
        except DecodeError as exc:
            self.stats.incr("extents_unreadable")
            raise ExtentUnreadable(
                f"extent {digest.hex()} of {what or 'a file'} cannot be reconstructed: "
                f"{len(got)} good fragments of {policy.n_fragments}, need {policy.min_fragments}"
            ) from exc
        if bad:
            self.stats.incr("degraded_reads")
            if policy.kind == "ec" and blake3_digest(data) != digest:
                self.stats.incr("extents_unreadable")
                raise ExtentUnreadable(f"extent {digest.hex()} decoded to wrong content")
            self.executor.submit(self._heal, data, digest, policy, bad, where)
        self.stats.incr("bytes_read", length)
        return data

    def _read_one(self, digest: bytes, index: int, disk_id: int, what: str) -> bytes | None:
        disk = self._disks.get(disk_id)
        if disk is None:
            return None
        try:
            return disk.read_fragment(digest, index)
        except FragmentMissing as exc:
            self.stats.incr("fragments_missing")
            self.on_disk_error(disk_id, "read_errors")
            log.error("%s: %s", what or "read", exc)
        except FragmentError as exc:
            self.stats.incr("checksum_errors")
            self.on_disk_error(disk_id, "checksum_errors")
            log.error("%s: %s", what or "read", exc)
        except OSError as exc:
            self.stats.incr("fragment_read_errors")
            self.on_disk_error(disk_id, "read_errors")
            log.error("%s: reading fragment %s.%d on disk %d: %s",
                      what or "read", digest.hex(), index, disk_id, exc)
        return None

    def _heal(
        self, data: bytes, digest: bytes, policy: Policy, bad: list[int], where: dict[int, int]
    ) -> None:
        """Rewrite bad fragments in place (same disk, same index) from the good plaintext."""
        codec = get_codec(policy)
        payloads = codec.encode(data)
        for index in bad:
            disk = self._disks.get(where.get(index, -1))
            if disk is None or index >= len(payloads):
                continue
            header = self.header(digest, len(data), policy, index, payloads[index])
            try:
                disk.write_fragment(header, payloads[index])
                self.stats.incr("fragments_repaired")
                log.info("repaired fragment %s.%d on disk %d", digest.hex(), index, where[index])
            except OSError as exc:
                log.warning("could not repair fragment %s.%d: %s", digest.hex(), index, exc)


def _run_here(fn: Callable[..., int], *args: object, **kwargs: object) -> Future[int]:
    """Call fn now, in this thread, with its outcome in a Future like the executor's."""
    fut: Future[int] = Future()
    try:
        fut.set_result(fn(*args, **kwargs))
    except Exception as exc:
        fut.set_exception(exc)
    return fut
