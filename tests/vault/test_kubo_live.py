"""The Kubo client against a real Kubo daemon (TWINLEDGER_TEST_KUBO_URL, e.g. http://127.0.0.1:5001).

Skipped unless that variable is set. Each test cleans up the pins it creates; blocks it
adds stay until the daemon's next GC, like any `ipfs add`.
"""
from __future__ import annotations

import io
import os
import secrets

import pytest

from vault.cid import CID
from vault.errors import BlockMismatchError, BlockNotFoundError, KuboError
from vault.kubo import KuboClient
from vault.unixfs import import_bytes

KUBO_URL = os.environ.get("TWINLEDGER_TEST_KUBO_URL")
pytestmark = [
    pytest.mark.kubo,
    pytest.mark.skipif(not KUBO_URL, reason="set TWINLEDGER_TEST_KUBO_URL=http://127.0.0.1:5001 to run against a real Kubo"),
]


@pytest.fixture(scope="module")
def kubo() -> KuboClient:
    client = KuboClient(KUBO_URL or "")
    yield client
    client.close()


def test_version_and_id(kubo: KuboClient) -> None:
    assert kubo.version()[0].isdigit()
    assert kubo.id().peer_id


@pytest.mark.parametrize("profile", ["v0", "v1", "unixfs-v1-2025"])
def test_add_gives_the_same_cid_as_our_importer(kubo: KuboClient, profile: str) -> None:
    data = secrets.token_bytes(3 * 1024 * 1024 + 17)  # several leaves in every profile
    cid = kubo.add(io.BytesIO(data), profile=profile, only_hash=True, pin=False)
    assert cid == str(import_bytes(data, profile))


def test_add_hello_world_v1_vector(kubo: KuboClient) -> None:
    assert kubo.add(b"hello world", profile="v1", only_hash=True) == (
        "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e")


def test_add_cat_pin_and_unpin(kubo: KuboClient) -> None:
    data = secrets.token_bytes(300_000)
    cid = kubo.add(data, profile="v1")
    try:
        assert b"".join(kubo.cat(cid)) == data
        assert b"".join(kubo.cat(cid, offset=10, length=5)) == data[10:15]
        assert kubo.pin_rm(cid) == [cid]
        assert kubo.pin_add(cid) == [cid]
    finally:
        kubo.pin_rm(cid)
    with pytest.raises(KuboError, match="not pinned"):
        kubo.pin_rm(cid)


def test_blocks_put_get_stat_rm(kubo: KuboClient) -> None:
    data = secrets.token_bytes(1000)
    cid = CID.from_sha256(data)
    assert not kubo.has(cid)
    kubo.put(cid, data)
    assert kubo.has(cid) and kubo.get(cid) == data
    assert kubo.block_stat(cid) == 1000
    assert any(c.multihash == cid.multihash for c in kubo.iter_cids())
    kubo.delete(cid)
    with pytest.raises(BlockNotFoundError):
        kubo.get(cid)
    with pytest.raises(BlockMismatchError):
        kubo.put(cid, data + b"!")


def test_dag_export_then_import_round_trip(kubo: KuboClient) -> None:
    data = secrets.token_bytes(600_000)
    cid = kubo.add(data, profile="v1")
    try:
        car = b"".join(kubo.dag_export(cid))
        result = kubo.dag_import(car)
        assert [r.cid for r in result.roots] == [cid]
        assert result.roots[0].pin_error == ""
        assert result.block_count == 4 and result.block_bytes is not None  # 3 leaves + root
    finally:
        kubo.pin_rm(cid)
