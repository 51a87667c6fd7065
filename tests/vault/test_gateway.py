"""Trustless-gateway client against honest and malicious gateways (httpx.MockTransport:
a unit test of the code that talks HTTP; the real-HTTP test comes with the org node)."""
from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

import httpx
import pytest

from vault._mfbase import encode_varint
from vault.blockstore import MemoryBlockstore
from vault.car import dag_blocks, export_car, write_car
from vault._mfdagpb import link_cids
from vault.cid import CID, DAG_PB, RAW
from vault.errors import GatewayError, InputValidationError
from vault.gateway import CAR_ACCEPT, RAW_ACCEPT, GatewayClient
from vault.unixfs import Profile, export, import_bytes

TINY = Profile("tiny", cid_version=1, raw_leaves=True, chunk_size=100, max_links=4)
DATA = hashlib.shake_256(b"twin model").digest(2500)
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def origin() -> tuple[MemoryBlockstore, CID]:
    store = MemoryBlockstore()
    return store, import_bytes(DATA, TINY, store.put)


def _car_bytes(root: CID, blocks: list[tuple[CID, bytes]]) -> bytes:
    out = io.BytesIO()
    write_car([root], blocks, out)
    return out.getvalue()


def honest(store: MemoryBlockstore) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        cid = CID.decode(request.url.path.removeprefix("/ipfs/"))
        if request.url.params["format"] == "raw":
            assert request.headers["accept"] == RAW_ACCEPT
            return httpx.Response(200, content=store.get(cid), headers={"content-type": RAW_ACCEPT})
        assert request.headers["accept"] == CAR_ACCEPT and request.url.params["format"] == "car"
        out = io.BytesIO()
        export_car(store, cid, out)
        return httpx.Response(200, content=out.getvalue(), headers={"content-type": "application/vnd.ipld.car"})
    return handle


def serving(body: Callable[[CID], bytes]) -> Handler:
    return lambda request: httpx.Response(200, content=body(CID.decode(request.url.path.removeprefix("/ipfs/"))))


def status(code: int) -> Handler:
    return lambda request: httpx.Response(code, text="nope")


def unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def client(routes: dict[str, Handler], log: list[str] | None = None, **options: float) -> GatewayClient:
    def dispatch(request: httpx.Request) -> httpx.Response:
        if log is not None:
            log.append(request.url.host)
        assert request.headers["accept-encoding"] == "identity"  # nothing to inflate
        return routes[request.url.host](request)
    return GatewayClient([f"http://{host}" for host in routes], transport=httpx.MockTransport(dispatch), **options)


def _evil_cars(store: MemoryBlockstore, root: CID) -> dict[str, Handler]:
    blocks = list(dag_blocks(store, root))
    other = import_bytes(b"someone else's file", TINY, store.put)
    flipped = [(c, bytes([d[0] ^ 1]) + d[1:]) if c.codec == RAW and i == 5 else (c, d) for i, (c, d) in enumerate(blocks)]
    stranger = CID.from_sha256(b"unrequested", RAW, 1)
    extra = _car_bytes(root, blocks) + encode_varint(len(stranger.to_bytes()) + 11) + stranger.to_bytes() + b"unrequested"
    return {
        "down.test": unreachable,
        "error.test": status(500),
        "truncated.test": serving(lambda c: _car_bytes(root, blocks)[:-10]),
        "other-root.test": serving(lambda c: _car_bytes(other, list(dag_blocks(store, other)))),
        "tampered.test": serving(lambda c: _car_bytes(root, flipped)),
        "incomplete.test": serving(lambda c: _car_bytes(root, blocks[:-1])),
        "extra.test": serving(lambda c: extra),
        "garbage.test": serving(lambda c: b"<html>hello</html>"),
    }


EXPECTED_REASONS = {
    "down.test": "ConnectError", "error.test": "HTTP 500", "truncated.test": "truncated",
    "other-root.test": "not " , "tampered.test": "BlockMismatchError", "incomplete.test": "incomplete",
    "extra.test": "no earlier block links to", "garbage.test": "InvalidCARError",
}


def test_fetch_car_from_an_honest_gateway(origin: tuple[MemoryBlockstore, CID]) -> None:
    store, root = origin
    local = MemoryBlockstore()
    with client({"good.test": honest(store)}) as gw:
        added = gw.fetch_car(root, local)
    assert added == len(local) == len(list(dag_blocks(store, root)))
    assert {c.multihash for c in local.iter_cids()} == {c.multihash for c, _ in dag_blocks(store, root)}


