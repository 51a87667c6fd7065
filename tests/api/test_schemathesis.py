"""Schemathesis over the node's own OpenAPI schema: no operation may answer 5xx (DESIGN §8:
"malformed input at any boundary → a 4xx, never a 500").

The node is the real app (create_app) in-process on a real Anvil deployment, with a
registered org, SQLite and the embedded blockstore. Two runs over every operation:

* unsigned — random input as any outsider sends it (signed routes answer 401, open routes
  such as the gateway and health answer whatever their validators say);
* signed — every generated request is signed as the node's own org by `SigningClient`
  below, so bodies, paths and queries get past authentication into the validators and
  use cases.

Bounded: 20 examples per operation and run (TWINLEDGER_TEST_FUZZ_EXAMPLES for more), drawn from schemathesis' positive and
negative generation modes, with a fixed seed, no example database and no shrinking (a
failure reports the first 5xx example as a curl line); only the `not_a_server_error` check
runs (no response-time check: tests carry no timing thresholds). ~30 s for both runs.
"""
from __future__ import annotations

import logging
import os
import re
import uuid

import pytest
import schemathesis
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup

from api.app import create_app
from api.auth import Eip712Domain, body_hash, sign_request
from api.keystore import init_org, load_org_keys
from api.settings import load_settings

PASS = "schemathesis node passphrase"
SIGN_MARKER = b"x-test-sign"
SEED = 20251122
# Deeper exploration on demand: TWINLEDGER_TEST_FUZZ_EXAMPLES=200 (and a different TWINLEDGER_TEST_FUZZ_SEED).
MAX_EXAMPLES = int(os.environ.get("TWINLEDGER_TEST_FUZZ_EXAMPLES", "20"))
SEED = int(os.environ.get("TWINLEDGER_TEST_FUZZ_SEED", str(SEED)))
BOUNDED = settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                   suppress_health_check=list(HealthCheck))


class SigningClient:
    """ASGI wrapper that signs each request carrying `X-Test-Sign` as `account`, over the
    exact bytes the app receives: EIP-712 NodeRequest over method, raw path + query and
    keccak256(body) — the SDK's job (api.auth.sign_request), done here because schemathesis
    builds the requests. The body hash also travels in X-TwinLedger-Body-Hash, so JSON and
    streamed upload routes both accept it. Requests without the marker pass untouched."""

    def __init__(self, app, account, domain: Eip712Domain) -> None:
        self.app, self.account, self.domain = app, account, domain

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not any(k == SIGN_MARKER for k, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if raw else scope["path"]
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        signed = sign_request(self.account, self.domain, scope["method"], path,
                              streamed_body_hash=body_hash(body))
        headers = [(k, v) for k, v in scope["headers"] if k != SIGN_MARKER and not k.startswith(b"x-twinledger-")]
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in signed.items()]
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app({**scope, "headers": headers}, replay, send)


@pytest.fixture(scope="module")
def node_home(tmp_path_factory, deployment, admin_ledger, members):
    """A registered org "acme" with funds for its own transactions (assets, grants, anchors)."""
    home = tmp_path_factory.mktemp("schemathesis-home")
    public = init_org(home, "acme", PASS, insecure_fast_kdf=True)
    admin_ledger.register_org(public.address, "acme", public.age_recipient, "http://127.0.0.1:8799")
    admin_ledger.w3.provider.make_request("anvil_setBalance", [public.address, hex(10**21)])
    deployment.save(home / "devnet" / "deployment.json")
    (home / "pass.txt").write_text(PASS + "\n")
    return home


