"""The error table: every domain error maps as declared, over real HTTP handling."""
from __future__ import annotations

import inspect
import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from api import errors as api_errors
from api.http_errors import DOMAIN_ROOTS, ERROR_TABLE, INTERNAL, PROBLEM_JSON, reason_code, register_exception_handlers, rule_for
from ledger import errors as ledger_errors
from ledger import reverts
from ledger.errors import ContractRevertError
from vault import errors as vault_errors


def make(cls: type[BaseException]) -> BaseException:
    """An instance of any error class of the three trees, with a recognisable message."""
    if issubclass(cls, ContractRevertError):
        return cls(cls.__name__, {"org": "0x" + "00" * 20}, "0x12345678", "0x12345678")
    if issubclass(cls, api_errors.InvalidFieldError):
        return cls("asset", "must be a number")
    if issubclass(cls, vault_errors.NoIdentityMatchError):
        return cls(["X25519: wrong key"])
    if issubclass(cls, vault_errors.GatewayError):
        return cls("bafy", [("http://gw", "timeout")])
    if issubclass(cls, vault_errors.KuboError):
        return cls("kubo said no", code=0, status=500)
    return cls(f"message of {cls.__name__}")


class Item(BaseModel):
    n: int


@pytest.fixture(scope="module")
def client():
    app = FastAPI()
    register_exception_handlers(app)
    raising: dict[str, BaseException] = {}

    @app.get("/raise/{key}")
    def raise_(key: str):
        raise raising[key]

    @app.post("/items")
    def items(item: Item):
        return {"n": item.n}

    app.state.raising = raising
    return TestClient(app, raise_server_exceptions=False)


ROWS = sorted(ERROR_TABLE.items(), key=lambda kv: (kv[0].__module__, kv[0].__name__))


@pytest.mark.parametrize("cls, rule", ROWS, ids=[f"{c.__module__.split('.')[0]}.{c.__name__}" for c, _ in ROWS])
def test_every_table_row_maps_as_declared(client, cls, rule):
    exc = make(cls)
    client.app.state.raising[cls.__qualname__] = exc
    response = client.get(f"/raise/{cls.__qualname__}")
    assert response.status_code == rule.status
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["error"] == (rule.code if rule.code is not None else exc.reason)
    assert body["detail"] == (str(exc) if rule.message is None else rule.message)
    assert body["error"] == reason_code(exc)


def _tree(root: type) -> set[type]:
    out, todo = set(), [root]
    while todo:
        cls = todo.pop()
        out.add(cls)
        todo.extend(cls.__subclasses__())
    return out


def test_every_error_class_of_the_packages_is_in_the_table():
    """Hand-written classes must have their own row; generated reverts may inherit one."""
    missing = []
    for module in (api_errors, vault_errors, ledger_errors):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, Exception) and cls not in ERROR_TABLE:
                missing.append(f"{module.__name__}.{cls.__name__}")
    assert missing == []


def test_every_domain_error_resolves_to_a_declared_rule():
    classes = set().union(*(_tree(root) for root in DOMAIN_ROOTS)) | {s.cls for s in reverts.ERRORS.values()}
    for cls in classes:
        assert rule_for(cls) is not INTERNAL, cls
    assert rule_for(RuntimeError) is INTERNAL


def test_all_decryption_failures_look_the_same(client):
    bodies = set()
    for cls in (vault_errors.DecryptionError, vault_errors.HeaderError, vault_errors.HeaderMACError,
                vault_errors.PayloadError):
        client.app.state.raising["d"] = cls(f"internal detail {cls.__name__}")
        response = client.get("/raise/d")
        bodies.add((response.status_code, response.text))
    assert len(bodies) == 1
    assert "internal detail" not in bodies.pop()[1]


def test_specific_revert_rules_win_over_the_generic_one():
    assert rule_for(reverts.AssetLedgerNotOwner).status == 403
    assert rule_for(reverts.ConsortiumOrgNotRegistered).code == "unknown_org"
    assert rule_for(reverts.UnknownRevert) == ERROR_TABLE[ContractRevertError]


def test_audit_seq_is_added_when_a_refusal_was_audited(client):
    client.app.state.raising["a"] = api_errors.AccessDeniedError("no READ grant", audit_seq=42)
    assert client.get("/raise/a").json() == {"error": "access_denied", "detail": "no READ grant", "audit_seq": 42}


def test_unknown_exception_is_a_500_without_internals(client, caplog):
    client.app.state.raising["x"] = RuntimeError("db password is hunter2")
    with caplog.at_level(logging.ERROR, logger="twinledger.api.errors"):
        response = client.get("/raise/x")
    assert response.status_code == 500
    assert response.json() == {"error": "internal_error", "detail": "internal server error"}
    assert "hunter2" not in response.text
    assert any("RuntimeError" in r.getMessage() for r in caplog.records)


def test_fixed_message_errors_do_not_leak_their_text(client):
    client.app.state.raising["r"] = ledger_errors.RpcError("connect to http://user:pw@rpc failed")
    response = client.get("/raise/r")
    assert response.status_code == 503 and "pw@" not in response.text


def test_malformed_json_is_400_and_invalid_shape_422(client):
    bad = client.post("/items", content=b'{"n": 1', headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"] == "malformed_json"
    shape = client.post("/items", json={"n": "not a number, and secret-ish"})
    assert shape.status_code == 422 and shape.json()["error"] == "invalid_request"
    assert "secret-ish" not in shape.text  # input values are never echoed


def test_unknown_route_and_method_are_problem_json(client):
    assert client.get("/nope").json()["error"] == "not_found"
    response = client.delete("/items")
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"
