"""Metadata: the SQLite schema and every SQL statement DynamicFS runs."""

from .db import Database, MetadataError
from .schema import ROOT_INODE, SCHEMA_VERSION

__all__ = ["Database", "MetadataError", "ROOT_INODE", "SCHEMA_VERSION"]
