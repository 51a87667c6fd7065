"""UnixFS importer/exporter: Kubo's CIDs (shared vectors), Kubo's tree shape (a direct port
of boxo's recursive balanced builder as an oracle), streaming, and verified export."""
from __future__ import annotations

import hashlib
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from hypothesis import given, settings
from hypothesis import strategies as st

from vault._mfbase import encode_varint
from vault._mfdagpb import decode_node, encode_link, encode_node
from vault.blockstore import MemoryBlockstore
from vault.cid import CID, DAG_CBOR, DAG_PB, RAW
from vault.errors import BlockMismatchError, BlockNotFoundError, InputValidationError, IntegrityError
from vault.unixfs import DEFAULT_PROFILE, PROFILES, Importer, Profile, export, import_bytes, import_stream
from vault.unixfs._pb import decode_data, internal_data

FEW = settings(max_examples=50, deadline=None)
PIECE = 1 << 20


def _vectors(shared_testdata: Path) -> dict:
    return json.loads((shared_testdata / "unixfs" / "vectors.json").read_text())


def _vector_data(vector: dict) -> Iterator[bytes]:
    """The vector's bytes, generated streaming (see the file's "about")."""
    if "literal" in vector:
        yield vector["literal"].encode("utf-8")
        return
    size = vector["size"]
    zeros = bytes(PIECE)
    if vector.get("zeros"):
        keystream = None
    else:
        key = hashlib.sha256(vector["seed"].encode("utf-8")).digest()
        # cryptography's 16-byte nonce = 4-byte LE block counter (0) + 12-byte nonce (zero)
        keystream = Cipher(algorithms.ChaCha20(key, bytes(16)), None).encryptor()
    while size:
        n = min(size, PIECE)
        yield zeros[:n] if keystream is None else keystream.update(zeros[:n])
        size -= n


# -- Kubo parity -----------------------------------------------------------------------------
def test_profiles_match_the_shared_table(shared_testdata: Path) -> None:
    table = _vectors(shared_testdata)["profiles"]
    assert set(table) == set(PROFILES)
    for name, spec in table.items():
        p = PROFILES[name]
        assert (p.cid_version, p.raw_leaves, p.chunk_size, p.max_links, p.layout) == (
            spec["cid_version"], spec["raw_leaves"], spec["chunk_size"], spec["max_links"], spec["layout"])
    assert DEFAULT_PROFILE == "unixfs-v1-2025"


def test_every_shared_vector(shared_testdata: Path) -> None:
    vectors = _vectors(shared_testdata)["vectors"]
    assert len(vectors) >= 14
    failures = []
    for vector in vectors:
        cid = import_stream(_vector_data(vector), vector["profile"])
        if str(cid) != vector["cid"]:
            failures.append(f"{vector.get('seed', vector.get('literal'))!r}/{vector.get('size')}/"
                            f"{vector['profile']}: got {cid}, want {vector['cid']}")
    assert not failures, "\n".join(failures)


def test_vectors_round_trip_through_a_store(shared_testdata: Path) -> None:
    small = [v for v in _vectors(shared_testdata)["vectors"] if v.get("size", 0) <= 2 << 20]
    for vector in small:
        store = MemoryBlockstore()
        data = b"".join(_vector_data(vector))
        root = import_bytes(data, vector["profile"], store.put)
        assert str(root) == vector["cid"]
        assert b"".join(export(root, store.get)) == data


