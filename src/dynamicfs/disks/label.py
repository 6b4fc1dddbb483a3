"""The disk label: a small JSON file naming the pool and the disk, with a format version.

A directory is a disk of a pool exactly when it holds a label with that pool's UUID; a disk of
another pool is refused, and a vanished label tells the engine a disk went away.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

LABEL_NAME = "dynamicfs-disk.json"
LABEL_FORMAT = 1


class LabelError(Exception):
    """The label is missing, unreadable, of a newer format or of another pool."""


@dataclass(frozen=True)
class Label:
    pool_uuid: uuid.UUID
    disk_uuid: uuid.UUID
    format: int = LABEL_FORMAT


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_label(root: Path, label: Label) -> None:
    data = json.dumps({
        "format": label.format, "pool_uuid": str(label.pool_uuid),
        "disk_uuid": str(label.disk_uuid), "created": time.time(),
    }, indent=2) + "\n"
    tmp = root / (LABEL_NAME + ".tmp")
    with open(tmp, "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / LABEL_NAME)
    fsync_dir(root)


def read_label(root: Path) -> Label:
    path = root / LABEL_NAME
    try:
        raw = json.loads(path.read_text())
        fmt = int(raw["format"])
        label = Label(uuid.UUID(raw["pool_uuid"]), uuid.UUID(raw["disk_uuid"]), fmt)
    except FileNotFoundError:
        raise LabelError(f"{root}: no disk label ({LABEL_NAME})") from None
    except OSError as exc:
        raise LabelError(f"{root}: cannot read disk label: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise LabelError(f"{root}: corrupt disk label: {exc}") from None
    if fmt > LABEL_FORMAT:
        raise LabelError(f"{root}: disk label format {fmt} is newer than supported "
                         f"({LABEL_FORMAT})")
    return label
