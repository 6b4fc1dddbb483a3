"""The fragment file format: header pack/unpack, damage detection, and the local disk's
verified reads."""

from __future__ import annotations

import errno
import os
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamicfs.disks import HEADER_SIZE, FragmentError, FragmentHeader, FragmentMissing, LocalDisk
from dynamicfs.disks.fragment import _BODY, _CHECK_LEN

# Every header byte that carries meaning (the rest is zero padding to HEADER_SIZE).
COVERED = _BODY.size + _CHECK_LEN

headers = st.builds(
    FragmentHeader,
    pool_uuid=st.binary(min_size=16, max_size=16),
    extent_id=st.binary(min_size=32, max_size=32),
    index=st.integers(0, 0xFFFF),
    codec_id=st.integers(0, 255),
    k=st.integers(0, 255),
    m=st.integers(0, 255),
    extent_length=st.integers(0, 2**64 - 1),
    payload_length=st.integers(0, 2**64 - 1),
    payload_hash=st.binary(min_size=32, max_size=32),
)


@given(headers)
def test_header_round_trip(header):
    raw = header.pack()
    assert len(raw) == HEADER_SIZE
    assert FragmentHeader.unpack(raw) == header


@settings(max_examples=300)
@given(headers, st.integers(0, COVERED - 1), st.integers(1, 255))
def test_any_flipped_header_byte_is_detected(header, pos, mask):
    raw = bytearray(header.pack())
    raw[pos] ^= mask
    with pytest.raises(FragmentError):
        FragmentHeader.unpack(bytes(raw))


def test_truncated_and_foreign_headers_refused():
    header = FragmentHeader(b"p" * 16, b"e" * 32, 0, 1, 1, 1, 3, 3, b"h" * 32)
    with pytest.raises(FragmentError, match="truncated"):
        FragmentHeader.unpack(header.pack()[:HEADER_SIZE - 1])
    with pytest.raises(FragmentError, match="magic"):
        FragmentHeader.unpack(b"NOTAFRAG" + header.pack()[8:])


@pytest.fixture
def disk(tmp_path):
    pool = uuid.uuid4().bytes
    LocalDisk.prepare(tmp_path / "d", pool, str(uuid.uuid4()))
    return LocalDisk(tmp_path / "d", pool)


def write(disk: LocalDisk, payload: bytes, index: int = 0) -> FragmentHeader:
    from dynamicfs.codec import blake3_digest

    header = FragmentHeader(disk.pool_uuid, blake3_digest(payload), index, 1, 1, 1,
                            len(payload), len(payload), blake3_digest(payload))
    assert disk.write_fragment(header, payload) == HEADER_SIZE + len(payload)
    return header


@pytest.mark.parametrize("size", [0, 1, 70_000])
def test_disk_round_trip_and_header(disk, size):
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    header = write(disk, payload, index=3)
    assert disk.read_fragment(header.extent_id, 3) == payload
    path = disk.fragment_path(header.extent_id, 3)
    assert disk.read_header(path) == header
    assert [p.name for p in disk.iter_fragment_files()] == [path.name]


def test_flipped_payload_byte_detected_on_read(disk):
    header = write(disk, b"payload bytes")
    path = disk.fragment_path(header.extent_id, 0)
    raw = bytearray(path.read_bytes())
    raw[HEADER_SIZE + 4] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(FragmentError, match="checksum"):
        disk.read_fragment(header.extent_id, 0)


def test_fragment_read_refuses_wrong_name_pool_and_length(disk, tmp_path):
    header = write(disk, b"abc")
    path = disk.fragment_path(header.extent_id, 0)
    # The right file under another index's name names another fragment.
    path.rename(disk.fragment_path(header.extent_id, 1))
    with pytest.raises(FragmentError, match="another extent or index"):
        disk.read_fragment(header.extent_id, 1)
    with pytest.raises(FragmentMissing):
        disk.read_fragment(header.extent_id, 0)
    other = LocalDisk(disk.root, uuid.uuid4().bytes)
    with pytest.raises(FragmentError, match="another pool"):
        other.read_fragment(header.extent_id, 1)
    disk.fragment_path(header.extent_id, 1).rename(path)
    with open(path, "ab") as f:
        f.write(b"extra")
    with pytest.raises(FragmentError, match="payload is"):
        disk.read_fragment(header.extent_id, 0)


