"""Org node apps for the tests/api/test_node_*.py modules: real create_app over the real
chain (tests/chain.py), a real database and a real filesystem blockstore, driven in-process
through Starlette's TestClient (real HTTP semantics, ASGI) with requests signed by the
api/auth/eip712 helpers directly (the SDK is tested on its own).

    harness = NodeHarness.start(member, name, w3, deployment, home, db_url)
    harness.post_json("/v1/assets", {...})                 # signed as the node's own org
    harness.get("/v1/assets", signer=bob.account)          # signed as a member
    harness.publish(asset_id, b"bytes", parents=["1@1"], key="k1")
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from web3 import Web3

from api.app import create_app
from api.auth import Eip712Domain, KeyRequest, body_hash, new_nonce, sign_request
from api.keystore import OrgKeys, init_org
from api.node import Node
from api.settings import load_settings
from ledger.client import LedgerClient
from ledger.db import make_engine
from ledger.deployment import Deployment
from ledger.models import Permission
from tests.db import PG_ADMIN_DSN, _pg_available


NODE_PASS = "node passphrase"


@pytest.fixture(scope="module")
def node_home(tmp_path_factory, deployment, admin_ledger):
    """A TWINLEDGER_HOME with org "acme" (keystore under NODE_PASS, also in pass.txt)
    registered on chain, and the deployment manifest at devnet/deployment.json."""
    home = tmp_path_factory.mktemp("home")
    public = init_org(home, "acme", NODE_PASS, insecure_fast_kdf=True)
    admin_ledger.register_org(public.address, "acme", public.age_recipient, "http://127.0.0.1:8700")
    deployment.save(home / "devnet" / "deployment.json")
    (home / "pass.txt").write_text(NODE_PASS + "\n")
    return home


def rpc(w3: Web3, method: str, *params: Any) -> Any:
    response = w3.provider.make_request(method, list(params))
    if "error" in response:
        raise RuntimeError(f"{method}: {response['error']}")
    return response["result"]


def increase_time(w3: Web3, seconds: int) -> None:
    """Advance the chain clock and mine a block (never sleep)."""
    rpc(w3, "evm_increaseTime", seconds)
    rpc(w3, "evm_mine")


@contextlib.contextmanager
def database(backend: str, tmp: Path) -> Iterator[str]:
    """A fresh database URL of `backend` ("sqlite" | "postgres"), dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp / f'node-{uuid.uuid4().hex[:8]}.db'}"
        return
    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_DSN} in CI")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_DSN}")
    import psycopg

    name = f"tl_node_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def multipart(file_bytes: bytes, parents: list[str] | None = None, *, boundary: str | None = None,
              extra: list[tuple[str, bytes]] = ()) -> tuple[bytes, str]:
    """A multipart/form-data body (parents first, as the SDK sends it) and its content type."""
    boundary = boundary or "tl-" + secrets.token_hex(12)
    parts = []
    if parents is not None:
        parts.append((b'form-data; name="parents"', json.dumps(parents).encode()))
    parts += [(f'form-data; name="{n}"'.encode(), v) for n, v in extra]
    parts.append((b'form-data; name="file"; filename="twin.bin"', file_bytes))
    body = b""
    for disposition, value in parts:
        body += (b"--" + boundary.encode() + b"\r\nContent-Disposition: " + disposition +
                 b"\r\nContent-Type: application/octet-stream\r\n\r\n" + value + b"\r\n")
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, f"multipart/form-data; boundary={boundary}"


@dataclass
class NodeHarness:
    keys: OrgKeys
    client: TestClient
    domain: Eip712Domain
    ledger: LedgerClient

    @classmethod
    @contextlib.contextmanager
    def start(cls, account: LocalAccount, identity, name: str, w3: Web3, deployment: Deployment, home: Path,
              db_url: str, **create_kw: Any) -> Iterator["NodeHarness"]:
        keys = OrgKeys(name=name, account=account, identity=identity)
        settings = load_settings(home=home, org=name, rpc_url=w3.provider.endpoint_uri, database_url=db_url,
                                 anchor_every_records=10_000, anchor_every_seconds=3600)
        ledger = LedgerClient(w3, deployment, account)
        create_kw.setdefault("loop_factories", [])  # tests drive indexing and anchoring directly
        create_kw.setdefault("extensions", [])
        app = create_app(settings, keys=keys, ledger=ledger, engine=make_engine(db_url), **create_kw)
        with TestClient(app, raise_server_exceptions=False) as client:
            yield cls(keys, client, Eip712Domain.from_deployment(deployment), ledger)

    @property
    def node(self) -> Node:
        return self.client.app.state.node

    @property
    def address(self) -> str:
        return self.keys.address

    # -- signed requests ------------------------------------------------------------------

    def request(self, method: str, path: str, *, body: bytes | None = None, signer: LocalAccount | None = None,
                headers: dict[str, str] | None = None, content_type: str = "application/json", **kw: Any):
        account = signer or self.keys.account
        signed = sign_request(account, self.domain, method, path, body)
        all_headers = {**signed, **(headers or {})}
        if body is not None:
            all_headers.setdefault("content-type", content_type)
        return self.client.request(method, path, content=body, headers=all_headers, **kw)

    def get(self, path: str, **kw: Any):
        return self.request("GET", path, **kw)

    def post_json(self, path: str, obj: Any, **kw: Any):
        return self.request("POST", path, body=json.dumps(obj).encode(), **kw)

    def delete(self, path: str, **kw: Any):
        return self.request("DELETE", path, **kw)

    def upload(self, asset_id: int, body: bytes, content_type: str, *, key: str | None = None,
               signer: LocalAccount | None = None, signed_hash: bytes | None = None):
        path = f"/v1/assets/{asset_id}/versions"
        headers = sign_request(signer or self.keys.account, self.domain, "POST", path,
                               streamed_body_hash=signed_hash if signed_hash is not None else body_hash(body))
        headers["content-type"] = content_type
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.client.post(path, content=body, headers=headers)

    def publish(self, asset_id: int, data: bytes, parents: list[str] | None = None, *, key: str | None = None):
        body, content_type = multipart(data, parents)
        return self.upload(asset_id, body, content_type, key=key)

    # -- owner shortcuts ------------------------------------------------------------------

    def create_asset(self, name: str, kind: str = "dataset") -> int:
        response = self.post_json("/v1/assets", {"kind": kind, "name": name})
        assert response.status_code == 201, response.text
        return response.json()["asset_id"]

    def grant(self, asset_id: int, grantee: str, permissions: list[str], *, purpose: str = "maintenance",
              ttl_seconds: int = 365 * 86400) -> dict:
        response = self.post_json(f"/v1/assets/{asset_id}/grants", {
            "grantee": grantee, "permissions": permissions, "ttl_seconds": ttl_seconds, "purpose": purpose})
        assert response.status_code == 201, response.text
        return response.json()


def key_request(account: LocalAccount, recipient: str, asset_id: int, version: int, *,
                permission: Permission = Permission.READ, purpose: str = "maintenance", deadline: int,
                nonce: bytes | None = None) -> KeyRequest:
    return KeyRequest(asset=asset_id, version=version, consumer=account.address, recipient=recipient,
                      purpose=purpose, permission=int(permission), nonce=nonce or new_nonce(), deadline=deadline)


def key_body(request: KeyRequest, account: LocalAccount, domain: Eip712Domain) -> dict:
    return {"request": request.to_json(), "signature": "0x" + request.sign(domain, account).hex()}
