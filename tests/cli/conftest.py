"""Fixtures for the CLI tests: a pool of four directory disks, and the same pool mounted."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from clihelpers import FUSERMOUNT, Mount, make_pool


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mount: needs /dev/fuse; mounts a real pool")


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    return make_pool(tmp_path)


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Mount]:
    if not os.path.exists("/dev/fuse") or FUSERMOUNT is None:
        pytest.skip("needs /dev/fuse and fusermount3")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = Mount(make_pool(tmp_path), mnt)
    m.mount()
    try:
        yield m
    finally:
        m.cleanup()
