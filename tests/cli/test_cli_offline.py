"""The CLI on pools that are not mounted: creating, adding disks, reports, and refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clihelpers import assert_error, cli, cli_json, make_pool


def test_version() -> None:
    proc = cli("--version")
    assert proc.stdout.startswith("dynamicfs ")


def test_init_defaults(tmp_path: Path) -> None:
    report = cli_json("init", tmp_path / "pool")
    assert report["policy"] == "rep:2"
    assert report["block_size"] == 1 << 20
    assert report["pool"] == str(tmp_path / "pool")
    status = cli_json("status", tmp_path / "pool")
    assert status["uuid"] == report["uuid"]
    assert status["disks"] == 0


def test_init_options(tmp_path: Path) -> None:
    cli("init", tmp_path / "pool", "--policy", "ec:4+2", "--block-size", "256K")
    status = cli_json("status", tmp_path / "pool")
    assert (status["policy"], status["block_size"]) == ("ec:4+2", 256 << 10)


@pytest.mark.parametrize(("policy", "block"), [
    ("rep:3", 1 << 20), ("ec:2+1", 2 << 20), ("ec:3+2", 2 << 20), ("ec:4+2", 4 << 20),
    ("ec:10+4", 4 << 20)])
def test_init_picks_larger_blocks_for_erasure_coding(tmp_path: Path, policy: str,
                                                    block: int) -> None:
    """ec:K+M pools default to data fragments of about 1 MiB (blocks of up to 4 MiB)."""
    report = cli_json("init", tmp_path / "pool", "--policy", policy)
    assert report["block_size"] == block
    assert cli_json("status", tmp_path / "pool")["block_size"] == block
    assert f"block size {block >> 20}.0 MiB" in cli("init", tmp_path / "other", "--policy",
                                                    policy).stdout


def test_add_and_list_disks(tmp_path: Path) -> None:
    pool = make_pool(tmp_path, 3)
    (tmp_path / "fast").mkdir()
    disk = cli_json("add-disk", pool, tmp_path / "fast", "--tier", "fast", "--capacity", "64M")
    assert disk["tier"] == "fast" and disk["capacity"] == 64 << 20
    report = cli_json("list-disks", pool)
    assert report["mounted"] is False and report["source"] == "disk"
    disks = report["disks"]
    assert [d["id"] for d in disks] == [1, 2, 3, 4]
    assert [d["path"] for d in disks] == [str(tmp_path / f"disk{i}") for i in (1, 2, 3)] + [
        str(tmp_path / "fast")]
    for d in disks:
        for key in ("id", "path", "tier", "state", "capacity", "used", "free", "fragments",
                    "read_errors", "write_errors", "checksum_errors"):
            assert key in d
        assert isinstance(d["capacity"], int) and isinstance(d["free"], int)


def test_list_disks_table(pool: Path) -> None:
    out = cli("list-disks", pool).stdout
    header = out.splitlines()[0].split()
    assert header[:8] == ["id", "path", "tier", "state", "capacity", "used", "free", "fragments"]
    assert str(pool.parent / "disk4") in out
    assert "GiB" in out or "MiB" in out or "TiB" in out  # sizes are human-readable


def test_status_table_and_json(pool: Path) -> None:
    out = cli("status", pool).stdout
    assert "not mounted" in out and "rep:2" in out
    report = cli_json("status", pool)
    assert report["mounted"] is False
    assert report["disks"] == 4 and report["health"] == "ok"
    assert json.loads(json.dumps(report)) == report


def test_set_policy_offline(pool: Path) -> None:
    cli("set-policy", pool, "ec:2+2")
    assert cli_json("status", pool)["policy"] == "ec:2+2"
    assert_error(cli("set-policy", pool, "ec:4+2", check=False), 1, "add-disk")
    assert cli_json("status", pool)["policy"] == "ec:2+2"


@pytest.mark.parametrize("args", [
    ["--policy", "rep:0"], ["--policy", "raid5"], ["--policy", "ec:4"],
    ["--block-size", "lots"], ["--block-size", "3K"], ["--block-size", "-1M"],
    ["--frobnicate"],
])
def test_init_bad_arguments(tmp_path: Path, args: list[str]) -> None:
    assert_error(cli("init", tmp_path / "pool", *args, check=False))
    assert not (tmp_path / "pool" / "pool.json").exists()


def test_init_refuses_non_empty_and_existing(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert_error(cli("init", tmp_path / "full", check=False), None, "not empty")
    cli("init", tmp_path / "pool")
    assert_error(cli("init", tmp_path / "pool", check=False), None, "already")


def test_add_disk_refusals(tmp_path: Path) -> None:
    pool = make_pool(tmp_path, 1)
    (pool / "inner").mkdir()
    assert_error(cli("add-disk", pool, pool / "inner", check=False), None, "pool directory")
    assert_error(cli("add-disk", pool, tmp_path / "disk1", check=False), None, "already disk")
    assert_error(cli("add-disk", pool, tmp_path / "disk1" / "sub", check=False), None,
                 "overlaps")
    (tmp_path / "file").write_text("x")
    assert_error(cli("add-disk", pool, tmp_path / "file", check=False), None,
                 "not a directory")
    (tmp_path / "d").mkdir()
    assert_error(cli("add-disk", pool, tmp_path / "d", "--capacity", "big", check=False), 2)
    assert_error(cli("add-disk", pool, tmp_path / "d", "--tier", "warm", check=False), 2)
    assert len(cli_json("list-disks", pool)["disks"]) == 1


def test_disk_of_another_pool(tmp_path: Path) -> None:
    make_pool(tmp_path, 1)
    other = tmp_path / "other"
    cli("init", other)
    assert_error(cli("add-disk", other, tmp_path / "disk1", check=False), None, "another pool")


@pytest.mark.parametrize("verb", [["status"], ["list-disks"], ["set-policy", "{p}", "rep:2"],
                                  ["add-disk", "{p}", "{p}x"]])
def test_nonexistent_pool(tmp_path: Path, verb: list[str]) -> None:
    p = tmp_path / "nope"
    args = [a.format(p=p) for a in verb]
    if len(args) == 1:
        args.append(str(p))
    assert_error(cli(*args, check=False), None, "not a DynamicFS pool")


def test_mount_refuses_unsatisfiable_policy(tmp_path: Path) -> None:
    pool = make_pool(tmp_path, 2, "--policy", "rep:3")
    (tmp_path / "mnt").mkdir()
    assert_error(cli("mount", pool, tmp_path / "mnt", check=False), None, "add-disk", "3 disks")


def test_mount_refusals(pool: Path, tmp_path: Path) -> None:
    assert_error(cli("mount", pool, tmp_path / "absent", check=False), None, "does not exist")
    assert_error(cli("mount", pool, pool, check=False), None, "overlaps the pool")
    assert_error(cli("mount", pool, tmp_path / "disk2", check=False), None, "overlaps disk")
    (tmp_path / "mnt").mkdir()
    assert_error(cli("mount", pool, tmp_path / "mnt", "-o", "suid", check=False), None, "suid")


def test_umount_not_mounted(pool: Path, tmp_path: Path) -> None:
    assert_error(cli("umount", pool, check=False), 1, "not mounted")
    assert_error(cli("umount", tmp_path, check=False), 1, "not mounted")


def test_usage_errors_are_one_line() -> None:
    for args in ([], ["frob"], ["status"], ["mount", "x"]):
        assert_error(cli(*args, check=False), 2)


def test_unexpected_error_is_one_line_unless_debugging(pool: Path) -> None:
    config = pool / "pool.json"
    config.write_text('{"format": 1, "uuid": "not-a-uuid"}\n')
    line = assert_error(cli("status", pool, check=False), 1, "DYNAMICFS_DEBUG")
    assert "unexpected" in line
    env = {**os.environ, "DYNAMICFS_DEBUG": "1"}
    proc = subprocess.run([sys.executable, "-m", "dynamicfs", "status", str(pool)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1 and "Traceback" in proc.stderr
