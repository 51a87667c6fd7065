"""Unit tests of the Kubo RPC client against httpx.MockTransport.

The fake follows the request/response shapes of the Kubo RPC reference
(docs.ipfs.tech/reference/kubo/rpc, generated from kubo v0.41.0); every request the
client sends is parsed independently (python-multipart) and asserted exactly.
"""
from __future__ import annotations

import gc
import hashlib
import json
import socket
import sys
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from python_multipart import MultipartParser

from vault.car import MAX_SECTION_SIZE
from vault.cid import CID, DAG_PB, RAW
from vault.errors import (
    BlockMismatchError,
    BlockNotFoundError,
    InputValidationError,
    InvalidCIDError,
    KuboError,
    KuboUnavailableError,
)
from vault.kubo import (
    MAX_ERROR_BODY_SIZE,
    MAX_JSON_SIZE,
    DagImportResult,
    ImportedRoot,
    KuboClient,
    NodeIdentity,
    add_params,
)

from .blockstore_suite import BlockStoreSuite

HELLO_V1 = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"  # "hello world", v1
HELLO_V0 = "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"


def kubo_error(message: str, status: int = 500, code: int = 0) -> httpx.Response:
    """The error body Kubo writes for a failed command."""
    return httpx.Response(status, json={"Message": message, "Code": code, "Type": "error"})


def ndjson(*objs: dict) -> httpx.Response:
    body = "".join(json.dumps(o) + "\n" for o in objs)
    return httpx.Response(200, content=body.encode(), headers={"Content-Type": "application/json"})


