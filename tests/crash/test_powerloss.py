"""Power loss at the engine level: everything not made durable by `Database.sync` is dropped
(see powerlib.py), then the pool is opened again and checked against the journal.

CI runs a few random workloads with power lost at a random moment, and a representative
subset of the small sequences of ace.py (every one-operation sequence, a fixed sample of
longer ones); scripts/soak_crash.py runs many more of both.
"""

from __future__ import annotations

import random
from pathlib import Path

import ace
import pytest
from powerlib import make_pool, recover_and_check, run_case, run_child, run_random

RANDOM_SEEDS = [11, 12, 13, 14]
ACE_SAMPLE = 24  # longer sequences per CI run, picked by a fixed seed


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_random_workload_power_loss(tmp_path: Path, seed: int) -> None:
    print(run_random(tmp_path, seed))


def _ci_cases() -> list[ace.Case]:
    one = list(ace.all_cases(1))
    longer = [c for c in ace.all_cases(2) if len(c.steps) == 2]
    rng = random.Random(4)
    return one + rng.sample(longer, ACE_SAMPLE)


@pytest.mark.parametrize("case", _ci_cases(), ids=lambda c: c.name)
def test_ace_sequence(tmp_path: Path, case: ace.Case) -> None:
    run_case(tmp_path, case)


def test_checker_catches_a_lost_fsync(tmp_path: Path) -> None:
    """The harness itself: restoring an image older than an fsync must be reported."""
    case = ace.Case(("overwrite A across blocks",), "fsync last", "after")
    built = ace.build(case)
    assert built is not None
    ops, crash_at = built
    pool = make_pool(tmp_path)
    work = tmp_path / "work"
    run_child(pool, work, 1, ops, kill_after_op=crash_at)
    images = sorted(p for p in (work / "images").iterdir() if not p.name.startswith("."))
    # Pretend the last sync (the fsync's) never reached the disk, but claim it did.
    newest = images[-1]
    older = images[-2]
    info = (newest / "info.json").read_text()
    for f in newest.iterdir():
        f.unlink()
    for f in older.iterdir():
        (newest / f.name).write_bytes(f.read_bytes())
    (newest / "info.json").write_text(info)
    out = recover_and_check(pool, work, 1)
    assert any("equal no state" in v for v in out.verdict.violations), out.verdict.violations
