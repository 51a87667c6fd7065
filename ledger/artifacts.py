"""Committed contract artifacts (ABI + bytecode), loaded once; no compiler at run time."""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ledger.errors import DeploymentError

ARTIFACT_DIR = Path(__file__).resolve().parent.parent / "contracts" / "artifacts"
CONTRACT_NAMES = ("Consortium", "AssetLedger", "AuditAnchors")


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: tuple
    bytecode: str
    deployed_bytecode: str
    sha256: str  # of the artifact file, recorded in the deployment manifest


@functools.cache
def load(name: str, directory: Path = ARTIFACT_DIR) -> Artifact:
    path = directory / f"{name}.json"
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except FileNotFoundError:
        raise DeploymentError(f"contract artifact missing: {path} (run `make compile`)") from None
    except json.JSONDecodeError as exc:
        raise DeploymentError(f"contract artifact {path} is not valid JSON: {exc}") from None
    return Artifact(
        name=name,
        abi=tuple(data["abi"]),
        bytecode=data["bytecode"],
        deployed_bytecode=data["deployedBytecode"],
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def all_artifacts() -> dict[str, Artifact]:
    return {name: load(name) for name in CONTRACT_NAMES}
