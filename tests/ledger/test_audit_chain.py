"""Audit anchoring and verification against a real chain (Anvil + AuditAnchors).

- every proof our StandardMerkleTree produces is accepted by AuditAnchors.verifyRecord
  (OpenZeppelin MerkleProof) and a wrong one is rejected;
- verify_proof negative cases, table-driven in the style of sigstore/rekor;
- verify_log detects records edited, deleted or inserted directly in the database
  (SQLite and PostgreSQL).
"""
from __future__ import annotations

import dataclasses
import json

import pytest
from sqlalchemy import text

from ledger.audit import Anchorer, AuditKind, AuditLog, AuditRecord, AuditTree, Reason, verify_log, verify_proof
from ledger.audit.chain import ChainAnchors
from ledger.audit.merkle import leaf_hash
from ledger.audit.proof import AuditProof
from ledger.client import LedgerClient
from ledger.db import make_engine
from ledger.deployment import deploy
from ledger.errors import AuditError, AuditVerificationError
from tests.chain import anvil, dev_accounts, w3  # noqa: F401
from tests.db import db_url, pg_url  # noqa: F401

RECIPIENT = "age1" + "q" * 58


@pytest.fixture
def fresh(w3, dev_accounts):  # noqa: F811
    """A fresh deployment (so every test's orgs start with an empty anchor head) with
    dev accounts 1 and 2 registered as active orgs."""
    deployment = deploy(w3, dev_accounts[0])
    admin = LedgerClient(w3, deployment, dev_accounts[0])
    for i in (1, 2):
        admin.register_org(dev_accounts[i].address, f"org{i}", RECIPIENT, f"http://127.0.0.1:{9000 + i}")
    return deployment


def _setup(url, w3, deployment, account):  # noqa: F811
    log = AuditLog(make_engine(url), account.address)
    sink = ChainAnchors.connect(w3, deployment, account)
    return log, sink, ChainAnchors.connect(w3, deployment)  # the verifier's source is read-only


def _fill(log: AuditLog, n: int, asset: int = 1) -> None:
    for i in range(n):
        log.append(AuditKind.KEY_RELEASED, "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC", asset, i,
                   {"purpose": "maintenance", "i": i})


def test_every_proof_is_accepted_by_verify_record_on_chain(tmp_path, w3, fresh, dev_accounts):  # noqa: F811
    log, sink, source = _setup(f"sqlite:///{tmp_path / 'a.db'}", w3, fresh, dev_accounts[1])
    anchorer = Anchorer(log, sink)
    for size in (1, 2, 3, 7, 100):
        _fill(log, size)
        [batch] = anchorer.anchor_pending()
        assert batch.anchored and sink.root_of(log.org, batch.to_seq) == batch.root
        for seq in range(batch.from_seq, batch.to_seq + 1):
            proof = log.proof(seq)
            assert sink.verify_record(log.org, batch.to_seq, seq, proof.record_hash, proof.proof)
            if seq in (batch.from_seq, batch.to_seq):  # full check (3 more RPCs) on a sample
                assert verify_proof(proof, source).seq == seq
        # A wrong proof, a wrong record hash and a wrong batch end are rejected on chain.
        proof = log.proof(batch.to_seq)
        if proof.proof:
            bad = list(proof.proof)
            bad[0] = bytes(32)
            assert not sink.verify_record(log.org, batch.to_seq, batch.to_seq, proof.record_hash, bad)
        assert not sink.verify_record(log.org, batch.to_seq, batch.to_seq, bytes(32), proof.proof)
        assert not sink.verify_record(log.org, batch.to_seq + 1, batch.to_seq, proof.record_hash, proof.proof)
    head = sink.head(log.org)
    assert (head.last_seq, head.batches) == (113, 5)
    assert [(e.from_seq, e.to_seq) for e in source.events(log.org)] == [(1, 1), (2, 3), (4, 6), (7, 13), (14, 113)]


