"""TwinLedgerClient: an organisation's Python client of the node HTTP API (docs/api.md).

    client = TwinLedgerClient.from_home("~/.twinledger", "acme")      # keys, chain, own node
    pub = client.publish("spindle.parquet", name="spindle", kind="dataset")
    client.grant(pub.asset_id, "oem", ["READ"], ttl_seconds=30 * 86400, purpose="maintenance")
    # … at the consumer:
    got = client.get(pub.asset_id, pub.version, "spindle.parquet")  # verified, atomic, recorded

The client talks to its OWN node for everything it does as an org (publish, grant,
revoke, catalog, audit, lineage, recording consumptions) and to the OWNER's node only to
ask for a key and fetch ciphertext. It reads the chain (a read-only LedgerClient) for
what it must not take from any node: owners, endpoints, recipients, version digests,
audit anchors.
"""
from __future__ import annotations

import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import replace
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from eth_utils import is_address, to_checksum_address

from api.auth.eip712 import Eip712Domain, new_nonce
from api.errors import ConfigError, InputValidationError, RemoteNotFoundError, SdkError
from api.keystore import OrgKeys, load_org_keys
from api.sdk import _consume
from api.sdk._audit import AuditVerification, verify_node
from api.sdk._http import DEFAULT_TIMEOUT, NodeHttp, segment
from api.sdk._multipart import MultipartFile, parents_field
from api.sdk.models import (
    Consumed,
    Published,
    VersionInfo,
    asset_kind,
    parse_ref,
    permission_names,
    ref_text,
)
from ledger.client import LedgerClient
from ledger.errors import ContractRevertError
from ledger.models import OrgInfo, Permission, VersionRef

Progress = Callable[[int], None]
UPLOAD_TIMEOUT = httpx.Timeout(DEFAULT_TIMEOUT, read=600.0)  # the node seals and registers before answering
DIRECTIONS = ("ancestors", "descendants", "both")


