"""`twinledger chain deploy|check` against a real Anvil, signed by a V3 keystore.

The admin is dev account 8 (not the devnet admin 0), so every success proves the
keystore's key — not a devnet fallback — deployed and administers the contracts.
"""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from eth_account import Account
from typer.testing import CliRunner
from web3 import Web3

from api.keystore import init_org, load_org_public
from ledger.anvil import free_port
from ledger.client import LedgerClient
from ledger.deployment import Deployment, check
from twinledger.cli import app as cli

PASS = "Tr0ub4dor-admin-s3cret"
ADMIN_INDEX = 8


def _run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env or {})


def _keystore(path, account, passphrase=PASS):
    # Cheap scrypt (n=2**10) for tests only; production keystores use the default n=2**18.
    path.write_text(json.dumps(Account.encrypt(account.key, passphrase, kdf="scrypt", iterations=2**10)))
    return path


@pytest.fixture(scope="module")
def admin(dev_accounts):
    return dev_accounts[ADMIN_INDEX]


@pytest.fixture()
def keystore(tmp_path, admin):
    return _keystore(tmp_path / "admin-keystore.json", admin)


@pytest.fixture()
def pass_file(tmp_path):
    path = tmp_path / "admin_passphrase"
    path.write_text(PASS + "\n")
    return path


def _deploy(anvil, keystore, manifest, *extra, env=None):
    return _run("chain", "deploy", "--rpc", anvil.url, "--admin-keystore", keystore, "--manifest", manifest,
                "--json", *extra, env=env if env is not None else {"TWINLEDGER_ADMIN_PASSPHRASE": PASS})


def _nonce(w3, account) -> int:
    return w3.eth.get_transaction_count(account.address)


def test_deploy_writes_a_manifest_the_chain_holds_and_the_keystore_administers(
        tmp_path, anvil, w3, keystore, admin, dev_accounts):
    manifest = tmp_path / "out" / "deployment.json"
    result = _deploy(anvil, keystore, manifest)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["status"] == "deployed" and out["manifest"] == str(manifest)
    written = Deployment.load(manifest)
    assert out["deployment"] == json.loads(written.to_json())
    assert written.admin == admin.address and written.chain_id == w3.eth.chain_id
    check(w3, written)  # code at every address, same artifacts
    assert not list(manifest.parent.glob(".manifest.*"))  # atomic write left no temp file
    # The keystore's account holds the admin role: it can register an org, account 0 cannot.
    ledger = LedgerClient(w3, written, admin)
    member = dev_accounts[1]
    ledger.register_org(member.address, "member", "age1" + "q" * 58, "http://member.example:8700")
    assert ledger.is_active(member.address)
    with pytest.raises(Exception) as denied:
        LedgerClient(w3, written, dev_accounts[0]).register_org(dev_accounts[2].address, "x",
                                                                "age1" + "p" * 58, "http://x.example:8700")
    assert "AccessControlUnauthorizedAccount" in type(denied.value).__name__


def test_deploy_is_idempotent_when_the_manifest_matches(tmp_path, anvil, w3, keystore, admin):
    manifest = tmp_path / "deployment.json"
    first = _deploy(anvil, keystore, manifest)
    assert first.exit_code == 0, first.output
    before_bytes, before_nonce = manifest.read_bytes(), _nonce(w3, admin)
    # No passphrase at all: a matching manifest needs no key, so nothing can be signed.
    again = _deploy(anvil, keystore, manifest, env={})
    assert again.exit_code == 0, again.output
    out = json.loads(again.stdout)
    assert out["status"] == "unchanged"
    assert out["deployment"] == json.loads(first.stdout)["deployment"]
    assert manifest.read_bytes() == before_bytes and _nonce(w3, admin) == before_nonce
    human = _run("chain", "deploy", "--rpc", anvil.url, "--admin-keystore", keystore, "--manifest", manifest)
    assert human.exit_code == 0 and "nothing deployed" in human.stdout
    assert out["deployment"]["consortium"] in human.stdout


@pytest.mark.parametrize("corrupt", ["other_chain", "no_code", "malformed"])
def test_a_stale_manifest_is_never_overwritten_without_replace_stale(
        tmp_path, anvil, w3, keystore, admin, deployment, corrupt):
    manifest = tmp_path / "deployment.json"
    if corrupt == "other_chain":
        manifest.write_text(replace(deployment, chain_id=deployment.chain_id + 1).to_json())
        reason = "manifest is for chain"
    elif corrupt == "no_code":
        manifest.write_text(replace(deployment, asset_ledger="0x" + "11" * 20).to_json())
        reason = "no AssetLedger contract"
    else:
        manifest.write_text('{"version": 1, "chain_id": ')
        reason = "malformed"
    stale, nonce = manifest.read_bytes(), _nonce(w3, admin)
    refused = _deploy(anvil, keystore, manifest)
    assert refused.exit_code == 1
    assert refused.output.startswith("error: ") and reason in refused.output and "--replace-stale" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    assert manifest.read_bytes() == stale and _nonce(w3, admin) == nonce
    replaced = _deploy(anvil, keystore, manifest, "--replace-stale")
    assert replaced.exit_code == 0, replaced.output
    assert json.loads(replaced.stdout)["status"] == "deployed"
    check(w3, Deployment.load(manifest))
    assert _nonce(w3, admin) == nonce + 3  # exactly the three contract creations


