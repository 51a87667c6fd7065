"""Org keys at rest (api/keystore.py) and the `twinledger org` / `serve` commands."""
from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess

import pytest
from typer.testing import CliRunner

from api.errors import KeystoreError, OrgExistsError, OrgNotFoundError, WrongPassphraseError
from api.keystore import (
    IDENTITY_FILE,
    INSECURE_FAST_SCRYPT_N,
    KEYSTORE_FILE,
    LEGACY_IDENTITY_FILE,
    STANDARD_SCRYPT_N,
    init_org,
    load_org_keys,
    load_org_public,
)
from tests.age_tty import age_on_a_tty
from twinledger.cli import app as cli
from vault.age import ScryptIdentity, decrypt

PASS = "correct horse battery staple"


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_round_trip_and_file_modes(tmp_path):
    public = init_org(tmp_path, "acme", PASS, insecure_fast_kdf=True)
    directory = tmp_path / "orgs" / "acme"
    assert _mode(directory) == 0o700
    assert _mode(directory / KEYSTORE_FILE) == 0o600
    assert _mode(directory / IDENTITY_FILE) == 0o600
    keys = load_org_keys(tmp_path, "acme", PASS)
    assert keys.address == public.address
    assert keys.recipient == public.age_recipient
    assert load_org_public(tmp_path, "acme") == public
    keystore = json.loads((directory / KEYSTORE_FILE).read_text())
    assert keystore["version"] == 3 and keystore["crypto"]["kdf"] == "scrypt"
    assert keystore["crypto"]["kdfparams"]["n"] == INSECURE_FAST_SCRYPT_N
    stored = (directory / IDENTITY_FILE).read_bytes()
    assert stored.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----") and b"AGE-SECRET-KEY" not in stored.upper()
    lines = b"".join(decrypt(io.BytesIO(stored), [ScryptIdentity(PASS)])).decode().splitlines()
    assert lines[0].startswith("# created: ") and lines[1] == f"# public key: {public.age_recipient}"
    assert lines[2] == str(keys.identity)
    assert not list((tmp_path / "orgs").glob(".*"))  # no staging directory left behind


def test_standard_kdf_is_the_default(tmp_path):
    init_org(tmp_path, "acme", PASS)
    keystore = json.loads((tmp_path / "orgs" / "acme" / KEYSTORE_FILE).read_text())
    assert keystore["crypto"]["kdfparams"]["n"] == STANDARD_SCRYPT_N


def test_wrong_passphrase(tmp_path):
    init_org(tmp_path, "acme", PASS, insecure_fast_kdf=True)
    with pytest.raises(WrongPassphraseError) as info:
        load_org_keys(tmp_path, "acme", "wrong")
    assert PASS not in str(info.value) and "wrong" not in str(info.value).replace("wrong passphrase", "")


def test_refuses_to_overwrite_and_names(tmp_path):
    first = init_org(tmp_path, "acme", PASS, insecure_fast_kdf=True)
    with pytest.raises(OrgExistsError):
        init_org(tmp_path, "acme", PASS, insecure_fast_kdf=True)
    assert load_org_public(tmp_path, "acme") == first  # untouched
    with pytest.raises(OrgNotFoundError):
        load_org_keys(tmp_path, "nobody", PASS)
    for bad in ("../evil", "a/b", ".hidden", "", "x" * 65):
        with pytest.raises(KeystoreError):
            init_org(tmp_path, bad, PASS, insecure_fast_kdf=True)
    with pytest.raises(KeystoreError):
        init_org(tmp_path, "empty-pass", "", insecure_fast_kdf=True)


def test_secrets_not_in_repr(tmp_path):
    init_org(tmp_path, "acme", PASS, insecure_fast_kdf=True)
    keys = load_org_keys(tmp_path, "acme", PASS)
    text = repr(keys) + str(keys)
    assert keys.account.key.hex() not in text
    assert str(keys.identity) not in text and str(keys.identity).lower() not in text
    assert keys.address in text


def test_identity_readable_by_others_is_refused(tmp_path):
    init_org(tmp_path, "acme", PASS, insecure_fast_kdf=True)
    path = tmp_path / "orgs" / "acme" / IDENTITY_FILE
    os.chmod(path, 0o644)
    with pytest.raises(KeystoreError, match="chmod 600"):
        load_org_keys(tmp_path, "acme", PASS)


def test_mismatched_keys_are_refused(tmp_path):
    init_org(tmp_path, "acme", PASS, insecure_fast_kdf=True)
    init_org(tmp_path, "other", PASS, insecure_fast_kdf=True)
    os.replace(tmp_path / "orgs" / "other" / IDENTITY_FILE, tmp_path / "orgs" / "acme" / IDENTITY_FILE)
    with pytest.raises(KeystoreError, match="do not match"):
        load_org_keys(tmp_path, "acme", PASS)


def test_identity_under_another_passphrase_is_a_wrong_passphrase(tmp_path):
    init_org(tmp_path, "acme", PASS, insecure_fast_kdf=True)
    init_org(tmp_path, "other", "another passphrase", insecure_fast_kdf=True)
    os.replace(tmp_path / "orgs" / "other" / IDENTITY_FILE, tmp_path / "orgs" / "acme" / IDENTITY_FILE)
    with pytest.raises(WrongPassphraseError):  # the keystore opens with PASS, the identity does not
        load_org_keys(tmp_path, "acme", PASS)


