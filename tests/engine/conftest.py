"""Fixtures for the episodic engine tests."""

from __future__ import annotations

import pytest

from cfs.plugins import get_plugin_manager


@pytest.fixture(scope="session")
def pm():
    return get_plugin_manager()
