"""pjdfstest tests/chown: ownership changes by root and by owners, suid/sgid clearing, ctime."""

from __future__ import annotations

from pathlib import Path

import pytest
from pjdlib import TYPES, create_file, expect, lstat, nap, remove, stat_

NOBODY = 65534
NOT_SYMLINK = [t for t in TYPES if t != "symlink"]


@pytest.mark.parametrize("kind", NOT_SYMLINK)
def test_chown_00_root_changes_ownership(d: Path, kind: str) -> None:
    # chown/00.t: "super-user can always modify ownership", directly and through a symlink.
    n0, n1 = d / "n0", d / "n1"
    create_file(kind, n0)
    expect("0", "chown", n0, 123, 456)
    expect((123, 456), "lstat", n0, "uid,gid")
    expect("0", "chown", n0, 0, 0)
    expect((0, 0), "lstat", n0, "uid,gid")
    expect("0", "symlink", "n0", n1)
    link_ids = lstat(n1, "uid,gid")
    expect("0", "chown", n1, 123, 456)
    expect((123, 456), "stat", n1, "uid,gid")
    expect((123, 456), "stat", n0, "uid,gid")
    expect(link_ids, "lstat", n1, "uid,gid")
    expect("0", "unlink", n1)
    remove(kind, n0)


@pytest.mark.parametrize("kind", TYPES)
def test_chown_00_root_lchown(d: Path, kind: str) -> None:
    # chown/00.t: "expect 0 lchown ${n0} 123 456" / "expect 123,456 lstat ${n0} uid,gid"
    n0 = d / "n0"
    create_file(kind, n0)
    expect("0", "lchown", n0, 123, 456)
    expect((123, 456), "lstat", n0, "uid,gid")
    remove(kind, n0)


@pytest.mark.parametrize("kind", TYPES)
def test_chown_00_owner_changes_group_to_own_group(d: Path, kind: str) -> None:
    # chown/00.t: "non-super-user can modify file group if he is owner of a file and gid he
    # is setting is in his groups list":
    # "expect 0 -u 65534 -g 65532,65531 -- lchown ${n0} -1 65532" and "... 65534 65531".
    n0 = d / "n0"
    create_file(kind, n0)
    expect("0", "lchown", n0, NOBODY, 65533)
    expect((NOBODY, 65533), "lstat", n0, "uid,gid")
    expect("0", "lchown", n0, -1, 65532, u=NOBODY, g=(65532, 65531))
    expect((NOBODY, 65532), "lstat", n0, "uid,gid")
    expect("0", "lchown", n0, NOBODY, 65531, u=NOBODY, g=(65532, 65531))
    expect((NOBODY, 65531), "lstat", n0, "uid,gid")
    remove(kind, n0)


@pytest.mark.parametrize("kind", TYPES)
def test_chown_00_minus_one_minus_one_by_anyone(d: Path, kind: str) -> None:
    # chown/00.t: "chown(2) should succeed even if the user is not the owner of a file, as
    # long as both uid and gid are -1": "expect 0 -u 65534 -g 65534 -- lchown ${n0} -1 -1".
    n0 = d / "n0"
    create_file(kind, n0)
    expect("0", "lchown", n0, -1, -1, u=NOBODY, g=NOBODY)
    expect((0, 0), "lstat", n0, "uid,gid")
    if kind != "symlink":
        expect("0", "chown", n0, -1, -1, u=NOBODY, g=NOBODY)
        expect((0, 0), "stat", n0, "uid,gid")
    remove(kind, n0)


@pytest.mark.parametrize("kind", NOT_SYMLINK)
def test_chown_00_root_chown_may_clear_suid_sgid(d: Path, kind: str) -> None:
    # chown/00.t: "when super-user calls chown(2), set-uid and set-gid bits may be removed":
    # "expect "(06555|0555),65532,65531" stat ${n0} mode,uid,gid"
    n0 = d / "n0"
    create_file(kind, n0)
    expect("0", "chown", n0, NOBODY, 65533)
    expect("0", "chmod", n0, 0o6555)
    expect((0o6555, NOBODY, 65533), "stat", n0, "mode,uid,gid")
    expect("0", "chown", n0, 65532, 65531)
    assert stat_(n0, "mode,uid,gid") in {(0o6555, 65532, 65531), (0o555, 65532, 65531)}
    expect("0", "chmod", n0, 0o6555)
    expect("0", "chown", n0, 0, 0)
    assert stat_(n0, "mode,uid,gid") in {(0o6555, 0, 0), (0o555, 0, 0)}
    remove(kind, n0)


