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
from mountlib import STALE_AFTER, Daemon, make_pool, run_iteration

SEEDS = [101, 102, 103, 104, 105]
LATE_SEED = 107

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


@pytest.mark.parametrize("seed,kill_range", [(s, (0.2, 7.0)) for s in SEEDS]
                         + [(LATE_SEED, (STALE_AFTER + 1.5, STALE_AFTER + 3.0))])
def test_kill9_at_a_random_moment(pool: tuple[Path, Path, Path], seed: int,
                                  kill_range: tuple[float, float]) -> None:
    """The last case runs long enough that data written in its first seconds and never
    fsynced must have been committed by the timer (STALE_AFTER)."""
    path, mnt, base = pool
    result = run_iteration(path, mnt, base / f"work{seed}", seed, kill_range)
    print(result.summary())
    assert not result.verdict.violations, (
        f"kill -9 iteration, seed {seed} (journal {base / f'work{seed}'}/journal.jsonl):\n"
        + "\n".join(result.verdict.violations[:20])
        + ("\n(missing fragments of a rewritten block: see test_deletion_race.py)"
           if any("is missing" in v for v in result.verdict.violations) else ""))