def test_every_malicious_car_fails_over_to_the_honest_gateway(origin: tuple[MemoryBlockstore, CID]) -> None:
    store, root = origin
    routes = _evil_cars(store, root)
    routes["good.test"] = honest(store)
    log: list[str] = []
    local = MemoryBlockstore()
    client(routes, log).fetch_car(root, local)
    assert log == list(routes)
    assert b"".join(export(root, local.get)) == DATA


def test_when_all_fail_the_error_lists_every_reason_and_nothing_is_stored(origin: tuple[MemoryBlockstore, CID]) -> None:
    store, root = origin
    routes = _evil_cars(store, root)
    local = MemoryBlockstore()
    with pytest.raises(GatewayError) as info:
        client(routes).fetch_car(root, local)
    assert len(local) == 0
    err = info.value
    assert err.cid == str(root)
    assert [gw for gw, _ in err.attempts] == [f"http://{h}" for h in routes]
    for (gw, reason), host in zip(err.attempts, routes):
        assert EXPECTED_REASONS[host] in reason, (host, reason)
    assert "http://error.test: HTTP 500" in str(err)


def test_fetch_raw_verifies_and_fails_over(origin: tuple[MemoryBlockstore, CID]) -> None:
    store, root = origin
    routes = {
        "liar.test": serving(lambda c: b"not the block"),
        "huge.test": serving(lambda c: bytes(3 << 20)),
        "missing.test": status(404),
        "good.test": honest(store),
    }
    assert client(routes).fetch_raw(root) == store.get(root)
    del routes["good.test"]
    with pytest.raises(GatewayError) as info:
        client(routes).fetch_raw(root)
    reasons = [r for _, r in info.value.attempts]
    assert "BlockMismatchError" in reasons[0] and "larger than" in reasons[1] and reasons[2] == "HTTP 404"


@pytest.mark.parametrize("via", ["car", "raw"])
def test_fetch_file(origin: tuple[MemoryBlockstore, CID], via: str) -> None:
    store, root = origin
    routes = {"down.test": unreachable, "good.test": honest(store)}
    assert b"".join(client(routes).fetch_file(root, via=via)) == DATA


def test_fetch_file_via_car_yields_nothing_from_a_bad_car(origin: tuple[MemoryBlockstore, CID]) -> None:
    store, root = origin
    routes = {"tampered.test": _evil_cars(store, root)["tampered.test"]}
    received = []
    with pytest.raises(GatewayError):
        for piece in client(routes).fetch_file(root):
            received.append(piece)
    assert received == []


def test_constructor_validates() -> None:
    with pytest.raises(InputValidationError):
        GatewayClient([])
    with pytest.raises(InputValidationError):
        GatewayClient("http://one.test")  # type: ignore[arg-type]
    with pytest.raises(InputValidationError, match="http"):
        GatewayClient(["ftp://gw.test"])
    gw = GatewayClient(["http://gw.test/"], transport=httpx.MockTransport(status(500)))
    assert gw.gateways == ("http://gw.test",)
    with pytest.raises(InputValidationError):
        gw.fetch_raw("bafy")  # type: ignore[arg-type]
    with pytest.raises(InputValidationError):
        gw.fetch_file(CID.from_sha256(b"x"), via="ftp")


def test_duplicates_are_accepted_up_to_the_reference_count() -> None:
    store = MemoryBlockstore()
    root = import_bytes(bytes(100) * 9, TINY, store.put)  # identical leaves and subtrees

    def full_dfs(cid: CID) -> list[tuple[CID, bytes]]:  # what a dups=y gateway sends
        block = store.get(cid)
        out = [(cid, block)]
        for link in (link_cids(block) if cid.codec == DAG_PB else []):
            out += full_dfs(link)
        return out

    stream = full_dfs(root)
    distinct = list(dag_blocks(store, root))
    assert len(stream) == 13 and len(distinct) == 4
    local = MemoryBlockstore()
    client({"dups.test": serving(lambda c: _car_bytes(root, stream))}).fetch_car(root, local)
    assert len(local) == len(distinct)
    flood = stream + [stream[-1]] * 10_000
    with pytest.raises(GatewayError, match="repeats block"):
        client({"flood.test": serving(lambda c: _car_bytes(root, flood))}).fetch_car(root, MemoryBlockstore())


