"""Key release made fast without losing its meaning (docs/api.md "Key release", "Which block"):

- the hand-written EIP-712 digest/sign/recover equal eth-account's reference behaviour;
- `_FreshValue` never answers a caller with a fetch that was already in flight when it arrived;
- on a real chain: every release decision is read at ONE block, named in its audit record;
  a grant revoked in block N+1 is denied for every request decided after N+1, although the
  reads of block N are memoised (a pinned view of N still says yes: the cache is per block
  hash, never across blocks); the audit log holds exactly one record per outcome under
  concurrency, and a nonce raced by two threads is released once and denied once.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from api.auth import Eip712Domain, KeyReceipt, KeyRequest, NodeRequest
from api.errors import ReplayedNonceError
from api.node import _FreshValue
from api.usecases import release_key
from ledger.audit import AuditKind
from ledger.models import Permission
from tests.api.node_fixtures import NodeHarness, database, key_request
from vault.age import X25519Identity

ACCOUNT = Account.from_key(b"\x03" * 32)
RECIPIENTS = [str(X25519Identity(bytes([i + 7]) * 32).recipient) for i in range(3)]

uint = lambda bits: st.integers(min_value=0, max_value=2**bits - 1)  # noqa: E731
addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
bytes32 = st.binary(min_size=32, max_size=32)
domains = st.builds(Eip712Domain, chain_id=uint(64), verifying_contract=addresses,
                    name=st.text(max_size=20), version=st.text(max_size=5))
messages = st.one_of(
    st.builds(KeyRequest, asset=uint(256), version=uint(32), consumer=addresses,
              recipient=st.sampled_from(RECIPIENTS), purpose=st.text(max_size=40), permission=uint(8),
              nonce=bytes32, deadline=uint(64)),
    st.builds(KeyReceipt, asset=uint(256), version=uint(32), owner=addresses, consumer=addresses,
              recipient=st.sampled_from(RECIPIENTS), header_hash=bytes32, audit_seq=uint(64), issued_at=uint(64)),
    st.builds(NodeRequest, method=st.sampled_from(["GET", "POST"]),
              path=st.from_regex(r"/[a-z0-9/_?=&.-]{0,30}", fullmatch=True), body_hash=bytes32, signer=addresses,
              nonce=bytes32, deadline=uint(64)),
)


@settings(max_examples=50, deadline=None)
@given(messages, domains)
def test_hand_written_eip712_equals_eth_account(message, domain):
    reference = encode_typed_data(full_message={"types": message.eip712_types(), "primaryType": message.type_name(),
                                                "domain": domain.to_dict(), "message": message.to_message()})
    assert message.digest(domain) == keccak(b"\x19" + reference.version + reference.header + reference.body)
    signature = message.sign(domain, ACCOUNT)
    assert signature == bytes(ACCOUNT.sign_message(reference).signature)
    assert message.recover(domain, signature) == ACCOUNT.address
    assert Account.recover_message(reference, signature=signature) == ACCOUNT.address
    low_v = signature[:64] + bytes([signature[64] - 27])  # 0/1 form, as eth-account accepts
    assert message.recover(domain, low_v) == ACCOUNT.address


def test_fresh_value_never_uses_a_fetch_that_started_before_the_caller():
    started, release = [], [threading.Event() for _ in range(3)]

    def fetch():
        n = len(started) + 1
        started.append(n)
        release[n - 1].wait(10)
        return n

    fresh = _FreshValue(fetch)
    results: dict[str, int] = {}
    first = threading.Thread(target=lambda: results.__setitem__("first", fresh.get()))
    first.start()
    while not started:
        time.sleep(0.001)
    # Two callers arrive while fetch 1 is in flight: neither may use it; they share fetch 2.
    late = [threading.Thread(target=lambda k=k: results.__setitem__(k, fresh.get())) for k in ("b", "c")]
    for t in late:
        t.start()
    time.sleep(0.05)
    release[0].set()
    first.join(10)
    while len(started) < 2:
        time.sleep(0.001)
    release[1].set()
    for t in late:
        t.join(10)
    assert results == {"first": 1, "b": 2, "c": 2}
    assert started == [1, 2]


def test_a_failed_fetch_is_not_shared():
    calls = []

    def fetch():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("chain down")
        return "ok"

    fresh = _FreshValue(fetch)
    with pytest.raises(ConnectionError):
        fresh.get()
    assert fresh.get() == "ok"
    assert len(calls) == 2


# -- on a real chain -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def owner(members, w3, deployment, tmp_path_factory):
    home = tmp_path_factory.mktemp("keyrelease")
    with database("sqlite", home) as db, \
            NodeHarness.start(members["alice"].account, members["alice"].identity, "alice", w3, deployment,
                              home / "a", db) as alice:
        yield alice


def _signed(owner: NodeHarness, members, asset: int, nonce: bytes | None = None) -> tuple[KeyRequest, bytes]:
    bob = members["bob"]
    request = key_request(bob.account, bob.recipient, asset, 1, deadline=int(time.time()) + 120, nonce=nonce)
    return request, request.sign(owner.domain, bob.account)


def _records(node, kind: str, after: int) -> list:
    return [r for r in node.audit.query(kind=kind, after_seq=after, limit=1000).records]


def test_revoked_in_the_next_block_is_denied_although_the_previous_block_is_cached(owner, members, w3):
    node = owner.node
    bob = members["bob"].address
    asset = owner.create_asset("revoked next block")
    assert owner.publish(asset, b"payload", key=f"rev-next-{asset}").status_code == 201
    owner.grant(asset, bob, ["READ"])
    start = node.audit.last_seq()

    released = release_key(node, *_signed(owner, members, asset))
    granted_view = node.chain_reads.latest()  # block N: hasAccessFor memoised as True
    assert granted_view.has_access_for(asset, bob, Permission.READ, "maintenance") is True
    record = node.audit.get(released.audit_seq)
    assert record.kind == AuditKind.KEY_RELEASED
    assert record.details["block"] <= granted_view.block.number
    assert record.details["block_hash"].startswith("0x")

    assert owner.delete(f"/v1/assets/{asset}/grants/{bob}").status_code == 200  # mined in block > N
    with pytest.raises(Exception) as denied:
        release_key(node, *_signed(owner, members, asset))
    assert getattr(denied.value, "reason", None) == "grant_revoked"
    denial = node.audit.get(denied.value.audit_seq)
    assert (denial.kind, denial.details["reason"]) == (AuditKind.KEY_DENIED, "grant_revoked")
    assert denial.details["block"] > granted_view.block.number

    # The view of block N still answers for block N (history does not change) ...
    assert granted_view.has_access_for(asset, bob, Permission.READ, "maintenance") is True
    # ... and the latest view is another block, read afresh.
    latest = node.chain_reads.latest()
    assert latest.block.hash != granted_view.block.hash
    assert latest.has_access_for(asset, bob, Permission.READ, "maintenance") is False
    kinds = [(r.kind, r.details.get("reason")) for r in _records(node, None, start)
             if r.actor == bob and r.asset_id == asset]
    assert kinds == [(AuditKind.KEY_RELEASED, None), (AuditKind.KEY_DENIED, "grant_revoked")]


def test_concurrent_releases_are_each_audited_and_a_raced_nonce_wins_once(owner, members):
    node = owner.node
    bob = members["bob"].address
    asset = owner.create_asset("concurrent")
    assert owner.publish(asset, b"concurrent payload", key=f"conc-{asset}").status_code == 201
    owner.grant(asset, bob, ["READ"])
    start = node.audit.last_seq()
    raced = b"\x42" * 32
    jobs = [_signed(owner, members, asset) for _ in range(24)] + [_signed(owner, members, asset, raced)] * 2

    def attempt(job):
        try:
            return release_key(node, *job).audit_seq
        except ReplayedNonceError as exc:
            return ("replayed", exc.audit_seq)

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(attempt, jobs))
    released = sorted(o for o in outcomes if isinstance(o, int))
    replayed = [o[1] for o in outcomes if isinstance(o, tuple)]
    assert len(released) == 25 and len(replayed) == 1

    records = [r for r in _records(node, None, start) if r.actor == bob]
    assert sorted(r.seq for r in records if r.kind == AuditKind.KEY_RELEASED) == released
    denials = [r for r in records if r.kind == AuditKind.KEY_DENIED]
    assert [(d.seq, d.details["reason"], d.details["nonce"]) for d in denials] == \
        [(replayed[0], "replayed_nonce", "0x" + raced.hex())]
    seqs = [r.seq for r in _records(node, None, start)]
    assert seqs == list(range(start + 1, start + 1 + len(seqs)))  # gapless
