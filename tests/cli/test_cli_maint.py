"""The maintenance verbs on unmounted pools: gc, fsck and its repair, and the refusals of
everything that needs (or must not have) a mount."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from clihelpers import assert_error, cli, cli_json

ORPHAN = "ab" * 32


def plant(pool: Path) -> tuple[Path, Path]:
    """An orphan fragment and a crashed writer's temporary file on disk 1."""
    where = pool.parent / "disk1" / "fragments" / "ab" / "ab"
    where.mkdir(parents=True)
    orphan = where / f"{ORPHAN}.0"
    orphan.write_bytes(b"x" * 1000)
    tmp = where / f".tmp.{ORPHAN}.1.999999.1"
    tmp.write_bytes(b"y" * 24)
    return orphan, tmp


def sql(pool: Path, *statements: str) -> None:
    conn = sqlite3.connect(pool / "meta.db")
    try:
        for s in statements:
            conn.execute(s)
        conn.commit()
    finally:
        conn.close()


def test_gc_offline_dry_run_then_for_real(pool: Path) -> None:
    orphan, tmp = plant(pool)
    dry = cli_json("gc", pool, "--dry-run")
    assert (dry["orphan_fragments"], dry["temp_files"], dry["bytes_reclaimed"]) == (1, 1, 1024)
    assert dry["dry_run"] is True and dry["mounted"] is False
    assert orphan.exists() and tmp.exists()
    real = cli_json("gc", pool)
    assert (real["orphan_fragments"], real["temp_files"], real["bytes_reclaimed"]) == (1, 1, 1024)
    assert not orphan.exists() and not tmp.exists()
    again = cli("gc", pool).stdout
    assert again.startswith("removed 0 orphan fragments and 0 temporary files")


def test_gc_text_report(pool: Path) -> None:
    plant(pool)
    out = cli("gc", pool, "--dry-run").stdout
    assert out.startswith("would remove 1 orphan fragments and 1 temporary files; would reclaim "
                          "1.0 KiB")


def test_gc_refuses_what_is_not_a_pool(tmp_path: Path) -> None:
    assert_error(cli("gc", tmp_path, check=False), 1, "not a DynamicFS pool")


def test_fsck_clean_pool(pool: Path) -> None:
    report = cli_json("fsck", pool)
    assert report["clean"] is True and report["problems"] == []
    assert "refcounts" in report["checks"]
    assert "no problems found" in cli("fsck", pool, "--verify-data").stdout


def test_fsck_reports_repairs_and_is_clean_after(pool: Path) -> None:
    plant(pool)
    sql(pool, "UPDATE inodes SET nlink = 7 WHERE id = 1")
    proc = cli("fsck", pool, "--json", check=False)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert {p["check"] for p in report["problems"]} == {"link_counts", "orphan_files"}
    assert report["clean"] is False
    assert "3 problems found" in cli("fsck", pool, check=False).stdout

    fixed = cli_json("fsck", pool, "--repair")
    assert fixed["clean"] is True and fixed["remaining"] == []
    assert {r["check"] for r in fixed["repairs"]} == {"link_counts", "orphan_files"}
    assert any("nlink 7 -> 2" in r["action"] for r in fixed["repairs"])
    assert cli_json("fsck", pool)["clean"] is True


def test_fsck_repair_leaves_what_is_unsafe_and_exits_1(pool: Path) -> None:
    sql(pool, "INSERT INTO inodes (id, mode, uid, gid, size, nlink, atime_ns, mtime_ns,"
              " ctime_ns) VALUES (5, 41471, 0, 0, 3, 1, 0, 0, 0)",
        "INSERT INTO dentries (parent, name, inode) VALUES (1, x'6c', 5)")
    proc = cli("fsck", pool, "--repair", check=False)
    assert proc.returncode == 1
    assert "problems remain" in proc.stdout and "symlink 5 has no target" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_fsck_bad_usage(pool: Path, tmp_path: Path) -> None:
    assert_error(cli("fsck", pool, "--force", check=False), 2, "--force")
    assert_error(cli("fsck", pool, "--disk", tmp_path, check=False), 2, "--disk")
    assert_error(cli("fsck", pool, "--repair", "--rebuild-metadata", check=False), 2)
    assert_error(cli("fsck", tmp_path / "nope", check=False), 1, "does not exist")
    assert_error(cli("fsck", tmp_path, check=False), 1, "not a DynamicFS pool")


def test_fsck_while_another_process_holds_the_lock(pool: Path) -> None:
    import fcntl
    import os

    fd = os.open(pool / "lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert_error(cli("fsck", pool, check=False), 3, "in use")
    finally:
        os.close(fd)


def test_damaged_database_points_at_restore(pool: Path) -> None:
    (pool / "meta.db").write_bytes(b"not a database at all" * 100)
    line = assert_error(cli("fsck", pool, check=False), 1)
    assert "--restore-metadata" in line


def test_fault_verbs_need_a_mount(pool: Path) -> None:
    for args in (("inject-fault", pool, "--disk", 1, "--op", "read", "--corrupt"),
                 ("clear-faults", pool), ("list-faults", pool)):
        assert_error(cli(*args, check=False), 4, "not mounted", "vanish at unmount")


def test_inject_fault_bad_input(pool: Path) -> None:
    base = ("inject-fault", pool, "--disk", "1")
    assert_error(cli(*base, "--op", "write", "--corrupt", check=False), 2, "only reads")
    assert_error(cli(*base, "--op", "read", check=False), 2)  # no kind of fault
    assert_error(cli(*base, "--op", "read", "--error", "ENOENT", check=False), 2)
    assert_error(cli(*base, "--op", "read", "--corrupt", "--probability", "0", check=False), 2,
                 "probability")
    assert_error(cli(*base, "--op", "read", "--hang", "0", check=False), 2, "hang")
    assert_error(cli(*base, "--op", "read", "--error", "EIO", "--count", "0", check=False), 2,
                 "count")
    assert_error(cli(*base, "--op", "rename", "--corrupt", check=False), 2)
    assert_error(cli("inject-fault", pool, "--disk", "x", "--op", "read", "--corrupt",
                     check=False), 2)
