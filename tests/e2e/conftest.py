"""The e2e cluster: one per test session (per xdist worker; every e2e test is in the
xdist group "e2e", so one worker runs them all against one cluster)."""
from __future__ import annotations

import pytest

from tests.e2e.cluster import Cluster

ORGS = ("alpha", "beta", "gamma")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("cluster"), ORGS, anchor_every_seconds=1.0) as running:
        yield running
