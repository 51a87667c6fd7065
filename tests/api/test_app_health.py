"""The app factory end to end on a real chain: health, readiness, metrics, size limits,
malformed bodies and the authentication dependencies."""
from __future__ import annotations

import asyncio

import pytest
from fastapi import APIRouter, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from api.app import BackgroundLoops, create_app
from api.auth import Eip712Domain, body_hash, sign_request
from api.deps import AuthenticatedOrg, OwnOrg, SettingsDep, StreamingOrg
from api.keystore import load_org_keys
from api.settings import load_settings
from ledger.anvil import free_port
from tests.api.node_fixtures import NODE_PASS as PASS, node_home  # noqa: F401



class Echo(BaseModel):
    text: str


def _test_router() -> APIRouter:
    router = APIRouter(prefix="/test")

    @router.post("/echo")
    def echo(body: Echo, caller: AuthenticatedOrg) -> dict:
        return {"text": body.text, "caller": caller.address}

    @router.get("/own")
    def own(caller: OwnOrg, settings: SettingsDep) -> dict:
        return {"caller": caller.address, "org": settings.org}

    @router.post("/upload")
    async def upload(request: Request, caller: StreamingOrg) -> dict:
        size = 0
        async for chunk in caller.stream(request):
            size += len(chunk)
        return {"size": size}

    @router.get("/items/{item_id}")
    def item(item_id: int) -> dict:
        return {"id": item_id}

    return router


def _settings(home, rpc_url, **kw):
    return load_settings(home=home, org="acme", rpc_url=rpc_url, passphrase_file=home / "pass.txt",
                         database_url=f"sqlite:///{home / f'node-{free_port()}.db'}", **kw)


@pytest.fixture(scope="module")
def client(node_home, anvil):
    app = create_app(_settings(node_home, anvil.url, max_upload_bytes=64 * 1024, max_body_bytes=1024))
    app.include_router(_test_router())
    with TestClient(app, raise_server_exceptions=False) as c:  # runs the lifespan (loops)
        yield c


@pytest.fixture(scope="module")
def domain(deployment):
    return Eip712Domain.from_deployment(deployment)


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_ready(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "checks": {"chain": "ok", "database": "ok", "loops": "ok"}}


def test_readyz_503_when_the_chain_is_down(node_home):
    app = create_app(_settings(node_home, f"http://127.0.0.1:{free_port()}"))
    with TestClient(app) as c:
        response = c.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready" and "unreachable" in body["checks"]["chain"]
    assert body["checks"]["database"] == "ok"


def test_readyz_503_when_the_manifest_does_not_match(node_home, anvil, deployment, tmp_path):
    from dataclasses import replace

    from ledger.client import LedgerClient
    from web3 import Web3

    wrong = replace(deployment, chain_id=deployment.chain_id + 1)
    keys = load_org_keys(node_home, "acme", PASS)
    ledger = LedgerClient(Web3(Web3.HTTPProvider(anvil.url)), wrong, keys.account)
    app = create_app(_settings(node_home, anvil.url), keys=keys, ledger=ledger)
    with TestClient(app) as c:
        response = c.get("/readyz")
    assert response.status_code == 503 and "manifest" in response.json()["checks"]["chain"]


def test_readyz_503_when_a_loop_died(node_home, anvil):
    async def dies(stop: asyncio.Event) -> None:
        raise RuntimeError("boom")

    app = create_app(_settings(node_home, anvil.url), loop_factories=[lambda node: node.loops.add_task("dies", dies)])
    with TestClient(app) as c:
        for _ in range(100):  # the task fails on its first scheduling
            response = c.get("/readyz")
            if response.status_code == 503:
                break
    assert response.status_code == 503
    assert "dies: stopped (RuntimeError)" in response.json()["checks"]["loops"]


def test_periodic_loops_run_and_stop(node_home, anvil):
    calls = []
    app = create_app(_settings(node_home, anvil.url),
                     loop_factories=[lambda node: node.loops.add("tick", lambda: calls.append(1), interval=0.01)])
    with TestClient(app) as c:
        for _ in range(500):
            if len(calls) >= 3:
                break
            c.get("/healthz")
        loops: BackgroundLoops = app.state.node.loops
        status = loops.statuses()[0]
        assert status.iterations >= 3 and status.consecutive_failures == 0
    assert status.finished  # stopped with the app


