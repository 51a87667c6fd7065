"""An organisation's keys at rest, one directory per org under the node home.

    <home>/orgs/<name>/            mode 0700
        eth-keystore.json          Ethereum key: standard V3 keystore (scrypt), mode 0600
        age-identity.age           age X25519 identity in age-keygen's format, mode 0600,
                                   itself an armored age file encrypted to the passphrase:
                                       # created: 2026-01-02T03:04:05Z
                                       # public key: age1…
                                       AGE-SECRET-KEY-1…
        org.json                   public info: {"name", "address", "age_recipient", "created"}

The Ethereum key is encrypted with the passphrase (eth-account / eth-keyfile, scrypt
n=2**18, r=8, p=1 — geth's "standard" parameters). `insecure_fast_kdf=True` lowers scrypt
to n=2**10 so devnets and tests start in milliseconds; such a keystore protects nothing
against an offline guesser. WARNING: never use it for a key that matters.

The age identity is encrypted with the same passphrase (an age scrypt recipient, work
factor 18 — 10 with `insecure_fast_kdf`), as `age-keygen | age -p -a` would write it, so
`age -d -i age-identity.age` asks for the passphrase and works on it directly. Orgs created
before that hold a plaintext `age-identity.txt` (0600, as age-keygen writes it), which is
still read. `load_org_keys` refuses either file if group or others can read it.

`init_org` builds the directory under a temporary name and renames it into place, so an
interrupted init leaves no half-created org, and it never overwrites an existing org.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from api.errors import KeystoreError, OrgExistsError, OrgNotFoundError, WrongPassphraseError
from api.settings import check_org_name
from vault.age import ScryptIdentity, ScryptRecipient, X25519Identity, decrypt, encrypt
from vault.errors import InvalidKeyError, NoIdentityMatchError, VaultError

KEYSTORE_FILE = "eth-keystore.json"
IDENTITY_FILE = "age-identity.age"  # encrypted to the passphrase (age scrypt, armored)
LEGACY_IDENTITY_FILE = "age-identity.txt"  # plaintext, written before identities were encrypted
STANDARD_AGE_WORK_FACTOR = 18  # age -p's default: scrypt N = 2**18
INSECURE_FAST_AGE_WORK_FACTOR = 10
PUBLIC_FILE = "org.json"
STANDARD_SCRYPT_N = 1 << 18
INSECURE_FAST_SCRYPT_N = 1 << 10


@dataclass(frozen=True)
class OrgPublic:
    """What anyone may know about an org (it is all on chain once registered)."""

    name: str
    address: str
    age_recipient: str
    created: str

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "address": self.address, "age_recipient": self.age_recipient,
                           "created": self.created}, indent=2) + "\n"


@dataclass(frozen=True, repr=False)
class OrgKeys:
    """An org's unlocked keys. repr() shows only public values."""

    name: str
    account: LocalAccount = field(compare=False)
    identity: X25519Identity = field(compare=False)

    @property
    def address(self) -> str:
        return self.account.address

    @property
    def recipient(self) -> str:
        return str(self.identity.recipient)

    def __repr__(self) -> str:
        return f"OrgKeys(name={self.name!r}, address={self.address!r}, recipient={self.recipient!r})"

    def __reduce__(self):  # no pickling of secrets by accident
        raise TypeError("OrgKeys cannot be pickled")


def org_dir(home: Path, name: str) -> Path:
    try:
        check_org_name(name)
    except ValueError as exc:
        raise KeystoreError(str(exc)) from None
    return Path(home).expanduser() / "orgs" / name


