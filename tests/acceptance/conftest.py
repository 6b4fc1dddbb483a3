"""Fixtures for the acceptance tests (the helpers themselves live in acclib.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from acclib import Pool, pool_session


@pytest.fixture
def make_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Pool]]:
    """make_pool(policy, caps, mount=True) -> Pool; every pool made is cleaned up."""
    with ExitStack() as stack:
        def make(policy: str, caps: list[str], mount: bool = True, budget: float = 200) -> Pool:
            return stack.enter_context(pool_session(
                tmp_path_factory.mktemp("acc"), policy, caps, mount, budget))

        yield make
