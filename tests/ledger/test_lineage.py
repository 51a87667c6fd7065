"""Lineage over indexed versions: ancestors/descendants on a DAG with diamonds, cycle
safety, and the W3C PROV-JSON export (checked structurally and by the `prov` library)."""
from __future__ import annotations

import json

import pytest
from sqlmodel import Session

from ledger.errors import IndexerError
from ledger.indexer import TL_NAMESPACE, IndexQueries
from ledger.indexer.tables import VersionParent
from ledger.models import AssetKind, VersionRef
from tests.db import db_url, pg_url  # noqa: F401
from tests.ledger.indexer_helpers import cid_v1, fresh_commitment, synced


@pytest.fixture(scope="module")
def dag(orgs):
    """
        D1 ── D2 ──────────┐
         │ \\               R1 ── R2 ── X1
         │  M1 ────────────┘          /
         └───────────────────────────┘      (X1 also derives from D1 directly)
        Y1 derives from D1 twice (a parent listed twice).
    D = org1 dataset, M = org2 model, R = org3 report, X = org1 model, Y = org1 other.
    """
    o1, o2, o3, _ = orgs

    def version(client, asset, parents=()):
        return client.add_version(asset, cid_v1(fresh_commitment()), fresh_commitment(), 10,
                                  [VersionRef(*p) for p in parents]).version

    d = o1.create_asset(AssetKind.DATASET, "sensor data").asset_id
    m = o2.create_asset(AssetKind.MODEL, "twin model").asset_id
    r = o3.create_asset(AssetKind.REPORT, "validation").asset_id
    x = o1.create_asset(AssetKind.MODEL, "retrained").asset_id
    y = o1.create_asset(AssetKind.OTHER, "dup").asset_id
    version(o1, d)
    version(o1, d, [(d, 1)])
    version(o2, m, [(d, 1)])
    version(o3, r, [(d, 2), (m, 1)])
    version(o3, r, [(r, 1)])
    version(o1, x, [(r, 2), (d, 1)])
    version(o1, y, [(d, 1), (d, 1)])
    return {"D": d, "M": m, "R": r, "X": x, "Y": y, "orgs": [o.address for o in orgs]}


def _nodes(result):
    return [(n.asset_id, n.version, n.depth) for n in result]


def test_ancestors_and_descendants_with_diamonds(w3, deployment, dag, db_url):
    _, engine = synced(w3, deployment, db_url)
    q = IndexQueries(engine)
    D, M, R, X, Y = (dag[k] for k in "DMRXY")
    # R2 → R1 → {D2, M1} → D1 (reached along two paths, listed once at depth 3)
    assert _nodes(q.ancestors(R, 2)) == [(R, 1, 1), (D, 2, 2), (M, 1, 2), (D, 1, 3)]
    # X1 → D1 directly (depth 1) although it is also 4 steps away through R
    assert _nodes(q.ancestors(X, 1)) == [(D, 1, 1), (R, 2, 1), (R, 1, 2), (D, 2, 3), (M, 1, 3)]
    assert _nodes(q.ancestors(Y, 1)) == [(D, 1, 1)]
    assert q.ancestors(D, 1) == []
    assert _nodes(q.descendants(D, 1)) == sorted(
        [(D, 2, 1), (M, 1, 1), (X, 1, 1), (Y, 1, 1), (R, 1, 2), (R, 2, 3)], key=lambda t: (t[2], t[0], t[1]))
    assert _nodes(q.descendants(M, 1)) == [(R, 1, 1), (R, 2, 2), (X, 1, 3)]
    assert q.descendants(X, 1) == []
    assert _nodes(q.ancestors(X, 1, max_depth=1)) == [(D, 1, 1), (R, 2, 1)]
    assert q.version(Y, 1).parents == (VersionRef(D, 1), VersionRef(D, 1))


def test_walks_terminate_on_cycles(w3, deployment, dag, tmp_path):
    """The chain cannot form a cycle, but a damaged database must not hang the node."""
    _, engine = synced(w3, deployment, f"sqlite:///{tmp_path / 'cyc.db'}")
    D, R = dag["D"], dag["R"]
    with Session(engine) as s, s.begin():
        s.add(VersionParent(child_asset_id=D, child_version=1, position=0, parent_asset_id=R, parent_version=2))
    q = IndexQueries(engine)
    assert _nodes(q.ancestors(R, 2)) == [(R, 1, 1), (dag["D"], 2, 2), (dag["M"], 1, 2), (D, 1, 3)]
    assert (R, 2) in {(n.asset_id, n.version) for n in q.ancestors(D, 1)}
    assert (D, 1) not in {(n.asset_id, n.version) for n in q.ancestors(D, 1)}


