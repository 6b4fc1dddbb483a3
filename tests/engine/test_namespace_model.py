"""Random sequences of namespace operations (mkdir, create, link, unlink, rmdir, rename with
its flags) on a tiny alphabet of names, so that collisions, loops and type conflicts are common.

Whatever the engine accepts is applied to a nested-dict model; at the end the engine's tree
must equal the model (hard links included) and fsck must find nothing. Errno values are the
business of test_namespace.py; here an operation may fail, but never leave a wrong tree.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from itertools import count
from pathlib import Path

from conftest import ROOT, make_pool, run_in_pool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamicfs.engine.types import RENAME_EXCHANGE, RENAME_NOREPLACE, ROOT_CTX
from dynamicfs.errors import FsError
from dynamicfs.meta import inodes as mino

NAMES = st.sampled_from([b"a", b"b", b"c"])
# Shallow paths: deep ones mostly fail with ENOENT and test nothing.
PATHS = st.one_of(NAMES.map(lambda n: (n,)), st.tuples(NAMES, NAMES))
PARENTS = st.one_of(st.just(()), NAMES.map(lambda n: (n,)))

OPS = st.one_of(
    st.tuples(st.just("mkdir"), PARENTS, NAMES),
    st.tuples(st.just("create"), PARENTS, NAMES),
    st.tuples(st.just("link"), PATHS, PARENTS, NAMES),
    st.tuples(st.just("unlink"), PATHS),
    st.tuples(st.just("rmdir"), PATHS),
    st.tuples(st.just("rename"), PATHS, PARENTS, NAMES,
              st.sampled_from([0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE])),
)

# Every sequence starts from this tree, so that the random operations find things to collide
# with: /a/{a,b/}, /b/{c,a=hard link of /c}, /c.
SETUP = [("mkdir", (), b"a"), ("mkdir", (), b"b"), ("create", (), b"c"),
         ("create", (b"a",), b"a"), ("mkdir", (b"a",), b"b"), ("create", (b"b",), b"c"),
         ("link", (b"c",), (b"b",), b"a")]

Model = dict  # name -> Model (a directory) or int (a file id; hard links share it)


def assert_cache_true(engine) -> None:
    for (ino,) in engine.db.query("SELECT id FROM inodes"):
        row = mino.InodeRow(*engine.db.get_row(
            f"SELECT {mino._COLS} FROM inodes WHERE id=?", (ino,)))
        assert mino.get_inode(engine.db, ino) == row, ino
        if row.nlink:
            assert engine.ns.getattr(ino) == engine.ns._make_attr(row), ino


def model_at(model: Model, path: tuple[bytes, ...]) -> Model | int:
    node: Model | int = model
    for name in path:
        assert isinstance(node, dict), f"engine accepted a path through a file: {path}"
        node = node[name]
    return node


async def resolve(engine, path: tuple[bytes, ...]) -> int:
    ino = ROOT
    for name in path:
        attr = await engine.lookup(ino, name)
        await engine.forget([(attr.ino, 1)])
        ino = attr.ino
    return ino


async def apply(engine, model: Model, op: tuple, ids) -> None:
    kind = op[0]
    try:
        if kind in ("mkdir", "create"):
            parent_path, name = op[1], op[2]
            parent = await resolve(engine, parent_path)
            if kind == "mkdir":
                attr = await engine.mkdir(parent, name, 0o755, ROOT_CTX)
            else:
                fh, attr = await engine.create(parent, name, 0o644, os.O_RDWR, ROOT_CTX)
                await engine.release(fh)
            await engine.forget([(attr.ino, 1)])
            model_at(model, parent_path)[name] = {} if kind == "mkdir" else next(ids)
        elif kind == "link":
            src, parent_path, name = op[1], op[2], op[3]
            ino = await resolve(engine, src)
            parent = await resolve(engine, parent_path)
            await engine.link(ino, parent, name, ROOT_CTX)
            await engine.forget([(ino, 1)])
            node = model_at(model, src)
            assert isinstance(node, int), "engine hard-linked a directory"
            model_at(model, parent_path)[name] = node
        elif kind in ("unlink", "rmdir"):
            path = op[1]
            parent = await resolve(engine, path[:-1])
            await (engine.unlink if kind == "unlink" else engine.rmdir)(parent, path[-1])
            container = model_at(model, path[:-1])
            gone = container.pop(path[-1])
            assert isinstance(gone, dict) == (kind == "rmdir")
            assert gone == {} or not isinstance(gone, dict), "rmdir of a non-empty directory"
        else:
            src, parent_path, name, flags = op[1:]
            old_parent = await resolve(engine, src[:-1])
            new_parent = await resolve(engine, parent_path)
            await engine.rename(old_parent, src[-1], new_parent, name, flags)
            rename_model(model, src, parent_path, name, flags)
    except FsError:
        pass


def rename_model(model: Model, src: tuple, parent_path: tuple, name: bytes, flags: int) -> None:
    src_dir = model_at(model, src[:-1])
    dst_dir = model_at(model, parent_path)
    assert isinstance(src_dir, dict) and isinstance(dst_dir, dict)
    moving = src_dir[src[-1]]
    if flags & RENAME_EXCHANGE:
        src_dir[src[-1]], dst_dir[name] = dst_dir[name], moving
        return
    existing = dst_dir.get(name)
    if existing is not None and existing is moving:
        return  # the same entry
    if isinstance(moving, int) and existing == moving:
        return  # two names of one file: POSIX says nothing happens
    assert not (flags & RENAME_NOREPLACE and existing is not None), "NOREPLACE replaced"
    assert existing is None or existing == {} or isinstance(existing, int), \
        "renamed over a non-empty directory"
    del src_dir[src[-1]]
    dst_dir[name] = moving


async def engine_tree(engine, ino: int = ROOT) -> tuple[dict, dict[int, int]]:
    """The tree as nested dicts with files as inode numbers, and nlink per file inode."""
    tree: dict = {}
    nlinks: dict[int, int] = {}
    for e in await engine.readdir(ino, 0):
        if e.name in (b".", b".."):
            continue
        if stat.S_ISDIR(e.attr.mode):
            tree[e.name], sub = await engine_tree(engine, e.attr.ino)
            nlinks.update(sub)
        else:
            tree[e.name] = e.attr.ino
            nlinks[e.attr.ino] = e.attr.nlink
    return tree, nlinks


def same_shape(model: Model, tree: dict, mapping: dict[int, int]) -> bool:
    """True when the trees match with model file ids mapped one-to-one onto inodes."""
    if model.keys() != tree.keys():
        return False
    for name, node in model.items():
        other = tree[name]
        if isinstance(node, dict):
            if not isinstance(other, dict) or not same_shape(node, other, mapping):
                return False
        elif isinstance(other, dict) or mapping.setdefault(node, other) != other:
            return False
    return len(set(mapping.values())) == len(mapping)


def names_per_file(model: Model, out: dict[int, int]) -> dict[int, int]:
    for node in model.values():
        if isinstance(node, dict):
            names_per_file(node, out)
        else:
            out[node] = out.get(node, 0) + 1
    return out


@settings(max_examples=int(os.environ.get("DYNAMICFS_MODEL_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, min_size=1, max_size=25))
def test_random_namespace_operations_match_the_model(ops):
    tmp = Path(tempfile.mkdtemp(prefix="dynfs-ns-"))
    try:
        path = make_pool(tmp, 2, "rep:2")
        model: Model = {}

        async def body(engine):
            ids = count(1)
            for op in SETUP:
                await apply(engine, model, op, ids)
            assert len(model) == 3 and len(model[b"a"]) == 2 and len(model[b"b"]) == 2
            for op in ops:
                await apply(engine, model, op, ids)
                # Attributes come from a row cache: it must agree with SQLite after every
                # operation, the failed ones included. Listings are kept between operations:
                # they must show every one of them.
                assert_cache_true(engine)
                tree, nlinks = await engine_tree(engine)
                mapping: dict[int, int] = {}
                assert same_shape(model, tree, mapping), (op, model, tree)
                for fid, n in names_per_file(model, {}).items():
                    assert nlinks[mapping[fid]] == n, op

        run_in_pool(path, body)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
