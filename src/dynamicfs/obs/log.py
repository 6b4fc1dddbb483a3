"""Logging set-up for the mount daemon: timestamped lines to a rotating file and/or stderr."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path

FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(process)d %(name)s: %(message)s"
DATEFMT = "%Y-%m-%dT%H:%M:%S"
MAX_BYTES = 10 << 20
BACKUPS = 3


def level_from_env() -> int:
    if os.environ.get("DYNAMICFS_DEBUG") == "1":
        return logging.DEBUG
    name = os.environ.get("DYNAMICFS_LOG_LEVEL", "INFO").upper()
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.INFO


def setup_logging(log_path: Path | None, *, to_stderr: bool, level: int | None = None) -> None:
    """Route the `dynamicfs` loggers (and warnings from libraries) to `log_path` and/or stderr.

    Times are UTC so lines from the daemon, the kernel log and other hosts line up.
    """
    formatter = logging.Formatter(FORMAT, DATEFMT)
    formatter.converter = time.gmtime
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    handlers: list[logging.Handler] = []
    if log_path is not None:
        handlers.append(logging.handlers.RotatingFileHandler(
            log_path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8"))
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("dynamicfs").setLevel(level if level is not None else level_from_env())
    logging.captureWarnings(True)