def test_capacity_cap_holds_under_concurrent_writers(tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from dynamicfs.codec import blake3_digest

    pool = uuid.uuid4().bytes
    LocalDisk.prepare(tmp_path / "d", pool, str(uuid.uuid4()))
    payloads = [bytes([i]) * 4096 for i in range(8)]
    disk = LocalDisk(tmp_path / "d", pool, capacity=2 * (HEADER_SIZE + 4096))
    start = Barrier(len(payloads))

    def put(payload: bytes) -> bool:
        digest = blake3_digest(payload)
        header = FragmentHeader(pool, digest, 0, 1, 1, 1, len(payload), len(payload), digest)
        start.wait()
        try:
            disk.write_fragment(header, payload)
        except OSError:
            return False
        return True

    with ThreadPoolExecutor(len(payloads)) as ex:
        stored = sum(ex.map(put, payloads))
    assert stored <= 2 and disk.used <= disk.capacity_cap


def test_a_fragment_whose_name_could_not_be_made_durable_is_removed(disk, monkeypatch):
    """The fragment is fsynced and renamed into place, then its directory is fsynced; if that
    fails, the file must not stay under the fragment name (nothing may refer to it)."""
    from dynamicfs.disks import durability

    def failing(path) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(durability, "fsync_dir", failing)
    with pytest.raises(OSError):
        write(disk, b"payload")
    assert [p for p in disk.iter_fragment_files()] == []
    assert disk.used == 0


def test_deferred_write_and_its_sync(disk, monkeypatch):
    """A deferred write fsyncs nothing and counts its bytes once; writing over an existing
    file is made durable at once and does not count it twice; sync_fragments fsyncs the file
    and its directories."""
    from dynamicfs.codec import blake3_digest

    fsynced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (
        fsynced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))[1])
    payload = b"deferred payload"
    digest = blake3_digest(payload)
    header = FragmentHeader(disk.pool_uuid, digest, 0, 1, 1, 1, len(payload), len(payload),
                            digest)
    path = disk.fragment_path(digest, 0)
    size = disk.write_fragment(header, payload, durable=False)
    assert fsynced == [] and disk.used == size and path.exists()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp.")]
    assert disk.sync_fragments([(digest, 0)]) == {}
    assert fsynced[0] == str(path)
    # The new leaf directory and both ancestors (its name and theirs) are fsynced with it.
    assert {str(path.parent), str(path.parent.parent), str(disk.frag_root)} <= set(fsynced)
    fsynced.clear()
    assert disk.write_fragment(header, payload, durable=False) == size  # in place
    assert disk.used == size
    assert len(fsynced) == 2  # the file before its rename, the directory after
    assert disk.read_fragment(digest, 0) == payload
    missing = disk.sync_fragments([(b"\x00" * 32, 0)])
    assert list(missing) == [(b"\x00" * 32, 0)]


def test_deferred_write_queues_its_writeback_unless_told_not_to(disk, monkeypatch):
    """A deferred fragment's writeback starts at once (the disk works while a large file keeps
    coming) unless the writer says not to; a durable write fsyncs instead."""
    from dynamicfs.codec import blake3_digest
    from dynamicfs.disks import local

    started: list[int] = []
    monkeypatch.setattr(local, "_start_writeback",
                        lambda fd: started.append(os.fstat(fd).st_size))
    for n, kw in ((1000, {"durable": False}),
                  (2000, {"durable": False, "writeback": False}),
                  (3000, {})):
        payload = os.urandom(n)
        digest = blake3_digest(payload)
        header = FragmentHeader(disk.pool_uuid, digest, 0, 1, 1, 1, n, n, digest)
        disk.write_fragment(header, payload, **kw)
        assert disk.read_fragment(digest, 0) == payload
    assert started == [HEADER_SIZE + 1000]
