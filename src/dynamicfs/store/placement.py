"""Choose disks for the fragments of one extent.

Disks are drawn without replacement with probability proportional to their free space, so disks
of different sizes fill at the same rate (a disk with twice the free space gets twice the new
fragments). Disks that cannot hold the fragment, or that failed this extent already, are skipped.

Drawn at random alone, disks strand space: with three equal disks under rep:2, the last free
slots can end up on one disk with no partner left, and in 20,000 random pools of 1-7 disks of
0-30 fragments each, 21% filled short of `usable_capacity`, what statfs reports. So a disk is
always chosen when it has room for at least as many fragments as extents still fit (t in
`usable_capacity`): it must hold a fragment of every one of them (as btrfs RAID1 pairs a large
device with each of the smaller ones). With that rule the same 20,000 pools all filled exactly.
"""

from __future__ import annotations

import random
from collections.abc import Iterable


def choose_disks(
    free: dict[int, int], count: int, need: int, exclude: Iterable[int] = (),
    rng: random.Random | None = None,
) -> list[int]:
    """Pick `count` distinct disk ids with at least `need` bytes free; may return fewer."""
    rng = rng or random
    skip = set(exclude)
    pool = {d: f for d, f in free.items() if d not in skip and f >= need}
    chosen: list[int] = []
    if count > 0 and len(pool) >= count:
        room = {d: f // need for d, f in pool.items()} if need > 0 else {}
        fit = usable_capacity(list(room.values()), count) if room else 0
        # Disks that must take a fragment of every extent that still fits, largest first.
        must = sorted((d for d, r in room.items() if fit and r >= fit), key=lambda d: -pool[d])
        for disk in must[:count]:
            chosen.append(disk)
            del pool[disk]
    while pool and len(chosen) < count:
        total = sum(pool.values())
        pick = rng.uniform(0, total)
        acc = 0.0
        for disk, f in pool.items():  # noqa: B007 - the pick is used after the loop
            acc += f
            if pick <= acc:
                break
        chosen.append(disk)
        del pool[disk]
    return chosen


def usable_capacity(free: list[int], n: int) -> int:
    """The most bytes per fragment index that `free` can hold under n-way placement.

    The largest t with sum(min(f, t) for f in free) >= n * t: every extent puts its n
    fragments on n distinct disks, so a disk can hold at most one fragment of each extent,
    i.e. at most t of the t bytes stored per fragment index. This is what statfs reports
    (times K for erasure coding), the way btrfs reports RAID1 space over unequal devices.
    """
    if n <= 0 or len(free) < n:
        return 0
    # t may exceed the largest disk: over more than n disks, fragments of successive extents
    # rotate (pairs AB, BC, CA hold 150 on three disks of 100). It never exceeds sum/n.
    lo, hi = 0, sum(free) // n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(f, mid) for f in free) >= n * mid:
            lo = mid
        else:
            hi = mid - 1
    return lo


def usable_bytes(sizes: list[int], n_fragments: int, k: int, min_fragments: int) -> int:
    """User bytes that fit in per-disk `sizes` under a policy of n fragments, k of data.

    With fewer disks than fragments (disks missing), writes go degraded, so count as many
    fragments as there are disks.
    """
    n = min(n_fragments, len(sizes))
    if n < max(1, min_fragments):
        return 0
    return usable_capacity(sizes, n) * k