def test_a_plaintext_identity_of_an_older_org_still_loads(tmp_path):
    public = init_org(tmp_path, "acme", PASS, insecure_fast_kdf=True)
    directory = tmp_path / "orgs" / "acme"
    keys = load_org_keys(tmp_path, "acme", PASS)
    legacy = directory / LEGACY_IDENTITY_FILE
    legacy.write_text(f"# public key: {public.age_recipient}\n{keys.identity}\n")
    os.chmod(legacy, 0o600)
    (directory / IDENTITY_FILE).unlink()
    assert str(load_org_keys(tmp_path, "acme", PASS).identity) == str(keys.identity)
    os.chmod(legacy, 0o640)
    with pytest.raises(KeystoreError, match="chmod 600"):
        load_org_keys(tmp_path, "acme", PASS)


def test_age_cli_decrypts_with_the_identity_file(tmp_path):
    """`age -d -i age-identity.age` asks for the org passphrase (typed on a pty) and opens
    what was encrypted to the org's recipient."""
    public = init_org(tmp_path, "acme", PASS, insecure_fast_kdf=True)
    sealed = subprocess.run(["age", "-e", "-r", public.age_recipient], input=b"twin", capture_output=True,
                            check=True).stdout
    (tmp_path / "sealed.age").write_bytes(sealed)
    out = tmp_path / "opened"
    identity_file = tmp_path / "orgs" / "acme" / IDENTITY_FILE
    code, tty = age_on_a_tty(shutil.which("age") or "age",
                             ["-d", "-i", str(identity_file), "-o", str(out), str(tmp_path / "sealed.age")],
                             PASS.encode())
    assert code == 0, tty
    assert out.read_bytes() == b"twin"


# -- CLI ---------------------------------------------------------------------------------


def _run(*args, env=None):
    return CliRunner().invoke(cli, list(args), env={"TWINLEDGER_PASSPHRASE": PASS, **(env or {})})


def test_cli_init_and_show(tmp_path):
    result = _run("org", "init", "acme", "--home", str(tmp_path), "--insecure-fast-kdf")
    assert result.exit_code == 0, result.output
    public = load_org_public(tmp_path, "acme")
    assert public.address in result.output and PASS not in result.output
    shown = _run("org", "show", "acme", "--home", str(tmp_path), "--json")
    assert json.loads(shown.stdout)["address"] == public.address
    again = _run("org", "init", "acme", "--home", str(tmp_path), "--insecure-fast-kdf")
    assert again.exit_code == 1 and "already exists" in again.output


def test_cli_init_passphrase_env_and_missing(tmp_path):
    result = _run("org", "init", "acme", "--home", str(tmp_path), "--insecure-fast-kdf",
                  "--passphrase-env", "MY_PASS", env={"MY_PASS": "other secret"})
    assert result.exit_code == 0, result.output
    load_org_keys(tmp_path, "acme", "other secret")
    missing = _run("org", "init", "b", "--home", str(tmp_path), "--passphrase-env", "UNSET_VAR_X")
    assert missing.exit_code == 1 and "UNSET_VAR_X" in missing.output


def test_cli_register_on_devnet(tmp_path, anvil, deployment, admin_ledger):
    deployment.save(tmp_path / "manifest.json")
    assert _run("org", "init", "acme", "--home", str(tmp_path), "--insecure-fast-kdf").exit_code == 0
    public = load_org_public(tmp_path, "acme")
    args = ("org", "register", "acme", "--home", str(tmp_path), "--endpoint", "http://127.0.0.1:8799",
            "--rpc", anvil.url, "--manifest", str(tmp_path / "manifest.json"))
    result = _run(*args)
    assert result.exit_code == 0, result.output
    org = admin_ledger.get_org(public.address)
    assert (org.name, org.age_recipient, org.endpoint, org.active) == ("acme", public.age_recipient,
                                                                       "http://127.0.0.1:8799", True)
    assert admin_ledger.w3.eth.get_balance(public.address) == 10 * 10**18  # devnet: gas money for its node
    assert "funded" in result.output
    again = _run(*args)
    assert again.exit_code == 1 and "ConsortiumOrgAlreadyRegistered" in again.output


def test_cli_register_funds_the_amount_asked_and_refuses_bad_amounts(tmp_path, anvil, deployment, admin_ledger):
    deployment.save(tmp_path / "manifest.json")
    common = ("--home", str(tmp_path), "--rpc", anvil.url, "--manifest", str(tmp_path / "manifest.json"))
    for name in ("beta", "gamma"):
        assert _run("org", "init", name, "--home", str(tmp_path), "--insecure-fast-kdf").exit_code == 0
    for bad in ("-1", "abc", "1e-30", "nan"):
        refused = _run("org", "register", "beta", "--endpoint", "http://127.0.0.1:8798", "--fund", bad, *common)
        assert refused.exit_code != 0 and "--fund" in refused.output, refused.output
    beta = load_org_public(tmp_path, "beta")
    with pytest.raises(Exception, match="ConsortiumOrgNotRegistered"):  # the refused calls registered nothing
        admin_ledger.get_org(beta.address)
    ok = _run("org", "register", "beta", "--endpoint", "http://127.0.0.1:8798", "--fund", "0.25", *common)
    assert ok.exit_code == 0, ok.output
    assert admin_ledger.w3.eth.get_balance(beta.address) == 25 * 10**16
    gamma = load_org_public(tmp_path, "gamma")
    none = _run("org", "register", "gamma", "--endpoint", "http://127.0.0.1:8797", "--fund", "0", *common)
    assert none.exit_code == 0 and admin_ledger.w3.eth.get_balance(gamma.address) == 0


def test_cli_serve_reports_config_errors_in_one_line(tmp_path):
    result = _run("serve", "--org", "nobody", "--home", str(tmp_path), "--rpc", "http://127.0.0.1:1")
    assert result.exit_code == 1
    assert result.output.strip().startswith("error:") and "nobody" in result.output
    assert len(result.output.strip().splitlines()) == 1
