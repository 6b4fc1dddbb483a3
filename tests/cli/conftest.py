"""Fixtures for the CLI tests: a pool of four directory disks, and the same pool mounted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clihelpers import Mount, make_pool
from fusemount import need_fuse


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mount: needs /dev/fuse; mounts a real pool")


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    return make_pool(tmp_path)


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Mount]:
    need_fuse()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = Mount(make_pool(tmp_path), mnt)
    m.mount()
    try:
        yield m
    finally:
        m.cleanup()