def test_passphrase_from_a_file_or_a_named_variable(tmp_path, anvil, w3, keystore, pass_file):
    by_file = _deploy(anvil, keystore, tmp_path / "a.json", "--passphrase-file", pass_file, env={})
    assert by_file.exit_code == 0, by_file.output
    by_var = _deploy(anvil, keystore, tmp_path / "b.json", "--passphrase-env", "MY_ADMIN_PASS",
                     env={"MY_ADMIN_PASS": PASS})
    assert by_var.exit_code == 0, by_var.output
    assert Deployment.load(tmp_path / "a.json").consortium != Deployment.load(tmp_path / "b.json").consortium


@pytest.mark.parametrize("case", ["wrong_passphrase", "no_passphrase", "empty_passphrase_file",
                                  "not_json", "not_a_keystore", "missing_keystore"])
def test_bad_keys_fail_in_one_line_before_anything_is_sent(tmp_path, anvil, w3, keystore, admin, case):
    env = {"TWINLEDGER_ADMIN_PASSPHRASE": PASS}
    extra: list = []
    expected = "cannot open admin keystore"
    if case == "wrong_passphrase":
        env = {"TWINLEDGER_ADMIN_PASSPHRASE": "not the passphrase"}
    elif case == "no_passphrase":
        env, expected = {}, "TWINLEDGER_ADMIN_PASSPHRASE"
    elif case == "empty_passphrase_file":
        (tmp_path / "empty").write_text("")
        extra, expected = ["--passphrase-file", tmp_path / "empty"], "is empty"
    elif case == "not_json":
        keystore.write_text("not json at all")
        expected = "is not a JSON keystore"
    elif case == "not_a_keystore":
        keystore.write_text(json.dumps({"version": 3, "crypto": {}}))
    else:
        keystore = tmp_path / "absent.json"
        expected = "absent.json"
    nonce = _nonce(w3, admin)
    result = _deploy(anvil, keystore, tmp_path / "m.json", *extra, env=env)
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and expected in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and PASS not in result.output
    assert not (tmp_path / "m.json").exists() and _nonce(w3, admin) == nonce


def test_an_unfunded_admin_fails_cleanly_and_writes_nothing(tmp_path, anvil):
    poor = Account.create()
    result = _deploy(anvil, _keystore(tmp_path / "poor.json", poor), tmp_path / "m.json")
    assert result.exit_code == 1
    assert result.output.startswith("error: deployment failed") and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "m.json").exists()


def test_an_unreachable_chain_is_one_line(tmp_path, keystore):
    url = f"http://127.0.0.1:{free_port()}"
    for args in (("chain", "deploy", "--rpc", url, "--admin-keystore", keystore, "--manifest", tmp_path / "m.json"),
                 ("chain", "check", "--rpc", url, "--manifest", tmp_path / "m.json")):
        if args[1] == "check":
            Deployment(chain_id=1, consortium="0x" + "1" * 40, asset_ledger="0x" + "2" * 40,
                       audit_anchors="0x" + "3" * 40, deployment_block=1, admin="0x" + "4" * 40,
                       artifact_sha256={}).save(tmp_path / "m.json")
        result = _run(*args, env={"TWINLEDGER_ADMIN_PASSPHRASE": PASS})
        assert result.exit_code == 1, result.output
        assert result.output.startswith(f"error: cannot reach the chain at {url}")
        assert len(result.output.strip().splitlines()) == 1


def test_check(tmp_path, anvil, deployment):
    good = tmp_path / "good.json"
    deployment.save(good)
    ok = _run("chain", "check", "--rpc", anvil.url, "--manifest", good, "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout) == {"status": "ok", "manifest": str(good),
                                      "deployment": json.loads(deployment.to_json())}
    stale = tmp_path / "stale.json"
    stale.write_text(replace(deployment, audit_anchors="0x" + "22" * 20).to_json())
    bad = _run("chain", "check", "--rpc", anvil.url, "--manifest", stale)
    assert bad.exit_code == 1 and "no AuditAnchors contract" in bad.output
    missing = _run("chain", "check", "--rpc", anvil.url, "--manifest", tmp_path / "nope.json")
    assert missing.exit_code == 1 and "no deployment manifest" in missing.output


def test_the_compose_flow_deploy_then_org_register_with_the_same_keystore(tmp_path, anvil, w3, keystore,
                                                                           pass_file):
    """What docker/compose.yml's deployer and init-<org> services run, in order."""
    manifest = tmp_path / "manifest" / "deployment.json"
    deployed = _run("chain", "deploy", "--rpc", anvil.url, "--admin-keystore", keystore,
                    "--passphrase-file", pass_file, "--manifest", manifest)
    assert deployed.exit_code == 0, deployed.output
    home = tmp_path / "home"
    init_org(home, "plant", "org passphrase", insecure_fast_kdf=True)
    registered = _run("org", "register", "plant", "--home", home, "--endpoint", "http://plant:8700",
                      "--rpc", anvil.url, "--manifest", manifest, "--admin-keystore", keystore,
                      "--admin-passphrase-env", "ADMIN_PASSPHRASE", env={"ADMIN_PASSPHRASE": PASS})
    assert registered.exit_code == 0, registered.output
    public = load_org_public(home, "plant")
    org = LedgerClient(w3, Deployment.load(manifest)).get_org(public.address)
    assert (org.name, org.endpoint, org.active) == ("plant", "http://plant:8700", True)
    assert Web3.is_checksum_address(public.address)
