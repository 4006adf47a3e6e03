"""The worker tests' pools: each pool test runs once per pool, with these options."""

from __future__ import annotations

import pytest

#: The options `soloist worker --pool NAME` runs with in the pool tests.
POOLS = {"solo": [], "threads": ["-c", "2"], "processes": ["-c", "2"]}


@pytest.fixture(params=list(POOLS))
def pool(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name
