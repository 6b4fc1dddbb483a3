"""Fixtures for maintenance tests: the engine tests' pool, engine runner and helpers.

They are loaded from tests/engine/conftest.py under a name of their own, `engine_fixtures`:
test modules import helpers from it, never from `conftest` (with several test directories
collected at once, that name means whichever conftest.py pytest loaded last).
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

run_engine = engine_fixtures.run_engine  # the fixture itself, for tests in this directory
