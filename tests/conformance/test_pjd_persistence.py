"""What the pjdfstest cases set must be what the pool stored, not only what the kernel cached.

The kernel keeps attributes of FUSE inodes for the attribute timeout, so every check in the
other files could pass from its cache alone. Here the attributes those cases set (modes with
suid/sgid/sticky bits, owners, device numbers, link counts, sizes, times to the nanosecond,
a symlink's own times) are read once, then again after the kernel dropped its inodes (so the
daemon answers fresh lookups) and after a remount.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pjdlib import AT_SYMLINK_NOFOLLOW, create_file, expect

FIELDS = ("type", "mode", "uid", "gid", "nlink", "size", "rdev", "inode")
TIMES = ("atime", "mtime", "ctime")


def _snapshot(root: Path) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for name in sorted(os.listdir(root)):
        st = os.lstat(root / name)
        out[name] = {
            "type": stat.S_IFMT(st.st_mode), "mode": oct(stat.S_IMODE(st.st_mode)),
            "uid": st.st_uid, "gid": st.st_gid, "nlink": st.st_nlink, "size": st.st_size,
            "rdev": (os.major(st.st_rdev), os.minor(st.st_rdev)), "inode": st.st_ino,
            "atime": st.st_atime_ns, "mtime": st.st_mtime_ns, "ctime": st.st_ctime_ns,
        }
    return out


def _populate(d: Path) -> None:
    t = (1900000000, 123456789, 1950000000, 987654321)
    create_file("regular", d / "suid", 123, 456)
    expect("0", "chmod", d / "suid", 0o4755)
    create_file("regular", d / "sgid", mode=0o2750)
    create_file("dir", d / "sticky", 65534, 65533)
    expect("0", "chmod", d / "sticky", 0o3777)
    create_file("fifo", d / "fifo", mode=0o1640)
    expect("0", "mknod", d / "block", "b", 0o600, 1, 2)
    expect("0", "mknod", d / "char", "c", 0o620, 4095, 1048575)
    create_file("socket", d / "socket", 65534, 65534)
    expect("0", "symlink", "suid", d / "symlink")
    expect("0", "lchown", d / "symlink", 65533, 65532)
    expect("0", "create", d / "links", 0o640)
    expect("0", "link", d / "links", d / "links2")
    expect("0", "link", d / "links", d / "links3")
    (d / "data").write_bytes(b"x" * 12345)
    expect("0", "truncate", d / "data", 23456)
    expect("0", "create", d / "huge", 0o644)
    expect("0", "truncate", d / "huge", 999999999999999)
    expect("0", "mkdir", d / "subdirs", 0o700)
    for i in range(3):
        expect("0", "mkdir", d / "subdirs" / str(i), 0o755)
    # Times last: every change above moved them.
    for name in ("suid", "sgid", "sticky", "fifo", "block", "char", "socket", "links",
                 "data", "huge", "subdirs"):
        expect("0", "utimensat", d / name, *t)
    expect("0", "utimensat", d / "symlink", 1960000000, 1, 1970000000, 2, AT_SYMLINK_NOFOLLOW)
    expect("0", "create", d / "old", 0o644)
    expect("0", "utimensat", d / "old", -100000000, 5, 2**32, 0)


def _diff(before: dict, after: dict, fields: tuple[str, ...]) -> list[str]:
    problems = []
    for name in sorted(set(before) | set(after)):
        if name not in after or name not in before:
            problems.append(f"{name}: present {'before' if name in before else 'after'} only")
            continue
        for f in fields:
            if before[name][f] != after[name][f]:
                problems.append(f"{name}.{f}: {before[name][f]} -> {after[name][f]}")
    return problems


def _root_attrs(root: Path) -> tuple:
    st = os.lstat(root)
    return (oct(st.st_mode), st.st_uid, st.st_gid, st.st_ino, st.st_atime_ns, st.st_mtime_ns)


def _drop_kernel_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")


def test_attributes_survive_cache_drop_and_remount(d: Path, conformance_mount) -> None:
    root, mount = conformance_mount
    if mount is None:
        pytest.skip("needs the mount (a local directory has no daemon behind it)")
    _populate(d)
    # The root directory too (pjdfstest runs there and chowns/chmods "."), restored below.
    root_before = os.lstat(root)
    os.chown(root, 7, 8)
    os.chmod(root, 0o1777)
    os.utime(root, ns=(1900000000 * 10**9 + 3, 1950000000 * 10**9 + 4))
    first = _snapshot(d)
    root_attrs = _root_attrs(root)
    assert first["links"]["nlink"] == 3 and first["subdirs"]["nlink"] == 5

    _drop_kernel_caches()
    dropped = _snapshot(d)
    problems = _diff(first, dropped, FIELDS + TIMES)
    assert not problems, "the daemon's attributes differ from the kernel's cached ones:\n" \
        + "\n".join(problems)

    status = mount.unmount()
    assert status == 0, f"daemon exited {status} on unmount\n{mount.daemon_output()}"
    mount.mount()
    remounted = _snapshot(d)
    problems = _diff(first, remounted, FIELDS + TIMES)
    root_after = _root_attrs(root)
    os.chown(root, root_before.st_uid, root_before.st_gid)
    os.chmod(root, stat.S_IMODE(root_before.st_mode))
    assert not problems, "attributes changed across a remount:\n" + "\n".join(problems)
    assert root_after == root_attrs, f"the root's attributes: {root_attrs} -> {root_after}"
    assert (d / "data").read_bytes() == b"x" * 12345 + bytes(23456 - 12345)
    assert os.readlink(d / "symlink") == "suid"


@pytest.mark.parametrize("when", ["futimens_before_close", "utimensat_while_open",
                                  "utimensat_after_close"])
def test_times_set_around_buffered_writes(d: Path, conformance_mount, when: str) -> None:
    # `cp -p` writes, then futimens(fd) and close(); tar and rsync set times after close. The
    # times asked for must be the ones stored: data flushed later must not restamp them.
    root, mount = conformance_mount
    n0 = d / "n0"
    want = (1900000000 * 10**9 + 111, 1950000000 * 10**9 + 222)
    fd = os.open(n0, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        for i in range(64):
            os.write(fd, bytes([i]) * 65536)
        if when == "futimens_before_close":
            os.utime(fd, ns=want)
        elif when == "utimensat_while_open":
            os.utime(n0, ns=want)
    finally:
        os.close(fd)
    if when == "utimensat_after_close":
        os.utime(n0, ns=want)
    os.sync()
    got = (os.lstat(n0).st_atime_ns, os.lstat(n0).st_mtime_ns)
    assert got == want, f"{when}: times {got}, asked for {want}"
    if mount is not None:
        _drop_kernel_caches()
        got = (os.lstat(n0).st_atime_ns, os.lstat(n0).st_mtime_ns)
        assert got == want, f"{when}: the daemon stored times {got}, asked for {want}"
    assert os.path.getsize(n0) == 64 * 65536
