"""The e2e tests' cluster of REAL processes on loopback: the pilot's production
orchestration (services/pilot/cluster.py — devnet, one `twinledger serve` per org in its
own process group, teardown that leaves no process behind), with the orgs set up through
the real CLI (`org init`, `org register`) so the e2e tests exercise those commands too.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.pilot.cluster import PASSPHRASE, ClusterError, OrgNode, twinledger_command
from services.pilot.cluster import Cluster as _Cluster

__all__ = ["Cluster", "ClusterError", "OrgNode", "PASSPHRASE", "TWINLEDGER"]

TWINLEDGER = twinledger_command()


def Cluster(root: Path, names: Sequence[str], **kwargs: Any) -> _Cluster:  # noqa: N802 - a factory
    kwargs.setdefault("cli_setup", True)
    return _Cluster(root, names, **kwargs)