def test_prov_json_structure(w3, deployment, dag, db_url):
    _, engine = synced(w3, deployment, db_url)
    q = IndexQueries(engine)
    D, M, R = dag["D"], dag["M"], dag["R"]
    o1, o2, o3, _ = dag["orgs"]
    doc = q.prov_json(R, 2)
    assert doc["prefix"] == {"tl": TL_NAMESPACE}
    ent = {f"tl:asset-{a}-v{v}" for a, v in [(R, 2), (R, 1), (D, 2), (M, 1), (D, 1)]}
    assert set(doc["entity"]) == ent
    d1 = doc["entity"][f"tl:asset-{D}-v1"]
    v = q.version(D, 1)
    assert (d1["tl:cid"], d1["tl:commitment"], d1["tl:size"], d1["tl:kind"]) == (
        v.cid, v.commitment, {"$": "10", "type": "xsd:unsignedLong"}, "dataset")
    types = {k: a["prov:type"]["$"] for k, a in doc["activity"].items()}
    assert types == {
        f"tl:act-{D}-v1": "tl:publish",   # no inputs
        f"tl:act-{D}-v2": "tl:publish",   # org1 derives from its own data
        f"tl:act-{M}-v1": "tl:compute",   # org2 derives from org1's data
        f"tl:act-{R}-v1": "tl:compute",   # org3 derives from others' data
        f"tl:act-{R}-v2": "tl:compute",   # a derived report
    }
    assert doc["activity"][f"tl:act-{D}-v1"]["tl:txHash"] == v.tx_hash
    assert set(doc["agent"]) == {f"tl:org-{o1}", f"tl:org-{o2}", f"tl:org-{o3}"}
    assert doc["agent"][f"tl:org-{o2}"]["prov:label"] == "org2"

    def pairs(section, a, b):
        return {(rel[a], rel[b]) for rel in doc[section].values()}

    e = lambda a, n: f"tl:asset-{a}-v{n}"  # noqa: E731
    edges = {(e(R, 2), e(R, 1)), (e(R, 1), e(D, 2)), (e(R, 1), e(M, 1)), (e(D, 2), e(D, 1)), (e(M, 1), e(D, 1))}
    assert pairs("wasDerivedFrom", "prov:generatedEntity", "prov:usedEntity") == edges
    assert pairs("used", "prov:activity", "prov:entity") == {(c.replace("asset", "act"), p) for c, p in edges}
    assert pairs("wasGeneratedBy", "prov:entity", "prov:activity") == {(x, x.replace("asset", "act")) for x in ent}
    assert pairs("wasAttributedTo", "prov:entity", "prov:agent") == {
        (e(R, 2), f"tl:org-{o3}"), (e(R, 1), f"tl:org-{o3}"), (e(D, 2), f"tl:org-{o1}"),
        (e(M, 1), f"tl:org-{o2}"), (e(D, 1), f"tl:org-{o1}")}
    assert pairs("wasAssociatedWith", "prov:activity", "prov:agent") == {
        (e(R, 2).replace("asset", "act"), f"tl:org-{o3}"), (e(R, 1).replace("asset", "act"), f"tl:org-{o3}"),
        (e(D, 2).replace("asset", "act"), f"tl:org-{o1}"), (e(M, 1).replace("asset", "act"), f"tl:org-{o2}"),
        (e(D, 1).replace("asset", "act"), f"tl:org-{o1}")}
    assert json.dumps(q.prov_json(R, 2), sort_keys=False) == json.dumps(doc, sort_keys=False)  # deterministic


def test_prov_json_hook_and_descendants(w3, deployment, dag, tmp_path):
    _, engine = synced(w3, deployment, f"sqlite:///{tmp_path / 'p.db'}")
    q = IndexQueries(engine)
    D, M = dag["D"], dag["M"]
    seen = []

    def hook(version, asset, parent_assets):
        seen.append((version.asset_id, version.version, asset.kind, tuple(p.asset_id for p in parent_assets)))
        return "sync" if asset.kind == AssetKind.MODEL else "publish"

    doc = q.prov_json(M, 1, include_descendants=True, activity_type=hook)
    assert (M, 1, AssetKind.MODEL, (D,)) in seen
    assert set(doc["entity"]) == {f"tl:asset-{a}-v{v}" for a, v in
                                  [(M, 1), (D, 1), (dag["R"], 1), (dag["R"], 2), (dag["X"], 1)]}
    assert doc["activity"][f"tl:act-{M}-v1"]["prov:type"]["$"] == "tl:sync"
    # R1 also derives from D2, which is outside this export: no dangling relation to it
    assert all(rel["prov:usedEntity"] in doc["entity"] for rel in doc["wasDerivedFrom"].values())
    with pytest.raises(IndexerError, match="activity_type hook"):
        q.prov_json(M, 1, activity_type=lambda *_: "not a name!")
    with pytest.raises(IndexerError, match="unknown version"):
        q.prov_json(M, 7)


def test_prov_json_reads_back_with_the_prov_library(w3, deployment, dag, tmp_path):
    prov_model = pytest.importorskip("prov.model", reason="prov==3.2.3 is a test dependency (docs/handoff)")
    _, engine = synced(w3, deployment, f"sqlite:///{tmp_path / 'lib.db'}")
    exported = IndexQueries(engine).prov_json(dag["X"], 1)
    document = prov_model.ProvDocument.deserialize(content=json.dumps(exported), format="json")
    records = document.get_records()
    by_type = {}
    for record in records:
        by_type.setdefault(type(record).__name__, []).append(record)
    assert len(by_type["ProvEntity"]) == len(exported["entity"]) == 6
    assert len(by_type["ProvActivity"]) == 6 and len(by_type["ProvAgent"]) == 3
    assert len(by_type["ProvDerivation"]) == len(exported["wasDerivedFrom"]) == 7
    entity = document.get_record(f"tl:asset-{dag['X']}-v1")[0]
    assert str(entity.identifier.namespace.uri) == TL_NAMESPACE
    # and the library's own serialisation of it parses back to an equal document
    again = prov_model.ProvDocument.deserialize(content=document.serialize(format="json"), format="json")
    assert again == document
