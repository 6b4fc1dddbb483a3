"""Placement: distinct disks, weighted by free space, and the usable-capacity arithmetic."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from dynamicfs.store.placement import choose_disks, usable_bytes, usable_capacity

FREE = st.dictionaries(st.integers(1, 12), st.integers(0, 10_000), max_size=8)


@given(FREE, st.integers(0, 10), st.integers(0, 5000), st.sets(st.integers(1, 12)),
       st.integers(0, 2**32))
def test_choice_is_distinct_fitting_and_as_large_as_possible(free, count, need, exclude, seed):
    got = choose_disks(free, count, need, exclude, rng=random.Random(seed))
    fitting = {d for d, f in free.items() if f >= need and d not in exclude}
    assert len(got) == len(set(got)) == min(count, len(fitting))
    assert set(got) <= fitting


def test_fraction_of_picks_follows_free_space():
    rng = random.Random(7)
    free = {1: 1000, 2: 2000, 3: 4000, 4: 8000}
    picks = [choose_disks(free, 1, 1, rng=rng)[0] for _ in range(15_000)]
    for disk, f in free.items():
        share = picks.count(disk) / len(picks)
        assert abs(share - f / 15_000) < 0.02, (disk, share)


@given(st.lists(st.integers(0, 30), min_size=1, max_size=7), st.data(), st.integers(0, 2**32))
def test_placing_until_full_stores_what_usable_capacity_promises(sizes, data, seed):
    # statfs reports usable_capacity: placement must reach it, never strand a disk's room
    # with no distinct partners left (random draws alone fell short for 21% of such pools).
    n = data.draw(st.integers(1, len(sizes)))
    rng = random.Random(seed)
    free = {disk: size * 100 for disk, size in enumerate(sizes)}
    placed = 0
    while len(got := choose_disks(free, n, 100, rng=rng)) == n:
        for disk in got:
            free[disk] -= 100
        placed += 1
    assert placed == usable_capacity(sizes, n)


def test_a_disk_with_room_for_every_remaining_extent_is_always_chosen():
    # rep:2 over 1 TB + 2 x 500 GB: the large disk must hold one replica of everything.
    free = {1: 1000, 2: 500, 3: 500}
    rng = random.Random(3)
    assert all(1 in choose_disks(free, 2, 10, rng=rng) for _ in range(200))


@given(st.lists(st.integers(0, 10_000), max_size=8), st.integers(1, 6))
def test_usable_capacity_is_the_largest_fitting_stripe(free, n):
    t = usable_capacity(free, n)
    if len(free) < n:
        assert t == 0
        return
    assert sum(min(f, t) for f in free) >= n * t
    assert sum(min(f, t + 1) for f in free) < n * (t + 1)


def test_usable_capacity_examples():
    assert usable_capacity([100, 100], 2) == 100
    assert usable_capacity([1000, 100, 100], 2) == 200  # the big disk pairs with both
    assert usable_capacity([1000, 100], 2) == 100
    assert usable_bytes([100, 100, 100], 3, 2, 2) == 200  # ec:2+1: two data shards per stripe
    assert usable_bytes([100], 3, 2, 2) == 0  # too few disks to store anything