def _reference_root(data: bytes, profile: Profile) -> CID:
    """Oracle: a line-by-line port of boxo balanced.Layout / fillNodeRec (recursive, whole
    input in memory), sharing only the leaf/node byte encoders with the real importer."""
    cs = profile.chunk_size
    chunks = [data[i : i + cs] for i in range(0, len(data), cs)]
    version = profile.cid_version

    def leaf(chunk: bytes) -> tuple[CID, int, int]:
        if profile.raw_leaves:
            return CID.from_sha256(chunk, RAW, 1), len(chunk), len(chunk)
        inner = b"\x08\x02" + (b"\x12" + encode_varint(len(chunk)) + chunk if chunk else b"") + b"\x18" + encode_varint(len(chunk))
        block = encode_node([], inner)
        return CID.from_sha256(block, DAG_PB, version), len(block), len(chunk)

    def commit(links: list[tuple[CID, int, int]]) -> tuple[CID, int, int]:
        block = encode_node([encode_link(c.to_bytes(), t) for c, t, _ in links], internal_data([s for *_, s in links]))
        return CID.from_sha256(block, DAG_PB, version), len(block) + sum(t for _, t, _ in links), sum(s for *_, s in links)

    def fill(node: list, depth: int) -> tuple[CID, int, int]:
        while len(node) < profile.max_links and chunks:
            node.append(leaf(chunks.pop(0)) if depth == 1 else fill([], depth - 1))
        return commit(node)

    if not chunks:
        return leaf(b"")[0]
    root = leaf(chunks.pop(0))
    depth = 1
    while chunks:
        root = fill([root], depth)
        depth += 1
    return root[0]


small_profiles = st.builds(
    lambda cs, ml, raw, v: Profile("test", cid_version=1 if raw else v, raw_leaves=raw, chunk_size=cs, max_links=ml),
    st.integers(1, 8), st.integers(2, 4), st.booleans(), st.sampled_from([0, 1]))


@FEW
@given(small_profiles, st.integers(0, 140))
def test_tree_shape_equals_boxo_balanced_builder(profile: Profile, size: int) -> None:
    data = hashlib.shake_256(str(size).encode()).digest(size)
    assert import_bytes(data, profile) == _reference_root(data, profile)


@FEW
@given(st.binary(max_size=600), st.lists(st.integers(0, 50), max_size=30), small_profiles)
def test_piece_sizes_do_not_change_the_cid(data: bytes, cuts: list[int], profile: Profile) -> None:
    importer = Importer(profile)
    pos = 0
    for cut in cuts:
        importer.write(memoryview(data)[pos : pos + cut])
        pos += cut
    importer.write(bytearray(data[pos:]))
    assert importer.finish() == import_bytes(data, profile)
    assert importer.size == len(data)


@FEW
@given(st.binary(min_size=1, max_size=600), small_profiles, st.booleans(), st.booleans())
def test_whole_chunks_give_the_same_cids_as_write(data: bytes, profile: Profile, hashed: bool, lend: bool) -> None:
    """write_chunk() (the vault's path: whole leaves, maybe hashed by the caller, maybe lent
    to the store) builds exactly the DAG write() builds, and stores the same blocks."""
    stored: dict[CID, bytes] = {}

    def put(cid: CID, block: bytes) -> None:
        cid.verify(block)
        assert lend or isinstance(block, bytes)  # not lent: the store may keep it
        stored[cid] = bytes(block)  # a lent view is only valid during the call

    expected: dict[CID, bytes] = {}
    root = import_bytes(data, profile, lambda c, b: expected.__setitem__(c, b))
    importer = Importer(profile, put, lend_chunks=lend)
    cs = profile.chunk_size
    for start in range(0, len(data), cs):
        chunk = bytearray(data[start : start + cs])
        digest = hashlib.sha256(chunk).digest() if hashed and profile.raw_leaves else None
        importer.write_chunk(memoryview(chunk), digest)
        chunk[:] = bytes(len(chunk))  # the caller reuses its buffer
    assert importer.finish() == root
    assert stored == expected
    assert importer.size == len(data)


