#!/usr/bin/env python3
"""Crash-consistency soak: many more crashes than CI runs (the harness is tests/crash/).

Modes (default: all three, in turn):
  kill9  seeded workload on a real FUSE mount, daemon SIGKILLed at a random moment, remount,
         check against the journal (needs /dev/fuse and fusermount3);
  power  seeded workload on an in-process engine, power lost at a random moment (the
         metadata database rolled back to its last fsync), reopen, check;
  ace    every sequence of up to --max-ops operations of tests/crash/ace.py followed by a
         sync-type call, power lost right after it returned and right before it was made.

Exits non-zero at the first violation, printing what reproduces it, e.g.

  .venv/bin/python scripts/soak_crash.py --mode power --seed 12 --iterations 1

Runs stop after --iterations (per mode) or --duration seconds, whichever comes first.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "crash"))

import ace  # noqa: E402
import powerlib  # noqa: E402

POLICIES = ["rep:2", "rep:1", "ec:2+1"]


def _kill9(seed: int, state: dict, base: Path) -> str:
    from mountlib import Daemon, make_pool, run_iteration

    n = state.setdefault("kill9_n", 0)
    state["kill9_n"] = n + 1
    if n % 10 == 0:  # a fresh pool (and policy) every 10 iterations
        pool_dir = base / f"kill9-pool{n // 10}"
        pool_dir.mkdir()
        (pool_dir / "mnt").mkdir()
        state["kill9_pool"] = make_pool(pool_dir, policy=POLICIES[(n // 10) % len(POLICIES)])
        state["kill9_mnt"] = pool_dir / "mnt"
    pool, mnt = state["kill9_pool"], state["kill9_mnt"]
    try:
        result = run_iteration(pool, mnt, pool.parent / f"work{seed}", seed,
                               kill_range=(0.2, 12.0))
    finally:
        Daemon(pool, mnt, pool.parent / "x.log").detach()
    if result.verdict.violations:
        state["kill9_n"] = (n // 10 + 1) * 10  # damage stays: go on with a fresh pool
        raise AssertionError(f"journal {pool.parent / f'work{seed}'}/journal.jsonl\n"
                             + "\n".join(result.verdict.violations[:30]))
    state.setdefault("kill9_stats", Counter()).update(
        newest=result.verdict.exact_latest, older=result.verdict.older,
        torn=result.verdict.torn, ops=result.ops_completed)
    return result.summary()


def _power(seed: int, state: dict, base: Path) -> str:
    work = base / f"power{seed}"
    work.mkdir()
    line = powerlib.run_random(work, seed)
    shutil.rmtree(work, ignore_errors=True)
    return line


def _ace(index: int, state: dict, base: Path) -> str:
    cases = state.get("ace_cases")
    if cases is None:
        cases = state["ace_cases"] = list(ace.all_cases(state["max_ops"]))
        print(f"ace: {len(cases)} cases of up to {state['max_ops']} operations")
    case = cases[index % len(cases)]
    work = base / f"ace{index}"
    work.mkdir()
    powerlib.run_case(work, case)
    shutil.rmtree(work, ignore_errors=True)
    return f"case {index}: {case.name}"


RUNNERS = {"kill9": _kill9, "power": _power, "ace": _ace}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["all", *RUNNERS], default="all")
    ap.add_argument("--iterations", type=int, default=100,
                    help="iterations per mode (ace: cases; default 100)")
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000,
                    help="first seed (ace: first case index); default from the clock")
    ap.add_argument("--duration", type=float, default=None,
                    help="stop after this many seconds")
    ap.add_argument("--max-ops", type=int, default=3, help="ace: longest sequence (default 3)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--keep-going", action="store_true",
                    help="report each violation and go on (still exits non-zero)")
    ap.add_argument("--verbose", "-v", action="store_true", help="a line per iteration")
    args = ap.parse_args(argv)

    # SIGTERM unwinds like Ctrl-C, so a mount of ours is never left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    modes = list(RUNNERS) if args.mode == "all" else [args.mode]
    base = Path(tempfile.mkdtemp(prefix="dynamicfs-soak-"))
    state: dict = {"max_ops": args.max_ops}
    done: Counter[str] = Counter()
    started = time.monotonic()
    deadline = started + args.duration if args.duration else None
    print(f"soak: modes {', '.join(modes)}, first seed {args.seed}, work dir {base}")
    failed = False
    violations: Counter[str] = Counter()
    try:
        for k in itertools.count():
            if k >= args.iterations or deadline and time.monotonic() > deadline:
                break
            for mode in modes:
                seed = args.seed + k
                try:
                    line = RUNNERS[mode](seed, state, base)
                except Exception as exc:  # a violation, or the harness broke: both stop us
                    print(f"\nVIOLATION in mode {mode}, seed {seed}"
                          f"{' (case ' + state['ace_cases'][seed % len(state['ace_cases'])].name + ')' if mode == 'ace' else ''}:\n"  # noqa: E501
                          f"{exc if isinstance(exc, AssertionError) else traceback.format_exc()}")
                    print(f"reproduce: {sys.executable} {Path(__file__).name} --mode {mode} "
                          f"--seed {seed} --iterations 1"
                          f"{' --max-ops ' + str(args.max_ops) if mode == 'ace' else ''}")
                    failed = True
                    violations[mode] += 1
                    if not args.keep_going:
                        return 1
                    continue
                done[mode] += 1
                if args.verbose:
                    print(f"[{mode}] {line}", flush=True)
            if not args.verbose and k % 10 == 9:
                print(f"  {dict(done)} in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        elapsed = time.monotonic() - started
        print(f"\nsummary: {dict(done)} iterations without a violation in {elapsed:.0f} s"
              f"{'; violations: ' + str(dict(violations)) if failed else ''}")
        if "kill9_stats" in state:
            print(f"kill9 files after recovery: {dict(state['kill9_stats'])}")
        if args.keep or failed:
            print(f"work directory kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
