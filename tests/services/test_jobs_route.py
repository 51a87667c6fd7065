"""POST /v1/jobs (services/analytics/node.py) on real node apps over a real Anvil: the data
owner's node ("plant") runs profile / stats / validate next to its data; the model comes
from the builder's node through an ordinary key release under the plant's own grant.

The node apps are the real create_app (tests/api/node_fixtures.py) with the analytics
extension installed; HTTP between nodes goes through `Hosts`, an httpx transport that
dispatches each request to the in-process app registered for its host (the apps' own
ASGI transports — no fakes). The requester ("maint") uses the SDK and the job client.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import httpx
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st

from api.sdk import RemoteForbiddenError, RemoteInputError, RemoteNotFoundError, TwinLedgerClient
from api.keystore import OrgKeys
from ledger.client import LedgerClient
from ledger.models import AssetKind, Permission, VersionRef
from services.analytics import REASONS
from services.analytics import run_job as run_locally
from services.analytics.cli import parse_params
from services.analytics.client import run_job
from services.analytics.node import RESULT_PURPOSE, RESULT_SCHEMA, install
from services.pilot.data import sensor_dataset, twin_model
from tests.api.conftest import Member
from tests.api.node_fixtures import NodeHarness
from tests.chain import anvil, deployment, dev_accounts, w3  # noqa: F401
from vault.age import X25519Identity

URLS = {"builder": "http://builder.test", "plant": "http://plant.test", "maint": "http://maint.test"}
NARROW = b"timestamp,temperature_c\n2025-03-03T06:00:00Z,21.5\n2025-03-03T06:00:10Z,21.7\n"
NON_NUMERIC = b"timestamp,temperature_c\n2025-03-03T06:00:00Z,21.5\n2025-03-03T06:00:10Z,warm\n"
GARBAGE = b"\x00\x01PK\x03\x04" + bytes(range(256)) * 8
BAD_DATA = {  # dataset name → (bytes, job, params, with model, expected reason)
    "empty": (b"", "profile", None, False, "empty_input"),
    "garbage": (GARBAGE, "stats", None, False, "unreadable_format"),
    "non-numeric": (NON_NUMERIC, "stats", None, False, "non_numeric"),
    "missing-columns": (None, "profile", {"columns": ["temperature_c", "oil_pressure_bar"]}, False, "missing_columns"),
    "model-does-not-fit": (NARROW, "validate", None, True, "model_mismatch"),
    "bad-params": (None, "stats", {"window": "fortnightly"}, False, "invalid_parameters"),
}


class Hosts(httpx.BaseTransport):
    """Routes a request to the in-process node app registered for its host."""

    def __init__(self) -> None:
        self.apps: dict[str, httpx.BaseTransport] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        target = self.apps.get(request.url.host)
        if target is None:
            raise httpx.ConnectError(f"no node at {request.url.host}", request=request)
        return target.handle_request(request)


@pytest.fixture(scope="module")
def hosts() -> Hosts:
    return Hosts()


@pytest.fixture(scope="module")
def orgs(w3, deployment, dev_accounts):  # noqa: F811
    """builder, plant, maint: registered with the test hosts; reader, outsider: members."""
    admin = LedgerClient(w3, deployment, dev_accounts[0])
    made = {}
    for index, name in enumerate(("builder", "plant", "maint", "reader", "outsider"), start=1):
        member = Member(dev_accounts[index], X25519Identity.generate())
        admin.register_org(member.address, name, member.recipient, URLS.get(name, f"http://{name}.test"))
        made[name] = member
    return made


@pytest.fixture(scope="module")
def nodes(orgs, hosts, w3, deployment, tmp_path_factory):  # noqa: F811
    home = tmp_path_factory.mktemp("jobs")
    extension = functools.partial(install, transport=hosts)
    with NodeHarness.start(orgs["builder"].account, orgs["builder"].identity, "builder", w3, deployment, home,
                           f"sqlite:///{home / 'builder.db'}", extensions=[extension]) as builder, \
            NodeHarness.start(orgs["plant"].account, orgs["plant"].identity, "plant", w3, deployment, home,
                              f"sqlite:///{home / 'plant.db'}", extensions=[extension]) as plant:
        hosts.apps["builder.test"] = builder.client._transport
        hosts.apps["plant.test"] = plant.client._transport
        yield {"builder": builder, "plant": plant}


def publish(harness: NodeHarness, name: str, data: bytes, kind: str = "dataset") -> int:
    asset_id = harness.create_asset(name, kind)
    answer = harness.publish(asset_id, data)
    assert answer.status_code == 201, answer.text
    return asset_id


@pytest.fixture(scope="module")
def world(nodes, orgs):
    """The builder's model (plant: READ, maint: SYNC), the plant's datasets (maint:
    COMPUTE; reader: READ on the good one) and two plant-owned models."""
    builder, plant = nodes["builder"], nodes["plant"]
    maint = orgs["maint"].address
    model_bytes = json.dumps(twin_model(1), sort_keys=True).encode()
    model = publish(builder, "spindle twin", model_bytes, "model")
    builder.grant(model, plant.address, ["READ"], purpose="plant operation")
    builder.grant(model, maint, ["SYNC"], purpose="twin sync")
    good_bytes = sensor_dataset(7, hours=0.5)
    datasets = {"good": publish(plant, "run 7", good_bytes)}
    for name, (data, *_rest) in BAD_DATA.items():
        datasets[name] = datasets["good"] if data is None else publish(plant, name, data)
    local_model = publish(plant, "plant twin copy", json.dumps(twin_model(2)).encode(), "model")
    broken_model = publish(plant, "broken twin", b'{"schema": "twinledger/cnc-tool-twin/1", "name": ', "model")
    deep_model = publish(plant, "deep twin", b"[" * 100_000, "model")  # would overflow the C stack in json.loads
    unshared_model = publish(plant, "unshared twin", model_bytes, "model")
    for asset_id in {*datasets.values(), local_model, broken_model, deep_model, unshared_model}:
        plant.grant(asset_id, maint, ["COMPUTE"], purpose="condition monitoring")
    plant.grant(datasets["good"], orgs["reader"].address, ["READ"], purpose="reporting")
    builder.grant(model, orgs["reader"].address, ["READ"], purpose="reporting")
    return {"model": model, "model_bytes": model_bytes, "good_bytes": good_bytes, "datasets": datasets,
            "local_model": local_model, "broken_model": broken_model, "deep_model": deep_model,
            "unshared_model": unshared_model}


@pytest.fixture(scope="module")
def maint_client(orgs, hosts, w3, deployment):  # noqa: F811
    keys = OrgKeys(name="maint", account=orgs["maint"].account, identity=orgs["maint"].identity)
    with TwinLedgerClient(URLS["plant"], keys, ledger=LedgerClient(w3, deployment), transport=hosts) as client:
        yield client


def job_dirs(plant: NodeHarness) -> list[Path]:
    tmp = plant.node.settings.org_dir / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


def record(harness: NodeHarness, seq: int) -> dict:
    answer = harness.get(f"/v1/audit/records?after_seq={seq - 1}&limit=1")
    assert answer.status_code == 200, answer.text
    (item,) = answer.json()["items"]
    assert item["seq"] == seq
    return item


# -- happy paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize("job", ["profile", "stats", "validate"])
def test_job_registers_a_report_the_requester_can_read(job, nodes, world, orgs, maint_client, tmp_path):
    builder, plant = nodes["builder"], nodes["plant"]
    dataset = world["datasets"]["good"]
    model = VersionRef(world["model"], 1) if job != "stats" else None
    count_before = plant.ledger.asset_count()

    run = run_job(maint_client, URLS["plant"], job, dataset, 1, model=model)

    # a new report asset, owned by the data owner, version 1, parents = the exact inputs
    assert plant.ledger.asset_count() == count_before + 1
    state = plant.ledger.get_asset(run.result.asset_id)
    assert (state.owner, state.kind, state.version_count) == (plant.address, AssetKind.REPORT, 1)
    assert run.result.version == 1
    indexed = plant.node.queries.version(run.result.asset_id, 1)
    assert indexed.cid == run.cid
    assert list(indexed.parents) == [VersionRef(dataset, 1), *([model] if model else [])]
    grant = plant.ledger.get_grant(run.result.asset_id, orgs["maint"].address)
    assert grant.permissions == Permission.READ

    # the requester fetches it with an ordinary key release; the report is the job's on the inputs
    out = tmp_path / "report.json"
    maint_client.get(run.result.asset_id, 1, out, purpose=RESULT_PURPOSE, record=False)
    document = json.loads(out.read_bytes())
    assert document["schema"] == RESULT_SCHEMA and document["job"] == job and document["job_id"] == run.job_id
    assert document["inputs"] == {"dataset": f"{dataset}@1", **({"model": f"{model.asset_id}@1"} if model else {})}
    expected = run_locally(job, {"dataset": world["good_bytes"],
                                 **({"model": world["model_bytes"]} if model else {})})
    assert document["report"] == json.loads(expected.report_json)
    assert document["markdown"] == expected.report_markdown

    # audited: job_run by the requester with the result; the raw data never left (no key for it)
    item = record(plant, run.audit_seq)
    assert (item["kind"], item["actor"], item["asset"], item["version"]) == ("job_run", orgs["maint"].address,
                                                                           dataset, 1)
    assert item["details"]["result"] == {"asset_id": run.result.asset_id, "version": 1, "cid": run.cid}
    assert item["details"]["job_id"] == run.job_id
    released = plant.get(f"/v1/audit/records?kind=key_released&asset={dataset}").json()["items"]
    assert released == []
    if model is not None:  # the builder released the model to the plant, which recorded the consumption
        to_plant = builder.get(f"/v1/audit/records?kind=key_released&asset={model.asset_id}").json()["items"]
        assert any(r["actor"] == plant.address for r in to_plant)
        consumed = plant.get(f"/v1/audit/records?kind=consumption_recorded&asset={model.asset_id}").json()["items"]
        assert consumed and consumed[-1]["details"]["owner"] == builder.address
    assert job_dirs(plant) == []


def test_validate_with_a_model_of_the_data_owner(nodes, world, maint_client, tmp_path):
    plant = nodes["plant"]
    run = run_job(maint_client, None, "validate", world["datasets"]["good"], 1, model=f"{world['local_model']}@1")
    assert list(plant.node.queries.version(run.result.asset_id, 1).parents) == [
        VersionRef(world["datasets"]["good"], 1), VersionRef(world["local_model"], 1)]
    out = tmp_path / "report.json"
    maint_client.get(run.result.asset_id, 1, out, purpose=RESULT_PURPOSE, record=False)
    expected = run_locally("validate", {"dataset": world["good_bytes"], "model": json.dumps(twin_model(2)).encode()})
    assert json.loads(out.read_bytes())["report"] == json.loads(expected.report_json)
    assert job_dirs(plant) == []


# -- refusals ---------------------------------------------------------------------------------------


def assert_refused(plant: NodeHarness, answer: httpx.Response, status: int, reason: str, requester: str,
                   assets_before: int) -> dict:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == reason
    item = record(plant, body["audit_seq"])
    assert (item["kind"], item["actor"]) == ("job_failed", requester)
    assert item["details"]["reason"] == reason
    assert plant.ledger.asset_count() == assets_before  # no report registered
    assert job_dirs(plant) == []
    return item


@pytest.mark.parametrize("who, reason", [("outsider", "no_grant"), ("reader", "permission_not_granted")])
def test_requester_without_compute_is_denied_and_audited(who, reason, nodes, world, orgs):
    plant = nodes["plant"]
    before = plant.ledger.asset_count()
    answer = plant.post_json("/v1/jobs", {"job": "profile", "asset_id": world["datasets"]["good"], "version": 1},
                             signer=orgs[who].account)
    item = assert_refused(plant, answer, 403, reason, orgs[who].address, before)
    assert item["asset"] == world["datasets"]["good"] and item["details"]["inputs"] == {
        "dataset": f"{world['datasets']['good']}@1"}


def test_revoked_compute_is_denied(nodes, world, orgs):
    plant = nodes["plant"]
    dataset = world["datasets"]["non-numeric"]
    plant.post_json(f"/v1/assets/{dataset}/grants", {"grantee": orgs["outsider"].address,
                                                    "permissions": ["COMPUTE"], "ttl_seconds": 3600})
    assert plant.delete(f"/v1/assets/{dataset}/grants/{orgs['outsider'].address}").status_code == 200
    before = plant.ledger.asset_count()
    answer = plant.post_json("/v1/jobs", {"job": "stats", "asset_id": dataset, "version": 1},
                             signer=orgs["outsider"].account)
    assert_refused(plant, answer, 403, "grant_revoked", orgs["outsider"].address, before)


def test_model_the_requester_may_not_use_is_refused(nodes, world, orgs, maint_client):
    plant = nodes["plant"]
    before = plant.ledger.asset_count()
    answer = plant.post_json("/v1/jobs", {"job": "validate", "asset_id": world["datasets"]["good"], "version": 1,
                                          "model": {"asset_id": world["unshared_model"] + 10_000, "version": 1}},
                             signer=orgs["maint"].account)
    assert answer.status_code == 404 and answer.json()["error"] == "unknown_asset"
    plant.delete(f"/v1/assets/{world['unshared_model']}/grants/{orgs['maint'].address}")
    with pytest.raises(RemoteForbiddenError) as refused:
        run_job(maint_client, URLS["plant"], "validate", world["datasets"]["good"], 1,
                model=(world["unshared_model"], 1))
    assert refused.value.reason == "model_not_permitted"
    assert record(plant, refused.value.audit_seq)["details"]["reason"] == "model_not_permitted"
    assert plant.ledger.asset_count() == before


def test_asset_of_another_org_is_not_run_here(nodes, world, orgs, maint_client):
    with pytest.raises(RemoteNotFoundError) as refused:
        run_job(maint_client, URLS["plant"], "profile", world["model"], 1)
    assert refused.value.reason == "not_owner_node" and refused.value.audit_seq is not None
    with pytest.raises(RemoteNotFoundError) as missing:
        run_job(maint_client, URLS["plant"], "profile", world["datasets"]["good"], 9)
    assert missing.value.reason == "unknown_asset_version"


# -- bad data ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_ends_the_job_with_an_audited_reason(case, nodes, world, orgs):
    plant = nodes["plant"]
    _data, job, params, with_model, reason = BAD_DATA[case]
    body = {"job": job, "asset_id": world["datasets"][case], "version": 1}
    if with_model:
        body["model"] = {"asset_id": world["model"], "version": 1}
    if params is not None:
        body["params"] = params
    before = plant.ledger.asset_count()
    answer = plant.post_json("/v1/jobs", body, signer=orgs["maint"].account)
    item = assert_refused(plant, answer, 422, reason, orgs["maint"].address, before)
    assert answer.json()["detail"] and item["details"]["detail"] == answer.json()["detail"][:500]
    assert item["details"]["job"] == job


@pytest.mark.parametrize("body_extra, reason", [
    ({"job": "validate", "model": "broken"}, "invalid_model"),
    ({"job": "validate", "model": "deep"}, "invalid_model"),   # 100,000 nested arrays: refused, no crash
    ({"job": "validate"}, "invalid_parameters"),          # validate needs a model
    ({"job": "stats", "model": "local"}, "invalid_parameters"),  # stats takes none
])
def test_unusable_model_or_inputs_are_refused(body_extra, reason, nodes, world, orgs):
    plant = nodes["plant"]
    body = {"asset_id": world["datasets"]["good"], "version": 1, "job": body_extra["job"]}
    if "model" in body_extra:
        body["model"] = {"asset_id": world[f"{body_extra['model']}_model"], "version": 1}
    before = plant.ledger.asset_count()
    answer = plant.post_json("/v1/jobs", body, signer=orgs["maint"].account)
    assert_refused(plant, answer, 422, reason, orgs["maint"].address, before)


def test_client_raises_the_reason_of_bad_data(world, maint_client):
    with pytest.raises(RemoteInputError) as refused:
        run_job(maint_client, URLS["plant"], "profile", world["datasets"]["empty"], 1)
    assert refused.value.status == 422 and refused.value.reason == "empty_input"
    assert refused.value.audit_seq is not None


def test_malformed_job_requests_are_422_without_a_report(nodes, world, orgs):
    plant = nodes["plant"]
    before = plant.ledger.asset_count()
    for body in ({"job": "rm -rf", "asset_id": 1, "version": 1},
                 {"job": "stats", "asset_id": world["datasets"]["good"], "version": 0},
                 {"job": "stats", "asset_id": world["datasets"]["good"], "version": 1, "code": "print(1)"}):
        answer = plant.post_json("/v1/jobs", body, signer=orgs["maint"].account)
        assert answer.status_code == 422 and answer.json()["error"] == "invalid_request", answer.text
    assert plant.ledger.asset_count() == before
    unsigned = plant.client.post("/v1/jobs", json={"job": "stats", "asset_id": 1, "version": 1})
    assert unsigned.status_code == 401


def test_reasons_cover_every_job_input_error():
    """Every reason the engine can raise has a case above (or in the model tests)."""
    covered = {case[4] for case in BAD_DATA.values()} | {"invalid_model"}
    assert covered == set(REASONS) - {"too_large"}  # too_large: limits are the engine's (its own tests)


# -- CLI parameters (`twinledger analytics run --param k=v`) ---------------------------------------

_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                         max_size=3), max_leaves=6)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12), _json_values,
                       max_size=4))
def test_param_values_round_trip_as_json(params):
    items = [f"{k}={json.dumps(v)}" for k, v in params.items()]
    assert parse_params(items) == params


def test_param_values_that_are_not_json_stay_strings():
    assert parse_params(["window=15min", "time_column=ts", "gap_factor=3"]) == {
        "window": "15min", "time_column": "ts", "gap_factor": 3}
    for bad in ("window", "=3", " =x"):
        with pytest.raises(typer.BadParameter):
            parse_params([bad])