def init_org(home: Path, name: str, passphrase: str, *, insecure_fast_kdf: bool = False,
             now: datetime | None = None) -> OrgPublic:
    """Create `<home>/orgs/<name>/` with fresh keys; OrgExistsError if it exists."""
    target = org_dir(home, name)
    if not passphrase:
        raise KeystoreError("the keystore passphrase must not be empty")
    if target.exists():
        raise OrgExistsError(f"organisation {name!r} already exists at {target}")
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    account = Account.create()
    identity = X25519Identity.generate()
    created = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    public = OrgPublic(name=name, address=account.address, age_recipient=str(identity.recipient), created=created)
    n = INSECURE_FAST_SCRYPT_N if insecure_fast_kdf else STANDARD_SCRYPT_N
    keystore = Account.encrypt(account.key, passphrase, kdf="scrypt", iterations=n)

    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}.init-"))  # mode 0700
    try:
        _write(staging / KEYSTORE_FILE, json.dumps(keystore, indent=2) + "\n", 0o600)
        text = f"# created: {created}\n# public key: {public.age_recipient}\n{identity}\n"
        work = INSECURE_FAST_AGE_WORK_FACTOR if insecure_fast_kdf else STANDARD_AGE_WORK_FACTOR
        sealed = b"".join(encrypt(text.encode("ascii"), [ScryptRecipient(passphrase, work_factor=work)], armor=True))
        _write(staging / IDENTITY_FILE, sealed.decode("ascii"), 0o600)
        _write(staging / PUBLIC_FILE, public.to_json(), 0o644)
        _fsync_dir(staging)
        if target.exists():
            raise OrgExistsError(f"organisation {name!r} already exists at {target}")
        os.rename(staging, target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if target.exists():
            raise OrgExistsError(f"organisation {name!r} already exists at {target}") from None
        raise KeystoreError(f"cannot create {target}: {exc.strerror}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_dir(target.parent)
    return public


def load_org_public(home: Path, name: str) -> OrgPublic:
    path = org_dir(home, name) / PUBLIC_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return OrgPublic(name=data["name"], address=data["address"], age_recipient=data["age_recipient"],
                         created=data.get("created", ""))
    except FileNotFoundError:
        raise OrgNotFoundError(f"no organisation {name!r} under {Path(home).expanduser()} "
                               f"(run `twinledger org init {name}`)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeystoreError(f"{path} is unreadable or malformed ({type(exc).__name__})") from None


def load_org_keys(home: Path, name: str, passphrase: str) -> OrgKeys:
    """Unlock the org's keys; WrongPassphraseError if the passphrase does not open them."""
    public = load_org_public(home, name)
    directory = org_dir(home, name)
    try:
        keystore = json.loads((directory / KEYSTORE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KeystoreError(f"{directory / KEYSTORE_FILE} is unreadable or malformed ({type(exc).__name__})") from None
    try:
        key = Account.decrypt(keystore, passphrase)
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise WrongPassphraseError(f"wrong passphrase for organisation {name!r}") from None
        raise KeystoreError(f"{directory / KEYSTORE_FILE} is not a valid V3 keystore") from None
    except (KeyError, TypeError):
        raise KeystoreError(f"{directory / KEYSTORE_FILE} is not a valid V3 keystore") from None
    account = Account.from_key(key)
    identity = _read_identity(directory, passphrase, name)
    if account.address != public.address or str(identity.recipient) != public.age_recipient:
        raise KeystoreError(f"keys in {directory} do not match its {PUBLIC_FILE}")
    return OrgKeys(name=name, account=account, identity=identity)


def _read_identity(directory: Path, passphrase: str, name: str) -> X25519Identity:
    encrypted = directory / IDENTITY_FILE
    path = encrypted if encrypted.exists() else directory / LEGACY_IDENTITY_FILE
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise KeystoreError(f"cannot read age identity {path} ({type(exc).__name__})") from None
    if stat.S_IMODE(mode) & 0o077:
        raise KeystoreError(f"age identity {path} is accessible by others (mode {stat.S_IMODE(mode):o}); "
                            f"run `chmod 600 {path}`")
    if path == encrypted:
        try:
            data = b"".join(decrypt(io.BytesIO(data), [ScryptIdentity(passphrase)]))
        except NoIdentityMatchError:
            raise WrongPassphraseError(f"wrong passphrase for organisation {name!r}") from None
        except VaultError as exc:
            raise KeystoreError(f"{path} is not an age file encrypted to a passphrase ({exc})") from None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeystoreError(f"{path} does not hold a valid age X25519 identity") from None
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if len(keys) != 1:
        raise KeystoreError(f"{path} must hold exactly one AGE-SECRET-KEY-1… line, found {len(keys)}")
    try:
        return X25519Identity.parse(keys[0])
    except InvalidKeyError:
        raise KeystoreError(f"{path} does not hold a valid age X25519 identity") from None


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, mode)  # exactly `mode`, whatever the umask


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
