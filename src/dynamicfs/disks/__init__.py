"""Disk backends: the label, the fragment file format, and the local-directory disk.

A backend offers a small synchronous interface that the store calls from worker threads:
`check_label`, `usage`, `write_fragment`, `read_fragment`, `delete_fragment`,
`iter_fragment_files`. Object-store backends later implement the same methods.
"""

from .faults import Fault, FaultError
from .fragment import HEADER_SIZE, FragmentError, FragmentHeader, FragmentMissing
from .label import LabelError
from .local import LocalDisk, shared_usage

__all__ = [
    "HEADER_SIZE", "Fault", "FaultError", "FragmentError", "FragmentHeader", "FragmentMissing",
    "LabelError", "LocalDisk", "shared_usage",
]