@FEW
@given(st.binary(min_size=1, max_size=600), small_profiles.filter(lambda p: p.raw_leaves))
def test_leaves_added_by_cid_give_the_same_dag_as_write(data: bytes, profile: Profile) -> None:
    """add_leaf() (the vault's path: each leaf hashed and stored by a worker, the DAG told
    its CID and size in order) builds exactly the DAG write() builds, storing only the inner
    nodes itself."""
    expected: dict[CID, bytes] = {}
    root = import_bytes(data, profile, lambda c, b: expected.__setitem__(c, b))
    stored: dict[CID, bytes] = {}
    importer = Importer(profile, lambda c, b: stored.__setitem__(c, bytes(b)))
    cs = profile.chunk_size
    leaves = {}
    for start in range(0, len(data), cs):
        leaf = data[start : start + cs]
        cid = CID.from_sha256(leaf, RAW, 1)
        leaves[cid] = leaf
        importer.add_leaf(cid, len(leaf))
    assert importer.finish() == root
    assert {**stored, **leaves} == expected
    assert not set(stored) & set(leaves)  # the leaves were not put again
    assert importer.size == len(data)


def test_add_leaf_refuses_what_would_change_the_dag() -> None:
    raw = Profile("t", cid_version=1, raw_leaves=True, chunk_size=4, max_links=2)
    leaf = CID.from_sha256(b"1234", RAW, 1)
    importer = Importer(raw)
    with pytest.raises(InputValidationError, match="whole leaf"):
        importer.add_leaf(leaf, 5)  # longer than a chunk
    with pytest.raises(InputValidationError, match="whole leaf"):
        importer.add_leaf(leaf, 0)
    with pytest.raises(InputValidationError, match="CIDv1 raw"):
        importer.add_leaf(CID.from_sha256(b"1234", DAG_PB, 1), 4)
    importer.add_leaf(CID.from_sha256(b"123", RAW, 1), 3)  # a short leaf is the last one
    with pytest.raises(InputValidationError, match="whole leaf"):
        importer.add_leaf(leaf, 4)
    importer.finish()
    with pytest.raises(InputValidationError, match="after finish"):
        importer.add_leaf(leaf, 4)
    wrapped = Profile("t", cid_version=1, raw_leaves=False, chunk_size=4, max_links=2)
    with pytest.raises(InputValidationError, match="raw-leaves"):
        Importer(wrapped).add_leaf(leaf, 4)


def test_write_chunk_refuses_what_would_change_the_dag() -> None:
    raw = Profile("t", cid_version=1, raw_leaves=True, chunk_size=4, max_links=2)
    importer = Importer(raw)
    with pytest.raises(InputValidationError, match="whole chunk"):
        importer.write_chunk(b"12345")  # longer than a chunk
    with pytest.raises(InputValidationError, match="whole chunk"):
        importer.write_chunk(b"")
    importer.write(b"12")
    with pytest.raises(InputValidationError, match="whole chunk"):
        importer.write_chunk(b"1234")  # a partial chunk from write() is pending
    importer = Importer(raw)
    importer.write_chunk(b"123")  # a short chunk is the last one
    with pytest.raises(InputValidationError, match="whole chunk"):
        importer.write_chunk(b"1234")
    with pytest.raises(InputValidationError, match="short chunk"):
        importer.write(b"x")
    wrapped = Profile("t", cid_version=1, raw_leaves=False, chunk_size=4, max_links=2)
    with pytest.raises(InputValidationError, match="raw leaves"):
        Importer(wrapped).write_chunk(b"1234", hashlib.sha256(b"1234").digest())