class TwinLedgerClient:
    """One org's client. `node_url` is the org's own node; `ledger` a (read-only)
    LedgerClient of the same deployment; `transport` is injected into every HTTP client
    (own node, owners' nodes, gateways) — httpx.MockTransport in unit tests."""

    def __init__(self, node_url: str, keys: OrgKeys, *, ledger: LedgerClient,
                 transport: httpx.BaseTransport | None = None, timeout: float = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.time) -> None:
        if not isinstance(keys, OrgKeys):
            raise InputValidationError(f"keys must be OrgKeys, got {type(keys).__name__}")
        self.keys = keys
        self.ledger = ledger
        self.domain = Eip712Domain.from_deployment(ledger.deployment)
        self.timeout = timeout
        self.clock = clock
        self._transport = transport
        self._nodes: dict[str, NodeHttp] = {}
        self.node_url = node_url.rstrip("/")
        self._http = self._node(self.node_url)

    @classmethod
    def from_home(cls, home: Path | str | None, org: str, passphrase: str | None = None,
                  node_url: str | None = None, *, rpc_url: str | None = None,
                  **kwargs: Any) -> "TwinLedgerClient":
        """The client of org `org` under `home`: keys unlocked with `passphrase` (default:
        the settings' TWINLEDGER_PASSPHRASE / passphrase_env / passphrase_file), chain from
        TWINLEDGER_RPC_URL (default: the home's devnet) and the manifest, own node at
        `node_url` (default: the org's endpoint registered on chain)."""
        from api.settings import load_settings

        settings = load_settings(home=Path(home).expanduser() if home is not None else None, org=org)
        if rpc_url is None:
            rpc_url = settings.rpc_url if "TWINLEDGER_RPC_URL" in os.environ else _devnet_rpc(settings.home)
        keys = load_org_keys(settings.home, org, passphrase if passphrase is not None else settings.read_passphrase())
        ledger = LedgerClient.connect(rpc_url, settings.manifest)
        if node_url is None:
            node_url = ledger.get_org(keys.address).endpoint
            if not node_url:
                raise ConfigError(f"organisation {org} has no endpoint on chain: pass the node URL")
        return cls(node_url, keys, ledger=ledger, **kwargs)

    def close(self) -> None:
        for node in self._nodes.values():
            node.close()
        self._nodes.clear()

    def __enter__(self) -> "TwinLedgerClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def reading_after(self, block: int | None = None) -> Iterator["TwinLedgerClient"]:
        """Reads from the own node inside this block answer only once the node has indexed
        `block` (default: the chain head now), so what the node lists is at least as new as
        what this client just checked on chain (DESIGN §6, read your own writes)."""
        target = self.ledger.block_number() if block is None else int(block)
        previous, self._http.min_block = self._http.min_block, target
        try:
            yield self
        finally:
            self._http.min_block = previous

    def _node(self, url: str) -> NodeHttp:
        url = url.rstrip("/")
        node = self._nodes.get(url)
        if node is None:
            try:
                node = NodeHttp(url, self.keys.account, self.domain, transport=self._transport,
                                timeout=self.timeout, clock=self.clock)
            except ValueError as exc:
                raise SdkError(str(exc)) from None
            self._nodes[url] = node
        return node

    # -- organisations (from the chain) ------------------------------------------------------

    def resolve_org(self, name_or_address: str) -> OrgInfo:
        """The registered org with this address or name (from the on-chain registry)."""
        if is_address(name_or_address):
            try:
                info = self.ledger.get_org(to_checksum_address(name_or_address))
            except ContractRevertError:
                info = None
            if info is None or not info.registered_at:
                raise SdkError(f"{name_or_address} is not a registered organisation")
            return info
        matches = [info for info in map(self.ledger.get_org, self.ledger.members()) if info.name == name_or_address]
        if not matches:
            raise SdkError(f"no organisation named {name_or_address!r} is registered on chain")
        if len(matches) > 1:
            raise SdkError(f"several organisations are named {name_or_address!r}: use an address")
        return matches[0]

    # -- assets ------------------------------------------------------------------------------

    def create_asset(self, kind: str, name: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": asset_kind(kind), "name": name}
        if metadata is not None:
            body["metadata"] = metadata
        return self._http.call("POST", "/v1/assets", body=body)

    def publish(self, path: Path | str, *, asset_id: int | None = None, name: str | None = None,
                kind: str | None = None, metadata: dict[str, Any] | None = None,
                parents: Sequence[VersionRef | str] = (), progress: Progress | None = None) -> Published:
        """Upload `path` as a new version of `asset_id` (or of a new asset `name`/`kind`).
        Streamed; retried on transient failures with the same Idempotency-Key."""
        path = Path(path)
        if not path.is_file():
            raise InputValidationError(f"{path} is not a readable file")
        refs = [ref_text(p) if isinstance(p, str) else ref_text(VersionRef(p.asset_id, p.version)) for p in parents]
        if asset_id is None:
            if not name or kind is None:
                raise InputValidationError("publish needs asset_id, or name and kind of a new asset")
            asset_id = int(self.create_asset(kind, name, metadata)["asset_id"])
        body = MultipartFile(path, parents_field(refs))
        digest, length = body.digest()
        key = str(uuid.uuid4())
        sent = [0]

        def chunks() -> Iterator[bytes]:
            if progress is not None and sent[0]:
                progress(-sent[0])  # a retry starts over
            sent[0] = 0

            def advance(n: int) -> None:
                sent[0] += n
                if progress is not None:
                    progress(n)

            return body.chunks(advance)

        status, answer = self._http.stream(
            "POST", f"/v1/assets/{segment(asset_id)}/versions", body=chunks, length=length, body_hash=digest,
            headers={"Content-Type": body.content_type, "Idempotency-Key": key}, timeout=UPLOAD_TIMEOUT)
        return Published.from_json(answer, created=status == 201)

    def list_assets(self, *, owner: str | None = None, kind: str | None = None, limit: int | None = None,
                    after: str | int | None = None) -> dict[str, Any]:
        """One page `{items, next}` of the catalog (the own node's index)."""
        return self._http.get("/v1/assets", {"owner": owner, "kind": asset_kind(kind) if kind else None,
                                             "limit": limit, "after": after})

    def iter_assets(self, *, owner: str | None = None, kind: str | None = None) -> Iterator[dict[str, Any]]:
        after = None
        while True:
            page = self.list_assets(owner=owner, kind=kind, after=after)
            yield from page.get("items", [])
            after = page.get("next")
            if after is None or not page.get("items"):
                return

    def asset(self, asset_id: int) -> dict[str, Any]:
        return self._http.get(f"/v1/assets/{segment(asset_id)}")

    def version(self, asset_id: int, version: int, *, verify: bool = True) -> VersionInfo:
        """The version record from the own node, checked against the chain's digest."""
        info = self._version_from(self._http, asset_id, version)
        return _consume.check_version(self.ledger, info, asset_id, version) if verify else info

    @staticmethod
    def _version_from(node: NodeHttp, asset_id: int, version: int) -> VersionInfo:
        return VersionInfo.from_json(node.get(f"/v1/assets/{segment(asset_id)}/versions/{segment(version)}"))

    # -- grants ------------------------------------------------------------------------------

    def grant(self, asset_id: int, grantee: str, permissions: Permission | str | Iterable[Any], *,
              ttl_seconds: int | None = None, expiry: int | None = None, purpose: str = "") -> dict[str, Any]:
        """Grant `grantee` (org name or address) `permissions` until `expiry` (unix time)
        or for `ttl_seconds`."""
        if (ttl_seconds is None) == (expiry is None):
            raise InputValidationError("grant needs exactly one of ttl_seconds or expiry")
        body: dict[str, Any] = {"grantee": self.resolve_org(grantee).address,
                                "permissions": permission_names(permissions), "purpose": purpose}
        if ttl_seconds is not None:
            body["ttl_seconds"] = int(ttl_seconds)
        else:
            body["expiry"] = int(expiry)  # type: ignore[arg-type]
        return self._http.call("POST", f"/v1/assets/{segment(asset_id)}/grants", body=body)

    def revoke(self, asset_id: int, grantee: str) -> dict[str, Any]:
        address = self.resolve_org(grantee).address
        return self._http.call("DELETE", f"/v1/assets/{segment(asset_id)}/grants/{segment(address)}")

    def grants(self, asset_id: int | None = None, *, grantee: str | None = None,
               permission: str | None = None) -> list[dict[str, Any]]:
        """Grants of one asset, or across assets for `grantee` (the sync feed)."""
        if asset_id is not None:
            answer = self._http.get(f"/v1/assets/{segment(asset_id)}/grants")
        else:
            who = self.resolve_org(grantee).address if grantee is not None else None
            answer = self._http.get("/v1/grants", {"grantee": who, "permission": permission})
        return list(answer.get("items", [])) if isinstance(answer, dict) else []

    # -- consume -----------------------------------------------------------------------------

    def get(self, asset_id: int, version: int, out: Path | str, *, permission: Permission = Permission.READ,
            purpose: str = "", gateways: Sequence[str] | None = None, progress: Progress | None = None,
            record: bool = True) -> Consumed:
        """Obtain (asset_id, version) from its owner, verified, into `out` (DESIGN §5;
        steps in api/sdk/_consume.py). Nothing is written at `out` on any failure."""
        out = Path(out)
        if not out.parent.is_dir():
            raise InputValidationError(f"output directory {out.parent} does not exist")
        if permission not in (Permission.READ, Permission.SYNC):
            raise InputValidationError("a key can be asked for READ or SYNC only (COMPUTE runs as a job)")
        try:
            info = self._version_from(self._http, asset_id, version)
        except RemoteNotFoundError:
            info = None  # the own index may lag the chain: ask the owner's node (checked all the same)
        state = self.ledger.get_asset(asset_id)
        owner = self.ledger.get_org(state.owner)
        owner_node = self._node(owner.endpoint)
        if info is None:
            info = self._version_from(owner_node, asset_id, version)
        _consume.check_version(self.ledger, info, asset_id, version)

        request, signature = _consume.key_request(
            self.domain, self.keys.account, self.keys.recipient, asset_id, version, permission=int(permission),
            purpose=purpose, now=self.clock(), nonce=new_nonce())
        answer = owner_node.call("POST", "/v1/keys", signed=False,
                                 body={"request": request.to_json(), "signature": "0x" + signature.hex()})
        header, receipt, receipt_sig, key_seq = _consume.parse_key_answer(answer, request, self.domain, owner.address)

        size, sha = _consume.fetch_and_open(info, header, self.keys.identity, out,
                                            gateways=[owner.endpoint, *(gateways or ())], transport=self._transport,
                                            timeout=self.timeout, progress=progress)
        result = Consumed(asset_id=asset_id, version=version, path=out, size=size, cid=info.cid,
                          owner=owner.address, sha256=sha, receipt=receipt, receipt_signature=receipt_sig,
                          key_audit_seq=key_seq)
        if not record:
            return result
        try:
            recorded = self._http.call("POST", "/v1/consumptions", body={
                "receipt": {**receipt.to_json(), "signature": "0x" + receipt_sig.hex()},
                "cid": info.cid, "output_sha256": sha})
        except SdkError as exc:
            raise SdkError(f"{out} was written and verified, but the own node did not record the consumption: "
                           f"{exc}") from None
        seq = recorded.get("audit_seq") if isinstance(recorded, dict) else None
        return replace(result, consumption_audit_seq=seq if isinstance(seq, int) else None)

    # -- audit -------------------------------------------------------------------------------

    def audit_records(self, *, asset: int | None = None, actor: str | None = None, kind: str | None = None,
                      since: int | None = None, until: int | None = None, after_seq: int | None = None,
                      limit: int | None = None, node_url: str | None = None) -> dict[str, Any]:
        """One page `{items, next_after_seq}` of a node's audit log (default: own node)."""
        node = self._node(node_url) if node_url else self._http
        return node.get("/v1/audit/records", {"asset": asset, "actor": actor, "kind": kind, "since": since,
                                              "until": until, "after_seq": after_seq, "limit": limit})

    def audit_proof(self, seq: int, *, node_url: str | None = None) -> dict[str, Any]:
        node = self._node(node_url) if node_url else self._http
        return node.get(f"/v1/audit/records/{segment(seq)}/proof")

    def audit_head(self, *, node_url: str | None = None) -> dict[str, Any]:
        node = self._node(node_url) if node_url else self._http
        return node.get("/v1/audit/head")

    def verify(self, node_url: str | None = None, *, all: bool = False, org: str | None = None) -> AuditVerification:
        """Verify a node's audit log (default: own node) against the chain alone
        (api/sdk/_audit.py). `all=True` also checks completeness 1..anchored head."""
        from ledger.audit.chain import ChainAnchors

        node = self._node(node_url) if node_url else self._http
        return verify_node(node, ChainAnchors(self.ledger), org=org, all=all)

    # -- lineage -----------------------------------------------------------------------------

    def lineage(self, asset_id: int, version: int, direction: str = "both") -> dict[str, Any]:
        if direction not in DIRECTIONS:
            raise InputValidationError(f"direction must be one of {', '.join(DIRECTIONS)}")
        return self._http.get(f"/v1/lineage/{segment(asset_id)}/{segment(version)}", {"direction": direction})

    def prov(self, asset_id: int, version: int) -> dict[str, Any]:
        return self._http.get(f"/v1/lineage/{segment(asset_id)}/{segment(version)}/prov")


def parse_target(text: str) -> VersionRef:
    """"ASSET@VERSION" (CLI argument) → VersionRef."""
    return parse_ref(text, "ASSET@VERSION")


def _devnet_rpc(home: Path) -> str:
    from ledger.devnet import Devnet

    devnet = Devnet(home, port=None)
    return f"http://{devnet.host}:{devnet.port}"