# -- hostile pacing, encodings and repetitions (review, session 9) --------------------------
def test_a_car_that_repeats_a_node_without_end_is_refused(origin) -> None:
    """Each copy of a node grants its links once more, but nothing grants the root (or a
    node) again: an honest CAR followed by endless copies of the root is cut off."""
    store, root = origin
    blocks = list(dag_blocks(store, root))
    inner = next(c for c, _ in blocks[1:] if c.codec == DAG_PB)
    for repeated in (blocks[0], next(b for b in blocks if b[0] == inner)):
        flood = blocks + [repeated] * 1000
        local = MemoryBlockstore()
        with pytest.raises(GatewayError, match="repeats block"):
            client({"flood.test": serving(lambda c, f=flood: _car_bytes(root, f))}).fetch_car(root, local)
        assert len(local) == 0


def test_a_compressed_response_is_refused_before_it_is_inflated(origin) -> None:
    import gzip

    store, root = origin
    bomb = gzip.compress(bytes(64 << 20))  # 64 MiB of zeros in ~64 KiB

    def compressed(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bomb, headers={"content-encoding": "gzip"})

    log: list[str] = []
    leaf = next(c for c in store.iter_cids() if c.codec == RAW)
    got = client({"gzip.test": compressed, "ok.test": honest(store)}, log).fetch_raw(leaf)
    assert got == store.get(leaf) and log == ["gzip.test", "ok.test"]
    with pytest.raises(GatewayError, match=r"compressed response \(gzip\)"):
        client({"gzip.test": compressed}).fetch_car(root, MemoryBlockstore())


class _Drip(httpx.SyncByteStream):
    """A body sent one byte at a time, `pause` seconds apart: each read arrives well inside
    any per-read timeout, the whole never keeps a useful pace."""

    def __init__(self, body: bytes, pause: float) -> None:
        self._body, self._pause = body, pause

    def __iter__(self):
        import time

        for i in range(len(self._body)):
            time.sleep(self._pause)
            yield self._body[i : i + 1]


def test_a_gateway_that_drips_bytes_is_failed_over_from(origin) -> None:
    store, _ = origin
    leaf = next(c for c in store.iter_cids() if c.codec == RAW)  # 100 bytes: 1 s at this pace

    def drip(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Drip(store.get(leaf), 0.01))

    log: list[str] = []
    fetch = client({"drip.test": drip, "ok.test": honest(store)}, log, timeout=0.05, min_rate=10_000)
    assert fetch.fetch_raw(leaf) == store.get(leaf) and log == ["drip.test", "ok.test"]
    with pytest.raises(GatewayError, match="too slow"):
        client({"drip.test": drip}, timeout=0.05, min_rate=10_000).fetch_raw(leaf)


def test_an_http_error_of_the_store_is_not_blamed_on_the_gateways(origin) -> None:
    """A store that talks HTTP itself (a Kubo daemon) fails with its own error: that must
    propagate, not make every gateway look bad."""
    store, root = origin

    class HttpStore(MemoryBlockstore):
        def put(self, cid, data):
            raise httpx.ReadError("the store's daemon went away")

    log: list[str] = []
    with pytest.raises(httpx.ReadError, match="daemon went away"):
        client({"a.test": honest(store), "b.test": honest(store)}, log).fetch_car(root, HttpStore())
    assert log == ["a.test"]


@pytest.mark.parametrize("url", ["http://gw.test/?x=1", "http://gw.test/#top", "http://[::1", "ftp://gw.test"])
def test_gateway_urls_with_queries_fragments_or_bad_syntax_are_refused(url) -> None:
    with pytest.raises(InputValidationError, match="gateway URL"):
        GatewayClient([url])


def test_pacing_options_must_be_positive() -> None:
    for options in ({"timeout": 0}, {"min_rate": -1}):
        with pytest.raises(InputValidationError, match="positive"):
            GatewayClient(["http://gw.test"], **options)


def test_a_car_for_many_other_roots_names_only_a_few(origin) -> None:
    store, root = origin
    others = [CID.from_sha256(b"%d" % i, RAW, 1) for i in range(1000)]
    with pytest.raises(GatewayError) as caught:
        client({"roots.test": serving(lambda c: _car_bytes_roots(others))}).fetch_car(root, MemoryBlockstore())
    assert "and 997 more" in str(caught.value) and str(others[3]) not in str(caught.value)


def _car_bytes_roots(roots: list[CID]) -> bytes:
    out = io.BytesIO()
    write_car(roots, [], out)
    return out.getvalue()
