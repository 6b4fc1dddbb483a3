"""Mounting a pool for the conformance suite: the CLI in a subprocess, always unmounted."""

from __future__ import annotations

import tempfile
from pathlib import Path

from fusemount import ForegroundMount


class Mount(ForegroundMount):
    """A pool mounted with `-o allow_other` unless told otherwise: the suite acts as other
    users, who could not even look at the mount without it."""

    def __init__(self, pool: Path, mnt: Path, logdir: Path,
                 options: str = "allow_other") -> None:
        super().__init__(pool, mnt, logdir, options)


def searchable_tmpdir(parent: str | None) -> Path:
    # pytest's tmp_path is 0700: the users the suite acts as could not reach it.
    base = Path(tempfile.mkdtemp(prefix="dynamicfs-pjd-", dir=parent))
    base.chmod(0o755)
    return base
