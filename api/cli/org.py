"""`twinledger org init|register|show`: an organisation's keys and its consortium entry.

    twinledger org init NAME [--home DIR] [--passphrase-env VAR] [--insecure-fast-kdf]
        new Ethereum key (V3 keystore, scrypt) + age identity under <home>/orgs/NAME.
        The passphrase comes from $VAR (default TWINLEDGER_PASSPHRASE), else a prompt.
        --insecure-fast-kdf: scrypt n=2**10 instead of 2**18, for devnets and tests only.
    twinledger org register NAME --endpoint URL [--home] [--rpc URL] [--manifest PATH]
                            [--admin-keystore PATH [--admin-passphrase-env VAR]]
        registers the org on the Consortium contract, signed by a consortium admin: the
        admin keystore given, or — when the manifest is a devnet one (chain 31337, admin =
        Anvil's development account 0) — that development account.
    twinledger org show NAME [--home] [--json]
        the org's public information (name, address, age recipient).

Errors print one line on stderr and exit 1.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from api.errors import ApiError
from api.settings import DEFAULT_PASSPHRASE_ENV
from ledger.errors import LedgerError
from vault.errors import VaultError

F = TypeVar("F", bound=Callable[..., Any])
DEVNET_CHAIN_ID = 31337
DEVNET_FUNDING_ETH = 10  # what `org register` gives an empty org account on a devnet
DEFAULT_ADMIN_PASSPHRASE_ENV = "TWINLEDGER_ADMIN_PASSPHRASE"

org_app = typer.Typer(help="Create, register and show organisations (keys live under <home>/orgs).",
                      no_args_is_help=True)

HomeOpt = Annotated[Path | None, typer.Option("--home", envvar="TWINLEDGER_HOME", show_default=False,
                                              help="Node home directory [default: ~/.twinledger]")]
RpcOpt = Annotated[str | None, typer.Option("--rpc", envvar="TWINLEDGER_RPC_URL", metavar="URL", show_default=False,
                                            help="EVM JSON-RPC URL [default: the local devnet's]")]
ManifestOpt = Annotated[Path | None, typer.Option("--manifest", envvar="TWINLEDGER_MANIFEST", show_default=False,
                                                  help="Deployment manifest [default: <home>/devnet/deployment.json]")]


def register(app: typer.Typer) -> None:
    app.add_typer(org_app, name="org")


def cli_errors(fn: F) -> F:
    """Domain and OS errors → one line on stderr, exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ApiError, LedgerError, VaultError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except OSError as exc:
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            typer.echo(f"error: {exc.strerror or exc}{where}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def home_dir(home: Path | None) -> Path:
    return (home or Path("~/.twinledger")).expanduser()


def default_rpc(home: Path) -> str:
    """The local devnet's RPC URL (its last-used port), else http://127.0.0.1:8545."""
    from ledger.devnet import Devnet

    devnet = Devnet(home, port=None)
    return f"http://{devnet.host}:{devnet.port}"


def _passphrase(var: str, *, confirm: bool) -> str:
    value = os.environ.get(var)
    if value:
        return value
    if sys.stdin.isatty():
        return typer.prompt("Keystore passphrase", hide_input=True, confirmation_prompt=confirm)
    raise ApiError(f"no passphrase: set the environment variable {var}")


@org_app.command("init")
@cli_errors
def init(
    name: Annotated[str, typer.Argument(help="Organisation name (also its directory name)")],
    home: HomeOpt = None,
    passphrase_env: Annotated[str, typer.Option("--passphrase-env", metavar="VAR",
                                                help="Environment variable holding the passphrase")]
    = DEFAULT_PASSPHRASE_ENV,
    insecure_fast_kdf: Annotated[bool, typer.Option(
        "--insecure-fast-kdf", help="Cheap scrypt (n=2**10) for devnets/tests. INSECURE for real keys.")] = False,
) -> None:
    """Create an organisation's keys: Ethereum keystore, age identity, org.json."""
    from api.keystore import init_org, org_dir

    public = init_org(home_dir(home), name, _passphrase(passphrase_env, confirm=True),
                      insecure_fast_kdf=insecure_fast_kdf)
    typer.echo(f"created organisation {public.name}\n"
               f"  address:       {public.address}\n"
               f"  age recipient: {public.age_recipient}\n"
               f"  directory:     {org_dir(home_dir(home), name)}")
    if insecure_fast_kdf:
        typer.echo("warning: --insecure-fast-kdf: this keystore resists no offline guessing", err=True)


@org_app.command("register")
@cli_errors
def register_cmd(
    name: Annotated[str, typer.Argument(help="Organisation name under <home>/orgs")],
    endpoint: Annotated[str, typer.Option("--endpoint", metavar="URL", help="URL of the org's node")],
    home: HomeOpt = None,
    rpc: RpcOpt = None,
    manifest: ManifestOpt = None,
    admin_keystore: Annotated[Path | None, typer.Option(
        "--admin-keystore", help="V3 keystore of a consortium admin [default: devnet admin on a devnet]")] = None,
    admin_passphrase_env: Annotated[str, typer.Option(
        "--admin-passphrase-env", metavar="VAR", help="Environment variable holding the admin keystore passphrase")]
    = DEFAULT_ADMIN_PASSPHRASE_ENV,
    fund: Annotated[str | None, typer.Option(
        "--fund", metavar="ETH", show_default=False,
        help="Also send this much ETH from the admin to the org's account, gas money for its node "
             f"[default: {DEVNET_FUNDING_ETH} on a devnet if the account is empty, else none]")] = None,
) -> None:
    """Register the organisation on the Consortium contract (as a consortium admin)."""
    from api.keystore import load_org_public
    from ledger.client import LedgerClient
    from ledger.deployment import Deployment

    base = home_dir(home)
    public = load_org_public(base, name)
    manifest_path = (manifest or base / "devnet" / "deployment.json").expanduser()
    deployment = Deployment.load(manifest_path)
    admin = _admin_account(deployment, admin_keystore, admin_passphrase_env)
    ledger = LedgerClient.connect(rpc or default_rpc(base), manifest_path, admin)
    wei = _parse_eth(fund) if fund is not None else None
    tx = ledger.register_org(public.address, public.name, public.age_recipient, endpoint)
    typer.echo(f"registered {public.name} ({public.address}) at {endpoint}\n  tx: {tx.tx_hash} (block {tx.block_number})")
    if wei is None and _is_devnet_admin(deployment, admin) and ledger.w3.eth.get_balance(public.address) == 0:
        wei = DEVNET_FUNDING_ETH * 10**18  # so that the new org's node can publish right away
    if wei:
        assert ledger.sender is not None
        receipt = ledger.sender.send(public.address, "0x", value=wei)
        typer.echo(f"funded {public.address} with {wei / 10**18:g} ETH\n  tx: {receipt['transactionHash'].to_0x_hex()}")


def _parse_eth(text: str) -> int:
    """"1.5" (ETH) → wei; a clear error for anything that is not a non-negative amount."""
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise typer.BadParameter(f"--fund must be an amount of ETH such as 0.5, got {text!r}") from None
    wei = amount * 10**18
    if not amount.is_finite() or amount < 0 or wei != wei.to_integral_value() or wei >= 2**256:
        raise typer.BadParameter(f"--fund must be a non-negative amount of ETH (at most 18 decimals), got {text!r}")
    return int(wei)


def _is_devnet_admin(deployment: Any, admin: Any) -> bool:
    from ledger.deployment import dev_account

    return deployment.chain_id == DEVNET_CHAIN_ID and admin.address == dev_account(0).address


def _admin_account(deployment: Any, keystore: Path | None, passphrase_env: str):
    from eth_account import Account

    from ledger.deployment import dev_account

    if keystore is not None:
        try:
            data = json.loads(keystore.expanduser().read_text(encoding="utf-8"))
        except ValueError:
            raise ApiError(f"{keystore} is not a JSON keystore") from None
        try:
            return Account.from_key(Account.decrypt(data, _passphrase(passphrase_env, confirm=False)))
        except (ValueError, KeyError, TypeError):
            raise ApiError(f"cannot open admin keystore {keystore} (wrong passphrase or not a V3 keystore)") from None
    devnet_admin = dev_account(0)
    if deployment.chain_id == DEVNET_CHAIN_ID and deployment.admin == devnet_admin.address:
        return devnet_admin
    raise ApiError("this manifest is not a devnet deployment: pass --admin-keystore of a consortium admin")


@org_app.command("show")
@cli_errors
def show(
    name: Annotated[str, typer.Argument(help="Organisation name under <home>/orgs")],
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object")] = False,
) -> None:
    """Show an organisation's public information (nothing secret)."""
    from api.keystore import load_org_public, org_dir

    public = load_org_public(home_dir(home), name)
    if as_json:
        typer.echo(public.to_json().strip())
        return
    typer.echo(f"{public.name}\n  address:       {public.address}\n  age recipient: {public.age_recipient}\n"
               f"  created:       {public.created}\n  directory:     {org_dir(home_dir(home), name)}")
