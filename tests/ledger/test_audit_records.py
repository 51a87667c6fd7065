"""Audit record format: RFC 8785 canonical JSON, strict parsing, keccak256 record hash."""
from __future__ import annotations

import json
import random

import pytest
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.audit.records import AuditKind, AuditRecord, parse
from ledger.errors import AuditError

ORG = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
SAFE = 2**53 - 1

json_leaf = st.none() | st.booleans() | st.integers(-SAFE, SAFE) | st.text(max_size=12)
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
records = st.builds(
    AuditRecord,
    seq=st.integers(1, SAFE),
    kind=st.sampled_from(list(AuditKind)) | st.from_regex(r"\A[a-z][a-z0-9_]{0,20}\Z"),
    time=st.integers(0, SAFE),
    org=st.just(ORG),
    actor=st.text(min_size=1, max_size=40),
    asset_id=st.none() | st.integers(0, SAFE),
    version=st.none() | st.integers(0, SAFE),
    details=st.dictionaries(st.text(max_size=10), json_value, max_size=5),
)


def _record(**overrides) -> AuditRecord:
    fields = dict(seq=7, kind=AuditKind.KEY_DENIED, time=1_700_000_000_123, org=ORG, actor="0xabc", asset_id=3,
                  version=2, details={"reason": "grant expired", "n": 1})
    fields.update(overrides)
    return AuditRecord(**fields)


@settings(max_examples=50, deadline=None)
@given(records)
def test_parse_inverts_encode(record):
    data = record.canonical()
    assert parse(data) == record
    assert parse(data).canonical() == data
    assert record.record_hash() == keccak(data)


@settings(max_examples=50, deadline=None)
@given(records, st.randoms(use_true_random=False))
def test_canonical_bytes_ignore_key_order_whitespace_and_escapes(record, rnd):
    obj = record.to_json_obj()

    def shuffled(value):
        if isinstance(value, dict):
            items = list(value.items())
            rnd.shuffle(items)
            return {k: shuffled(v) for k, v in items}
        if isinstance(value, list):
            return [shuffled(v) for v in value]
        return value

    # Same content, different text: ASCII escapes (\\u00fc), indentation, shuffled keys.
    text = json.dumps(shuffled(obj), ensure_ascii=True, indent=1)
    again = AuditRecord.from_json_obj(json.loads(text))
    assert again.canonical() == record.canonical()
    if text.encode() != record.canonical():
        with pytest.raises(AuditError, match="canonical"):
            parse(text)


def test_canonical_layout_is_pinned():
    # Fixed bytes: any change to the format changes every record hash, so it must be deliberate.
    record = _record(details={"reason": "grant expired", "é": "ü", "n": 1})
    assert record.canonical() == (
        '{"actor":"0xabc","asset":3,"details":{"n":1,"reason":"grant expired","é":"ü"},"kind":"key_denied",'
        '"org":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8","seq":7,"time":1700000000123,"v":1,"version":2}'
    ).encode("utf-8")


def test_keys_sort_by_utf16_code_units_as_rfc8785_requires():
    # U+1F600 is the surrogate pair D83D DE00 in UTF-16, which sorts before U+FFFF
    # (code-point order would put it after).
    record = _record(details={"\uffff": 1, "\U0001f600": 2})
    text = record.canonical().decode()
    assert text.index("\U0001f600") < text.index("\uffff")


def test_unknown_kind_parses_and_known_kinds_are_enum_members():
    future = _record(kind="twin_calibrated")
    assert parse(future.canonical()).kind == "twin_calibrated"
    assert parse(_record().canonical()).kind is AuditKind.KEY_DENIED


@pytest.mark.parametrize("details, message", [
    ({"x": 1.5}, "floats"),
    ({"x": float("nan")}, "floats"),
    ({"x": 2**53}, "outside"),
    ({"x": b"raw"}, "not a JSON value"),
    ({1: "x"}, "keys must be strings"),
    ({"x": "\ud800"}, "lone surrogate"),
])
def test_details_must_be_integer_only_json(details, message):
    with pytest.raises(AuditError, match=message):
        _record(details=details)


@pytest.mark.parametrize("field, value, message", [
    ("seq", 0, "seq"), ("seq", True, "seq"), ("time", -1, "time"), ("kind", "Bad Kind", "kind"),
    ("org", ORG.lower(), "EIP-55"), ("actor", "", "actor"), ("asset_id", -1, "asset"), ("version", "2", "version"),
])
def test_fields_are_validated(field, value, message):
    with pytest.raises(AuditError, match=message):
        _record(**{field: value})


def _text(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("mutate, message", [
    (lambda o: o.update(v=2), "version 2"),
    (lambda o: o.pop("v"), "version None"),
    (lambda o: o.pop("actor"), "missing \\['actor'\\]"),
    (lambda o: o.update(extra=1), "unexpected \\['extra'\\]"),
    (lambda o: o.update(time=1.0), "non-integer"),
])
def test_parse_rejects_bad_documents(mutate, message):
    obj = _record().to_json_obj()
    mutate(obj)
    with pytest.raises(AuditError, match=message):
        parse(_text(obj))


@pytest.mark.parametrize("text, message", [
    ('{"v":1,"v":1}', "duplicate key"),
    ('{"x":NaN}', "NaN"),
    ("[1,2]", "JSON object"),
    ("{not json", "not valid JSON"),
    (b"\xff\xfe", "UTF-8"),
])
def test_parse_rejects_malformed_json(text, message):
    with pytest.raises(AuditError, match=message):
        parse(text)


def test_parse_rejects_non_canonical_spacing_and_order():
    good = _record().canonical().decode()
    obj = json.loads(good)
    for variant in (json.dumps(obj), json.dumps(dict(reversed(list(obj.items()))), separators=(",", ":"))):
        assert variant != good
        with pytest.raises(AuditError, match="canonical"):
            parse(variant)


def test_records_are_immutable_including_details():
    record = _record()
    with pytest.raises(AttributeError):
        record.seq = 8  # type: ignore[misc]
    with pytest.raises(TypeError):
        record.details["reason"] = "changed"  # type: ignore[index]
    rnd = random.Random(1)
    reordered = dict(sorted(record.details.items(), key=lambda _: rnd.random()))
    assert record.record_hash() == _record(details=reordered).record_hash()
