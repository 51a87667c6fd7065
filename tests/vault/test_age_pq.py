"""The post-quantum hybrid recipient type (mlkem768x25519, age v1.3) beyond the CCTV vectors
(test_age_cctv.py runs all of those): keys, round trips, re-headering to a post-quantum
consumer, the no-mixing rule, malformed keys and stanzas. Interop with the `age` tool
needs age >= 1.3; the Debian package here is older, so that test says so and skips."""
from __future__ import annotations

import io
import os
import pickle
import re
import shutil
import subprocess

import pytest

from vault.age import (
    HybridIdentity,
    HybridRecipient,
    ScryptRecipient,
    X25519Identity,
    decrypt,
    encrypt,
    parse_identity,
    parse_recipient,
    read_header,
    rewrap,
)
from vault.age import _bech32, _format, _pq
from vault.errors import HeaderError, InputValidationError, InvalidKeyError, NoIdentityMatchError

CCTV_IDENTITY = "AGE-SECRET-KEY-PQ-1HZLGZUPT4ETPKDEV8HSGFDCYZ4E522W0A7PU2LHT8EH9W6YLNC3SW78XKG"


@pytest.fixture(scope="module")
def alice() -> HybridIdentity:
    return HybridIdentity.generate()


def _open(data: bytes, identities) -> bytes:
    return b"".join(decrypt(io.BytesIO(data), identities))


def test_keys_round_trip_through_their_strings(alice: HybridIdentity) -> None:
    text = str(alice)
    assert text.startswith("AGE-SECRET-KEY-PQ-1") and text == text.upper() and len(text) == 77
    assert HybridIdentity.parse(text) == alice and HybridIdentity.parse(text.lower()) == alice
    recipient = str(alice.recipient)
    assert recipient.startswith("age1pq1") and len(recipient) == 1959  # 1216 bytes, no 90-char limit
    assert HybridRecipient.parse(recipient) == alice.recipient
    assert parse_identity(text) == alice and parse_recipient(recipient) == alice.recipient
    assert isinstance(parse_identity(str(X25519Identity.generate())), X25519Identity)


def test_the_seed_expands_deterministically(alice: HybridIdentity) -> None:
    again = HybridIdentity.parse(CCTV_IDENTITY)
    assert HybridIdentity.parse(CCTV_IDENTITY).recipient == again.recipient  # same seed, same keys
    assert again.recipient != alice.recipient


def test_round_trip_to_one_and_to_several_post_quantum_recipients(alice: HybridIdentity) -> None:
    bob = HybridIdentity.generate()
    plaintext = os.urandom(200_000)
    one = b"".join(encrypt([plaintext], [alice.recipient]))
    assert _open(one, [alice]) == plaintext
    both = b"".join(encrypt([plaintext], [alice.recipient, bob.recipient]))
    assert _open(both, [bob]) == plaintext and _open(both, [alice]) == plaintext
    header = _format.parse(read_header(io.BytesIO(one)))
    (stanza,) = header.stanzas
    assert stanza.type == "mlkem768x25519" and len(stanza.body) == 32
    assert len(_format.b64decode(stanza.args[0].encode())) == 1120


def test_a_file_for_someone_else_says_why(alice: HybridIdentity) -> None:
    data = b"".join(encrypt([b"x"], [HybridIdentity.generate().recipient]))
    with pytest.raises(NoIdentityMatchError, match="not for these identities"):
        _open(data, [alice])
    with pytest.raises(NoIdentityMatchError, match="needs a post-quantum"):
        _open(data, [X25519Identity.generate()])


def test_post_quantum_and_classic_recipients_are_not_mixed(alice: HybridIdentity) -> None:
    with pytest.raises(InputValidationError, match="cannot be mixed"):
        b"".join(encrypt([b"x"], [alice.recipient, X25519Identity.generate().recipient]))
    with pytest.raises(InputValidationError):
        b"".join(encrypt([b"x"], [alice.recipient, ScryptRecipient("pass", work_factor=10)]))


def test_rewrap_gives_a_post_quantum_consumer_the_same_payload(alice: HybridIdentity) -> None:
    """TwinLedger's sharing: the owner's header is replaced by one for the consumer; the
    payload is untouched."""
    owner = X25519Identity.generate()
    plaintext = os.urandom(70_000)
    sealed = b"".join(encrypt([plaintext], [owner.recipient]))
    src = io.BytesIO(sealed)
    header = read_header(src)
    payload = src.read()
    new_header = rewrap(header, [owner], [alice.recipient])
    assert _open(new_header + payload, [alice]) == plaintext
    with pytest.raises(NoIdentityMatchError):
        _open(new_header + payload, [owner])


@pytest.mark.parametrize("make", [
    lambda: _bech32.encode("age1pq", os.urandom(1215)),  # too short
    lambda: _bech32.encode("age1pq", b"\xff" * 1216),  # ML-KEM key out of range
    lambda: _bech32.encode("age1pq", os.urandom(1184) + bytes(32)),  # X25519 part low-order (zero)
    lambda: _bech32.encode("age", os.urandom(1216)),  # wrong prefix
], ids=["short", "mlkem-range", "x25519-low-order", "prefix"])
def test_malformed_recipients_are_refused(make) -> None:
    with pytest.raises(InvalidKeyError):
        HybridRecipient.parse(make())


