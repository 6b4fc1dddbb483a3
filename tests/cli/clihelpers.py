"""Helpers for the CLI tests: run `python -m dynamicfs` as a user would, and always clean up
mounts made by a test (even when it failed half-way).

A plain module (not conftest) so test files can import it by name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fusemount import cli, detach, in_mountinfo, pid_running

WAIT = 30.0


def cli_json(*args: object) -> object:
    return json.loads(cli(*args, "--json").stdout)


def assert_error(proc: subprocess.CompletedProcess[str], code: int | None = None,
                 *needles: str) -> str:
    """A refusal: non-zero status, exactly one line on stderr, no traceback."""
    assert proc.returncode != 0, proc.stdout
    if code is not None:
        assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("dynamicfs: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def wait_for(predicate: object, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def make_pool(base: Path, ndisks: int = 4, *extra: str) -> Path:
    pool = base / "pool"
    cli("init", pool, *extra)
    for i in range(1, ndisks + 1):
        disk = base / f"disk{i}"
        disk.mkdir()
        cli("add-disk", pool, disk)
    return pool


class Mount:
    """A pool mounted by `dynamicfs mount` (daemonized); `cleanup()` never leaves it behind."""

    def __init__(self, pool: Path, mnt: Path) -> None:
        self.pool = pool
        self.mnt = mnt
        self.pids: set[int] = set()

    def mount(self, *extra: str) -> int:
        cli("mount", self.pool, self.mnt, *extra)
        assert in_mountinfo(self.mnt)
        pid = int(json.loads((self.pool / "mounted").read_text())["pid"])
        self.pids.add(pid)
        return pid

    def log(self) -> str:
        try:
            return (self.pool / "daemon.log").read_text(errors="replace")[-5000:]
        except OSError:
            return "(no daemon log)"

    def cleanup(self) -> None:
        if in_mountinfo(self.mnt):
            subprocess.run([sys.executable, "-m", "dynamicfs", "umount", self.mnt,
                            "--timeout", "20"], capture_output=True, timeout=60)
        detach(self.mnt)
        for pid in self.pids:
            deadline = time.monotonic() + 10
            while pid_running(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_running(pid):
                os.kill(pid, signal.SIGKILL)
