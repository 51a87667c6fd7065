"""Property: for a random sequence of contract operations, the indexed state (through
the query API) equals a plain Python model of the contracts. Each example runs inside
an EVM snapshot that is reverted afterwards, and indexes into a fresh SQLite file,
syncing part-way through with a random range size."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.db import make_engine
from ledger.indexer import Indexer, IndexQueries
from ledger.models import AssetKind, Permission, VersionRef
from tests.ledger.indexer_helpers import cid_v1, fresh_commitment

ORG = st.integers(0, 3)
PICK = st.integers(0, 50)
TEXT = st.text(min_size=1, max_size=8)  # any Unicode, NUL included
CREATE = st.tuples(st.just("create"), ORG, st.sampled_from(list(AssetKind)), TEXT)
VERSION = st.tuples(st.just("version"), PICK, st.lists(st.tuples(PICK, PICK), max_size=3),
                    st.integers(0, 2**64 - 1))
GRANT = st.tuples(st.just("grant"), PICK, ORG, st.integers(1, 7), st.sampled_from([10**6, 2**63 + 5, 2**64 - 1]),
                  st.text(max_size=6))
_OTHERS = {
    "revoke": st.tuples(st.just("revoke"), PICK, ORG),
    "retire": st.tuples(st.just("retire"), PICK),
    "toggle": st.tuples(st.just("toggle"), ORG),
    "endpoint": st.tuples(st.just("endpoint"), ORG, TEXT),
    "anchor": st.tuples(st.just("anchor"), ORG, st.integers(1, 4)),
}
_BY_NAME = {"create": CREATE, "version": VERSION, "grant": GRANT, **_OTHERS}
# Weighted towards the operations that build lineage and grants (sampled_from is uniform
# over its list, so repeating a name weights it).
OPS = st.sampled_from(["version"] * 5 + ["grant"] * 3 + ["create"] * 2 + list(_OTHERS)).flatmap(_BY_NAME.get)


def _text(s: str) -> str:
    return s.replace("\x00", "\ufffd")  # as the indexer stores it (PostgreSQL text cannot hold NUL)


class Model:
    """What the contracts' state and history should look like, kept in plain dicts."""

    def __init__(self, admin, clients) -> None:
        self.admin, self.clients = admin, clients
        self.orgs = {}
        for c in clients:
            info = admin.get_org(c.address)
            self.orgs[c.address] = [info.name, info.age_recipient, info.endpoint, info.active]
        self.assets: dict[int, list] = {}  # id -> [owner, kind, name, retired]
        self.versions: dict[tuple[int, int], tuple] = {}  # (asset, n) -> (size, parents, author)
        self.grants: dict[tuple[int, str], list] = {}  # -> [permissions, expiry, purpose, active]
        self.anchors: dict[str, list] = {c.address: [] for c in clients}

    def _active(self, address: str) -> bool:
        return self.orgs[address][3]

    def _asset(self, pick: int) -> int | None:
        ids = sorted(self.assets)
        return ids[pick % len(ids)] if ids else None

    def _count(self, asset: int) -> int:
        return sum(1 for a, _ in self.versions if a == asset)

    def apply(self, op: tuple) -> None:  # noqa: C901 - one branch per operation
        kind = op[0]
        if kind == "create":
            _, i, asset_kind, name = op
            client = self.clients[i]
            if self._active(client.address) and len(name.encode()) <= 128:
                created = client.create_asset(asset_kind, name)
                self.assets[created.asset_id] = [client.address, asset_kind, _text(name), False]
        elif kind == "version":
            _, pick, parent_picks, size = op
            asset = self._asset(pick)
            if asset is None:
                return
            owner, _, _, retired = self.assets[asset]
            with_versions = sorted({a for a, _ in self.versions})
            parents = tuple(VersionRef(with_versions[a % len(with_versions)],
                                       v % self._count(with_versions[a % len(with_versions)]) + 1)
                            for a, v in parent_picks) if with_versions else ()
            if self._active(owner) and not retired:
                client = self._client(owner)
                added = client.add_version(asset, cid_v1(fresh_commitment()), fresh_commitment(), size, parents)
                assert added.version == self._count(asset) + 1
                self.versions[(asset, added.version)] = (size, parents, owner)
        elif kind == "grant":
            _, pick, j, permissions, expiry_offset, purpose = op
            asset, grantee = self._asset(pick), self.clients[j].address
            if asset is None:
                return
            owner, _, _, retired = self.assets[asset]
            expiry = min(self.admin.chain_time() + expiry_offset, 2**64 - 1)
            if self._active(owner) and not retired and grantee != owner and self._active(grantee):
                self._client(owner).grant(asset, grantee, Permission(permissions), expiry, purpose)
                self.grants[(asset, grantee)] = [permissions, expiry, _text(purpose), True]
        elif kind == "revoke":
            _, pick, j = op
            asset, grantee = self._asset(pick), self.clients[j].address
            if asset is None:
                return
            owner = self.assets[asset][0]
            grant = self.grants.get((asset, grantee))
            if self._active(owner) and grant is not None and grant[3]:
                self._client(owner).revoke(asset, grantee)
                grant[3] = False
        elif kind == "retire":
            asset = self._asset(op[1])
            if asset is not None and self._active(self.assets[asset][0]) and not self.assets[asset][3]:
                self._client(self.assets[asset][0]).retire_asset(asset)
                self.assets[asset][3] = True
        elif kind == "toggle":
            address = self.clients[op[1]].address
            (self.admin.deactivate_org if self._active(address) else self.admin.reactivate_org)(address)
            self.orgs[address][3] = not self.orgs[address][3]
        elif kind == "endpoint":
            _, i, endpoint = op
            client = self.clients[i]
            if self._active(client.address) and len(endpoint.encode()) <= 256:
                client.update_endpoint(endpoint)
                self.orgs[client.address][2] = _text(endpoint)
        elif kind == "anchor":
            _, i, count = op
            client = self.clients[i]
            if self._active(client.address):
                batches = self.anchors[client.address]
                start = batches[-1][2] + 1 if batches else 1
                root = fresh_commitment()
                client.anchor(start, start + count - 1, root)
                batches.append((len(batches), start, start + count - 1, "0x" + root.hex()))

    def _client(self, address: str):
        return next(c for c in self.clients if c.address == address)

    def ancestors(self, node: tuple[int, int]) -> set[tuple[int, int, int]]:
        """(asset, version, shortest depth) by relaxation to a fixpoint (not BFS, on purpose)."""
        best: dict[tuple[int, int], int] = {}
        changed = True
        while changed:
            changed = False
            for child, (_, parents, _) in self.versions.items():
                base = 0 if child == node else best.get(child)
                if base is None:
                    continue
                for p in parents:
                    key = (p.asset_id, p.version)
                    if key != node and best.get(key, 10**9) > base + 1:
                        best[key] = base + 1
                        changed = True
        return {(a, v, d) for (a, v), d in best.items()}


