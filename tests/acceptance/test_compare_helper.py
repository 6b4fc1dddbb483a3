"""The tree comparison the acceptance tests rely on must itself see every kind of difference
(a comparer that misses differences would make those tests unable to fail). No mount here."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from acclib import build_tree, compare_trees


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("cmp")
    src = base / "src"
    build_tree(src, seed=9, small_files=60)
    return src, base


def _copy(pair: tuple[Path, Path], name: str) -> Path:
    src, base = pair
    dst = base / name
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return dst


def test_identical_copy_has_no_differences(pair: tuple[Path, Path]) -> None:
    assert compare_trees(pair[0], _copy(pair, "same")) == []


def _set_mtime(p: Path) -> None:
    st = os.lstat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1), follow_symlinks=False)


def _flip_content(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 1
    st = os.stat(p)
    p.write_bytes(bytes(data))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def _break_link(p: Path) -> None:
    st = os.stat(p)
    tmp = p.with_name(p.name + ".tmp")
    shutil.copy2(p, tmp)
    os.chown(tmp, st.st_uid, st.st_gid)
    os.replace(tmp, p)


def _retarget(p: Path) -> None:
    target = os.readlink(p)
    p.unlink()
    os.symlink(target + "x", p)


MUTATIONS: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "content": ("big/random-2MiB-1", _flip_content, "sha256"),
    "mode": ("empty/empty-file", lambda p: os.chmod(p, 0o600), "mode"),
    "uid": ("empty/empty-file", lambda p: os.chown(p, 4321, -1), "uid"),
    "gid": ("empty/empty-file", lambda p: os.chown(p, -1, 4321), "gid"),
    "mtime": ("sparse/unaligned", _set_mtime, "mtime_ns"),
    "size": ("sparse/all-hole-10MiB", lambda p: os.truncate(p, 10 << 20 | 1), "size"),
    "xattr": ("empty/empty-dir", lambda p: os.setxattr(p, "user.attr0", b"other"), "xattrs"),
    "hard link": ("hardlinks/quad-a", _break_link, "links"),
    "symlink target": ("symlinks/dangling-rel", _retarget, "target"),
    "missing": ("empty/fifo", lambda p: p.unlink(), "missing"),
}


@pytest.mark.parametrize("kind", list(MUTATIONS))
def test_each_difference_is_reported(pair: tuple[Path, Path], kind: str) -> None:
    rel, mutate, needle = MUTATIONS[kind]
    dst = _copy(pair, f"mut-{kind.replace(' ', '-')}")
    mutate(dst / rel)
    diffs = compare_trees(pair[0], dst)
    assert any(needle in d for d in diffs), f"{kind} change not reported: {diffs}"
