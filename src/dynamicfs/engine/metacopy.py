"""Copies of the metadata database on the pool's disks (DESIGN.md invariant 9).

At every metadata checkpoint (default every 5 minutes, and at unmount) a consistent copy of
the database goes to the two healthiest disks with the most free space. If the pool
directory's database is lost or corrupt, `dynamicfs fsck --restore-metadata` takes the newest
good copy. Runs in a worker thread.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import blake3

from ..disks import LocalDisk
from ..meta import Database
from ..meta.schema import SCHEMA_VERSION

log = logging.getLogger(__name__)

COPIES = 2


def file_blake3(path: Path) -> str:
    h = blake3.blake3()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def copy_metadata(
    db: Database, pool_uuid: uuid.UUID, disks: dict[int, LocalDisk], free: dict[int, int]
) -> list[int]:
    """Write a copy of the database to up to COPIES disks; returns the disk ids written."""
    written: list[int] = []
    for disk_id in sorted(free, key=lambda d: -free[d]):
        if len(written) >= COPIES:
            break
        disk = disks[disk_id]
        try:
            tmp = disk.metadata_copy_tmp()
            taken = time.time()
            db.backup(tmp)
            info = {
                "format": 1, "pool_uuid": str(pool_uuid), "schema_version": SCHEMA_VERSION,
                "time": taken, "size": tmp.stat().st_size, "blake3": file_blake3(tmp),
            }
            disk.commit_metadata_copy(info)
        except OSError as exc:
            log.warning("could not copy the metadata to disk %d (%s): %s", disk_id, disk.root,
                        exc)
            continue
        written.append(disk_id)
    if len(written) < min(COPIES, len(disks)):
        log.error("metadata copied to only %d disks (wanted %d)", len(written), COPIES)
    return written
