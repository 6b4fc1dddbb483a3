"""The path-resolution errors every pjdfstest syscall directory repeats in its first files
(numbers vary a little by call: e.g. ELOOP is chmod/06.t, mkdir/07.t, open/12.t, rmdir/05.t,
truncate/07.t, unlink/07.t; EACCES for search is chmod/05.t, open/05.t, rmdir/07.t...):

    ENOTDIR       a component of the path prefix is not a directory      (01.t)
    ENAMETOOLONG  a component is longer than NAME_MAX (255)              (02.t)
    ENAMETOOLONG  the whole path is PATH_MAX (4096) bytes or more        (03.t)
    ENOENT        a component of the path prefix does not exist          (04.t)
    EACCES        search permission is denied on a component of the prefix
    ELOOP         too many symbolic links in the prefix (symlink loop)

plus "EACCES when write permission is denied on the directory" (the 06/07/08.t files of the
creating and removing calls). One table row per syscall and error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pjdlib import expect

NOBODY = 65534

# How each syscall is called with `p` as the path under test; `d` holds a regular file "f"
# and a directory "dd" to serve as the other argument of link/rename.
CALLS: dict[str, Callable[[Path | str, Path], tuple]] = {
    "chmod": lambda p, d: ("chmod", p, 0o644),
    "chown": lambda p, d: ("chown", p, NOBODY, NOBODY),
    "lchown": lambda p, d: ("lchown", p, NOBODY, NOBODY),
    "link_from": lambda p, d: ("link", p, d / "new"),
    "link_to": lambda p, d: ("link", d / "f", p),
    "mkdir": lambda p, d: ("mkdir", p, 0o755),
    "mkfifo": lambda p, d: ("mkfifo", p, 0o644),
    "mknod": lambda p, d: ("mknod", p, "f", 0o644),
    "open": lambda p, d: ("open", p, os.O_RDONLY),
    "open_creat": lambda p, d: ("open", p, os.O_CREAT | os.O_WRONLY, 0o644),
    "rename_from": lambda p, d: ("rename", p, d / "new"),
    "rename_to": lambda p, d: ("rename", d / "f", p),
    "rmdir": lambda p, d: ("rmdir", p),
    "symlink": lambda p, d: ("symlink", "test", p),
    "truncate": lambda p, d: ("truncate", p, 123),
    "unlink": lambda p, d: ("unlink", p),
    "utimensat": lambda p, d: ("utimensat", p, 1900000000, 0, 1950000000, 0),
    "readlink": lambda p, d: ("readlink", p),
}


def _setup(d: Path) -> None:
    expect("0", "create", d / "f", 0o644)
    expect("0", "mkdir", d / "dd", 0o755)


@pytest.mark.parametrize("call", CALLS)
def test_01_enotdir(d: Path, call: str) -> None:
    _setup(d)
    expect("ENOTDIR", *CALLS[call](d / "f" / "test", d))


@pytest.mark.parametrize("call", CALLS)
def test_02_enametoolong_component(d: Path, call: str) -> None:
    _setup(d)
    expect("ENAMETOOLONG", *CALLS[call](d / ("x" * 256), d))
    expect("ENAMETOOLONG", *CALLS[call](d / ("x" * 256) / "test", d))


@pytest.mark.parametrize("call", CALLS)
def test_04_enoent_prefix(d: Path, call: str) -> None:
    _setup(d)
    expect("ENOENT", *CALLS[call](d / "missing" / "test", d))


@pytest.mark.parametrize("call", CALLS)
def test_05_eacces_search(d: Path, call: str) -> None:
    _setup(d)
    n1 = d / "n1"
    expect("0", "mkdir", n1, 0o755)
    expect("0", "chown", n1, NOBODY, NOBODY)
    expect("0", "chown", d / "dd", NOBODY, NOBODY)
    expect("0", "create", d / "dd" / "f", 0o644, u=NOBODY, g=NOBODY)
    expect("0", "create", n1 / "n2", 0o644, u=NOBODY, g=NOBODY)
    expect("0", "chmod", n1, 0o644)
    # The other argument (dd/f, dd/new) stays reachable: only the prefix is refused.
    expect("EACCES", *CALLS[call](n1 / "n2", d / "dd"), u=NOBODY, g=NOBODY)


@pytest.mark.parametrize("call", CALLS)
def test_eloop_prefix(d: Path, call: str) -> None:
    _setup(d)
    expect("0", "symlink", "l1", d / "l0")
    expect("0", "symlink", "l0", d / "l1")
    expect("ELOOP", *CALLS[call](d / "l0" / "test", d))


FOLLOWING = ["chmod", "chown", "open", "open_creat", "truncate", "utimensat"]


@pytest.mark.parametrize("call", FOLLOWING)
def test_eloop_last_component(d: Path, call: str) -> None:
    # chmod/06.t, chown/06.t, open/12.t, truncate/07.t: calls that follow the last symlink.
    _setup(d)
    expect("0", "symlink", "l1", d / "l0")
    expect("0", "symlink", "l0", d / "l1")
    expect("ELOOP", *CALLS[call](d / "l0", d))


# Calls that create or remove a name need write permission on its directory, and what each
# needs to find there first.
WRITE_NEEDED = {
    "link_to": None, "mkdir": None, "mkfifo": None, "mknod": None, "open_creat": None,
    "symlink": None, "rename_to": None, "unlink": "file", "rmdir": "dir",
    "rename_from": "file",
}


@pytest.mark.parametrize("call", WRITE_NEEDED)
def test_eacces_write_on_directory(d: Path, call: str) -> None:
    # mkdir/06.t, mkfifo/06.t, mknod/06.t, open/08.t, symlink/06.t, link/07.t, unlink/06.t,
    # rmdir/08.t and rename's equivalent: "expect 0 chmod ${n1} 0555" /
    # "expect EACCES -u 65534 -g 65534 ...".
    n1 = d / "n1"
    expect("0", "mkdir", n1, 0o755)
    expect("0", "chown", n1, NOBODY, NOBODY)
    expect("0", "mkdir", d / "other", 0o755)
    expect("0", "chown", d / "other", NOBODY, NOBODY)
    expect("0", "create", d / "other" / "f", 0o644, u=NOBODY, g=NOBODY)
    expect("0", "mkdir", d / "other" / "dd", 0o755, u=NOBODY, g=NOBODY)
    target = n1 / "n2"
    need = WRITE_NEEDED[call]
    if need == "file":
        expect("0", "create", target, 0o644, u=NOBODY, g=NOBODY)
    elif need == "dir":
        expect("0", "mkdir", target, 0o755, u=NOBODY, g=NOBODY)
    expect("0", "chmod", n1, 0o555)
    expect("EACCES", *CALLS[call](target, d / "other"), u=NOBODY, g=NOBODY)
    expect({None: "ENOENT", "file": "regular", "dir": "dir"}[need], "lstat", target, "type")


@pytest.fixture
def inside(d: Path) -> Iterator[Path]:
    here = os.getcwd()
    os.chdir(d)
    try:
        yield d
    finally:
        os.chdir(here)


def _long_relative_path() -> str:
    # misc.sh dirgen_max: NAME_MAX/2-byte components up to PATH_MAX - 1 bytes.
    name = ""
    i = 0
    while len(name) < 4095:
        name += f"{i:0127d}/"
        i += 1
    name = name[:4095]
    return name[:-1] + "x" if name.endswith("/") else name


@pytest.mark.parametrize("call", [c for c in CALLS if c not in ("link_from", "rename_from")])
def test_03_enametoolong_path(inside: Path, call: str) -> None:
    # The 03.t files: "expect 0 <call> ${nx}" works with a PATH_MAX - 1 path (for the creating
    # calls), and "expect ENAMETOOLONG <call> ${nxx}" for PATH_MAX bytes.
    _setup(Path("."))
    nx = _long_relative_path()
    parent = nx.rsplit("/", 1)[0]
    fd = os.open(".", os.O_RDONLY)
    try:
        for comp in parent.split("/"):
            os.mkdir(comp, 0o755, dir_fd=fd)
            nfd = os.open(comp, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
    finally:
        os.close(fd)
    here = Path(".")
    if call in ("mkdir", "mkfifo", "mknod", "open_creat", "symlink", "link_to", "rename_to"):
        expect("0", *CALLS[call](nx, here))
        expect("0", "rmdir" if call == "mkdir" else "unlink", nx)
    expect("ENAMETOOLONG", *CALLS[call](nx + "x", here))