@FEW
@given(st.binary(max_size=2000), small_profiles)
def test_import_export_round_trip(data: bytes, profile: Profile) -> None:
    blocks: dict[bytes, bytes] = {}

    def put(cid: CID, block: bytes) -> None:
        cid.verify(block)
        assert isinstance(block, bytes)
        blocks[cid.to_bytes()] = block

    root = import_bytes(data, profile, put)
    assert b"".join(export(root, lambda c: blocks[c.to_bytes()])) == data
    assert root == import_bytes(data, profile)  # only-hash gives the same root


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_empty_and_single_chunk_files(name: str) -> None:
    profile = PROFILES[name]
    store = MemoryBlockstore()
    empty = import_bytes(b"", name, store.put)
    assert b"".join(export(empty, store.get)) == b""
    one = import_bytes(b"x" * profile.chunk_size, name, store.put)
    assert (one.codec == RAW) == profile.raw_leaves  # one chunk: the leaf is the root
    two = import_bytes(b"x" * (profile.chunk_size + 1), name, store.put)
    assert two.codec == DAG_PB and two.version == profile.cid_version
    links, data = decode_node(store.get(two))
    assert [lk.name for lk in links] == ["", ""]
    node = decode_data(data)
    assert node.filesize == profile.chunk_size + 1 and node.blocksizes == [profile.chunk_size, 1]


def test_unknown_profile_and_bad_profiles_are_refused() -> None:
    with pytest.raises(InputValidationError, match="unknown import profile"):
        Importer("v2")
    with pytest.raises(InputValidationError, match="raw leaves"):
        Profile("x", cid_version=0, raw_leaves=True, chunk_size=10, max_links=4)
    with pytest.raises(InputValidationError, match="chunk_size"):
        Profile("x", cid_version=1, raw_leaves=True, chunk_size=(1 << 20) + 1, max_links=4)
    importer = Importer()
    importer.finish()
    with pytest.raises(InputValidationError, match="after finish"):
        importer.write(b"more")


def test_import_holds_one_chunk_not_the_file() -> None:
    piece = bytes(range(256)) * 4096  # 1 MiB
    importer = Importer("v1")
    tracemalloc.start()
    try:
        for _ in range(24):
            importer.write(piece)
        importer.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert importer.size == 24 << 20
    assert peak < 2 << 20, f"peak {peak} bytes for a 24 MiB import"


# -- export verification ----------------------------------------------------------------------
def _two_level(profile: str = "v1") -> tuple[CID, dict[bytes, bytes], bytes]:
    blocks: dict[bytes, bytes] = {}
    data = bytes(range(256)) * 2048  # 2 chunks of 256 KiB in "v1"
    root = import_bytes(data, profile, lambda c, b: blocks.__setitem__(c.to_bytes(), b))
    return root, blocks, data


def test_export_rejects_a_tampered_leaf() -> None:
    root, blocks, _ = _two_level()
    leaf = next(k for k in blocks if CID.decode(k).codec == RAW)
    blocks[leaf] = bytes([blocks[leaf][0] ^ 1]) + blocks[leaf][1:]
    with pytest.raises(BlockMismatchError):
        b"".join(export(root, lambda c: blocks[c.to_bytes()]))


def test_export_reports_a_missing_block() -> None:
    store = MemoryBlockstore()
    root = import_bytes(bytes(300_000), "v1-no-raw", store.put)
    store.delete(decode_node(store.get(root))[0][1].cid)
    with pytest.raises(BlockNotFoundError):
        b"".join(export(root, store.get))


def _node(links: list[tuple[CID, int]], data: bytes) -> tuple[CID, bytes]:
    block = encode_node([encode_link(c.to_bytes(), t) for c, t in links], data)
    return CID.from_sha256(block, DAG_PB, 1), block


def test_export_rejects_a_dag_that_lies_about_sizes() -> None:
    leaf_a, leaf_b = b"a" * 10, b"b" * 10
    ca, cb = CID.from_sha256(leaf_a), CID.from_sha256(leaf_b)
    blocks = {ca: leaf_a, cb: leaf_b}
    liar, block = _node([(ca, 10), (cb, 10)], internal_data([10, 7]))  # claims 17 bytes
    blocks[liar] = block
    with pytest.raises(IntegrityError, match="parent says 7"):
        b"".join(export(liar, blocks.__getitem__))
    short, block = _node([(ca, 10), (cb, 10)], internal_data([10]))
    blocks[short] = block
    with pytest.raises(IntegrityError, match="2 links but 1 blocksizes"):
        b"".join(export(short, blocks.__getitem__))
    garbage = b"\x12\x03abc"
    gcid = CID.from_sha256(garbage, DAG_PB, 1)
    with pytest.raises(IntegrityError, match="malformed"):
        b"".join(export(gcid, {gcid: garbage}.__getitem__))


