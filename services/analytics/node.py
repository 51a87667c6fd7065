"""Compute-to-data on the data owner's node: `POST /v1/jobs` (docs/api.md "Compute-to-data").

Installed as a node extension (pyproject entry point `twinledger.node_extensions`):

    install(app, node)                       # create_app calls it for every installed node
    run_compute_job(node, requester, "validate", VersionRef(7, 1), model=VersionRef(3, 1))

A member holding COMPUTE on an asset version asks the asset owner's node to run one of
the built-in jobs (services.analytics.run_job: profile, stats, validate). No foreign code
runs and the raw data never leaves the node: the input is opened from the node's own
vault into a per-job directory under `<org dir>/tmp`, removed whatever happens.

Checks, in order (the first failure is the outcome):

    1. the job takes the inputs given (model for validate, none for stats)  invalid_parameters (422)
    2. the input asset is this node's own, the version exists               unknown_asset / not_owner_node /
                                                                            unknown_asset_version (404)
    3. the requester holds COMPUTE on it (hasAccess, latest block)          no_grant, grant_revoked,
                                                                            grant_expired, permission_not_granted,
                                                                            asset_retired (403)
    4. the requester may use the model: owns it, or holds READ, SYNC or     model_not_permitted (403)
       COMPUTE on it (the report is derived from it)
    5. the model is obtained: from the own vault, or — owned by another     model_unavailable (403), or the other
       org — through an ordinary key release under THIS node's own grant    node's refusal (502)
       (READ, else SYNC, with the grant's purpose), recorded as a consumption
    6. the job runs; bad data ends it                                        the JobInputError reason (422)
    7. the result document is sealed and registered as version 1 of a new `report` asset owned by
       this node's org, parents = [input version, model version]; the requester is granted READ
       (purpose "compute result") and fetches it with an ordinary key release.

Every outcome after authentication is an audit record, committed before the answer:
`job_run` (job id, inputs, result ref, params digest) or `job_failed` with `details.reason`
= the code of the error the caller receives (which then carries `audit_seq`). Parameters
go into records only as a SHA-256 digest (audit records hold no floats and stay small).

Result document (the sealed plaintext, canonical JSON, sorted keys):
    {"schema": "twinledger/job-result/1", "job_id", "job", "inputs": {"dataset": "A@V",
     "model": "M@V"}, "requester", "report": <the job's report object>, "markdown": "…"}
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import pydantic_core
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, ConfigDict, Field

from api.deps import AuthenticatedOrg, NodeDep
from api.errors import AccessDeniedError, ApiError, InputValidationError, NotFoundError
from api.http_errors import DOMAIN_ROOTS
from api.node import Node
from api.usecases import create_asset, grant, publish_version, record_consumption
from api.usecases._common import audit, format_ref
from ledger.audit import AuditKind
from ledger.models import AssetKind, AssetState, Permission, VersionRef
from services.analytics import JobError, JobInputError, available_jobs, run_job
from services.analytics._twin_model import MAX_MODEL_BYTES

RESULT_SCHEMA = "twinledger/job-result/1"
RESULT_PURPOSE = "compute result"  # purpose of the requester's READ grant on the report
RESULT_GRANT_TTL = 365 * 86400
MODEL_USES = (Permission.READ, Permission.SYNC, Permission.COMPUTE)
_MAX_DETAIL = 500  # characters of an error message kept in an audit record
_MAX_ROWS = 20
JSON_MAX_DEPTH = 200  # pydantic-core's recursion limit

JobName = Literal["profile", "stats", "validate"]


# -- request / answer models --------------------------------------------------------------------


class JobRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    asset_id: int = Field(ge=0, lt=2**256)
    version: int = Field(ge=1, lt=2**32)


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"job": "validate", "asset_id": 7, "version": 1, "model": {"asset_id": 3, "version": 1}, "params": {}}]})
    job: JobName
    asset_id: int = Field(ge=0, lt=2**256, description="the input dataset (an asset of this node's org)")
    version: int = Field(ge=1, lt=2**32)
    model: JobRef | None = Field(None, description="twin model version (required by validate, optional for profile)")
    params: dict[str, Any] | None = Field(None, description="job parameters (services/analytics/jobs.py)")


class JobResultRef(BaseModel):
    asset_id: int
    version: int
    cid: str


class JobAccepted(BaseModel):
    job_id: str
    status: Literal["succeeded"]
    result: JobResultRef
    audit_seq: int


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    job: str
    result: VersionRef
    cid: str
    parents: tuple[VersionRef, ...]
    audit_seq: int


# -- installation -------------------------------------------------------------------------------


def install(app: FastAPI, node: Node, *, transport: httpx.BaseTransport | None = None) -> None:
    """Add POST /v1/jobs to a node app. `transport` is handed to the SDK client the node
    uses to obtain a model from another org's node (tests route it to in-process apps)."""
    app.include_router(job_router(transport))


