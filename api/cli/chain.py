"""`twinledger chain deploy|check`: the consortium contracts on any EVM chain (not only the devnet).

    twinledger chain deploy --rpc URL --admin-keystore PATH --manifest OUT
                            [--passphrase-env VAR | --passphrase-file PATH] [--replace-stale] [--json]
        deploys Consortium(admin), AssetLedger and AuditAnchors (ledger.deployment.deploy)
        signed by the consortium admin's V3 keystore, then writes the manifest atomically.
        Idempotent: when OUT already describes a deployment that the chain holds (same
        chain id, code at every address, same artifacts), nothing is sent and the
        existing deployment is printed. A manifest that does NOT match the chain (chain
        reset, other chain, contracts rebuilt) is never overwritten silently: the command
        fails naming the mismatch, unless --replace-stale is given.
    twinledger chain check --rpc URL --manifest PATH [--json]
        exit 0 when the chain holds the manifest's deployment, else one line and exit 1.

The admin passphrase comes from --passphrase-file (first line; for docker secrets), else
the variable named by --passphrase-env (default TWINLEDGER_ADMIN_PASSPHRASE), else a
prompt on a terminal. The keystore is only decrypted when something must be deployed.
Errors print one line on stderr and exit 1.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from api.cli.org import DEFAULT_ADMIN_PASSPHRASE_ENV, cli_errors
from api.errors import ApiError, ConfigError
from ledger.errors import DeploymentError, RpcError, TransientRpcError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

    from ledger.deployment import Deployment

chain_app = typer.Typer(help="Deploy and check the consortium contracts on any EVM JSON-RPC chain.",
                        no_args_is_help=True)

RpcOpt = Annotated[str, typer.Option("--rpc", envvar="TWINLEDGER_RPC_URL", metavar="URL",
                                     help="JSON-RPC URL of the EVM node")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object")]


def register(app: typer.Typer) -> None:
    app.add_typer(chain_app, name="chain")


@chain_app.command("deploy")
@cli_errors
def deploy_cmd(
    rpc: RpcOpt,
    admin_keystore: Annotated[Path, typer.Option("--admin-keystore", metavar="PATH",
                                                 help="V3 keystore (JSON) of the consortium admin")],
    manifest: Annotated[Path, typer.Option("--manifest", envvar="TWINLEDGER_MANIFEST", metavar="OUT",
                                           help="Where to write the deployment manifest")],
    passphrase_env: Annotated[str, typer.Option("--passphrase-env", metavar="VAR",
                                                help="Environment variable holding the keystore passphrase")]
    = DEFAULT_ADMIN_PASSPHRASE_ENV,
    passphrase_file: Annotated[Path | None, typer.Option(
        "--passphrase-file", metavar="PATH", help="File whose first line is the passphrase (wins over --passphrase-env)",
        show_default=False)] = None,
    replace_stale: Annotated[bool, typer.Option(
        "--replace-stale", help="Deploy a new set and overwrite a manifest that does not match the chain")] = False,
    as_json: AsJson = False,
) -> None:
    """Deploy the three contracts (unless the manifest already matches the chain)."""
    from ledger.deployment import Deployment, deploy

    manifest = manifest.expanduser()
    w3 = _connect(rpc)
    if manifest.exists():
        problem = _mismatch(w3, manifest, rpc)
        if problem is None:
            _report(Deployment.load(manifest), manifest, "unchanged", as_json)
            return
        if not replace_stale:
            raise DeploymentError(f"{manifest} does not match the chain at {rpc} ({problem}); "
                                  "pass --replace-stale to deploy a new set of contracts and overwrite it")
    admin = load_admin_keystore(admin_keystore, passphrase_env, passphrase_file)
    deployment = _guarded(rpc, "deployment", lambda: deploy(w3, admin))
    deployment.save(manifest)
    _report(deployment, manifest, "deployed", as_json)


@chain_app.command("check")
@cli_errors
def check_cmd(
    rpc: RpcOpt,
    manifest: Annotated[Path, typer.Option("--manifest", envvar="TWINLEDGER_MANIFEST", metavar="PATH",
                                           help="Deployment manifest to check")],
    as_json: AsJson = False,
) -> None:
    """Exit 0 when the chain holds the deployment the manifest describes."""
    from ledger.deployment import Deployment, check

    manifest = manifest.expanduser()
    deployment = Deployment.load(manifest)
    w3 = _connect(rpc)
    _guarded(rpc, "check", lambda: check(w3, deployment))
    _report(deployment, manifest, "ok", as_json)


def load_admin_keystore(path: Path, passphrase_env: str, passphrase_file: Path | None) -> "LocalAccount":
    """The account in a V3 keystore; every way it can fail is one ApiError naming the file."""
    from eth_account import Account

    path = path.expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(f"{path} is not a JSON keystore") from None
    if not isinstance(data, dict):
        raise ApiError(f"{path} is not a JSON keystore")
    passphrase = _passphrase(passphrase_env, passphrase_file)
    try:
        return Account.from_key(Account.decrypt(data, passphrase))
    except (ValueError, KeyError, TypeError):
        raise ApiError(f"cannot open admin keystore {path} (wrong passphrase or not a V3 keystore)") from None


def _passphrase(var: str, file: Path | None) -> str:
    if file is not None:
        try:
            lines = file.expanduser().read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read passphrase file {file}: {exc.strerror}") from None
        if not lines or not lines[0]:
            raise ConfigError(f"passphrase file {file} is empty")
        return lines[0]
    value = os.environ.get(var)
    if value:
        return value
    if sys.stdin.isatty():
        return typer.prompt("Admin keystore passphrase", hide_input=True)
    raise ConfigError(f"no admin passphrase: set the environment variable {var} or pass --passphrase-file")


def _connect(rpc: str) -> "Web3":
    """A Web3 for `rpc` that has answered eth_chainId (transient failures retried)."""
    from web3 import Web3

    from ledger.tx import retrying

    if not rpc.startswith(("http://", "https://")):
        raise ConfigError(f"--rpc must be an http(s):// URL, got {rpc!r}")
    w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": 30}))
    try:
        _guarded(rpc, "eth_chainId", lambda: retrying("eth_chainId", lambda: w3.eth.chain_id))
    except TransientRpcError:
        raise RpcError(f"cannot reach the chain at {rpc} (eth_chainId failed after retries)") from None
    return w3


def _mismatch(w3: "Web3", manifest: Path, rpc: str) -> str | None:
    """None when the chain holds the manifest's deployment, else why not."""
    from ledger.deployment import Deployment, check

    try:
        deployment = Deployment.load(manifest)
        _guarded(rpc, "check", lambda: check(w3, deployment))
    except RpcError:
        raise  # unreachable is not "stale": never redeploy because the node hiccuped
    except DeploymentError as exc:
        return str(exc)
    return None


