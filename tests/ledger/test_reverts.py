"""Revert decoding: every ABI error round-trips (property test), builtin Error/Panic,
malformed data, and reverts from eth_call, eth_estimateGas and a mined failed tx."""
from __future__ import annotations

import pickle

import pytest
from eth_abi import encode
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import artifacts, reverts
from ledger.errors import ContractRevertError, LedgerError
from ledger.models import AssetKind

SPECS = sorted(reverts.ERRORS.values(), key=lambda s: s.signature)


def strategy(abi_type: str) -> st.SearchStrategy:
    if abi_type == "address":
        return st.binary(min_size=20, max_size=20).map(to_checksum_address)
    if abi_type.startswith("uint"):
        return st.integers(0, 2 ** int(abi_type[4:]) - 1)
    if abi_type.startswith("bytes") and abi_type != "bytes":
        n = int(abi_type[5:])
        return st.binary(min_size=n, max_size=n)
    if abi_type == "bytes":
        return st.binary(max_size=200)
    if abi_type == "string":
        return st.text(max_size=80)
    raise AssertionError(f"no strategy for {abi_type}")


def test_every_abi_error_has_a_named_class():
    names = {e["name"] for a in artifacts.all_artifacts().values() for e in a.abi if e["type"] == "error"}
    assert "AccessControlUnauthorizedAccount" in names and "AssetLedgerNotOwner" in names
    for name in names:
        cls = getattr(reverts, name)
        assert issubclass(cls, ContractRevertError) and issubclass(cls, LedgerError)
        assert cls.__name__ == name
    assert {s.name for s in SPECS} == names | {"Error", "Panic"}


def test_selectors_are_the_solidity_ones():
    by_name = {s.name: s.selector for s in SPECS}
    assert by_name["Error"] == "0x08c379a0"
    assert by_name["Panic"] == "0x4e487b71"
    assert by_name["AccessControlUnauthorizedAccount"] == "0xe2517d3f"
    assert by_name["AssetLedgerNotOwner"] == "0x" + keccak(text="AssetLedgerNotOwner(uint256,address)")[:4].hex()


@settings(max_examples=50, deadline=None)
@given(data=st.data(), spec=st.sampled_from(SPECS))
def test_encode_decode_round_trip(data, spec):
    values = [data.draw(strategy(t)) for t in spec.arg_types]
    raw = bytes.fromhex(spec.selector[2:]) + encode(list(spec.arg_types), values)
    for form in (raw, "0x" + raw.hex()):
        exc = reverts.decode_revert(form)
        assert type(exc) is spec.cls
        assert exc.name == spec.name
        assert exc.args_by_name == dict(zip(spec.arg_names, values))
        assert exc.args == tuple(values)
        assert exc.selector == spec.selector and exc.data == "0x" + raw.hex()
        clone = pickle.loads(pickle.dumps(exc))
        assert (type(clone), clone.args_by_name, str(clone)) == (type(exc), exc.args_by_name, str(exc))


def test_builtin_errors():
    reason = reverts.decode_revert(bytes.fromhex("08c379a0") + encode(["string"], ["boom"]))
    assert isinstance(reason, reverts.RevertReason) and reason.args_by_name == {"reason": "boom"}
    panic = reverts.decode_revert(bytes.fromhex("4e487b71") + encode(["uint256"], [0x11]))
    assert isinstance(panic, reverts.Panic) and panic.args == (0x11,)


@pytest.mark.parametrize(("data", "name"), [
    ("0x", "<no data>"),
    (b"\x01\x02", "<unknown>"),
    ("0xdeadbeef", "<unknown>"),
    ("0xzz", "<unparseable>"),
])
def test_unknown_or_malformed_data(data, name):
    exc = reverts.decode_revert(data)
    assert type(exc) is reverts.UnknownRevert and exc.name == name


def test_truncated_arguments_are_unknown_not_a_crash():
    spec = next(s for s in SPECS if s.name == "AssetLedgerNotOwner")
    exc = reverts.decode_revert(spec.selector + "00" * 10)
    assert type(exc) is reverts.UnknownRevert and exc.name == "AssetLedgerNotOwner"


def test_message_names_the_arguments():
    spec = next(s for s in SPECS if s.name == "AuditAnchorsNonContiguous")
    org = "0x" + "11" * 20
    exc = reverts.decode_revert(bytes.fromhex(spec.selector[2:]) + encode(["address", "uint64", "uint64"], [org, 5, 7]))
    assert str(exc) == f"AuditAnchorsNonContiguous(org='{to_checksum_address(org)}', expectedFromSeq=5, fromSeq=7)"


# -- the three ways a revert reaches the client ------------------------------------------

def test_revert_from_eth_call(admin, outsider):
    with pytest.raises(reverts.ConsortiumOrgNotRegistered) as exc:
        admin.get_org(outsider.address)
    assert exc.value.args == (outsider.address,)


def test_revert_from_estimate_gas(orgs, isolated):
    asset = orgs[0].create_asset(AssetKind.MODEL, "m").asset_id
    nonce = orgs[1].w3.eth.get_transaction_count(orgs[1].address)
    with pytest.raises(reverts.AssetLedgerNotOwner) as exc:
        orgs[1].retire_asset(asset)
    assert exc.value.args_by_name == {"assetId": asset, "caller": orgs[1].address}
    assert orgs[1].w3.eth.get_transaction_count(orgs[1].address) == nonce  # nothing was sent


def test_revert_of_a_mined_transaction_is_replayed_and_decoded(orgs, isolated):
    asset = orgs[0].create_asset(AssetKind.MODEL, "m").asset_id
    w3 = orgs[1].w3
    data = orgs[1].asset_ledger.encode_abi("retireAsset", args=[asset])
    tx_hash = orgs[1].sender.submit(orgs[1].asset_ledger.address, data, gas=100_000)  # skips estimation
    with pytest.raises(reverts.AssetLedgerNotOwner) as exc:
        orgs[1].sender.wait(tx_hash)
    assert w3.eth.get_transaction_receipt(tx_hash)["status"] == 0
    assert exc.value.args_by_name == {"assetId": asset, "caller": orgs[1].address}