def job_router(transport: httpx.BaseTransport | None = None) -> APIRouter:
    router = APIRouter(tags=["jobs"])

    @router.post("/v1/jobs", status_code=201, response_model=JobAccepted,
                 summary="Run a built-in job next to the data (member holding COMPUTE)",
                 responses={403: {"description": "no COMPUTE (audited job_failed)"},
                            404: {"description": "unknown asset/version, or not this node's asset"},
                            422: {"description": "bad data: `error` is the job's reason code (audited)"}})
    def post_job(body: JobRequest, caller: AuthenticatedOrg, node: NodeDep) -> JobAccepted:
        model = VersionRef(body.model.asset_id, body.model.version) if body.model else None
        outcome = run_compute_job(node, caller.address, body.job, VersionRef(body.asset_id, body.version),
                                  model=model, params=body.params, transport=transport)
        return JobAccepted(job_id=outcome.job_id, status="succeeded", audit_seq=outcome.audit_seq,
                           result=JobResultRef(asset_id=outcome.result.asset_id, version=outcome.result.version,
                                               cid=outcome.cid))

    return router


# -- the use case -------------------------------------------------------------------------------


def run_compute_job(node: Node, requester: str, job: str, dataset: VersionRef, *, model: VersionRef | None = None,
                    params: dict[str, Any] | None = None,
                    transport: httpx.BaseTransport | None = None) -> JobOutcome:
    """Check, run, seal, register, grant, audit (module docstring). Raises a domain error
    carrying `audit_seq` (the job_failed record) on any failure."""
    job_id = uuid.uuid4().hex
    params = dict(params or {})
    inputs = {"dataset": format_ref(dataset), **({"model": format_ref(model)} if model else {})}
    base = {"job_id": job_id, "job": job, "requester": requester, "inputs": inputs,
            "params_sha256": _params_digest(params)}
    started = time.monotonic()
    workdir: Path | None = None
    try:
        _check_inputs(job, model)
        _require_compute(node, requester, dataset)
        if model is not None:
            model_state = _require_model_use(node, requester, model)
        tmp_root = (node.settings.org_dir if node.settings.org else node.settings.home) / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="job-", dir=tmp_root))
        files = {"dataset": _open_own(node, dataset, workdir / "dataset")}
        if model is not None:
            files["model"] = _guard_nesting(_obtain_model(node, model, model_state, workdir / "model", transport))
        try:
            result = run_job(job, files, params)
        except JobInputError:
            raise
        except JobError as exc:  # not the data's fault: an internal failure of the engine
            raise ApiError(f"job {job} failed: {exc}", reason="job_error") from None
        document = workdir / "result.json"
        document.write_bytes(_result_document(job_id, job, inputs, requester, result.report, result.report_markdown))
        parents = (dataset, model) if model is not None else (dataset,)
        created = create_asset(node, AssetKind.REPORT, f"{job} report of {inputs['dataset']}",
                               {"job": job, "job_id": job_id, "inputs": inputs}, actor=requester)
        published = publish_version(node, created.asset_id, document, parents, actor=requester)
        grant(node, created.asset_id, requester, Permission.READ, ttl_seconds=RESULT_GRANT_TTL,
              purpose=RESULT_PURPOSE, actor=requester)
    except JobInputError as exc:
        record = _failed(node, requester, dataset, base, exc.reason, exc.message, _job_error(exc))
        raise InputValidationError(exc.message, reason=exc.reason, audit_seq=record) from None
    except Exception as exc:
        public = isinstance(exc, DOMAIN_ROOTS)  # our trees' messages are written for callers; others may not be
        seq = _failed(node, requester, dataset, base, node.reason_code(exc), str(exc) if public else type(exc).__name__)
        try:
            exc.audit_seq = seq  # type: ignore[attr-defined]  # the problem body names the record
        except AttributeError:
            pass
        raise
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    ref = VersionRef(published.asset_id, published.version)
    seq = audit(node, AuditKind.JOB_RUN, requester, dataset.asset_id, dataset.version, {
        **base, "result": {"asset_id": ref.asset_id, "version": ref.version, "cid": published.cid},
        "parents": [format_ref(p) for p in parents], "publish_audit_seq": published.audit_seq,
        "duration_ms": int((time.monotonic() - started) * 1000)}).seq
    return JobOutcome(job_id, job, ref, published.cid, parents, seq)


