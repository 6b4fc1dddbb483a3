"""Filling a pool of unequal disks: the smallest disk fills and writes go on landing on the
others; when no set of disks can hold an extent any more, writes fail with ENOSPC, df says the
pool is full, nothing written before is lost (also across a remount), and deleting files makes
room again."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from acclib import MiB, Pool, wait_until

FILE = 4 * MiB
# policy -> caps (smallest first), fragments per extent, fragment size on disk of a full block
CASES = {
    "rep:2": (["6M", "40M", "48M"], 2, MiB + 128),
    # ec:4+2 needs six disks per extent: a seventh lets writes go on when the smallest is full.
    "ec:4+2": (["3M", "10M", "12M", "14M", "16M", "18M", "20M"], 6, MiB // 4 + 128),
}


def _write_file(path: Path, data: bytes, fsync: bool = True) -> str | None:
    """Write, fsync, close. None on success, else the step that failed ('write'...)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    step = "write"
    try:
        for off in range(0, len(data), MiB):
            os.write(fd, data[off:off + MiB])
        if fsync:
            step = "fsync"
            os.fsync(fd)
    except OSError as exc:
        try:
            os.close(fd)
        except OSError:
            pass
        assert exc.errno == errno.ENOSPC, \
            f"{path.name}: {step} failed with {exc!r}; a full pool must give ENOSPC (28)"
        return step
    step = "close"
    try:
        os.close(fd)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, \
            f"{path.name}: close failed with {exc!r}; a full pool must give ENOSPC (28)"
        return step
    return None


def _usage(pool: Pool) -> list[tuple[int, int, int]]:
    """(cap, used, free) per disk, in the order the disks were added (smallest first)."""
    by_path = {str(d["path"]): d for d in pool.list_disks()}
    return [(by_path[str(d)]["capacity_cap"], by_path[str(d)]["used"], by_path[str(d)]["free"])
            for d in pool.disks]


def _over_cap(usage: list[tuple[int, int, int]]) -> list[str]:
    return [f"disk {i}: used {used} > cap {cap} (+{used - cap} bytes)"
            for i, (cap, used, _) in enumerate(usage) if used > cap]


@pytest.mark.xfail(strict=False, reason=(
    "known: right after deleting files in a full pool, the first 4 MiB write can still fail "
    "with ENOSPC at fsync and succeed on retry 0.1 s later; freed space is now returned at "
    "unlink and retried on ENOSPC, but one path still misses it (open in issue 4's note)"))
