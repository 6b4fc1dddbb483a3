"""A metadata commit that SQLite cannot complete turns the engine read-only, loudly."""

from __future__ import annotations

import errno
import logging
import os

import pytest
from conftest import ROOT

from dynamicfs.engine.types import ROOT_CTX
from dynamicfs.errors import FsError
from dynamicfs.meta import MetadataError


def test_failing_metadata_commit_makes_the_mount_read_only(run_engine, caplog):
    async def body(engine):
        fh, _ = await engine.create(ROOT, b"kept", 0o644, os.O_RDWR, ROOT_CTX)
        await engine.write(fh, 0, b"before")
        await engine.fsync(fh, False)
        await engine.release(fh)
        # SQLite refuses every write from now on, as it would on an I/O error or a full disk.
        engine.db.conn.execute("PRAGMA query_only=1")
        with caplog.at_level(logging.CRITICAL), pytest.raises(MetadataError):
            await engine.mkdir(ROOT, b"d", 0o755, ROOT_CTX)
        assert engine.readonly
        assert any("READ-ONLY" in r.message for r in caplog.records)
        with pytest.raises(FsError) as exc:
            await engine.create(ROOT, b"new", 0o644, os.O_RDWR, ROOT_CTX)
        assert exc.value.errno == errno.EROFS
        # What was stored before is still served.
        attr = await engine.lookup(ROOT, b"kept")
        fh, _ = await engine.open(attr.ino, os.O_RDONLY)
        assert await engine.read(fh, 0, 100) == b"before"
        await engine.release(fh)
        engine.db.conn.execute("PRAGMA query_only=0")  # let the test's clean stop commit

    run_engine(body)