def test_malformed_identities_are_refused() -> None:
    with pytest.raises(InvalidKeyError):
        HybridIdentity.parse(_bech32.encode("age-secret-key-pq-", os.urandom(31)).upper())
    with pytest.raises(InvalidKeyError):
        HybridIdentity.parse(str(X25519Identity.generate()))
    with pytest.raises(InvalidKeyError):
        HybridIdentity.parse(CCTV_IDENTITY[:-1] + ("Q" if CCTV_IDENTITY[-1] != "Q" else "P"))  # checksum


def test_the_secret_stays_out_of_repr_and_pickle(alice: HybridIdentity) -> None:
    seed_text = str(alice)
    assert seed_text not in repr(alice) and seed_text.lower() not in repr(alice)
    assert re.fullmatch(r"HybridIdentity\(recipient=HybridRecipient\('age1pq1.{9}….{8}'\)\)", repr(alice))
    with pytest.raises(TypeError):
        pickle.dumps(alice)


def _stanza(alice: HybridIdentity) -> _format.Stanza:
    return _pq.wrap(os.urandom(16), alice.recipient)


def test_stanza_damage_is_no_match_or_a_header_failure(alice: HybridIdentity) -> None:
    good = _stanza(alice)
    assert len(_pq.unwrap(alice, good)) == 16
    body = bytearray(good.body)
    body[0] ^= 1
    assert _pq.unwrap(alice, _format.Stanza(good.type, good.args, bytes(body))) is None  # does not open
    enc = bytearray(_format.b64decode(good.args[0].encode()))
    enc[5] ^= 1  # the ML-KEM part: implicit rejection, so simply not ours
    assert _pq.unwrap(alice, _format.Stanza(good.type, (_format.b64encode(bytes(enc)).decode(),), good.body)) is None
    for args in [(), (*good.args, "x"), (_format.b64encode(bytes(enc[:-1])).decode(),)]:
        with pytest.raises(HeaderError):
            _pq.unwrap(alice, _format.Stanza(good.type, args, good.body))
    with pytest.raises(HeaderError):
        _pq.unwrap(alice, _format.Stanza(good.type, good.args, good.body + b"x"))
    low_order = bytes(enc[:-32]) + bytes(32)
    with pytest.raises(HeaderError, match="low-order"):
        _pq.unwrap(alice, _format.Stanza(good.type, (_format.b64encode(low_order).decode(),), good.body))
    assert _pq.unwrap(alice, _format.Stanza("X25519", good.args, good.body)) is None  # other types: not ours


def test_interop_with_the_age_tool_when_it_knows_post_quantum_keys(alice: HybridIdentity, tmp_path) -> None:
    age = shutil.which("age")
    version = subprocess.run([age, "--version"], capture_output=True, text=True).stdout.strip() if age else ""
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    if not age or parts < (1, 3):
        pytest.skip(f"the age tool here is {version or 'missing'}; post-quantum recipients need age >= 1.3")
    (tmp_path / "id").write_text(f"{alice}\n")
    sealed = b"".join(encrypt([b"to the tool"], [alice.recipient]))
    (tmp_path / "in.age").write_bytes(sealed)
    out = subprocess.run([age, "-d", "-i", str(tmp_path / "id"), str(tmp_path / "in.age")], capture_output=True)
    assert out.returncode == 0 and out.stdout == b"to the tool"
    made = subprocess.run([age, "-r", str(alice.recipient)], input=b"from the tool", capture_output=True)
    assert _open(made.stdout, [alice]) == b"from the tool"


def test_the_vault_shares_a_classic_owners_asset_with_a_post_quantum_consumer(alice: HybridIdentity, tmp_path) -> None:
    from vault.blockstore import FilesystemBlockstore
    from vault.vault import Vault

    owner = X25519Identity.generate()
    store = FilesystemBlockstore(tmp_path / "store")
    plaintext = os.urandom(3 << 20)
    sealed = Vault(store, owner).seal([plaintext])
    header = Vault(store, owner).rewrap_for(sealed.cid, alice.recipient)
    assert b"-> mlkem768x25519 " in header and b"-> X25519 " not in header
    out = tmp_path / "out"
    Vault(store, alice).open(sealed.cid, header, alice, out, commitment=sealed.commitment)
    assert out.read_bytes() == plaintext
    with pytest.raises(NoIdentityMatchError):
        Vault(store, owner).open(sealed.cid, header, owner, tmp_path / "no", commitment=sealed.commitment)


def test_a_post_quantum_owner_seals_and_opens(alice: HybridIdentity, tmp_path) -> None:
    from vault.blockstore import MemoryBlockstore
    from vault.vault import Vault

    vault = Vault(MemoryBlockstore(), alice)
    sealed = vault.seal([b"twin model"])
    vault.open(sealed.cid, None, alice, tmp_path / "m", commitment=sealed.commitment)
    assert (tmp_path / "m").read_bytes() == b"twin model"
    with pytest.raises(InputValidationError, match="X25519Identity or HybridIdentity"):
        Vault(MemoryBlockstore(), "AGE-SECRET-KEY-PQ-1…")  # type: ignore[arg-type]