def parse_multipart(request: httpx.Request) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart/form-data request into (headers, body) parts, independently."""
    ctype = request.headers["content-type"]
    assert ctype.startswith("multipart/form-data; boundary=")
    boundary = ctype.split("boundary=", 1)[1]
    parts: list[tuple[dict[str, str], bytes]] = []
    state: dict = {}

    def on_part_begin() -> None:
        state.update(headers={}, data=bytearray(), field=b"", value=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].decode().lower()] = state["value"].decode()
        state["field"], state["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["data"] += data[start:end]

    def on_part_end() -> None:
        parts.append((state["headers"], bytes(state["data"])))

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    parser.write(request.read())
    parser.finalize()
    return parts


def file_part(request: httpx.Request) -> tuple[str, bytes]:
    """The single file part Kubo expects: returns (unescaped filename, bytes)."""
    parts = parse_multipart(request)
    assert len(parts) == 1
    headers, body = parts[0]
    assert headers["content-type"] == "application/octet-stream"
    disp = headers["content-disposition"]
    assert disp.startswith('form-data; name="file"; filename="')
    return unquote(disp.split('filename="', 1)[1].rstrip('"')), body


def client_for(handler) -> tuple[KuboClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        assert request.method == "POST"  # the RPC API refuses GET with 405
        return handler(request)

    return KuboClient("http://kubo.test:5001", transport=httpx.MockTransport(record)), seen


def query(request: httpx.Request) -> list[tuple[str, str]]:
    return sorted(request.url.params.multi_items())


class Body(httpx.SyncByteStream):
    """A response body from `pieces`; records how many bytes the client pulled and whether it closed it."""

    def __init__(self, pieces) -> None:
        self.pieces, self.sent, self.closed = pieces, 0, False

    def __iter__(self):
        for piece in self.pieces:
            self.sent += len(piece)
            yield piece

    def close(self) -> None:
        self.closed = True


PIECE = 64 << 10  # one network read


def big_body(size: int, fill: bytes = b" ") -> Body:
    """`size` bytes of `fill` in network-sized pieces, made as they are pulled."""
    return Body(fill * PIECE for _ in range(size // PIECE))


def bad_gzip(request: httpx.Request, status: int = 200) -> httpx.Response:
    """A body whose Content-Encoding does not decode: httpx raises DecodingError, not a TransportError."""
    return httpx.Response(status, headers={"Content-Encoding": "gzip"}, stream=Body([b"definitely not gzip"]))


# -- add -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ("v0", {"cid-version": "0", "raw-leaves": "false", "chunker": "size-262144", "max-file-links": "174"}),
        ("v1", {"cid-version": "1", "raw-leaves": "true", "chunker": "size-262144", "max-file-links": "174"}),
        ("unixfs-v1-2025", {"cid-version": "1", "raw-leaves": "true", "chunker": "size-1048576",
                            "max-file-links": "1024"}),
    ],
)
def test_add_pins_every_dag_parameter_of_the_profile(profile: str, expected: dict[str, str]) -> None:
    client, seen = client_for(lambda r: ndjson({"Name": "file", "Hash": HELLO_V1, "Size": "11"}))
    assert client.add(b"hello world", profile=profile) == HELLO_V1
    (request,) = seen
    assert request.url.path == "/api/v0/add"
    assert dict(query(request)) == {
        **expected, "trickle": "false", "hash": "sha2-256", "inline": "false",
        "only-hash": "false", "pin": "true", "quieter": "true",
    }
    assert file_part(request) == ("file", b"hello world")
    assert add_params(profile) == {k: v for k, v in dict(query(request)).items()
                                   if k not in ("only-hash", "pin", "quieter")}


def test_add_streams_its_upload_and_skips_progress_lines(tmp_path) -> None:
    data = bytes(range(256)) * 9000  # > 2 MiB: read from the file in several chunks
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    client, seen = client_for(lambda r: ndjson(
        {"Name": "big.bin", "Bytes": 1048576}, {"Name": "big.bin", "Bytes": len(data)},
        {"Name": "big.bin", "Hash": HELLO_V1, "Size": str(len(data) + 120)},
    ))
    assert client.add(path, only_hash=True, pin=False, filename="dir/big.bin") == HELLO_V1
    (request,) = seen
    assert "content-length" not in request.headers  # chunked: never buffered whole
    assert request.headers["transfer-encoding"] == "chunked"
    params = dict(query(request))
    assert params["only-hash"] == "true" and params["pin"] == "false"
    assert file_part(request) == ("dir/big.bin", data)


def test_add_accepts_an_iterable_and_a_file_object(tmp_path) -> None:
    client, seen = client_for(lambda r: ndjson({"Name": "file", "Hash": HELLO_V0, "Size": "19"}))
    assert client.add(iter([b"hello", b"", b" world"])) == HELLO_V0
    (tmp_path / "f").write_bytes(b"hello world")
    with open(tmp_path / "f", "rb") as f:
        client.add(f)
    assert [file_part(r)[1] for r in seen] == [b"hello world", b"hello world"]


def test_add_rejects_an_unknown_profile_before_sending() -> None:
    client, seen = client_for(lambda r: pytest.fail("no request expected"))
    with pytest.raises(InputValidationError, match="unknown import profile 'v2'"):
        client.add(b"x", profile="v2")
    assert seen == []


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "returned no CID"),
        (b"not json\n", "not JSON"),
        (b'{"Name": "file", "Hash": "zNotACid"}\n', "is not a valid CID"),
        (b'{"Name": "file"}\n', "unexpected object"),
        (b"[1, 2]\n", "expected JSON objects"),
    ],
)
def test_add_rejects_malformed_responses(body: bytes, match: str) -> None:
    client, _ = client_for(lambda r: httpx.Response(200, content=body))
    with pytest.raises(KuboError, match=match):
        client.add(b"x")


def test_add_error_object_inside_the_stream_raises() -> None:
    client, _ = client_for(lambda r: ndjson({"Message": "context canceled", "Code": 0, "Type": "error"}))
    with pytest.raises(KuboError, match="context canceled"):
        client.add(b"x")


# -- cat, dag/export -------------------------------------------------------------------


def test_cat_streams_the_response_with_offset_and_length() -> None:
    content = b"0123456789" * 300_000
    client, seen = client_for(lambda r: httpx.Response(200, content=content))
    chunks = list(client.cat(HELLO_V1, offset=5, length=100))
    assert b"".join(chunks) == content
    assert query(seen[0]) == [("arg", HELLO_V1), ("length", "100"), ("offset", "5")]
    assert seen[0].url.path == "/api/v0/cat"


def test_cat_raises_before_streaming_when_kubo_fails() -> None:
    msg = f"block was not found locally (offline): ipld: could not find {HELLO_V1}"
    client, _ = client_for(lambda r: kubo_error(msg))
    with pytest.raises(BlockNotFoundError, match="could not find"):
        client.cat(HELLO_V1)


def test_dag_export_streams_car_bytes() -> None:
    car = b"\x3a\xa2eroots" + b"\x00" * 5000
    client, seen = client_for(lambda r: httpx.Response(200, content=car,
                                                       headers={"Content-Type": "application/vnd.ipld.car"}))
    assert b"".join(client.dag_export(HELLO_V1)) == car
    assert seen[0].url.path == "/api/v0/dag/export"
    assert query(seen[0]) == [("arg", HELLO_V1), ("progress", "false")]


@pytest.mark.parametrize("call", ["cat", "dag_export"])
@pytest.mark.parametrize("drop", ["close", "del"])
def test_a_stream_dropped_before_its_first_read_closes_the_response(call: str, drop: str) -> None:
    body = Body([b"x" * 10])
    client, _ = client_for(lambda r: httpx.Response(200, stream=body))
    pieces = getattr(client, call)(HELLO_V1)
    if drop == "close":
        pieces.close()
        assert list(pieces) == []
    else:
        del pieces
        gc.collect()
    assert body.closed


def test_a_stream_read_to_the_end_closes_the_response() -> None:
    body = Body([b"ab", b"cd"])
    client, _ = client_for(lambda r: httpx.Response(200, stream=body))
    assert b"".join(client.cat(HELLO_V1)) == b"abcd"
    assert body.closed


def test_a_stream_broken_off_is_unavailable() -> None:
    def pieces():
        yield b"first"
        raise httpx.ReadError("connection reset")

    client, _ = client_for(lambda r: httpx.Response(200, stream=Body(pieces())))
    with pytest.raises(KuboUnavailableError, match="broke off the response: connection reset"):
        list(client.cat(HELLO_V1))


# -- dag/import ------------------------------------------------------------------------


def test_dag_import_uploads_a_car_and_parses_roots_and_stats() -> None:
    root2 = str(CID.from_sha256(b"other", codec=DAG_PB))
    client, seen = client_for(lambda r: ndjson(
        {"Root": {"Cid": {"/": HELLO_V1}, "PinErrorMsg": ""}},
        {"Root": {"Cid": {"/": root2}, "PinErrorMsg": "block was not found locally"}},
        {"Stats": {"BlockCount": 3, "BlockBytesCount": 1234}},
    ))
    result = client.dag_import(iter([b"car-", b"bytes"]))
    assert result == DagImportResult(
        (ImportedRoot(HELLO_V1, ""), ImportedRoot(root2, "block was not found locally")), 3, 1234)
    (request,) = seen
    assert request.url.path == "/api/v0/dag/import"
    assert query(request) == [("pin-roots", "true"), ("stats", "true")]
    assert file_part(request) == ("file.car", b"car-bytes")


@pytest.mark.parametrize(
    "line",
    [{"Root": {"Cid": "not-a-link"}}, {"Root": {"Cid": {"/": "nope"}}}, {"Stats": {"BlockCount": -1}},
     {"Something": 1}],
)
def test_dag_import_rejects_malformed_lines(line: dict) -> None:
    client, _ = client_for(lambda r: ndjson(line))
    with pytest.raises(KuboError):
        client.dag_import(b"x")


def test_dag_import_that_pins_but_reports_no_root_is_an_error() -> None:
    # Kubo emits Root lines only when it pins (dag/import.go), and a CAR has at least one root
    stats = {"Stats": {"BlockCount": 1, "BlockBytesCount": 11}}
    client, _ = client_for(lambda r: ndjson(stats))
    with pytest.raises(KuboError, match="pinned no roots"):
        client.dag_import(b"car")
    assert client.dag_import(b"car", pin_roots=False) == DagImportResult((), 1, 11)


# -- pins, id, version -----------------------------------------------------------------


def test_pin_add_and_rm() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v0/pin/add":
            return httpx.Response(200, json={"Pins": [HELLO_V1]})
        return httpx.Response(200, json={"Pins": [HELLO_V1]})

    client, seen = client_for(handler)
    assert client.pin_add(HELLO_V1) == [HELLO_V1]
    assert client.pin_rm(HELLO_V1, recursive=False) == [HELLO_V1]
    assert [(r.url.path, query(r)) for r in seen] == [
        ("/api/v0/pin/add", [("arg", HELLO_V1), ("recursive", "true")]),
        ("/api/v0/pin/rm", [("arg", HELLO_V1), ("recursive", "false")]),
    ]


def test_pin_rm_of_an_unpinned_cid_carries_kubos_message_code_and_status() -> None:
    client, _ = client_for(lambda r: kubo_error("not pinned or pinned indirectly", 500, 0))
    with pytest.raises(KuboError) as info:
        client.pin_rm(HELLO_V1)
    assert info.value.message == "Kubo pin/rm failed: not pinned or pinned indirectly"
    assert (info.value.code, info.value.status) == (0, 500)


def test_id_and_version_parse_the_documented_shapes() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v0/id":
            return httpx.Response(200, json={
                "Addresses": ["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW"], "AgentVersion": "kubo/0.41.0/",
                "ID": "12D3KooWExample", "Protocols": ["/ipfs/bitswap/1.2.0"], "PublicKey": "CAESIA=="})
        return httpx.Response(200, json={"Commit": "", "Golang": "go1.25", "Repo": "18",
                                         "System": "amd64/linux", "Version": "0.41.0"})

    client, seen = client_for(handler)
    assert client.id() == NodeIdentity("12D3KooWExample", "kubo/0.41.0/", ("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW",),
                                       ("/ipfs/bitswap/1.2.0",), "CAESIA==")
    assert client.version() == "0.41.0"
    assert [r.url.path for r in seen] == ["/api/v0/id", "/api/v0/version"]


def test_id_accepts_a_daemon_without_a_libp2p_host() -> None:
    # core/commands/id.go leaves Addresses and Protocols nil slices (JSON null) under --offline
    shape = {"ID": "12D3KooWExample", "PublicKey": "CAESIA==", "Addresses": None,
             "AgentVersion": "kubo/0.41.0/", "Protocols": None}
    client, _ = client_for(lambda r: httpx.Response(200, json=shape))
    assert client.id() == NodeIdentity("12D3KooWExample", "kubo/0.41.0/", (), (), "CAESIA==")
    shape["Addresses"] = "/ip4/127.0.0.1"
    with pytest.raises(KuboError, match="bad Addresses"):
        client.id()


@pytest.mark.parametrize("body", [{"Version": 41}, {}, {"Version": ""}])
def test_version_rejects_a_wrong_shape(body: dict) -> None:
    client, _ = client_for(lambda r: httpx.Response(200, json=body))
    with pytest.raises(KuboError, match="no Version"):
        client.version()


# -- errors ----------------------------------------------------------------------------


def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = KuboClient(f"http://127.0.0.1:{port}")
    with pytest.raises(KuboUnavailableError, match=rf"Kubo RPC at http://127.0.0.1:{port} is not reachable"):
        client.version()


def test_timeout_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client, _ = client_for(handler)
    with pytest.raises(KuboUnavailableError, match="not reachable: timed out"):
        client.id()


@pytest.mark.parametrize(
    ("response", "status", "match"),
    [
        (kubo_error("invalid path \"x\"", 400, 1), 400, 'Kubo version failed: invalid path "x"'),
        (httpx.Response(404, text="404 page not found"), 404, "HTTP 404: 404 page not found"),
        (httpx.Response(405, text=""), 405, r"HTTP 405: \(empty body\)"),
    ],
)
def test_http_errors_become_kubo_errors(response: httpx.Response, status: int, match: str) -> None:
    client, _ = client_for(lambda r: response)
    with pytest.raises(KuboError, match=match) as info:
        client.version()
    assert info.value.status == status


def test_invalid_cid_arguments_are_refused_before_sending() -> None:
    client, seen = client_for(lambda r: pytest.fail("no request expected"))
    for call in (client.cat, client.pin_add, client.block_get, client.dag_export):
        with pytest.raises(InvalidCIDError):
            call("not-a-cid")
    assert seen == []


def test_a_bad_base_url_is_refused() -> None:
    with pytest.raises(InputValidationError, match="http"):
        KuboClient("ftp://example.org")


DEEP = b"[" * 100_000  # json.loads raises RecursionError, which is not a ValueError


@pytest.mark.parametrize(
    ("response", "call", "match"),
    [
        (httpx.Response(200, content=DEEP), lambda c: c.version(), "version returned a body that is not JSON"),
        (httpx.Response(200, content=DEEP + b"\n"), lambda c: c.block_rm(HELLO_V1), "returned a line that is not JSON"),
        (httpx.Response(500, content=DEEP), lambda c: c.version(), r"version failed with HTTP 500: \[\[\["),
    ],
    ids=["json-body", "ndjson-line", "error-body"],
)
def test_deeply_nested_json_is_a_kubo_error(response: httpx.Response, call, match: str) -> None:
    client, _ = client_for(lambda r: response)
    with pytest.raises(KuboError, match=match):
        call(client)


def test_json_nested_to_the_parsers_limit_is_a_kubo_error() -> None:
    # around the depth where json.loads gives up: what it still parses is printed back in
    # the error message (json.dumps), what it does not is "not JSON", never a RecursionError
    served = {}
    client, _ = client_for(lambda r: httpx.Response(200, content=served["body"]))
    limit = sys.getrecursionlimit()
    for depth in range(limit - 400, limit + 10):
        served["body"] = b'{"Version": ' + b"[" * depth + b"]" * depth + b"}"
        with pytest.raises(KuboError, match="not JSON|no Version"):
            client.version()


@pytest.mark.parametrize(
    "call",
    [lambda c: c.version(), lambda c: c.block_get(HELLO_V1), lambda c: c.has(CID.decode(HELLO_V1)),
     lambda c: list(c.cat(HELLO_V1)), lambda c: list(c.dag_export(HELLO_V1)), lambda c: c.block_rm(HELLO_V1),
     lambda c: list(c.iter_cids())],
    ids=["version", "block_get", "has", "cat", "dag_export", "block_rm", "iter_cids"],
)
def test_a_body_that_does_not_decode_is_a_kubo_error(call) -> None:
    client, _ = client_for(bad_gzip)
    with pytest.raises(KuboError, match="cannot be read: .*decompressing") as info:
        call(client)
    assert not isinstance(info.value, KuboUnavailableError)  # Kubo answered, just not readably


def test_an_error_body_that_does_not_decode_keeps_the_status() -> None:
    client, _ = client_for(lambda r: bad_gzip(r, status=500))
    with pytest.raises(KuboError, match=r"HTTP 500: \(empty body\)") as info:
        client.version()
    assert info.value.status == 500


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.has(CID.decode(HELLO_V1)), "routing: not found"),  # not Kubo's words for a missing block
        (lambda c: c.version(), f"ipld: could not find {HELLO_V1}"),  # not a block command
        (lambda c: c.add(b"x"), "open /data/file: not found"),
    ],
    ids=["has", "version", "add"],
)
def test_not_found_means_a_missing_block_only_for_block_commands_in_kubos_words(call, message: str) -> None:
    client, _ = client_for(lambda r: kubo_error(message))
    with pytest.raises(KuboError) as info:
        call(client)
    assert not isinstance(info.value, BlockNotFoundError)
    assert info.value.status == 500


@pytest.mark.parametrize(
    "call",
    [lambda c: c.block_get(HELLO_V1), lambda c: c.block_stat(HELLO_V1), lambda c: c.cat(HELLO_V1),
     lambda c: c.dag_export(HELLO_V1), lambda c: c.pin_add(HELLO_V1)],
    ids=["block_get", "block_stat", "cat", "dag_export", "pin_add"],
)
def test_kubos_missing_block_errors_are_block_not_found(call) -> None:
    msg = f"block was not found locally (offline): ipld: could not find {HELLO_V1}"
    client, _ = client_for(lambda r: kubo_error(msg))
    with pytest.raises(BlockNotFoundError, match="could not find"):
        call(client)


def test_a_json_body_over_the_cap_is_refused_without_reading_on() -> None:
    body = big_body(4 * MAX_JSON_SIZE)
    client, _ = client_for(lambda r: httpx.Response(200, stream=body))
    with pytest.raises(KuboError, match=f"Kubo version returned more than {MAX_JSON_SIZE} bytes"):
        client.version()
    assert body.sent <= MAX_JSON_SIZE + PIECE and body.closed


def test_a_json_body_at_the_cap_is_read() -> None:
    obj = json.dumps({"Version": "0.41.0"}).encode()
    client, _ = client_for(lambda r: httpx.Response(200, content=obj + b" " * (MAX_JSON_SIZE - len(obj))))
    assert client.version() == "0.41.0"


def test_only_the_start_of_a_huge_error_body_is_read() -> None:
    body = big_body(4 << 20, fill=b"e")
    client, _ = client_for(lambda r: httpx.Response(500, stream=body))
    with pytest.raises(KuboError, match="HTTP 500: eee") as info:
        client.version()
    assert info.value.status == 500
    assert body.sent <= MAX_ERROR_BODY_SIZE + PIECE and body.closed


def test_an_ndjson_line_over_the_cap_is_refused_without_reading_on() -> None:
    body = big_body(4 * MAX_JSON_SIZE, fill=b"x")
    client, _ = client_for(lambda r: httpx.Response(200, stream=body))
    with pytest.raises(KuboError, match=f"block/rm returned a line of more than {MAX_JSON_SIZE} bytes"):
        client.block_rm(HELLO_V1)
    assert body.sent <= MAX_JSON_SIZE + PIECE and body.closed


def test_an_ndjson_line_at_the_cap_is_read() -> None:
    line = json.dumps({"Ref": HELLO_V1, "Err": ""}).encode()
    line = line[:-1] + b" " * (MAX_JSON_SIZE - len(line)) + b"}"
    assert len(line) == MAX_JSON_SIZE
    client, _ = client_for(lambda r: httpx.Response(200, content=line + b"\n" + line))
    assert [str(c) for c in client.iter_cids()] == [HELLO_V1, HELLO_V1]


# -- blocks ----------------------------------------------------------------------------


def test_block_get_verifies_the_bytes_against_the_cid() -> None:
    client, seen = client_for(lambda r: httpx.Response(200, content=b"hello world!"))
    with pytest.raises(BlockMismatchError):
        client.block_get(HELLO_V1)
    assert query(seen[0]) == [("arg", HELLO_V1)]


def test_block_put_sends_codec_and_hash_as_documented() -> None:
    client, seen = client_for(lambda r: httpx.Response(200, json={"Key": HELLO_V1, "Size": 11}))
    assert client.block_put(b"hello world") == HELLO_V1
    (request,) = seen
    assert request.url.path == "/api/v0/block/put"
    assert query(request) == [("cid-codec", "raw"), ("mhtype", "sha2-256"), ("pin", "false")]
    assert file_part(request) == ("data", b"hello world")


def test_block_rm_reports_the_per_block_error() -> None:
    client, _ = client_for(lambda r: ndjson({"Hash": HELLO_V1, "Error": "pinned: recursive"}))
    with pytest.raises(KuboError, match="pinned: recursive"):
        client.block_rm(HELLO_V1)


@pytest.mark.parametrize("size", ["\u00b2", "\u0661\u0662", "9" * 5000, "9" * 21, "", "+1", " 1", "-1", "1.0"])
def test_block_stat_refuses_a_size_that_is_not_plain_ascii_decimal(size: str) -> None:
    client, _ = client_for(lambda r: httpx.Response(200, json={"Key": HELLO_V1, "Size": size}))
    with pytest.raises(KuboError, match="bad Size"):
        client.block_stat(HELLO_V1)


@pytest.mark.parametrize(("size", "expected"), [("0", 0), ("11", 11), ("18446744073709551615", 2**64 - 1), (11, 11)])
def test_block_stat_reads_a_size_given_as_a_string_or_a_number(size, expected: int) -> None:
    client, _ = client_for(lambda r: httpx.Response(200, json={"Key": HELLO_V1, "Size": size}))
    assert client.block_stat(HELLO_V1) == expected


def test_a_block_over_the_section_cap_is_refused_without_reading_on() -> None:
    body = big_body(2 * MAX_SECTION_SIZE, fill=b"\x00")
    client, seen = client_for(lambda r: httpx.Response(200, stream=body))
    with pytest.raises(KuboError, match=f"block/get returned more than {MAX_SECTION_SIZE} bytes"):
        client.block_get(HELLO_V1)
    assert body.sent <= MAX_SECTION_SIZE + PIECE and body.closed
    assert seen[0].headers["accept-encoding"] == "identity"  # so the cap counts what was sent


def test_a_block_at_the_section_cap_is_read() -> None:
    data = bytes(MAX_SECTION_SIZE)
    client, _ = client_for(lambda r: httpx.Response(200, content=data))
    assert client.block_get(CID.from_sha256(data)) == data


class FakeKubo:
    """An in-memory Kubo answering block/*, refs/local, pin/add, pin/rm in the documented shapes.

    Like Kubo, blocks are keyed by multihash, `refs/local` lists them as CIDv1 raw, and a
    local miss with offline=true answers 500 with "block was not found locally (offline)".
    """

    def __init__(self) -> None:
        self.blocks: dict[bytes, bytes] = {}
        self.pins: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        command = request.url.path.removeprefix("/api/v0/")
        params = request.url.params
        if command == "block/put":
            _, data = file_part(request)
            codec = {"raw": RAW, "dag-pb": DAG_PB}[params["cid-codec"]]
            assert params["mhtype"] == "sha2-256"
            cid = CID.from_sha256(data, codec=codec)
            self.blocks[cid.multihash] = data
            return httpx.Response(200, json={"Key": str(cid), "Size": len(data)})
        if command == "refs/local":
            return ndjson(*({"Ref": str(CID(1, RAW, mh)), "Err": ""} for mh in self.blocks))
        cid = CID.decode(params["arg"])
        data = self.blocks.get(cid.multihash)
        if command == "pin/add":
            assert params["recursive"] == "true"
            if data is None:
                return kubo_error(f"pin: block was not found locally (offline): ipld: could not find {cid}")
            self.pins.add(str(cid))
            return httpx.Response(200, json={"Pins": [str(cid)]})
        if command == "pin/rm":
            if str(cid) not in self.pins:
                return kubo_error("not pinned or pinned indirectly")
            self.pins.discard(str(cid))
            return httpx.Response(200, json={"Pins": [str(cid)]})
        if command == "block/rm":
            if data is None and params.get("force") != "true":
                return ndjson({"Hash": str(cid), "Error": f"ipld: could not find {cid}"})
            self.blocks.pop(cid.multihash, None)
            return ndjson({"Hash": str(cid), "Error": ""}) if data is not None else ndjson()
        if data is None:
            assert params.get("offline") == "true"  # a blockstore never searches the network
            return kubo_error(f"block was not found locally (offline): ipld: could not find {cid}")
        if command == "block/get":
            return httpx.Response(200, content=data, headers={"Content-Type": "application/vnd.ipld.raw"})
        if command == "block/stat":
            return httpx.Response(200, json={"Key": str(cid), "Size": len(data)})
        return httpx.Response(404, text="404 page not found")


@pytest.fixture
def fake_kubo_store() -> KuboClient:
    return KuboClient("http://kubo.test:5001", transport=httpx.MockTransport(FakeKubo()))


class TestKuboClientAsBlockStore(BlockStoreSuite):
    """The shared BlockStore behaviour suite, against KuboClient over the fake Kubo."""

    @pytest.fixture
    def store(self) -> KuboClient:
        return KuboClient("http://kubo.test:5001", transport=httpx.MockTransport(FakeKubo()))


def test_blockstore_protocol_round_trip(fake_kubo_store: KuboClient) -> None:
    store = fake_kubo_store
    raw = CID.from_sha256(b"leaf")
    node = CID.from_sha256(b"\x0a\x02\x08\x01", codec=DAG_PB, version=0)
    assert not store.has(raw)
    store.put(raw, b"leaf")
    store.put(raw, b"leaf")  # idempotent
    store.put(node, b"\x0a\x02\x08\x01")
    assert store.has(raw) and store.get(raw) == b"leaf"
    assert store.get(node) == b"\x0a\x02\x08\x01"
    assert {c.multihash for c in store.iter_cids()} == {raw.multihash, node.multihash}
    store.pin(node)
    assert store.unpin(node) is True
    assert store.unpin(node) is False
    store.delete(raw)
    store.delete(raw)  # deleting a missing block is not an error
    with pytest.raises(BlockNotFoundError):
        store.get(raw)
    assert not store.has(raw)


def test_blockstore_put_refuses_bytes_that_do_not_match_the_cid(fake_kubo_store: KuboClient) -> None:
    with pytest.raises(BlockMismatchError):
        fake_kubo_store.put(CID.from_sha256(b"leaf"), b"leak")
    assert not fake_kubo_store.has(CID.from_sha256(b"leak"))


# -- properties ------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(data=st.lists(st.binary(max_size=3000), max_size=6),
       filename=st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s))
def test_multipart_upload_round_trips_any_bytes_and_filename(data: list[bytes], filename: str) -> None:
    client, seen = client_for(lambda r: ndjson({"Name": filename, "Hash": HELLO_V1}))
    client.add(iter(data), filename=filename)
    assert file_part(seen[0]) == (filename, b"".join(data))


@settings(max_examples=40, deadline=None)
@given(digests=st.lists(st.binary(min_size=1, max_size=8), min_size=1, max_size=5),  # Kubo pins >= 1 root
       errors=st.lists(st.text(max_size=30), min_size=5, max_size=5),
       count=st.integers(0, 2**40), size=st.integers(0, 2**50))
def test_dag_import_output_parses_back_to_what_kubo_wrote(digests, errors, count, size) -> None:
    roots = [ImportedRoot(str(CID.from_sha256(d, codec=DAG_PB)), e) for d, e in zip(digests, errors)]
    lines = [{"Root": {"Cid": {"/": r.cid}, "PinErrorMsg": r.pin_error}} for r in roots]
    client, _ = client_for(lambda r: ndjson(*lines, {"Stats": {"BlockCount": count, "BlockBytesCount": size}}))
    assert client.dag_import(b"car") == DagImportResult(tuple(roots), count, size)


@settings(max_examples=40, deadline=None)
@given(digests=st.lists(st.binary(min_size=1, max_size=8), max_size=6),
       cuts=st.lists(st.integers(0, 1000), max_size=8), crlf=st.booleans())
def test_ndjson_lines_parse_however_the_body_is_cut(digests, cuts, crlf) -> None:
    cids = [CID.from_sha256(d) for d in digests]
    end = b"\r\n" if crlf else b"\n"
    raw = b"".join(json.dumps({"Ref": str(c), "Err": ""}).encode() + end for c in cids) + b"\n"
    points = sorted({min(c, len(raw)) for c in cuts} | {0, len(raw)})
    pieces = [raw[a:b] for a, b in zip(points, points[1:])]
    client, _ = client_for(lambda r: httpx.Response(200, stream=Body(pieces)))
    assert list(client.iter_cids()) == cids


def test_hello_world_vector_matches_sha256() -> None:
    # sanity of the constant used above: raw leaf of "hello world"
    assert str(CID.from_sha256(b"hello world")) == HELLO_V1
    assert hashlib.sha256(b"hello world").digest() == CID.decode(HELLO_V1).digest