# -- checks ---------------------------------------------------------------------------------------


def _check_inputs(job: str, model: VersionRef | None) -> None:
    spec = available_jobs().get(job)
    if spec is None:
        raise JobInputError("invalid_parameters", f"unknown job {job[:40]!r}; available: {sorted(available_jobs())}")
    takes_model = "model" in spec["inputs"] or "model" in spec["optional_inputs"]
    if model is None and "model" in spec["inputs"]:
        raise JobInputError("invalid_parameters", f"job {job} needs a model version (model: {{asset_id, version}})")
    if model is not None and not takes_model:
        raise JobInputError("invalid_parameters", f"job {job} takes no model")


def _own_version(node: Node, ref: VersionRef) -> AssetState:
    state = node.ledger.get_asset(ref.asset_id)  # AssetLedgerUnknownAsset → 404 unknown_asset
    if state.owner != node.address:
        raise NotFoundError(f"asset {ref.asset_id} is owned by {state.owner}; ask that org's node",
                            reason="not_owner_node")
    _require_version(state, ref)
    return state


def _require_version(state: AssetState, ref: VersionRef) -> None:
    if not 1 <= ref.version <= state.version_count:
        raise NotFoundError(f"asset {ref.asset_id} has no version {ref.version} ({state.version_count} registered)",
                            reason="unknown_asset_version")


def _require_compute(node: Node, requester: str, ref: VersionRef) -> None:
    state = _own_version(node, ref)
    if node.ledger.has_access(ref.asset_id, requester, Permission.COMPUTE):
        return
    reason, why = _why_not(node, ref.asset_id, requester, Permission.COMPUTE, state)
    raise AccessDeniedError(f"{requester} may not COMPUTE on asset {ref.asset_id}: {why}", reason=reason)


def _why_not(node: Node, asset_id: int, org: str, permission: Permission, state: AssetState) -> tuple[str, str]:
    """Why hasAccess said no, read from the chain right after it."""
    if state.retired:
        return "asset_retired", "the asset is retired"
    found = node.ledger.get_grant(asset_id, org)
    if found.permissions == 0:
        indexed = _indexed_grant(node, asset_id, org)
        if indexed is not None and not indexed.active:
            return "grant_revoked", "the grant was revoked"
        return "no_grant", "there is no grant"
    if found.expiry <= node.ledger.chain_time():
        return "grant_expired", f"the grant expired at {found.expiry}"
    if found.permissions & permission != permission:
        held = ", ".join(p.name for p in Permission if p & found.permissions)  # type: ignore[misc]
        return "permission_not_granted", f"the grant holds {held}"
    return "access_denied", "the on-chain policy says no"


def _indexed_grant(node: Node, asset_id: int, org: str):
    """The grant as indexed (it keeps the purpose text and revocations); the index is
    brought up to the chain's head first if it does not know the grant yet."""
    assert node.queries is not None
    found = node.queries.grant(asset_id, org)
    if found is None:
        node.wait_indexed(node.ledger.block_number())
        found = node.queries.grant(asset_id, org)
    return found


def _require_model_use(node: Node, requester: str, model: VersionRef) -> AssetState:
    state = node.ledger.get_asset(model.asset_id)
    _require_version(state, model)
    if state.owner == requester or any(node.ledger.has_access(model.asset_id, requester, p) for p in MODEL_USES):
        return state
    raise AccessDeniedError(f"{requester} holds no grant on model asset {model.asset_id}: a report derived from it "
                            "would disclose it", reason="model_not_permitted")


