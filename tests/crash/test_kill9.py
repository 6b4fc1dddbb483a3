"""kill -9 of the mount daemon at random moments of a seeded workload (see mountlib.py).

A bounded number of iterations on one pool (each iteration works in its own directory, and
the pool carries everything earlier iterations left); scripts/soak_crash.py runs many more.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from mountlib import Daemon, make_pool, run_iteration

SEEDS = [101, 102, 103, 104, 105, 106]

pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
    reason="needs /dev/fuse and fusermount3")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    base = tmp_path_factory.mktemp("kill9")
    mnt = base / "mnt"
    mnt.mkdir()
    path = make_pool(base, policy="rep:2")
    try:
        yield path, mnt, base
    finally:
        Daemon(path, mnt, base / "teardown.log").detach()


@pytest.mark.parametrize("seed", SEEDS)
def test_kill9_at_a_random_moment(pool: tuple[Path, Path, Path], seed: int) -> None:
    path, mnt, base = pool
    result = run_iteration(path, mnt, base / f"work{seed}", seed)
    print(result.summary())
    assert not result.verdict.violations, (
        f"kill -9 iteration, seed {seed} (journal {base / f'work{seed}'}/journal.jsonl):\n"
        + "\n".join(result.verdict.violations[:20]))
