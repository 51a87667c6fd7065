"""Audit reads (members): the node's own log, with filters and keyset pagination, the
inclusion proof of an anchored record, and the log's head.

    GET /v1/audit/records?asset=&actor=&kind=&since=&until=&after_seq=&limit=   AuditPage
    GET /v1/audit/records/{seq}/proof     AuditProof, 404 not_anchored_yet before anchoring
    GET /v1/audit/head                    {org, last_seq, anchored_seq, batches}

`since` (inclusive) and `until` (exclusive) are unix milliseconds, like a record's `time`.
A proof verifies against the chain alone (ledger.audit.verify_proof / `twinledger audit
verify`): nothing this node says has to be trusted.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from api import schemas
from api.deps import AuthenticatedOrg, NodeDep
from api.errors import NotFoundError
from api.routers._views import record_view
from ledger.audit.records import MAX_SAFE_INT

router = APIRouter(prefix="/v1/audit", tags=["audit"])

Seq = Annotated[int, PathParam(ge=1, le=MAX_SAFE_INT)]
Millis = Annotated[int | None, Query(ge=0, le=MAX_SAFE_INT, description="unix milliseconds")]


@router.get("/records", response_model=schemas.AuditPage, summary="Audit records, filtered, by ascending seq")
def records(caller: AuthenticatedOrg, node: NodeDep,
            asset: Annotated[int | None, Query(ge=0, le=MAX_SAFE_INT)] = None,
            actor: Annotated[str | None, Query(min_length=1, max_length=256)] = None,
            kind: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_]{0,63}$")] = None,
            since: Millis = None, until: Millis = None,
            after_seq: Annotated[int | None, Query(ge=0, le=MAX_SAFE_INT)] = None,
            limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> schemas.AuditPage:
    assert node.audit is not None
    page = node.audit.query(asset_id=asset, actor=actor, kind=kind, since=since, until=until, after_seq=after_seq,
                            limit=limit)
    return schemas.AuditPage(items=[record_view(r) for r in page.records], next_after_seq=page.next_after_seq)


@router.get("/records/{seq}/proof", response_model=schemas.AuditProofPublic,
            summary="Inclusion proof of an anchored record",
            responses={404: {"description": "unknown_audit_record, or not_anchored_yet"}})
async def proof(seq: Seq, caller: AuthenticatedOrg, node: NodeDep) -> schemas.AuditProofPublic:
    log = node.audit
    assert log is not None
    if seq > await run_in_threadpool(log.last_seq):
        raise NotFoundError(f"audit record {seq} does not exist", reason="unknown_audit_record")
    batch = await run_in_threadpool(log.batch_for, seq)
    if batch is None or not batch.anchored:
        raise NotFoundError(f"audit record {seq} is not anchored yet", reason="not_anchored_yet")
    result = await run_in_threadpool(log.proof, seq)  # AuditVerificationError if the stored log was altered
    return schemas.AuditProofPublic(**result.to_dict())


@router.get("/head", response_model=schemas.AuditHeadPublic, summary="The log's last and anchored seqs")
def head(caller: AuthenticatedOrg, node: NodeDep) -> schemas.AuditHeadPublic:
    assert node.audit is not None
    on_chain = node.ledger.audit_head(node.address)
    return schemas.AuditHeadPublic(org=node.address, last_seq=node.audit.last_seq(), anchored_seq=on_chain.last_seq,
                                   batches=on_chain.batches)