def test_anchoring_by_an_inactive_org_fails_and_stays_pending(tmp_path, w3, fresh, dev_accounts):  # noqa: F811
    log, sink, _ = _setup(f"sqlite:///{tmp_path / 'a.db'}", w3, fresh, dev_accounts[3])  # never registered
    _fill(log, 2)
    [batch] = Anchorer(log, sink).anchor_pending()
    assert batch.status == "pending" and batch.attempts == 1
    assert "AuditAnchorsOrgNotActive" in batch.last_error


# -- verify_proof: table-driven negative cases ------------------------------------------------


@pytest.fixture
def anchored(tmp_path, w3, fresh, dev_accounts):  # noqa: F811
    """Org 1 anchored 1..4 and 5..7; org 2 anchored 1..3 in its own log."""
    log, sink, source = _setup(f"sqlite:///{tmp_path / 'a.db'}", w3, fresh, dev_accounts[1])
    _fill(log, 4)
    Anchorer(log, sink).anchor_pending()
    _fill(log, 3)
    Anchorer(log, sink).anchor_pending()
    other, other_sink, _ = _setup(f"sqlite:///{tmp_path / 'b.db'}", w3, fresh, dev_accounts[2])
    _fill(other, 3)
    Anchorer(other, other_sink).anchor_pending()
    return log, other, source


def _edited(proof: AuditProof, **changes) -> str:
    obj = json.loads(proof.record)
    obj.update(changes)
    return AuditRecord.from_json_obj(obj).canonical().decode()


def _forged_single_leaf(proof: AuditProof) -> AuditProof:
    """A self-consistent proof for an edited record: a one-leaf tree of its own."""
    record = _edited(proof, actor="mallory")
    record_hash = AuditRecord.from_json_obj(json.loads(record)).record_hash()
    leaf = leaf_hash(proof.seq, record_hash)
    return dataclasses.replace(proof, record=record, record_hash=record_hash, leaf=leaf, proof=(), root=leaf)


NEGATIVE_PROOFS = {
    "bad record hash": (lambda p, o: dataclasses.replace(p, record=_edited(p, actor="mallory")),
                        Reason.RECORD_HASH_MISMATCH),
    "bad leaf": (lambda p, o: dataclasses.replace(p, leaf=bytes(32)), Reason.LEAF_MISMATCH),
    "bad sibling": (lambda p, o: dataclasses.replace(p, proof=(bytes(32),) + p.proof[1:]), Reason.PROOF_MISMATCH),
    "root mismatch": (lambda p, o: dataclasses.replace(p, root=bytes(32)), Reason.PROOF_MISMATCH),
    "same range different root": (lambda p, o: _forged_single_leaf(p), Reason.ROOT_NOT_ANCHORED),
    "wrong org": (lambda p, o: dataclasses.replace(p, org=o.org), Reason.ORG_MISMATCH),
    "other org's proof claimed for ours": (lambda p, o: dataclasses.replace(o.proof(2), org=p.org),
                                           Reason.ORG_MISMATCH),
    "seq outside claimed range": (lambda p, o: dataclasses.replace(p, from_seq=p.seq + 1), Reason.SEQ_OUT_OF_RANGE),
    "range differs from event": (lambda p, o: dataclasses.replace(p, from_seq=p.from_seq + 1),
                                 Reason.ANCHOR_EVENT_MISMATCH),
    "wrong batch index": (lambda p, o: dataclasses.replace(p, batch_index=7), Reason.ANCHOR_EVENT_MISMATCH),
    "tx of another batch": (lambda p, o: dataclasses.replace(p, tx_hash=o.proof(1).tx_hash),
                            Reason.ANCHOR_EVENT_MISMATCH),
    "another chain": (lambda p, o: dataclasses.replace(p, chain_id=1), Reason.CHAIN_MISMATCH),
    "another contract": (lambda p, o: dataclasses.replace(p, contract=p.org), Reason.CHAIN_MISMATCH),
    "record not canonical": (lambda p, o: dataclasses.replace(p, record=p.record.replace(",", ", ", 1)),
                             Reason.MALFORMED),
}


