"""The requester's side of compute-to-data: ask the data owner's node to run a job.

    from services.analytics.client import run_job
    run = run_job(client, None, "validate", dataset_id, 1, model=(model_id, 1))
    client.get(run.result.asset_id, run.result.version, "report.json", purpose=run.purpose)

`client` is an api.sdk.TwinLedgerClient; the request is an ordinary signed NodeRequest to
`owner_node_url` (None: the asset owner's endpoint from the on-chain registry, never from a
node). The answer names the report version the owner registered for the requester; its
contents come with an ordinary key release (READ, purpose "compute result").
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from api.errors import InputValidationError, UntrustedAnswerError
from api.sdk._http import NodeHttp
from api.sdk.models import uint
from ledger.models import VersionRef

JOB_TIMEOUT = httpx.Timeout(30.0, read=600.0)  # the node runs the job and registers its result before answering
RESULT_PURPOSE = "compute result"  # the purpose of the requester's READ grant on the report (services/analytics/node.py)
ModelRef = VersionRef | tuple[int, int] | str


@dataclass(frozen=True)
class JobRun:
    job_id: str
    status: str
    result: VersionRef
    cid: str
    audit_seq: int
    owner_node: str
    purpose: str = RESULT_PURPOSE

    def to_json(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "status": self.status, "audit_seq": self.audit_seq,
                "result": {"asset_id": self.result.asset_id, "version": self.result.version, "cid": self.cid},
                "owner_node": self.owner_node, "purpose": self.purpose}


def run_job(client: Any, owner_node_url: str | None, job: str, asset: int, version: int,
            model: ModelRef | None = None, params: Mapping[str, Any] | None = None) -> JobRun:
    """POST /v1/jobs at the owner's node, signed as the client's org. Raises the SDK's
    RemoteError subclasses on refusal (403 with audit_seq, 422 with the job's reason)."""
    body: dict[str, Any] = {"job": job, "asset_id": int(asset), "version": int(version)}
    if model is not None:
        ref = _model_ref(model)
        body["model"] = {"asset_id": ref.asset_id, "version": ref.version}
    if params:
        body["params"] = dict(params)
    if owner_node_url is None:
        owner = client.ledger.get_org(client.ledger.get_asset(int(asset)).owner)
        owner_node_url = owner.endpoint
    node = NodeHttp(owner_node_url, client.keys.account, client.domain, transport=getattr(client, "_transport", None),
                    timeout=JOB_TIMEOUT, clock=client.clock, retries=0)
    try:
        answer = node.call("POST", "/v1/jobs", body=body, ok=(201,))
    finally:
        node.close()
    return _parse(answer, owner_node_url)


def _model_ref(model: ModelRef) -> VersionRef:
    if isinstance(model, VersionRef):
        return model
    if isinstance(model, str):
        from api.sdk import parse_target

        return parse_target(model)
    if isinstance(model, tuple) and len(model) == 2:
        return VersionRef(int(model[0]), int(model[1]))
    raise InputValidationError("model must be a VersionRef, (asset_id, version) or \"A@V\"")


def _parse(answer: Any, url: str) -> JobRun:
    if not isinstance(answer, dict) or not isinstance(answer.get("result"), dict):
        raise UntrustedAnswerError(f"{url}/v1/jobs: the answer is not a job result")
    result = answer["result"]
    job_id, status, cid = answer.get("job_id"), answer.get("status"), result.get("cid")
    if not isinstance(job_id, str) or not isinstance(status, str) or not isinstance(cid, str):
        raise UntrustedAnswerError(f"{url}/v1/jobs: job_id, status and result.cid must be strings")
    return JobRun(job_id=job_id, status=status, cid=cid, owner_node=url,
                  result=VersionRef(uint(result.get("asset_id"), "result.asset_id"),
                                    uint(result.get("version"), "result.version")),
                  audit_seq=uint(answer.get("audit_seq"), "audit_seq"))


__all__ = ["JobRun", "RESULT_PURPOSE", "run_job"]
