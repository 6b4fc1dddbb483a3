"""The CLI against a mounted pool: reports over the control socket, changes while mounted,
the one-mount lock, and every way of unmounting (umount, fusermount3 -u, SIGTERM)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from clihelpers import Mount, assert_error, cli, cli_json, wait_for
from fusemount import FUSERMOUNT, in_mountinfo, pid_running

pytestmark = pytest.mark.mount


def _pid(m: Mount) -> int:
    return int(json.loads((m.pool / "mounted").read_text())["pid"])


def test_reports_come_from_the_daemon(mounted: Mount) -> None:
    pid = _pid(mounted)
    status = cli_json("status", mounted.pool)
    assert status["mounted"] is True and status["source"] == "daemon"
    assert status["mountpoint"] == str(mounted.mnt) and status["pid"] == pid
    assert status["disks"] == 4 and status["policy"] == "rep:2"
    disks = cli_json("list-disks", mounted.pool)
    assert disks["mounted"] is True and disks["source"] == "daemon"
    assert len(disks["disks"]) == 4
    assert f"mounted on {mounted.mnt}" in cli("status", mounted.pool).stdout
    assert str(mounted.pool.parent / "disk1") in cli("list-disks", mounted.pool).stdout


def test_control_socket_is_private(mounted: Mount) -> None:
    sock = mounted.pool / "control.sock"
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.stat(mounted.pool).st_uid


def test_peer_credentials_are_checked(mounted: Mount) -> None:
    """Even with the file mode opened up, a stranger's connection is refused."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("needs a system python3 that user nobody may run")
    sock = mounted.pool / "control.sock"
    # pytest's tmp directories are private; a hard link reaches the same socket from outside.
    public = Path(tempfile.mkdtemp(prefix="dynamicfs-peer-", dir="/tmp"))
    os.chmod(public, 0o755)
    link = public / "control.sock"
    os.link(sock, link)
    os.chmod(link, 0o666)
    # The refusal comes as soon as the connection is accepted, before any request.
    script = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]);"
              "print(s.recv(4096).decode())")
    try:
        proc = subprocess.run([python, "-c", script, str(link)], capture_output=True,
                              text=True, user=65534, group=65534, timeout=30)
    finally:
        os.chmod(sock, 0o600)
        link.unlink()
        public.rmdir()
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout)
    assert reply["ok"] is False and "permission denied" in reply["error"]
    assert cli_json("status", mounted.pool)["mounted"] is True


def test_protocol_errors_do_not_hurt_the_daemon(mounted: Mount) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(mounted.pool / "control.sock"))
        f = s.makefile("rwb")
        for line in (b"not json\n", b"[1]\n", b'{"op": "frob"}\n',
                     b'{"op": "add-disk", "args": {"path": 3}}\n',
                     b'{"op": "set-policy", "args": {"policy": "rep:x"}}\n',
                     b'{"op": "ping"}\n'):
            f.write(line)
            f.flush()
            reply = json.loads(f.readline())
            if line.startswith(b'{"op": "ping"'):
                assert reply["ok"] is True and reply["result"]["pid"] == _pid(mounted)
            else:
                assert reply["ok"] is False and reply["exit_code"] == 2
                assert "\n" not in reply["error"]
    assert cli_json("status", mounted.pool)["mounted"] is True


def test_second_mount_refused(mounted: Mount, tmp_path: Path) -> None:
    other = tmp_path / "mnt2"
    other.mkdir()
    assert_error(cli("mount", mounted.pool, other, check=False), 3, "already mounted")
    assert_error(cli("mount", "--foreground", mounted.pool, other, check=False), 3)
    assert not in_mountinfo(other)
    # A different pool may not stack on the same mountpoint either.
    pool2 = tmp_path / "pool2"
    cli("init", pool2, "--policy", "rep:1")
    (tmp_path / "d2").mkdir()
    cli("add-disk", pool2, tmp_path / "d2")
    assert_error(cli("mount", pool2, mounted.mnt, check=False), 3, "already has a DynamicFS")