def test_negative_proofs(anchored):
    log, other, source = anchored
    good = log.proof(6)  # batch 5..7: a 3-leaf tree, so the proof has siblings
    assert len(good.proof) >= 1
    assert verify_proof(good, source) == log.get(6)
    failures = {}
    for name, (mutate, _) in NEGATIVE_PROOFS.items():
        with pytest.raises(AuditVerificationError) as info:
            verify_proof(mutate(good, other), source)
        failures[name] = info.value.reason
        assert str(info.value).startswith(info.value.reason.value + ":")
    assert failures == {name: reason for name, (_, reason) in NEGATIVE_PROOFS.items()}


def test_proof_against_an_empty_log(anchored, w3, dev_accounts):  # noqa: F811
    log, _, _ = anchored
    empty = ChainAnchors.connect(w3, deploy(w3, dev_accounts[0]))  # same org, nothing anchored there
    proof = log.proof(1)
    proof = dataclasses.replace(proof, contract=empty.contract)
    with pytest.raises(AuditVerificationError, match="no batch ending at seq 4") as info:
        verify_proof(proof, empty)
    assert info.value.reason is Reason.ROOT_NOT_ANCHORED
    report = verify_log([], empty, log.org)
    assert report.ok and report.records_checked == 0 and report.anchored_seq == 0


def test_proof_json_round_trip_verifies(anchored):
    log, _, source = anchored
    proof = log.proof(3)
    document = json.loads(proof.to_json())
    assert AuditProof.from_dict(document) == proof
    assert verify_proof(document, source).seq == 3
    assert proof.size_bytes == 32 * len(proof.proof) == 64  # batch 1..4: two siblings
    for broken, message in (({**document, "root": "0x12"}, "root"), ({**document, "format": "x"}, "format"),
                            ({**document, "seq": -1}, "seq"), ({k: v for k, v in document.items() if k != "leaf"},
                                                               "missing \\['leaf'\\]")):
        with pytest.raises(AuditVerificationError, match=message) as info:
            AuditProof.from_dict(broken)
        assert info.value.reason is Reason.MALFORMED


# -- verify_log: tampering with the database directly ----------------------------------------


def _swap(conn, seq: int, canonical: str, record_hash: bytes | None = None) -> None:
    if record_hash is None:
        conn.execute(text("UPDATE audit_records SET canonical = :c WHERE seq = :s"), {"c": canonical, "s": seq})
    else:
        conn.execute(text("UPDATE audit_records SET canonical = :c, record_hash = :h WHERE seq = :s"),
                     {"c": canonical, "h": record_hash, "s": seq})


def _edit_consistently(conn, log):
    record = log.get(3)
    forged = AuditRecord(**{**{f: getattr(record, f) for f in ("seq", "kind", "time", "org", "version")},
                            "actor": "mallory", "asset_id": 99, "details": {}})
    _swap(conn, 3, forged.canonical().decode(), forged.record_hash())


def _edit_text_only(conn, log):
    _swap(conn, 6, log.get(6).canonical().decode().replace("maintenance", "maintenanc3"))


def _edit_non_canonical(conn, log):
    _swap(conn, 2, log.get(2).canonical().decode().replace(",", ", "))


def _delete(conn, log):
    conn.execute(text("DELETE FROM audit_records WHERE seq = 5"))


def _insert_renumbering(conn, log):
    """Insert a fabricated record at seq 4, shifting 4.. up by one (two steps so the
    primary key is never violated midway)."""
    conn.execute(text("UPDATE audit_records SET seq = -seq - 1 WHERE seq >= 4"))
    conn.execute(text("UPDATE audit_records SET seq = -seq WHERE seq < 0"))
    forged = AuditRecord(seq=4, kind=AuditKind.KEY_DENIED, time=1, org=log.org, actor="mallory")
    conn.execute(text("INSERT INTO audit_records (org, seq, kind, time, actor, record_hash, canonical) "
                      "VALUES (:o, 4, 'key_denied', 1, 'mallory', :h, :c)"),
                 {"o": log.org, "h": forged.record_hash(), "c": forged.canonical().decode()})


