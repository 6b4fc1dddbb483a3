"""Fixtures for maintenance tests: the engine tests' pool, engine runner and helpers.

They are loaded from tests/engine/conftest.py under a name of their own, so both test
directories can say `from conftest import ...` and get what they expect.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "engine_fixtures", Path(__file__).parent.parent / "engine" / "conftest.py")
assert _spec is not None and _spec.loader is not None
engine_fixtures = importlib.util.module_from_spec(_spec)
sys.modules["engine_fixtures"] = engine_fixtures
_spec.loader.exec_module(engine_fixtures)

BS = engine_fixtures.BS
ROOT = engine_fixtures.ROOT
corrupt_db = engine_fixtures.corrupt_db
db_rows = engine_fixtures.db_rows
fragment_files = engine_fixtures.fragment_files
fsck_problems = engine_fixtures.fsck_problems
lookup_ino = engine_fixtures.lookup_ino
make_pool = engine_fixtures.make_pool
read_file = engine_fixtures.read_file
run_engine = engine_fixtures.run_engine  # the fixture itself
write_file = engine_fixtures.write_file
