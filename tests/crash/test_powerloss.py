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
from crashlib import Generator
from powerlib import describe, make_pool, recover_and_check, run_child

RANDOM_SEEDS = [11, 12, 13, 14]
ACE_SAMPLE = 24  # longer sequences per CI run, picked by a fixed seed


def run_random(base: Path, seed: int) -> str:
    """One random workload, power lost at a random moment; returns a summary line."""
    rng = random.Random(seed)
    pool = make_pool(base, policy=rng.choice(["rep:2", "rep:1"]))
    gen = Generator(seed, sync_scale=rng.choice([0.05, 0.3, 1.0]))
    ops = gen.setup() + [gen.next() for _ in range(400)]
    work = base / "work"
    run_child(pool, work, seed, ops, commit_interval=rng.choice([0.05, 0.5, 5.0]),
              kill_after_s=rng.uniform(0.05, 2.0))
    out = recover_and_check(pool, work, seed)
    v = out.verdict
    assert not v.violations, (
        f"power loss, seed {seed} (image {out.image}: ops [0, {out.lo}) durable, "
        f"{out.hi} started):\n" + "\n".join(v.violations[:20]))
    return (f"seed {seed}: {out.hi} ops started, image {out.image} (lo {out.lo}), namespace "
            f"prefix {v.prefix}, {v.files_checked} files ({v.exact_latest} newest, "
            f"{v.older} older)")


def run_case(base: Path, case: ace.Case) -> None:
    built = ace.build(case)
    assert built is not None
    ops, crash_at = built
    pool = make_pool(base)
    work = base / "work"
    run_child(pool, work, 1, ops, kill_after_op=crash_at)
    out = recover_and_check(pool, work, 1)
    assert not out.verdict.violations, (
        f"{case.name}\nops: {describe(ops[8:])}\n(image {out.image}: ops [0, {out.lo}) "
        f"durable, {out.hi} started)\n" + "\n".join(out.verdict.violations))


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
