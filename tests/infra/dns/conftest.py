"""Fixtures of the DNS backend tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pulumi
import pytest

from .pulumi_mocks import RecordingMocks


@pytest.fixture
def mocks() -> Iterator[RecordingMocks]:
    recording = RecordingMocks()
    pulumi.runtime.set_mocks(
        recording, project="spaced", stack="test", preview=False, logger=logging.getLogger("pulumi-mocks")
    )
    yield recording