@pytest.fixture()
def node_schema(node_home, anvil, deployment):
    """A fresh app per test: schemathesis' pytest plugin ends the app's lifespan (and with it
    the node's background loops, which do not restart) at each test's teardown."""
    node_settings = load_settings(home=node_home, org="acme", rpc_url=anvil.url,
                                  passphrase_file=node_home / "pass.txt", anchor_every_seconds=1.0,
                                  database_url=f"sqlite:///{node_home / f'node-{uuid.uuid4().hex}.db'}")
    keys = load_org_keys(node_home, "acme", PASS)
    app = create_app(node_settings, keys=keys)
    # Schemathesis runs the app's lifespan (indexer, anchoring loops) in its own event loop.
    yield schemathesis.openapi.from_asgi("/openapi.json", SigningClient(app, keys.account,
                                                                        Eip712Domain.from_deployment(deployment)))
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()  # stop the loops before the chain fixtures go away


def _fuzz(operation, headers: dict[str, str] | None) -> None:
    """20 positive + negative examples of one operation; fails on the first 5xx with a
    one-paragraph report (status, body, curl reproduction) instead of the app's traceback."""
    strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                         operation.as_strategy(GenerationMode.NEGATIVE))

    @BOUNDED
    @seed(SEED)
    @given(case=strategy)
    def run(case) -> None:
        case.call_and_validate(headers=headers, checks=[not_a_server_error])

    try:
        run()
    except FailureGroup as exc:  # a 5xx response
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        status = next((i for i, line in enumerate(lines) if re.match(r"\[5\d\d\]", line)), None)
        answer = " ".join(lines[status:status + 2]) if status is not None else "a 5xx"
        pytest.fail(f"{operation.label} answered {answer}\n    reproduce: {_curl(exc)}", pytrace=False)
    except Exception as exc:  # the app raised (the in-process client re-raises what would be a 500)
        pytest.fail(f"{operation.label} raised {type(exc).__name__}: {exc}\n    reproduce: {_curl(exc)}",
                    pytrace=False)


def _curl(exc: BaseException) -> str:
    text = "\n".join([str(exc), *getattr(exc, "__notes__", [])])
    return next((line.strip() for line in text.splitlines() if line.strip().startswith("curl ")), "(no example)")


def _operations(schema) -> list:
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {"GET /healthz", "GET /readyz", "GET /metrics"} <= {op.label for op in operations}
    return operations


# schemathesis' own pytest integration (`from_fixture` + `parametrize`) does not run on
# pytest 9 (it sets Function._nodeid), so each operation runs as a pytest subtest.
@pytest.mark.slow
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed-as-own-org"])
def test_no_operation_answers_5xx(node_schema, subtests, caplog, signed):
    caplog.set_level(logging.CRITICAL, logger="twinledger")  # 500 tracebacks: the report has the example
    for operation in _operations(node_schema):
        with subtests.test(msg=operation.label):
            _fuzz(operation, {"X-Test-Sign": "1"} if signed else None)


def test_the_signing_client_gets_signed_requests_past_authentication(node_schema, deployment):
    """Else the signed run would silently be a second unsigned run (all 401)."""
    client = TestClient(node_schema.app)  # no lifespan: plain requests
    assert client.get("/v1/audit/head").status_code == 401
    head = client.get("/v1/audit/head", headers={"X-Test-Sign": "1"})
    assert head.status_code == 200, head.text
    created = client.post("/v1/assets?x=1", json={"kind": "model", "name": "signed-by-wrapper"},
                          headers={"X-Test-Sign": "1"})  # body hash and query are covered too
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "signed-by-wrapper" and created.json()["tx_hash"].startswith("0x")


def test_the_harness_reports_a_5xx_with_a_reproduction():
    """_fuzz fails — naming the operation and a curl line — on an app that 500s on some input."""
    broken = FastAPI()

    @broken.get("/items/{item_id}")
    def item(item_id: int) -> dict:
        if item_id > 1000:
            raise HTTPException(status_code=500, detail="boom")
        return {"id": item_id}

    schema = schemathesis.openapi.from_asgi("/openapi.json", broken)
    operation = next(result.ok() for result in schema.get_all_operations())
    with pytest.raises(pytest.fail.Exception) as failed:
        _fuzz(operation, None)
    assert "GET /items/{item_id} answered [500]" in str(failed.value)
    assert "reproduce: curl -X GET" in str(failed.value) and "/items/" in str(failed.value)
