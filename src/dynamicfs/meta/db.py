"""The one database wrapper: every SQL statement in DynamicFS runs through a `Database`."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .schema import SCHEMA, SCHEMA_VERSION

# Pages the WAL may hold before a commit checkpoints it (32 MiB with 4 KiB pages).
WAL_LIMIT_PAGES = 8192


class MetadataError(Exception):
    """The metadata database is missing, of a newer format, or unusable."""


class Database:
    """A SQLite connection in WAL mode shared by the daemon's worker threads.

    Commits use synchronous=NORMAL (consistent after a crash, durable at the next sync); `sync()`
    makes everything committed so far durable, which is what fsync and the commit timer call.
    All access is serialised by one lock: SQLite serialises writers anyway, and one connection
    keeps the transaction boundaries explicit.
    """

    def __init__(self, path: Path, *, create: bool = False, readonly: bool = False) -> None:
        if not create and not path.exists():
            raise MetadataError(f"metadata database {path} does not exist")
        uri = f"file:{path}?mode={'ro' if readonly else 'rwc'}"
        try:
            self.conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=OFF")
            self.conn.execute("PRAGMA cache_size=-65536")
            if not readonly:
                # The commit timer checkpoints in a thread (PASSIVE), but a PASSIVE checkpoint
                # never catches up with a writer that does not pause: filling a pool with a
                # million files grew the WAL to 17 GB. Past WAL_LIMIT_PAGES the committing
                # thread checkpoints itself, as SQLite does by default (at 1,000 pages): a
                # stall of some milliseconds per 32 MiB written, and a bounded WAL.
                self.conn.execute(f"PRAGMA wal_autocheckpoint={WAL_LIMIT_PAGES}")
                self.conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_PAGES * 4096}")
        except sqlite3.Error as exc:
            raise MetadataError(f"cannot open metadata database {path}: {exc}") from exc
        self.lock = threading.RLock()
        self._ckpt_lock = threading.Lock()
        self._ckpt_conn: sqlite3.Connection | None = None
        self._depth = 0
        self._fd_lock = threading.Lock()
        self._sync_fds: dict[str, int] = {}
        self.path = path
        self.on_failure: Callable[[sqlite3.Error], None] = lambda exc: None
        if create:
            self._create()
        else:
            self._check_version()

    def _create(self) -> None:
        # executescript commits implicitly, so it runs outside our transaction helper.
        with self.lock:
            self.conn.executescript("BEGIN;" + SCHEMA + "COMMIT;")
            self.execute(
                "INSERT INTO settings (key, value) VALUES ('format_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def _check_version(self) -> None:
        try:
            version = int(self.get_val("SELECT value FROM settings WHERE key='format_version'"))
        except (sqlite3.Error, TypeError, ValueError) as exc:
            raise MetadataError(f"{self.path} is not a DynamicFS metadata database: {exc}") from exc
        if version > SCHEMA_VERSION:
            raise MetadataError(
                f"metadata schema version {version} is newer than this DynamicFS supports "
                f"({SCHEMA_VERSION}); upgrade DynamicFS"
            )

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """One atomic unit of change; nested uses join the outer transaction.

        If SQLite itself fails (I/O error, full or corrupt database), `on_failure` is told —
        the engine turns the mount read-only rather than go on with metadata it cannot
        store — and the caller gets a MetadataError.
        """
        with self.lock:
            try:
                if self._depth == 0:
                    self.conn.execute("BEGIN IMMEDIATE")
                self._depth += 1
                try:
                    yield self
                except BaseException:
                    self._depth -= 1
                    if self._depth == 0 and self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise
                self._depth -= 1
                if self._depth == 0:
                    self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._depth == 0 and self.conn.in_transaction:
                    try:
                        self.conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                self.on_failure(exc)
                raise MetadataError(f"metadata transaction failed: {exc}") from exc

    def execute(self, sql: str, params: tuple | list = ()) -> sqlite3.Cursor:
        with self.lock:
            return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        with self.lock:
            self.conn.executemany(sql, rows)

    def get_val(self, sql: str, params: tuple = ()) -> Any:
        row = self.get_row(sql, params)
        return None if row is None else row[0]

    def get_row(self, sql: str, params: tuple = ()) -> tuple | None:
        with self.lock:
            return self.conn.execute(sql, params).fetchone()

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def sync(self) -> None:
        """Make every committed transaction durable. Safe from any thread, without the lock.

        Commits run with synchronous=NORMAL: they reach the WAL file but are not fsynced, so a
        power loss could roll them back. fsync of the WAL file makes everything committed
        before this call durable, without holding up the thread that keeps committing (the
        group commit of fsync(2) calls, see docs/concurrency.md).
        """
        for suffix in ("-wal", ""):
            fd = self._sync_fd(suffix)
            if fd is not None:
                os.fsync(fd)

    def _sync_fd(self, suffix: str) -> int | None:
        """A descriptor of the database file (or its WAL) kept open until close().

        Never opened and closed per sync: closing any descriptor of a file drops every POSIX
        lock this process holds on it, SQLite's own included. Another process's connection
        (a read-only CLI command) would then take itself for the last one when it closes,
        checkpoint and delete the WAL the mount is still writing to.
        """
        with self._fd_lock:
            fd = self._sync_fds.get(suffix)
            if fd is None:
                try:
                    fd = os.open(f"{self.path}{suffix}", os.O_RDONLY)
                except FileNotFoundError:
                    return None
                self._sync_fds[suffix] = fd
            return fd

    def checkpoint(self) -> None:
        """Copy the WAL into the database file (PASSIVE: never waits for, or blocks, writers).

        Runs in a worker thread on a connection of its own, so the trio thread's commits are
        not held up; a commit checkpoints by itself only when the WAL passes WAL_LIMIT_PAGES
        (a writer that never pauses leaves a PASSIVE checkpoint behind).
        """
        with self._ckpt_lock:
            if self._ckpt_conn is None:
                self._ckpt_conn = sqlite3.connect(
                    str(self.path), isolation_level=None, check_same_thread=False)
            self._ckpt_conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def checkpoint_truncate(self) -> None:
        """A full checkpoint that empties the WAL (at unmount, when nothing else writes)."""
        with self.lock:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def backup(self, dest: Path) -> None:
        """Write a consistent copy of the database to `dest` (safe while others write).

        The SQLite online backup API on a connection of its own copies one read snapshot, so
        the copy is a committed state and the trio thread's commits are never held up.
        """
        src = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        try:
            dst = sqlite3.connect(str(dest))
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()

    def close(self) -> None:
        with self._ckpt_lock:
            if self._ckpt_conn is not None:
                self._ckpt_conn.close()
                self._ckpt_conn = None
        with self.lock:
            self.conn.close()
        # Only now: SQLite's connections are closed, so no lock of theirs can be dropped.
        with self._fd_lock:
            for fd in self._sync_fds.values():
                os.close(fd)
            self._sync_fds.clear()
