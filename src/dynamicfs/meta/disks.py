"""SQL for registered disks and pool settings."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .db import Database


@dataclass(frozen=True)
class DiskRow:
    id: int
    uuid: str
    path: str
    tier: str
    capacity: int | None
    state: str
    read_errors: int
    write_errors: int
    checksum_errors: int


_COLS = "id, uuid, path, tier, capacity, state, read_errors, write_errors, checksum_errors"


def list_disks(db: Database) -> list[DiskRow]:
    return [DiskRow(*r) for r in db.query(f"SELECT {_COLS} FROM disks ORDER BY id")]


def add_disk(db: Database, uuid: str, path: str, tier: str, capacity: int | None) -> int:
    cur = db.execute(
        "INSERT INTO disks (uuid, path, tier, capacity, added) VALUES (?, ?, ?, ?, ?)",
        (uuid, path, tier, capacity, time.time()),
    )
    return int(cur.lastrowid)


_COUNTERS = {"read_errors", "write_errors", "checksum_errors"}


def count_error(db: Database, disk: int, counter: str, n: int = 1) -> None:
    if counter not in _COUNTERS:
        raise ValueError(counter)
    db.execute(f"UPDATE disks SET {counter} = {counter} + ? WHERE id=?", (n, disk))


def fragment_counts(db: Database) -> dict[int, tuple[int, int]]:
    """disk id -> (number of fragments, bytes of fragments) per metadata."""
    return {r[0]: (r[1], r[2]) for r in db.query(
        "SELECT disk, COUNT(*), SUM(size) FROM fragments GROUP BY disk")}


def get_setting(db: Database, key: str) -> str | None:
    return db.get_val("SELECT value FROM settings WHERE key=?", (key,))


def set_setting(db: Database, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO settings (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value=excluded.value",
        (key, value),
    )
