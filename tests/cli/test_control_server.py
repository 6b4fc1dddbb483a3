"""The control server and client without FUSE: a fake engine behind a real Unix socket."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from dynamicfs.control.client import call
from dynamicfs.control.protocol import ControlError, NotMounted
from dynamicfs.control.server import ControlServer
from dynamicfs.errors import DynamicFSError, PoolBusy


class FakeEngine:
    def __init__(self) -> None:
        self.policy = "rep:2"
        self.disks: list[dict[str, Any]] = []
        self.faults: dict[int, list[dict[str, Any]]] = {}  # disks 1 and 2 exist

    def status(self) -> dict[str, Any]:
        return {"policy": self.policy, "disks": len(self.disks)}

    def list_disks(self) -> list[dict[str, Any]]:
        return self.disks

    async def add_disk(self, path: Path, tier: str | None, capacity: int | None,
                       mountpoint: Path | None = None) -> dict[str, Any]:
        await trio.sleep(0)
        if path.name == "busy":
            raise PoolBusy("that disk is busy")
        if path.name == "bug":
            raise RuntimeError("a bug\nover two lines")
        disk = {"id": len(self.disks) + 1, "path": str(path), "tier": tier or "slow"}
        self.disks.append(disk)
        return disk

    def set_policy(self, text: str) -> None:
        if text == "rep:9":
            raise DynamicFSError("policy rep:9 needs 9 disks; add-disk")
        self.policy = text

    @property
    def store(self) -> Any:
        class Store:
            def disks(self) -> dict[int, None]:
                return {1: None, 2: None}
        return Store()

    def inject_fault(self, disk_id: int, fault: Any) -> None:
        if disk_id not in (1, 2):
            raise DynamicFSError(f"no disk {disk_id} in this pool")
        self.faults.setdefault(disk_id, []).append(fault.describe())

    def list_faults(self) -> dict[int, list[dict[str, Any]]]:
        return {d: list(f) for d, f in self.faults.items() if f}

    def clear_faults(self, disk_id: int | None = None) -> None:
        for d in list(self.faults):
            if disk_id is None or d == disk_id:
                self.faults[d] = []


def run_with_server(tmp: Path, client: Any, *, sock_name: str = "control.sock") -> Any:
    """Serve a FakeEngine in trio while `client(socket_path)` runs in a thread."""
    pooldir = tmp
    pooldir.mkdir(parents=True, exist_ok=True)
    sock = pooldir / sock_name
    unmounts: list[int] = []
    result: list[Any] = []

    async def unmount() -> None:
        unmounts.append(1)

    async def main() -> None:
        server = ControlServer(FakeEngine(), sock, mountpoint=tmp / "mnt", unmount=unmount)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            result.append(await trio.to_thread.run_sync(client, sock))
            nursery.cancel_scope.cancel()
        result.append(sock.exists())

    trio.run(main)
    return result[0], result[1], unmounts


def test_ops_round_trip(tmp_path: Path) -> None:
    def client(sock: Path) -> dict[str, Any]:
        st = os.stat(sock)
        assert stat.S_IMODE(st.st_mode) == 0o600
        out = {"ping": call(sock, "ping"), "status": call(sock, "status")}
        out["added"] = call(sock, "add-disk", path="/srv/d1", tier="fast", capacity=None)
        out["disks"] = call(sock, "list-disks")
        out["policy"] = call(sock, "set-policy", policy="EC:2+1")
        out["status2"] = call(sock, "status")
        out["shutdown"] = call(sock, "shutdown")
        return out

    out, sock_left, unmounts = run_with_server(tmp_path, client)
    assert out["ping"]["mounted"] is True and out["ping"]["pid"] == os.getpid()
    assert out["status"]["mountpoint"] == str(tmp_path / "mnt")
    assert out["added"] == {"id": 1, "path": "/srv/d1", "tier": "fast"}
    assert out["disks"] == [out["added"]]
    assert out["policy"] == {"policy": "ec:2+1"} and out["status2"]["policy"] == "ec:2+1"
    assert out["shutdown"]["mounted"] is True and unmounts == [1]
    assert not sock_left  # the socket file goes with the server


def test_errors_carry_message_and_exit_code(tmp_path: Path) -> None:
    def client(sock: Path) -> list[tuple[type, int, str]]:
        seen = []
        for op, args in (("set-policy", {"policy": "rep:9"}),
                         ("set-policy", {"policy": "nonsense"}),
                         ("add-disk", {"path": "/x/busy"}),
                         ("add-disk", {"path": "/x/bug"}),
                         ("add-disk", {"path": "relative"}),
                         ("add-disk", {"path": str(tmp_path / "mnt" / "in")}),
                         ("add-disk", {"path": "/x/y", "capacity": "many"}),
                         ("frobnicate", {})):
            with pytest.raises(DynamicFSError) as info:
                call(sock, op, **args)
            seen.append((type(info.value), info.value.exit_code, str(info.value)))
        return seen

    seen, _, _ = run_with_server(tmp_path, client)
    assert seen[0][1:] == (1, "policy rep:9 needs 9 disks; add-disk")
    assert seen[1][1] == 2 and "invalid policy" in seen[1][2]
    assert seen[2][0] is PoolBusy and seen[2][1] == 3
    assert seen[3][1] == 1 and "internal error" in seen[3][2] and "\n" not in seen[3][2]
    assert seen[4][1] == 2 and "absolute" in seen[4][2]
    assert seen[5][1] == 1 and "mountpoint" in seen[5][2]
    assert seen[6][1] == 2
    assert seen[7][1] == 2 and "unknown" in seen[7][2]


def test_long_socket_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    out, _, _ = run_with_server(deep, lambda sock: call(sock, "ping"))
    assert len(str(deep / "control.sock")) > 108
    assert out["mounted"] is True


def test_stale_or_missing_socket_is_not_mounted(tmp_path: Path) -> None:
    with pytest.raises(NotMounted):
        call(tmp_path / "control.sock", "status")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "control.sock"))
    stale.close()  # the file stays, nobody listens: what a killed daemon leaves
    with pytest.raises(NotMounted):
        call(tmp_path / "control.sock", "status")


def test_silent_daemon_times_out(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as mute:
        mute.bind(str(tmp_path / "control.sock"))
        mute.listen(1)  # accepts into the backlog, never answers
        with pytest.raises(ControlError, match="did not answer"):
            call(tmp_path / "control.sock", "status", timeout=0.3)


def test_fault_ops_check_their_arguments(tmp_path: Path) -> None:
    def client(sock: Path) -> tuple[list[tuple[int, str]], list[Any]]:
        refused = []
        for args in ({"disk": 1, "operation": "write", "kind": "corrupt"},
                     {"disk": 1, "operation": "read", "kind": "error", "errno": "ENOENT"},
                     {"disk": 1, "operation": "read", "kind": "hang", "seconds": -1},
                     {"disk": "1", "operation": "read", "kind": "corrupt"},
                     {"disk": 1, "operation": "read", "kind": "corrupt", "probability": 0},
                     {"disk": 3, "operation": "read", "kind": "corrupt"}):
            with pytest.raises(DynamicFSError) as info:
                call(sock, "inject-fault", **args)
            refused.append((info.value.exit_code, str(info.value)))
        with pytest.raises(DynamicFSError) as info:
            call(sock, "gc", dry_run="yes")
        refused.append((info.value.exit_code, str(info.value)))
        done = [call(sock, "inject-fault", disk=2, operation="write", kind="error",
                     errno="ENOSPC", count=2),
                call(sock, "list-faults"), call(sock, "clear-faults", disk=2),
                call(sock, "list-faults")]
        return refused, done

    (refused, done), _, _ = run_with_server(tmp_path, client)
    assert [code for code, _ in refused] == [2, 2, 2, 2, 2, 1, 2]
    assert "only reads" in refused[0][1] and "ENOENT" in refused[1][1]
    assert "no disk 3" in refused[5][1]
    assert done[0]["disk"] == 2 and done[0]["errno"] == 28 and done[0]["count"] == 2
    assert [(f["disk"], f["op"]) for f in done[1]["faults"]] == [(2, "write")]
    assert done[2] == {"disk": 2, "cleared": 1} and done[3] == {"faults": []}
