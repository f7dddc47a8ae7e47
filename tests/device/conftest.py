from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.device.helpers import BUILT


@pytest.fixture(autouse=True)
def _close_built_parts() -> Iterator[None]:
    yield
    while BUILT:
        BUILT.pop().close()