# -- inputs ----------------------------------------------------------------------------------------


def _open_own(node: Node, ref: VersionRef, out: Path) -> Path:
    """Decrypt an own version into `out` (inside the job directory), verified."""
    assert node.queries is not None
    record = node.queries.version(ref.asset_id, ref.version)
    if record is None:  # on chain, not indexed yet
        node.wait_indexed(node.ledger.block_number())
        record = node.queries.version(ref.asset_id, ref.version)
    if record is None or record.cid is None:
        raise NotFoundError(f"version {format_ref(ref)} has no content on this node", reason="unknown_asset_version")
    node.vault.open(record.cid, None, node.keys.identity, out, commitment=bytes.fromhex(record.commitment[2:]))
    return out


def _obtain_model(node: Node, ref: VersionRef, state: AssetState, out: Path,
                  transport: httpx.BaseTransport | None) -> Path:
    if state.owner == node.address:
        return _open_own(node, ref, out)
    from api.sdk import TwinLedgerClient  # the node acts as an ordinary consumer here

    held = node.ledger.get_grant(ref.asset_id, node.address).permissions
    use = next((p for p in (Permission.READ, Permission.SYNC) if p & held), None)
    if use is None:
        raise AccessDeniedError(f"this node's org holds no READ or SYNC grant on model asset {ref.asset_id}",
                                reason="model_unavailable")
    indexed = _indexed_grant(node, ref.asset_id, node.address)
    purpose = indexed.purpose if indexed is not None and indexed.purpose else ""
    endpoint = node.ledger.get_org(state.owner).endpoint
    with TwinLedgerClient(endpoint, node.keys, ledger=node.ledger, transport=transport) as client:
        got = client.get(ref.asset_id, ref.version, out, permission=use, purpose=purpose, record=False)
    record_consumption(node, got.receipt, "0x" + got.receipt_signature.hex(), got.cid, got.sha256)
    return out


def _guard_nesting(path: Path) -> Path:
    """Refuse a model document nested deeper than JSON_MAX_DEPTH before the engine's
    json.loads sees it: web3 (py_ecc) raises the interpreter's recursion limit to 100,000
    in every node process, so a document of ~80,000 "[" overflows the C stack there
    (a crash, not a RecursionError). pydantic-core's parser stops at its own depth limit."""
    if path.stat().st_size > MAX_MODEL_BYTES:
        return path  # the engine refuses it as too_large without parsing it
    try:
        pydantic_core.from_json(path.read_bytes(), allow_inf_nan=True)
    except ValueError as exc:
        if "recursion limit" in str(exc):
            raise JobInputError("invalid_model", f"the document is nested deeper than {JSON_MAX_DEPTH} levels",
                                input_name="model") from None
    return path


# -- result and audit ------------------------------------------------------------------------------


def _result_document(job_id: str, job: str, inputs: dict[str, str], requester: str, report: dict,
                     markdown: str) -> bytes:
    doc = {"schema": RESULT_SCHEMA, "job_id": job_id, "job": job, "inputs": inputs, "requester": requester,
           "report": report, "markdown": markdown}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _params_digest(params: dict[str, Any]) -> str:
    try:
        text = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(sorted(params))
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


def _job_error(exc: JobInputError) -> dict[str, Any]:
    info = {"columns": [str(c)[:64] for c in exc.columns[:_MAX_ROWS]], "rows": list(exc.rows[:_MAX_ROWS])}
    if exc.input_name is not None:
        info["input"] = exc.input_name
    return info


def _failed(node: Node, requester: str, dataset: VersionRef, base: dict[str, Any], reason: str, detail: str,
            extra: dict[str, Any] | None = None) -> int:
    details = {**base, "reason": reason, "detail": detail[:_MAX_DETAIL], **(extra or {})}
    return audit(node, AuditKind.JOB_FAILED, requester, dataset.asset_id, dataset.version, details).seq


__all__ = ["JobAccepted", "JobOutcome", "JobRequest", "RESULT_PURPOSE", "RESULT_SCHEMA", "install", "job_router",
           "run_compute_job"]
