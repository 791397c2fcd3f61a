"""Fixtures of the infrastructure tests: the parsed Bicep templates and the repository root."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.infra_bicep_model import REPO, Templates


@pytest.fixture(scope="session")
def templates() -> Templates:
    return Templates.load()


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
