"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fakeprovider import FakeProvider


@pytest.fixture
def fake_provider() -> Iterator[FakeProvider]:
    """A loopback HTTP server speaking the OpenAI and Anthropic wire formats with scripted replies."""
    with FakeProvider() as server:
        yield server