def test_second_mount_refused_by_the_lock(mounted: Mount, tmp_path: Path) -> None:
    """With the socket out of the way, the pool lock still says no, to mounts and writes."""
    sock = mounted.pool / "control.sock"
    hidden = mounted.pool / "control.sock.hidden"
    other = tmp_path / "mnt2"
    other.mkdir()
    os.rename(sock, hidden)
    try:
        assert_error(cli("mount", mounted.pool, other, check=False), 3, "in use")
        (tmp_path / "d9").mkdir()
        assert_error(cli("add-disk", mounted.pool, tmp_path / "d9", check=False), 3,
                     "does not answer")
        assert_error(cli("set-policy", mounted.pool, "rep:3", check=False), 3)
        proc = cli("status", mounted.pool, "--json")
        assert json.loads(proc.stdout)["source"] == "disk"
        assert "does not answer" in proc.stderr
    finally:
        os.rename(hidden, sock)
    assert not in_mountinfo(other)
    assert len(cli_json("list-disks", mounted.pool)["disks"]) == 4


def test_add_disk_and_set_policy_while_mounted(mounted: Mount, tmp_path: Path) -> None:
    (tmp_path / "disk5").mkdir()
    disk = cli_json("add-disk", mounted.pool, tmp_path / "disk5")
    assert disk["id"] == 5 and disk["path"] == str(tmp_path / "disk5")
    report = cli_json("list-disks", mounted.pool)
    assert report["source"] == "daemon" and len(report["disks"]) == 5
    assert (tmp_path / "disk5" / "fragments").exists() or any((tmp_path / "disk5").iterdir())
    assert_error(cli("add-disk", mounted.pool, mounted.mnt / "sub", check=False), 1,
                 "mountpoint")
    assert_error(cli("add-disk", mounted.pool, tmp_path / "disk5", check=False), 1, "already")
    cli("set-policy", mounted.pool, "ec:3+2")
    assert cli_json("status", mounted.pool)["policy"] == "ec:3+2"
    assert_error(cli("set-policy", mounted.pool, "ec:4+2", check=False), 1, "add-disk")
    # Data written under the new policy reads back, and survives a remount.
    (mounted.mnt / "f").write_bytes(os.urandom(3 << 20))
    data = (mounted.mnt / "f").read_bytes()
    cli("umount", mounted.mnt)
    mounted.mount()
    assert (mounted.mnt / "f").read_bytes() == data
    assert cli_json("status", mounted.pool)["policy"] == "ec:3+2"


def test_umount_then_remount(mounted: Mount) -> None:
    pid = _pid(mounted)
    mounted_keys = set(cli_json("status", mounted.pool))
    mounted_disk_keys = set(cli_json("list-disks", mounted.pool)["disks"][0])
    (mounted.mnt / "dir").mkdir()
    payload = os.urandom(5 << 20) + b"tail"
    (mounted.mnt / "dir" / "file").write_bytes(payload)
    proc = cli("umount", mounted.mnt)
    assert "unmounted" in proc.stdout
    # umount returns only once the daemon has flushed and gone.
    assert not in_mountinfo(mounted.mnt) and not pid_running(pid)
    assert not (mounted.pool / "control.sock").exists()
    assert not (mounted.pool / "mounted").exists()
    assert "unmounted" in mounted.log() and "cleanly" in mounted.log()
    offline = cli_json("status", mounted.pool)
    assert offline["mounted"] is False
    # Scripts may rely on every key of the unmounted report also being there when mounted.
    assert set(offline) <= mounted_keys
    assert set(cli_json("list-disks", mounted.pool)["disks"][0]) == mounted_disk_keys
    assert_error(cli("umount", mounted.mnt, check=False), 1, "not mounted")
    mounted.mount()
    assert (mounted.mnt / "dir" / "file").read_bytes() == payload
    # umount also takes the pool directory.
    cli("umount", mounted.pool)
    assert not in_mountinfo(mounted.mnt)