def _guarded(rpc: str, what: str, fn):
    """Run `fn`, turning web3/requests failures into RpcError/DeploymentError (one line each)."""
    from web3.exceptions import Web3Exception

    from ledger.errors import LedgerError
    from ledger.tx import is_transient

    try:
        return fn()
    except LedgerError:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise RpcError(f"cannot reach the chain at {rpc}: {type(exc).__name__}") from None
        if isinstance(exc, Web3Exception):
            raise DeploymentError(f"{what} failed on {rpc}: {exc}") from None
        raise


def _report(deployment: "Deployment", manifest: Path, status: str, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"status": status, "manifest": str(manifest), "deployment": asdict(deployment)},
                              sort_keys=True))
        return
    head = {
        "deployed": f"deployed on chain {deployment.chain_id}; manifest written to {manifest}",
        "unchanged": f"{manifest} already matches chain {deployment.chain_id}; nothing deployed",
        "ok": f"{manifest} matches chain {deployment.chain_id}",
    }[status]
    typer.echo(head)
    for label, value in (("Consortium", deployment.consortium), ("AssetLedger", deployment.asset_ledger),
                         ("AuditAnchors", deployment.audit_anchors), ("admin", deployment.admin),
                         ("block", deployment.deployment_block)):
        typer.echo(f"  {label:14} {value}")
