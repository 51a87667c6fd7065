"""Shared fixtures: repository paths and the peer test vectors in ../shared/testdata."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_testdata_dir() -> Path:
    """The peer test vectors live beside the repository (../shared/testdata), never copied in."""
    override = os.environ.get("TWINLEDGER_SHARED_DIR")
    base = Path(override) if override else REPO.parent / "shared"
    return base / "testdata"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_testdata() -> Path:
    path = shared_testdata_dir()
    if not path.is_dir():
        pytest.fail(f"peer test vectors not found at {path} (set TWINLEDGER_SHARED_DIR)")
    return path