def test_export_walks_an_empty_subtree_once_however_often_it_is_linked() -> None:
    # Each node links one empty child ten times, six levels deep: every block matches its CID
    # and every size is consistent, but walking each link would take 10**6 fetches for 0 bytes.
    empty = CID.from_sha256(b"")
    blocks = {empty: b""}
    top = empty
    for _ in range(6):
        top, block = _node([(top, 0)] * 10, internal_data([0] * 10))
        blocks[top] = block
    xy = CID.from_sha256(b"xy")
    blocks[xy] = b"xy"
    root, block = _node([(xy, 2), (top, 0), (xy, 2), (top, 0)], internal_data([2, 0, 2, 0]))
    blocks[root] = block
    fetched: list[CID] = []

    def get(cid: CID) -> bytes:
        fetched.append(cid)
        if len(fetched) > 1000:
            raise AssertionError("export walked the repeats of an empty subtree")
        return blocks[cid]

    assert b"".join(export(root, get)) == b"xyxy"  # a repeated leaf with bytes is yielded each time
    assert len(fetched) == 1 + 2 + 6 + 1  # root, xy twice, each empty node once, the empty leaf once


def test_export_bounds_the_links_the_levels_above_a_node_hold() -> None:
    z = CID.from_sha256(b"z")
    blocks = {z: b"z"}
    flat, block = _node([(z, 1)] * 135_000, internal_data([1] * 135_000))
    blocks[flat] = block
    assert b"".join(export(flat, blocks.__getitem__)) == b"z" * 135_000  # one node of any width is fine
    wide, block = _node([(z, 1)] * 10, internal_data([1] * 10))
    blocks[wide] = block
    mid, block = _node([(wide, 10)] + [(z, 1)] * 69_999, internal_data([10] + [1] * 69_999))
    blocks[mid] = block
    top, block = _node([(mid, 70_009)] + [(z, 1)] * 69_999, internal_data([70_009] + [1] * 69_999))
    blocks[top] = block
    with pytest.raises(IntegrityError, match="too wide"):  # 140,000 links held above `wide`
        b"".join(export(top, blocks.__getitem__))


def test_a_repeated_empty_subtree_still_counts_for_the_depth_limit() -> None:
    chain = CID.from_sha256(b"")
    blocks = {chain: b""}
    for _ in range(28):  # an empty subtree 28 levels high
        chain, block = _node([(chain, 0)], internal_data([0]))
        blocks[chain] = block
    deep = chain
    for _ in range(5):
        deep, block = _node([(deep, 0)], internal_data([0]))
        blocks[deep] = block
    shallow_first, block = _node([(chain, 0), (deep, 0)], internal_data([0, 0]))
    blocks[shallow_first] = block
    with pytest.raises(IntegrityError, match="deeper than 32"):  # its repeat sits at depth 6: 34 levels
        b"".join(export(shallow_first, blocks.__getitem__))
    with pytest.raises(IntegrityError, match="deeper than 32"):  # as when it is walked only there
        b"".join(export(deep, blocks.__getitem__))


def test_export_refuses_what_is_not_a_file() -> None:
    directory, block = _node([], b"\x08\x01")
    with pytest.raises(InputValidationError, match="directory"):
        b"".join(export(directory, {directory: block}.__getitem__))
    cbor = CID.from_sha256(b"\xa0", DAG_CBOR, 1)
    with pytest.raises(InputValidationError, match="codec"):
        b"".join(export(cbor, {cbor: b"\xa0"}.__getitem__))
    with pytest.raises(InputValidationError):
        export("bafy…", dict().__getitem__)  # type: ignore[arg-type]


