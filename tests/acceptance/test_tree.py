"""A real tree copied into pools of unequal disks under rep:2, rep:3 and ec:4+2, compared byte
for byte and attribute for attribute, before and after a remount; then fragment files are
deleted and corrupted behind the pool's back, and every file must still read correctly — or
fail with EIO when an extent has lost more fragments than its policy can rebuild."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3
import pytest
from acclib import (
    HEADER,
    Pool,
    assert_same_tree,
    build_tree,
    compare_trees,
    extent_owners,
    flip_byte,
    fragment_files,
    most_allocated,
    pool_session,
    read_errno,
    run,
    run_json,
    wait_until,
)
from fusemount import in_mountinfo

# policy -> disk caps (unequal; all directories share one filesystem, so caps make the sizes)
POOLS = {
    "rep:2": ["40M", "60M", "80M"],
    "rep:3": ["40M", "60M", "80M", "120M"],
    "ec:4+2": ["40M", "60M", "80M", "100M", "120M", "140M"],
}
# policy -> (fragments per extent, how many may be lost and still be rebuilt)
SHAPE = {"rep:2": (2, 1), "rep:3": (3, 2), "ec:4+2": (6, 2)}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    root = tmp_path_factory.mktemp("source") / "tree"
    facts = build_tree(root, seed=3, small_files=2000)
    return root, facts


@dataclass
class Loaded:
    pool: Pool
    src: Path
    dst: Path
    facts: dict[str, object]
    copy_seconds: float


@pytest.fixture(scope="module", params=list(POOLS))
def loaded(request: pytest.FixtureRequest, source: tuple[Path, dict[str, object]],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """A mounted pool of the policy with the source tree copied in by `cp -a`."""
    policy: str = request.param
    src, facts = source
    with pool_session(tmp_path_factory.mktemp(policy.replace(":", "-").replace("+", "p")),
                      policy, POOLS[policy], budget=300) as pool:
        t0 = time.monotonic()
        proc = subprocess.run(["cp", "-a", str(src), str(pool.mnt / "tree")],
                              capture_output=True, text=True)
        seconds = time.monotonic() - t0
        assert proc.returncode == 0, f"cp -a into the mount failed:\n{proc.stderr[-3000:]}"
        print(f"\n[{policy}] cp -a of {sum(1 for _ in src.rglob('*'))} entries: {seconds:.1f} s")
        yield Loaded(pool, src, pool.mnt / "tree", facts, seconds)


def test_copy_compares_equal_then_after_remount(loaded: Loaded) -> None:
    assert_same_tree(loaded.src, loaded.dst, f"{loaded.pool.policy}: right after cp -a")
    # Holes stay holes: a sparse file on the mount allocates only the blocks holding data.
    bs = loaded.pool.block_size
    for rel in loaded.facts["sparse"]:  # type: ignore[attr-defined]
        st = os.stat(loaded.dst / rel)
        allocated = st.st_blocks * 512
        most = most_allocated(loaded.src / rel, bs)
        assert allocated <= most + 511, \
            f"{rel}: st_blocks={st.st_blocks} ({allocated} bytes) for a sparse file of " \
            f"{st.st_size} bytes whose {bs >> 10} KiB blocks hold {most} bytes: the holes " \
            f"were filled in"
    # Somewhere the holes are much larger than the data, whatever the block size.
    assert os.stat(loaded.dst / "sparse/hole-then-data").st_blocks * 512 <= (
        os.stat(loaded.dst / "sparse/hole-then-data").st_size // 2)
    assert os.stat(loaded.dst / "sparse/all-hole-10MiB").st_blocks == 0
    # Large random files are not sparse: st_blocks covers the data.
    for rel in loaded.facts["large"]:  # type: ignore[attr-defined]
        st = os.stat(loaded.dst / rel)
        assert st.st_blocks * 512 >= st.st_size, (rel, st.st_blocks, st.st_size)
    # What the checker may run as well: diff -r (FIFOs excluded: diff calls them different).
    proc = subprocess.run(["diff", "-r", "--no-dereference", "-x", "fifo", str(loaded.src),
                           str(loaded.dst)], capture_output=True, text=True)
    assert proc.returncode == 0, f"diff -r found differences:\n{proc.stdout[-3000:]}"
    # The human forms of the reporting commands work while mounted and name every disk.
    table = run("list-disks", loaded.pool.pool).stdout
    for disk in loaded.pool.disks:
        assert str(disk) in table, f"list-disks does not show {disk}:\n{table}"
    assert run("status", loaded.pool.pool).stdout.strip()
    # Placement weighs free space: disks of different sizes fill at about the same rate.
    disks = loaded.pool.list_disks()
    fill = {d["id"]: round(d["used"] / d["capacity_cap"], 3) for d in disks}
    print(f"[{loaded.pool.policy}] disk fill (used/cap) after the copy: {fill}")
    loaded.pool.remount()
    assert_same_tree(loaded.src, loaded.dst, f"{loaded.pool.policy}: after umount + mount")


@pytest.mark.parametrize("loaded", ["rep:2"], indirect=True)  # one policy: keeps it short
def test_tar_copy_compares_equal(loaded: Loaded) -> None:
    """GNU tar takes other paths than cp: link() for hard links, xattrs before data, -S."""
    dst = loaded.pool.mnt / "tar-copy"
    dst.mkdir()
    cmd = (f"tar -C '{loaded.src}' --xattrs --xattrs-include='user.*' -cSf - . | "
           f"tar -C '{dst}' --xattrs --xattrs-include='user.*' --numeric-owner "
           f"--warning=no-timestamp -xpf -")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True)
    assert proc.returncode == 0, f"tar into the mount failed:\n{proc.stderr[-3000:]}"
    os.utime(dst, ns=(os.stat(loaded.src).st_atime_ns, os.stat(loaded.src).st_mtime_ns))
    diffs = [d for d in compare_trees(loaded.src, dst)
             if not d.startswith("b'.': nlink")]  # tar-copy's root is a different dir
    assert not diffs, "tar copy differs:\n  " + "\n  ".join(diffs[:40])
    loaded.pool.remount()
    assert_same_tree(loaded.src, loaded.dst, "cp -a copy after the tar copy and a remount")


# -- damage --------------------------------------------------------------------------------


def _unique_extents(loaded: Loaded) -> dict[str, str]:
    """Extent id -> the one file holding it, for extents no other file shares."""
    owners = extent_owners(loaded.src, loaded.pool.block_size)
    out: dict[str, str] = {}
    for h, files in owners.items():
        if len(files) != 1:
            continue
        (rel,) = files
        if os.stat(loaded.src / rel).st_nlink == 1:
            out[h] = rel
    return out


def _disk_of(pool: Pool, path: Path) -> int:
    for i, d in enumerate(pool.disks):
        if path.is_relative_to(d):
            return i
    raise AssertionError(path)


def _disk_counters(pool: Pool) -> dict[int, dict[str, int]]:
    by_path = {str(d["path"]): d for d in pool.list_disks()}
    return {i: {k: by_path[str(disk)][k] for k in ("read_errors", "checksum_errors",
                                                    "write_errors")}
            for i, disk in enumerate(pool.disks)}


def _pick(frags: dict[str, list[tuple[int, Path]]], unique: dict[str, str], n_frags: int,
          prefer: list[str], taken: set[str]) -> str:
    """An extent of one of the preferred files (in order), fully present on the disks."""
    for rel in prefer:
        for h, owner in sorted(unique.items()):
            if owner == rel and h not in taken and len(frags.get(h, [])) == n_frags:
                taken.add(h)
                return h
    raise AssertionError(f"no intact unique extent among {prefer}")


def _small_files(loaded: Loaded, unique: dict[str, str]) -> list[str]:
    return sorted(rel for rel in set(unique.values())
                  if rel.endswith(".dat") and 2000 < os.stat(loaded.src / rel).st_size < 70000)


def test_damaged_fragments_are_rebuilt(loaded: Loaded) -> None:
    """One fragment deleted, one flipped byte in another, on different extents (plus a header
    byte flipped, and one extent damaged as far as its policy allows): every file reads back
    right, the damaged disks' error counters rise, status counts degraded reads."""
    pool = loaded.pool
    n_frags, tolerable = SHAPE[pool.policy]
    pool.umount()
    unique = _unique_extents(loaded)
    frags = fragment_files(pool.disks)
    taken: set[str] = set()
    small = _small_files(loaded, unique)
    e_delete = _pick(frags, unique, n_frags, ["big/random-5MiB"], taken)
    e_flip = _pick(frags, unique, n_frags, small, taken)
    e_header = _pick(frags, unique, n_frags, small[5:], taken)
    e_trunc = _pick(frags, unique, n_frags, small[10:], taken)
    e_most = _pick(frags, unique, n_frags, ["big/random-7MiB+1"], taken)
    # The systematic shards (ec) are what a healthy read fetches, so damage index 0 there;
    # under rep:N any replica may be read.
    damaged: list[tuple[str, int, Path, str]] = []  # (extent, index, path, how)

    def frag(h: str, index: int) -> Path:
        return dict(frags[h])[index]

    p = frag(e_delete, 0)
    p.unlink()
    damaged.append((e_delete, 0, p, "deleted"))
    p = frag(e_flip, 0)
    flip_byte(p, HEADER + 100)
    damaged.append((e_flip, 0, p, "payload byte flipped"))
    p = frag(e_header, 0)
    flip_byte(p, 40)  # inside the extent id field of the header
    damaged.append((e_header, 0, p, "header byte flipped"))
    p = frag(e_trunc, 0)
    os.truncate(p, p.stat().st_size // 2)
    damaged.append((e_trunc, 0, p, "truncated to half"))
    for i in range(tolerable):
        p = frag(e_most, i)
        if i == 0:
            p.unlink()
        else:
            flip_byte(p, HEADER + 7 + i)
        damaged.append((e_most, i, p, "deleted" if i == 0 else "payload byte flipped"))
    print(f"\n[{pool.policy}] damaged: " + "; ".join(
        f"{h[:12]}.{i} of {unique[h]} on disk {_disk_of(pool, p)} ({how})"
        for h, i, p, how in damaged))

    pool.mount()
    assert_same_tree(loaded.src, loaded.dst, f"{pool.policy}: reads with damaged fragments")

    # Which damaged fragments a read touches is up to the pool (rep:N picks a replica at
    # random), so read the damaged files again after fresh mounts until every damaged disk
    # has been charged; a fresh mount drops the caches. Untouched disks must stay at zero.
    affected = {_disk_of(pool, p) for _, _, p, _ in damaged}
    files = sorted({unique[h] for h, _, _, _ in damaged})
    degraded_seen = 0

    def charged(counters: dict[int, dict[str, int]], p: Path, how: str) -> bool:
        # A missing fragment is a read error, a bad one a checksum error.
        c = counters[_disk_of(pool, p)]
        return c["read_errors" if how == "deleted" else "checksum_errors"] > 0

    rounds = 0
    counters: dict[int, dict[str, int]] = {}
    for rounds in range(1, 26):  # noqa: B007 - P(a rep:3 replica unread 25 times) < 1e-4
        status = pool.status()
        degraded_seen += status["counters"].get("degraded_reads", 0)
        wait_until(lambda: any(sum(c.values()) for c in _disk_counters(pool).values()), 7, 0.5)
        counters = _disk_counters(pool)
        if all(charged(counters, p, how) for _, _, p, how in damaged):
            break
        pool.remount()
        for rel in files:
            assert read_errno(loaded.dst / rel) is None, f"{rel} unreadable after a remount"
    print(f"[{pool.policy}] disk counters after {rounds} mount(s): {counters}; "
          f"degraded_reads seen: {degraded_seen}")
    for _, _, p, how in damaged:
        assert charged(counters, p, how), \
            f"{p} ({how}) was read in {rounds} fresh mounts, but its disk " \
            f"{_disk_of(pool, p)} shows {counters[_disk_of(pool, p)]} in list-disks --json"
    for d, c in counters.items():
        if d not in affected:
            assert sum(c.values()) == 0, f"disk {d} had no damage but shows errors {c}"
    assert degraded_seen > 0, "status --json counters never showed a degraded read"
    assert_same_tree(loaded.src, loaded.dst, f"{pool.policy}: after the repair reads")
    # Reads rewrite the bad fragments they met (user guide: "rewritten in place"). Under
    # ec:4+2 every damaged fragment is a data shard a healthy read fetches, so all of them
    # must have been met and rewritten; under rep:N the reads may have used other replicas.
    if pool.policy.startswith("ec:"):
        pool.umount()
        report = run_json("fsck", "--verify-data", pool.pool, check=False)
        left = [p["message"] for p in report["problems"]]
        assert not left, f"damaged shards that reads met were not rewritten: {left[:5]}"
        pool.mount()


def test_damage_beyond_repair_is_eio(loaded: Loaded) -> None:
    """An extent that lost more fragments than the policy tolerates: reading it fails with
    EIO (never wrong bytes, never a hang), the rest of that file and all others read fine."""
    pool = loaded.pool
    n_frags, tolerable = SHAPE[pool.policy]
    if in_mountinfo(pool.mnt):
        pool.umount()
    unique = _unique_extents(loaded)
    frags = fragment_files(pool.disks)
    victim_rel = "big/random-5MiB"  # several blocks at any default block size
    h = _pick(frags, unique, n_frags, [victim_rel], set())
    for n, (_index, p) in enumerate(sorted(frags[h])[: tolerable + 1]):
        if n == 0:
            p.unlink()
        else:
            flip_byte(p, HEADER + 1000 + n)
    pool.mount()
    t_mount = time.monotonic()
    victim = loaded.dst / victim_rel
    data = (loaded.src / victim_rel).read_bytes()
    bs = pool.block_size
    nblocks = -(-len(data) // bs)
    assert nblocks >= 2
    block = next(i for i in range(nblocks) if
                 blake3.blake3(data[i * bs:(i + 1) * bs]).hexdigest() == h)
    t0 = time.monotonic()
    for attempt in range(2):
        fd = os.open(victim, os.O_RDONLY)
        try:
            with pytest.raises(OSError) as exc:
                os.pread(fd, 4096, block * bs + 10)
            assert exc.value.errno == errno.EIO, \
                f"read of an unrecoverable extent failed with {exc.value!r}, expected EIO"
            # Another block of the same file is intact and must read.
            other = (block + 1) % nblocks
            got = os.pread(fd, 4096, other * bs + 10)
            assert got == data[other * bs + 10: other * bs + 4106], \
                f"attempt {attempt}: the intact block of {victim_rel} read wrong bytes"
        finally:
            os.close(fd)
    assert time.monotonic() - t0 < 30, "EIO took too long (looks like retries or a hang)"
    assert read_errno(victim) == errno.EIO
    t_eio = time.monotonic()
    # Every other file reads back right.
    diffs = [d for d in compare_trees_except(loaded.src, loaded.dst, {victim_rel})]
    assert not diffs, "other files damaged:\n  " + "\n  ".join(diffs[:40])
    print(f"\n[{pool.policy}] EIO checks {t_eio - t_mount:.1f} s, other files "
          f"{time.monotonic() - t_eio:.1f} s")
    log = (pool.pool / "daemon.log").read_text(errors="replace")
    assert h in log, f"no log line names the unreadable extent {h}"
    ino = os.stat(victim).st_ino
    print(f"[{pool.policy}] EIO log line names inode {ino}: {f'inode {ino}' in log}")
    assert pool.status()["counters"].get("extents_unreadable", 0) > 0


def compare_trees_except(src: Path, dst: Path, skip: set[str]) -> list[str]:
    """compare_trees without reading the contents of the `skip` files (their reads fail)."""
    diffs = compare_trees(src, dst, contents=False)
    for dirpath, _, names in os.walk(src):
        for n in names:
            s = Path(dirpath) / n
            rel = str(s.relative_to(src))
            if rel in skip or s.is_symlink() or not s.is_file():
                continue
            d = dst / rel
            try:
                same = d.read_bytes() == s.read_bytes()
            except OSError as exc:
                diffs.append(f"{rel}: read failed: {exc!r}")
                continue
            if not same:
                diffs.append(f"{rel}: content differs")
    return diffs