@pytest.mark.skipif(FUSERMOUNT is None, reason="needs fusermount3")
def test_fusermount_ends_the_daemon(mounted: Mount) -> None:
    pid = _pid(mounted)
    (mounted.mnt / "kept").write_bytes(b"x" * 100_000)
    subprocess.run([str(FUSERMOUNT), "-u", str(mounted.mnt)], check=True)
    wait_for(lambda: not pid_running(pid), "the daemon to exit after fusermount3 -u")
    assert not (mounted.pool / "control.sock").exists()
    assert cli_json("status", mounted.pool)["mounted"] is False
    mounted.mount()
    assert (mounted.mnt / "kept").read_bytes() == b"x" * 100_000


def test_sigterm_unmounts_cleanly(mounted: Mount) -> None:
    pid = _pid(mounted)
    (mounted.mnt / "kept").write_bytes(b"y" * 100_000)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pid_running(pid), "the daemon to exit after SIGTERM")
    assert not in_mountinfo(mounted.mnt)
    assert "unmounted" in mounted.log()
    mounted.mount()
    assert (mounted.mnt / "kept").read_bytes() == b"y" * 100_000


def test_busy_mount_is_not_torn_down(mounted: Mount) -> None:
    holder = subprocess.Popen(["sleep", "60"], cwd=mounted.mnt)
    try:
        assert_error(cli("umount", mounted.mnt, check=False), 3, "busy")
        assert in_mountinfo(mounted.mnt)
        assert cli_json("status", mounted.pool)["mounted"] is True
    finally:
        holder.kill()
        holder.wait()
    cli("umount", mounted.mnt)
    assert not in_mountinfo(mounted.mnt)


def test_dead_daemon_leaves_a_mount_umount_clears(mounted: Mount) -> None:
    pid = _pid(mounted)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_running(pid), "the daemon to die")
    proc = cli("status", mounted.pool, "--json")
    assert json.loads(proc.stdout)["mounted"] is False
    assert "umount" in proc.stderr
    assert_error(cli("mount", mounted.pool, mounted.mnt, check=False), 3, "umount")
    cli("umount", mounted.mnt)
    assert not in_mountinfo(mounted.mnt)
    mounted.mount()
    assert cli_json("status", mounted.pool)["mounted"] is True


def test_foreground_mount(tmp_path: Path, pool: Path) -> None:
    mnt = tmp_path / "fg"
    mnt.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dynamicfs", "mount", "--foreground",
         str(pool), str(mnt)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    m = Mount(pool, mnt)
    m.pids.add(proc.pid)
    try:
        wait_for(lambda: in_mountinfo(mnt) and (pool / "control.sock").exists(),
                 "the foreground mount")
        assert cli_json("status", pool)["pid"] == proc.pid
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "mounted" in out and "Traceback" not in err
        assert not in_mountinfo(mnt)
    finally:
        if proc.poll() is None:
            proc.kill()
        m.cleanup()


def test_daemon_start_failure_is_reported(pool: Path, tmp_path: Path) -> None:
    """An error inside the daemon before it is up reaches the caller as one line."""
    if not os.path.exists("/dev/fuse"):
        pytest.skip("needs /dev/fuse")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    line = assert_error(cli("mount", pool, mnt, "-o", "no_such_option", check=False), 1)
    assert "no_such_option" in line
    assert not in_mountinfo(mnt)
    assert not (pool / "control.sock").exists() and not (pool / "mounted").exists()
    assert "no_such_option" in (pool / "daemon.log").read_text()
    # Nothing was left holding the pool: it mounts at once.
    m = Mount(pool, mnt)
    try:
        m.mount()
    finally:
        m.cleanup()