def test_metrics(client):
    client.get("/test/items/1")
    client.get("/test/items/2")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    text = response.text
    # labelled by route template, not by raw path
    assert 'twinledger_http_requests_total{method="GET",route="/test/items/{item_id}",status="200"} 2.0' in text
    assert "/test/items/1" not in text
    assert "twinledger_http_request_duration_seconds_bucket" in text


def test_each_app_has_its_own_registry(client, node_home, anvil):
    other = create_app(_settings(node_home, anvil.url))
    assert other.state.node.metrics.registry is not client.app.state.node.metrics.registry


def test_oversized_body_is_413(client):
    declared = client.post("/test/echo", content=b"x" * (64 * 1024 + 1))
    assert declared.status_code == 413 and declared.json()["error"] == "payload_too_large"

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(20):
            yield b"y" * 4096

    streamed = client.post("/test/echo", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["error"] == "payload_too_large"
    assert str(64 * 1024) in streamed.json()["detail"]  # the app-wide limit, not the JSON body limit


def test_malformed_json_is_4xx(client, domain, members):
    body = b'{"text": '
    headers = sign_request(members["alice"].account, domain, "POST", "/test/echo", body)
    response = client.post("/test/echo", content=body, headers={**headers, "content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "malformed_json"


def test_authenticated_org_end_to_end(client, domain, members):
    alice = members["alice"]
    body = b'{"text": "hi"}'
    headers = {**sign_request(alice.account, domain, "POST", "/test/echo", body), "content-type": "application/json"}
    ok = client.post("/test/echo", content=body, headers=headers)
    assert ok.status_code == 200 and ok.json() == {"text": "hi", "caller": alice.address}
    replay = client.post("/test/echo", content=body, headers=headers)
    assert replay.status_code == 401 and replay.json()["error"] == "replayed_nonce"
    fresh = {**sign_request(alice.account, domain, "POST", "/test/echo", body), "content-type": "application/json"}
    tampered = client.post("/test/echo", content=b'{"text": "ho"}', headers=fresh)
    assert tampered.status_code == 401 and tampered.json()["error"] == "bad_signature"
    missing = client.post("/test/echo", json={"text": "hi"})
    assert missing.status_code == 401 and missing.json()["error"] == "missing_auth"
    carol = members["carol"]  # deactivated
    inactive = client.post("/test/echo", content=body, headers={
        **sign_request(carol.account, domain, "POST", "/test/echo", body), "content-type": "application/json"})
    assert inactive.status_code == 403 and inactive.json()["error"] == "inactive_org"


def test_signed_path_includes_the_query(client, domain, node_home):
    keys = load_org_keys(node_home, "acme", PASS)
    good = client.get("/test/own?x=1", headers=sign_request(keys.account, domain, "GET", "/test/own?x=1"))
    assert good.status_code == 200 and good.json() == {"caller": keys.address, "org": "acme"}
    wrong = client.get("/test/own?x=2", headers=sign_request(keys.account, domain, "GET", "/test/own?x=1"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "bad_signature"


def test_own_org_refuses_other_members(client, domain, members):
    alice = members["alice"]
    response = client.get("/test/own", headers=sign_request(alice.account, domain, "GET", "/test/own"))
    assert response.status_code == 403 and response.json()["error"] == "not_own_org"


def test_big_json_body_must_stream(client, domain, members):
    body = b'{"text": "' + b"z" * 2000 + b'"}'  # over max_body_bytes (1024)
    headers = {**sign_request(members["alice"].account, domain, "POST", "/test/echo", body),
               "content-type": "application/json"}
    response = client.post("/test/echo", content=body, headers=headers)
    assert response.status_code == 413


def test_streaming_upload_checks_the_body_hash(client, domain, members):
    alice = members["alice"]
    data = bytes(range(256)) * 100  # 25.6 KB, over max_body_bytes, under max_upload_bytes
    headers = sign_request(alice.account, domain, "POST", "/test/upload", streamed_body_hash=body_hash(data))
    ok = client.post("/test/upload", content=data, headers=headers)
    assert ok.status_code == 200 and ok.json() == {"size": len(data)}
    headers = sign_request(alice.account, domain, "POST", "/test/upload", streamed_body_hash=body_hash(data))
    bad = client.post("/test/upload", content=data[:-1] + b"\x00", headers=headers)
    assert bad.status_code == 401 and bad.json()["error"] == "body_hash_mismatch"
    unsigned_hash = sign_request(alice.account, domain, "POST", "/test/upload", data)  # no Body-Hash header
    assert client.post("/test/upload", content=data, headers=unsigned_hash).json()["error"] == "missing_auth"