@pytest.mark.parametrize("kind", NOT_SYMLINK)
def test_chown_00_owner_chown_clears_suid_sgid(d: Path, kind: str) -> None:
    # chown/00.t: "when non-super-user calls chown(2) successfully, set-uid and set-gid bits
    # may be removed, except when both uid and gid are equal to -1":
    # "expect 0 -u 65534 -g 65533,65532 chown ${n0} 65534 65532" /
    # "expect 0555,65534,65532 stat ${n0} mode,uid,gid" (a "todo Linux" for directories: Linux
    # keeps the bits on a directory, so that case accepts both).
    n0 = d / "n0"
    create_file(kind, n0)
    cleared = {0o555} if kind != "dir" else {0o555, 0o6555}
    expect("0", "chown", n0, NOBODY, 65533)
    expect("0", "chmod", n0, 0o6555)
    expect((0o6555, NOBODY, 65533), "stat", n0, "mode,uid,gid")
    expect("0", "chown", n0, NOBODY, 65532, u=NOBODY, g=(65533, 65532))
    mode, uid, gid = stat_(n0, "mode,uid,gid")
    assert (uid, gid) == (NOBODY, 65532)
    assert mode in cleared, f"chown/00.t: owner's chown left mode {mode:#o}, want 0555"
    expect("0", "chmod", n0, 0o6555)
    expect("0", "chown", n0, -1, 65533, u=NOBODY, g=(65533, 65532))
    mode, uid, gid = stat_(n0, "mode,uid,gid")
    assert (uid, gid) == (NOBODY, 65533)
    assert mode in cleared, f"chown/00.t: owner's chown -1 gid left mode {mode:#o}"
    expect("0", "chmod", n0, 0o6555)
    expect("0", "chown", n0, -1, -1, u=NOBODY, g=(65533, 65532))
    assert stat_(n0, "mode,uid,gid") in {(0o6555, NOBODY, 65533), (0o555, NOBODY, 65533)}
    remove(kind, n0)


@pytest.mark.parametrize("kind", NOT_SYMLINK)
def test_chown_00_success_updates_ctime(d: Path, kind: str) -> None:
    # chown/00.t: "successful chown(2) call (except uid and gid equal to -1) updates ctime",
    # by root and by the owner ("expect 0 -u 65534 -g 65532 chown ${n0} 65534 65532").
    n0 = d / "n0"
    create_file(kind, n0)
    ctime1 = stat_(n0, "ctime")
    nap()
    expect("0", "chown", n0, NOBODY, 65533)
    expect((NOBODY, 65533), "stat", n0, "uid,gid")
    ctime2 = stat_(n0, "ctime")
    assert ctime1 < ctime2, "chown/00.t: root's chown did not update ctime"
    nap()
    expect("0", "chown", n0, NOBODY, 65532, u=NOBODY, g=65532)
    expect((NOBODY, 65532), "stat", n0, "uid,gid")
    assert ctime2 < stat_(n0, "ctime"), "chown/00.t: owner's chown did not update ctime"
    remove(kind, n0)


@pytest.mark.parametrize("kind", TYPES)
def test_chown_00_lchown_updates_ctime(d: Path, kind: str) -> None:
    # chown/00.t: "expect 0 lchown ${n0} 65534 65533" then ctime1 < ctime2.
    n0 = d / "n0"
    create_file(kind, n0)
    ctime1 = lstat(n0, "ctime")
    nap()
    expect("0", "lchown", n0, NOBODY, 65533)
    assert ctime1 < lstat(n0, "ctime"), "chown/00.t: lchown did not update ctime"
    remove(kind, n0)


@pytest.mark.parametrize("kind", TYPES)
def test_chown_00_failure_keeps_ctime(d: Path, kind: str) -> None:
    # chown/00.t: "unsuccessful chown(2) does not update ctime":
    # "expect EPERM -u 65534 -- lchown ${n0} 65534 -1" and two more, then ctime unchanged.
    n0 = d / "n0"
    create_file(kind, n0)
    ctime1 = lstat(n0, "ctime")
    nap()
    expect("EPERM", "lchown", n0, NOBODY, -1, u=NOBODY)
    expect("EPERM", "lchown", n0, -1, NOBODY, u=NOBODY, g=NOBODY)
    expect("EPERM", "lchown", n0, NOBODY, NOBODY, u=NOBODY, g=NOBODY)
    assert lstat(n0, "ctime") == ctime1, "chown/00.t: a refused chown changed ctime"
    expect((0, 0), "lstat", n0, "uid,gid")
    remove(kind, n0)


@pytest.mark.parametrize("kind", NOT_SYMLINK)
def test_chown_07_eperm_unless_owner_and_member(d: Path, kind: str) -> None:
    # chown/07.t: "chown returns EPERM if the operation would change the ownership, but the
    # effective user ID is not the super-user and the process is not an owner of the file".
    n1, n2, n3 = d / "n1", d / "n1" / "n2", d / "n1" / "n3"
    expect("0", "mkdir", n1, 0o755)
    expect("0", "chown", n1, NOBODY, NOBODY)
    create_file(kind, n2, NOBODY, NOBODY)
    expect("EPERM", "chown", n2, 65533, 65533, u=NOBODY, g=NOBODY)
    expect("EPERM", "chown", n2, NOBODY, NOBODY, u=65533, g=65533)
    expect("EPERM", "chown", n2, 65533, 65533, u=65533, g=65533)
    expect("EPERM", "chown", n2, -1, 65533, u=NOBODY, g=NOBODY)
    expect("0", "symlink", "n2", n3, u=NOBODY, g=NOBODY)
    expect("EPERM", "chown", n3, 65533, 65533, u=NOBODY, g=NOBODY)
    expect("EPERM", "chown", n3, -1, 65533, u=NOBODY, g=NOBODY)
    expect("EPERM", "lchown", n2, 65533, 65533, u=NOBODY, g=NOBODY)
    expect("EPERM", "lchown", n2, -1, 65533, u=NOBODY, g=NOBODY)
    expect((NOBODY, NOBODY), "lstat", n2, "uid,gid")