@FEW
@given(st.binary(max_size=200))
def test_dagpb_and_unixfs_parsers_fail_cleanly(raw: bytes) -> None:
    cid = CID.from_sha256(raw, DAG_PB, 1)
    try:
        b"".join(export(cid, {cid: raw}.__getitem__))
    except (IntegrityError, InputValidationError):
        pass


@FEW
@given(st.lists(st.tuples(st.binary(min_size=32, max_size=32), st.integers(0, 2**40), st.text(max_size=8)), max_size=5),
       st.one_of(st.none(), st.binary(max_size=40)))
def test_dagpb_round_trip(links: list[tuple[bytes, int, str]], data: bytes | None) -> None:
    cids = [CID.from_digest(d, DAG_PB, 1) for d, _, _ in links]
    block = encode_node([encode_link(c.to_bytes(), t, n.encode()) for c, (_, t, n) in zip(cids, links)], data)
    got_links, got_data = decode_node(block)
    assert [(lk.cid, lk.tsize, lk.name) for lk in got_links] == [(c, t, n) for c, (_, t, n) in zip(cids, links)]
    assert (None if got_data is None else bytes(got_data)) == data


@FEW
@given(st.lists(st.integers(0, 2**40), max_size=6))
def test_unixfs_data_round_trip(blocksizes: list[int]) -> None:
    node = decode_data(memoryview(internal_data(blocksizes)))
    assert (node.type, node.filesize, node.blocksizes, node.data) == (2, sum(blocksizes), blocksizes, None)


# -- dag_stat: a progress bar's total, from the root block -------------------------------


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("size", [0, 5, 3 * 1024 * 1024 + 11])
def test_dag_stat_gives_the_file_size_and_the_bytes_of_every_block(profile, size) -> None:
    from vault.unixfs import dag_stat

    store = MemoryBlockstore()
    data = hashlib.shake_256(b"stat").digest(size) if size else b""
    root = import_bytes(data, profile, store.put)
    stat = dag_stat(root, store.get)
    assert stat.size == size
    assert stat.dag_size == sum(len(store.get(c)) for c in store.iter_cids())


def test_dag_stat_of_something_else_than_a_file() -> None:
    from vault.unixfs import dag_stat

    directory, block = _node([], b"\x08\x01")
    assert dag_stat(directory, {directory: block}.__getitem__).size is None
    cbor = CID.from_sha256(b"\xa0", DAG_CBOR, 1)
    other = dag_stat(cbor, {cbor: b"\xa0"}.__getitem__)
    assert other.size is None and other.dag_size == 1
    with pytest.raises(BlockMismatchError):
        dag_stat(directory, {directory: block + b"x"}.__getitem__)
    with pytest.raises(InputValidationError):
        dag_stat(str(directory), {}.__getitem__)  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [None, b"", b"not protobuf", b"\xff\xff"], ids=["no-data", "empty", "text", "junk"])
def test_dag_stat_of_a_dag_pb_root_that_is_not_unixfs_counts_its_links(data) -> None:
    """A CAR export takes any dag-pb DAG, so its progress total must not need UnixFS."""
    from vault.unixfs import dag_stat

    leaf = b"leaf bytes"
    cleaf = CID.from_sha256(leaf)
    block = encode_node([encode_link(cleaf.to_bytes(), len(leaf))], data)
    root = CID.from_sha256(block, DAG_PB, 1)
    stat = dag_stat(root, {root: block, cleaf: leaf}.__getitem__)
    assert stat.size is None and stat.dag_size == len(block) + len(leaf)
    broken = b"\xff\xff"  # not dag-pb at all: the export fails on it too
    cid = CID.from_sha256(broken, DAG_PB, 1)
    with pytest.raises(IntegrityError):
        dag_stat(cid, {cid: broken}.__getitem__)
