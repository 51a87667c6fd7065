"""POST /v1/consumptions (own org): record, in this node's own audit log, that the org
consumed a version under the owner's signed KeyReceipt."""
from __future__ import annotations

from fastapi import APIRouter

from api import schemas
from api.deps import NodeDep, OwnOrg
from api.errors import InvalidFieldError
from api.usecases import record_consumption

router = APIRouter(tags=["consumptions"])


@router.post("/v1/consumptions", status_code=201, response_model=schemas.ConsumptionRecorded,
             summary="Record a consumption with the owner's receipt (own org)")
def create(body: schemas.ConsumptionCreate, caller: OwnOrg, node: NodeDep) -> schemas.ConsumptionRecorded:
    receipt = dict(body.receipt)
    signature = receipt.pop("signature", None)
    if signature is None:
        raise InvalidFieldError("receipt.signature", "is missing")
    return schemas.ConsumptionRecorded(
        audit_seq=record_consumption(node, receipt, signature, body.cid, body.output_sha256))