@pytest.mark.parametrize("policy", list(CASES))
def test_fill_smallest_then_pool_then_enospc(make_pool: Callable[..., Pool], policy: str) -> None:
    caps, n_frags, frag_size = CASES[policy]
    pool = make_pool(policy, caps, budget=200)
    data_dir = pool.mnt / "fill"
    data_dir.mkdir()
    written: dict[str, str] = {}  # name -> sha256 of files whose write, fsync and close succeeded
    history: list[list[tuple[int, int, int]]] = [_usage(pool)]
    smallest_full_at: int | None = None  # bytes written when the smallest disk was full
    failures: list[tuple[str, str, list[tuple[int, int, int]]]] = []  # name, step, usage before
    t0 = time.monotonic()
    # 4 MiB files until one fails, then 1 MiB files (one extent each) until one fails.
    for size in (FILE, MiB):
        for i in range(200):
            name = f"f{size >> 20}-{i:03d}"
            data = os.urandom(size)
            step = _write_file(data_dir / name, data)
            if step is not None:
                failures.append((name, step, history[-1]))
                break
            written[name] = hashlib.sha256(data).hexdigest()
            usage = _usage(pool)
            history.append(usage)
            if smallest_full_at is None and usage[0][2] < frag_size:
                smallest_full_at = sum(int(n.split("-")[0][1:]) << 20 for n in written)
        else:
            pytest.fail(f"200 files of {size >> 20} MiB fitted in a pool of a few dozen MiB")
    seconds = time.monotonic() - t0
    total = sum(int(n.split("-")[0][1:]) << 20 for n in written)
    st = os.statvfs(pool.mnt)
    df_free, df_total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    final = _usage(pool)
    print(f"\n[{policy}] wrote {total >> 20} MiB in {len(written)} files ({seconds:.1f} s); "
          f"ENOSPC at {[f[:2] for f in failures]}; smallest disk full after "
          f"{(smallest_full_at or 0) >> 20} MiB; df: {df_free >> 10} KiB free of "
          f"{df_total >> 20} MiB; disks (cap, used, free): {final}")

    # Without fsync the error must still reach the writer: at write() or at close().
    nofsync = _write_file(data_dir / "no-fsync", os.urandom(FILE), fsync=False)
    assert nofsync is not None, \
        "a 4 MiB write without fsync into a full pool: write() and close() both succeeded " \
        "(data silently lost)"
    (data_dir / "no-fsync").unlink()
    # The smallest disk filled up on the way.
    assert smallest_full_at is not None, \
        f"the smallest disk never reached its cap before ENOSPC: {final}"
    # ENOSPC only when no disk set can hold the data: the 4 MiB file (4 extents of n_frags
    # fragments on distinct disks) fitted iff sum(min(fragments a disk can take, 4)) >= 4 n.
    name, _, before = failures[0]
    fits = sum(min(free // frag_size, 4) for _, _, free in before) >= 4 * n_frags
    assert not fits, f"{name}: ENOSPC for 4 extents although the disks could hold them " \
        f"(cap, used, free before the write): {before}"
    # After the 1 MiB file failed, no n_frags distinct disks can take one fragment each.
    roomy = [i for i, (_, _, free) in enumerate(final) if free >= frag_size]
    assert len(roomy) < n_frags, \
        f"ENOSPC while disks {roomy} could still hold a {policy} extent: {final}"
    # df on the mount says the pool is (nearly) full.
    assert df_free <= max(2 * MiB, df_total // 20), \
        f"statvfs reports {df_free} bytes free on a pool that refuses writes (ENOSPC)"
    # Caps are caps: no disk holds more than its --capacity at any point (checked at the end,
    # so the checks below still run).
    over = [f"after file {n}: {o}" for n, u in enumerate(history) for o in _over_cap(u)]

    # Everything written before ENOSPC is intact, also after umount + mount.
    def check_all() -> None:
        for name, digest in written.items():
            got = hashlib.sha256((data_dir / name).read_bytes()).hexdigest()
            assert got == digest, f"{name} changed after the pool filled up"

    check_all()
    pool.remount()
    check_all()

    # Deleting files makes room again, at once: `rm big; cp new` must not fail.
    for name, _, _ in failures:
        (data_dir / name).unlink(missing_ok=True)
    for name in sorted(n for n in written if n.startswith("f4-"))[:2]:  # 2 x 4 MiB
        (data_dir / name).unlink()
        del written[name]
    again = os.urandom(FILE)
    t1 = time.monotonic()
    first = _write_file(data_dir / "after-delete", again)
    ok = first is None or wait_until(
        lambda: _write_file(data_dir / "after-delete", again) is None, 30, 0.25)
    delay = time.monotonic() - t1
    assert ok, f"writes still fail with ENOSPC 30 s after deleting 8 MiB: {_usage(pool)}"
    print(f"[{policy}] after deleting 8 MiB: first write {first or 'ok'}, "
          f"a write succeeded after {delay:.1f} s")
    written["after-delete"] = hashlib.sha256(again).hexdigest()
    pool.remount()
    check_all()
    over += [f"at the end: {o}" for o in _over_cap(_usage(pool))]
    problems = []
    if over:
        problems.append("capacity caps exceeded (--capacity must bound what a disk holds):"
                        "\n  " + "\n  ".join(over[:20]))
    if first is not None:
        problems.append(
            f"a 4 MiB write right after deleting 8 MiB of a full pool failed with ENOSPC (at "
            f"{first}); one succeeded only {delay:.1f} s later, after the next commit. Freed "
            f"space must be usable at once (commit pending frees and retry before ENOSPC).")
    assert not problems, "\n".join(problems)

def _fragment_bytes(disk: Path) -> int:
    return sum(p.stat().st_size for p in (disk / "fragments").rglob("*") if p.is_file())


def test_capacity_caps_hold_under_parallel_writers(make_pool: Callable[..., Pool]) -> None:
    """Four writers at once fill a pool of small capped disks: no disk may end up holding more
    than its --capacity (neither by list-disks nor by the bytes of its fragment files)."""
    pool = make_pool("rep:2", ["8M", "10M", "12M", "14M"])
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(100):
                if _write_file(pool.mnt / f"w{n}-{i}", os.urandom(2 * MiB)) is not None:
                    return
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors
    usage = _usage(pool)
    on_disk = [_fragment_bytes(d) for d in pool.disks]
    print(f"\n[parallel] (cap, used, free): {usage}; fragment bytes per disk: {on_disk}")
    over = _over_cap(usage) + [f"disk {i}: {b} bytes of fragment files > cap {usage[i][0]}"
                               for i, b in enumerate(on_disk) if b > usage[i][0]]
    assert not over, "capacity caps exceeded with parallel writers:\n  " + "\n  ".join(over)