def check(model: Model, q: IndexQueries) -> None:
    assert {o.address: [o.name, o.age_recipient, o.endpoint, o.active] for o in q.orgs()} == model.orgs
    assert {a.asset_id: [a.owner, a.kind, a.name, a.retired] for a in q.assets()} == model.assets
    indexed_versions = {}
    for asset in model.assets:
        rows = q.versions(asset)
        assert q.asset(asset).version_count == len(rows)
        indexed_versions.update({(v.asset_id, v.version): (v.size, v.parents, v.author) for v in rows})
    assert indexed_versions == model.versions
    grants = {}
    for asset in model.assets:
        grants.update({(g.asset_id, g.grantee): [int(g.permissions), g.expiry, g.purpose, g.active]
                       for g in q.grants_for_asset(asset)})
    assert grants == model.grants
    for org, batches in model.anchors.items():
        assert [(a.batch_index, a.from_seq, a.to_seq, a.merkle_root) for a in q.anchors(org)] == batches
    for node in model.versions:
        assert {(n.asset_id, n.version, n.depth) for n in q.ancestors(*node)} == model.ancestors(node)


@pytest.mark.slow
@settings(max_examples=15, deadline=None)
@given(prelude=st.lists(CREATE, min_size=1, max_size=3), body=st.lists(OPS, min_size=4, max_size=12), split=st.integers(0, 14),
       batch=st.integers(1, 6))
def test_indexed_state_equals_model(w3, deployment, admin, orgs, chain, prelude, body, split, batch):
    ops = prelude + body
    with chain.isolated(), tempfile.TemporaryDirectory(prefix="tl-prop-") as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'idx.db'}")
        indexer = Indexer(w3, deployment, engine, batch_blocks=batch)
        model = Model(admin, orgs)
        for position, op in enumerate(ops):
            if position == split:
                indexer.sync_once()  # index part-way; the rest must be picked up incrementally
            model.apply(op)
        indexer.sync_once()
        check(model, IndexQueries(engine))
        engine.dispose()