def _claim_unanchored_batch(conn, log):
    conn.execute(text("INSERT INTO audit_batches (org, from_seq, to_seq, root, status, created_at, attempts) "
                      "VALUES (:o, 8, 9, :r, 'anchored', 0, 1)"), {"o": log.org, "r": b"\x01" * 32})


def _rewrite_batch_root(conn, log):
    conn.execute(text("UPDATE audit_batches SET root = :r WHERE from_seq = 1"), {"r": b"\x02" * 32})


TAMPERING = {
    "edit (text and hash)": (_edit_consistently, {Reason.BATCH_ROOT_MISMATCH}, None),
    "edit (text only)": (_edit_text_only, {Reason.RECORD_HASH_MISMATCH}, 6),
    "edit (non-canonical)": (_edit_non_canonical, {Reason.MALFORMED}, 2),
    "delete": (_delete, {Reason.MISSING_RECORD}, 5),
    "insert": (_insert_renumbering, {Reason.SEQ_MISMATCH, Reason.BATCH_ROOT_MISMATCH}, 1),
    "claim anchored": (_claim_unanchored_batch, {Reason.UNANCHORED_CLAIM}, 8),
    "rewrite batch root": (_rewrite_batch_root, {Reason.UNANCHORED_CLAIM}, 1),
}


@pytest.mark.parametrize("tamper", list(TAMPERING))
def test_verify_log_detects_tampering(tamper, db_url, w3, fresh, dev_accounts):  # noqa: F811
    log, sink, source = _setup(db_url, w3, fresh, dev_accounts[1])
    _fill(log, 4)
    Anchorer(log, sink).anchor_pending()
    _fill(log, 3)
    Anchorer(log, sink).anchor_pending()
    _fill(log, 2)  # 8..9 not anchored
    before = verify_log(log.iter_raw(), source, log.org, batches=log.batches())
    assert before.ok, before.problems
    assert (before.records_checked, before.unanchored_records, before.anchored_seq) == (9, 2, 7)

    action, reasons, seq = TAMPERING[tamper]
    with log.engine.begin() as conn:
        action(conn, log)
    report = verify_log(log.iter_raw(), source, log.org, batches=log.batches())
    assert not report.ok
    assert report.reasons == reasons, report.problems
    if seq is not None:
        assert report.problems[0].seq == seq
    with pytest.raises(AuditVerificationError) as info:
        report.raise_if_failed()
    assert info.value.reason == report.problems[0].reason


def test_verify_log_detects_duplicates_in_an_export(tmp_path, w3, fresh, dev_accounts):  # noqa: F811
    log, sink, source = _setup(f"sqlite:///{tmp_path / 'a.db'}", w3, fresh, dev_accounts[1])
    _fill(log, 3)
    Anchorer(log, sink).anchor_pending()
    rows = [(r.seq, r.canonical) for r in log.iter_raw()]
    assert verify_log(rows, source, log.org).ok
    report = verify_log(rows[:2] + rows[1:], source, log.org)
    assert report.reasons == {Reason.DUPLICATE_RECORD} and report.problems[0].seq == 2


def test_proof_is_refused_for_tampered_batch(tmp_path, w3, fresh, dev_accounts):  # noqa: F811
    log, sink, _ = _setup(f"sqlite:///{tmp_path / 'a.db'}", w3, fresh, dev_accounts[1])
    _fill(log, 3)
    Anchorer(log, sink).anchor_pending()
    with log.engine.begin() as conn:
        conn.execute(text("UPDATE audit_records SET record_hash = :h WHERE seq = 2"), {"h": b"\x05" * 32})
    fresh_log = AuditLog(log.engine, log.org)  # no cached tree
    with pytest.raises(AuditVerificationError) as info:
        fresh_log.proof(1)
    assert info.value.reason is Reason.BATCH_ROOT_MISMATCH
    with pytest.raises(AuditError, match="not anchored yet"):
        _fill(log, 1) or log.proof(4)
    assert AuditTree.build(log.leaf_entries(1, 3)).root != log.batch(1).root
