"""`twinledger asset put|get|ls|show`, `twinledger grant`, `twinledger revoke` — an org's
assets through its node, with the SDK (api/sdk).

    twinledger asset put FILE --org ORG [--asset ID | --name N --kind K] [--parent A@V ...] [--json]
    twinledger asset get ASSET@VERSION -o FILE --org ORG [--permission read|sync] [--purpose P]
                         [--gateway URL ...] [--json]
    twinledger asset ls [--owner ORG_OR_ADDRESS] [--kind K] [--json]
    twinledger asset show ASSET [--json]
    twinledger grant ASSET ORG_OR_ADDRESS --perm read,sync,compute (--ttl 30d | --until ISO)
                     [--purpose P] --org ORG [--json]
    twinledger revoke ASSET ORG_OR_ADDRESS --org ORG [--json]

Common options (also used by `audit` and `lineage`): --org (TWINLEDGER_ORG), --home
(TWINLEDGER_HOME), --node URL (default: the org's endpoint registered on chain), --rpc
(TWINLEDGER_RPC_URL, default: the home's devnet). The keystore passphrase comes from
TWINLEDGER_PASSPHRASE (or the variable TWINLEDGER_PASSPHRASE_ENV names, or the file
TWINLEDGER_PASSPHRASE_FILE), else a prompt on a terminal. Org names resolve to addresses
through the on-chain registry. Errors: one `error: …` line on stderr, exit status 1.
Progress bars go to stderr, only when it is a terminal.
"""
from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from api.cli.org import HomeOpt, RpcOpt, cli_errors, home_dir
from api.errors import ConfigError

asset_app = typer.Typer(help="Publish, fetch, list and show assets (through the org's node).", no_args_is_help=True)

OrgOpt = Annotated[str, typer.Option("--org", envvar="TWINLEDGER_ORG", help="Organisation acting (its keys sign)")]
NodeOpt = Annotated[str | None, typer.Option("--node", metavar="URL", show_default=False,
                                             help="The org's node [default: its endpoint registered on chain]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text")]
_DURATION = re.compile(r"([0-9]+)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def register(app: typer.Typer) -> None:
    app.add_typer(asset_app, name="asset")
    app.command("grant")(grant)
    app.command("revoke")(revoke)


# -- shared by the asset, audit and lineage commands ------------------------------------------


def open_client(home: Path | None, org: str, node: str | None, rpc: str | None):
    """The org's TwinLedgerClient (keys unlocked, chain connected)."""
    from api.sdk import TwinLedgerClient
    from api.settings import load_settings

    base = home_dir(home)
    passphrase = None
    try:
        load_settings(home=base, org=org).read_passphrase()
    except ConfigError:
        if not sys.stdin.isatty():
            raise
        passphrase = typer.prompt(f"Keystore passphrase of {org}", hide_input=True)
    return TwinLedgerClient.from_home(base, org, passphrase, node_url=node, rpc_url=rpc)


def echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, sort_keys=True, default=str))


@contextlib.contextmanager
def transfer_progress(total: int | None, label: str) -> Iterator[Callable[[int], None] | None]:
    """A Rich progress bar on stderr when it is a terminal; else no callback."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def parse_duration(text: str) -> int:
    """"30d", "12h", "90m", "45s", "2w" or plain seconds → seconds."""
    m = _DURATION.fullmatch(text.strip())
    if m is None or int(m.group(1)) == 0:
        raise typer.BadParameter(f"expected a duration like 30d, 12h, 90m or seconds, got {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_time(text: str) -> int:
    """ISO 8601 (UTC when no zone is given) or unix seconds → unix seconds."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"expected an ISO 8601 time (2026-12-31T23:59:59Z) or unix seconds, got {text!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


def iso(seconds: int | float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- asset commands --------------------------------------------------------------------------------


@asset_app.command("put")
@cli_errors
def put(
    file: Annotated[Path, typer.Argument(help="File to publish", exists=True, dir_okay=False, readable=True)],
    org: OrgOpt,
    asset: Annotated[int | None, typer.Option("--asset", help="Add a version to this asset")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Name of a new asset (public on chain)")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="Kind of a new asset: model|dataset|report|other")] = None,
    parent: Annotated[list[str] | None, typer.Option("--parent", metavar="A@V",
                                                      help="A version this one derives from (repeatable)")] = None,
    home: HomeOpt = None, node: NodeOpt = None, rpc: RpcOpt = None, as_json: JsonOpt = False,
) -> None:
    """Encrypt and publish FILE as a new version (of --asset, or of a new asset --name/--kind)."""
    from api.sdk import parse_ref

    if (asset is None) == (name is None) or (name is not None and kind is None):
        raise typer.BadParameter("give either --asset ID, or --name N and --kind K")
    parents = [parse_ref(p) for p in parent or []]
    with open_client(home, org, node, rpc) as client, \
            transfer_progress(file.stat().st_size, f"upload {file.name}") as progress:
        result = client.publish(file, asset_id=asset, name=name, kind=kind, parents=parents, progress=progress)
    if as_json:
        echo_json(result.to_json())
        return
    what = "published" if result.created else "already published"
    typer.echo(f"{what} asset {result.asset_id} version {result.version}\n"
               f"  cid:          {result.cid}\n  size:         {result.size} bytes\n"
               f"  parents:      {', '.join(result.parents) or '-'}\n"
               f"  tx:           {result.tx_hash} (block {result.block})\n  audit record: {result.audit_seq}")


@asset_app.command("get")
@cli_errors
def get(
    target: Annotated[str, typer.Argument(metavar="ASSET@VERSION", help="The version to fetch, e.g. 12@3")],
    out: Annotated[Path, typer.Option("-o", "--output", help="Where to write the plaintext (atomically)")],
    org: OrgOpt,
    permission: Annotated[str, typer.Option("--permission", help="The use asked for: read or sync")] = "read",
    purpose: Annotated[str, typer.Option("--purpose", help="The grant's purpose, exactly")] = "",
    gateway: Annotated[list[str] | None, typer.Option("--gateway", metavar="URL",
                                                       help="Extra trustless gateway (repeatable)")] = None,
    home: HomeOpt = None, node: NodeOpt = None, rpc: RpcOpt = None, as_json: JsonOpt = False,
) -> None:
    """Obtain a version from its owner: key release, verified fetch, decrypt, atomic write."""
    from api.sdk import parse_target
    from ledger.models import Permission

    ref = parse_target(target)
    if permission.lower() not in ("read", "sync"):
        raise typer.BadParameter("--permission must be read or sync")
    with open_client(home, org, node, rpc) as client:
        with transfer_progress(_size_for_bar(client, ref), f"fetch {target}") as progress:
            result = client.get(ref.asset_id, ref.version, out, permission=Permission[permission.upper()],
                                purpose=purpose, gateways=gateway or (), progress=progress)
    if as_json:
        echo_json(result.to_json())
        return
    typer.echo(f"wrote {result.path} ({result.size} bytes, sha256 {result.sha256})\n"
               f"  released by {result.owner} (its audit record {result.key_audit_seq})\n"
               f"  consumption recorded (audit record {result.consumption_audit_seq})")


def _size_for_bar(client: Any, ref: Any) -> int | None:
    """The version's size for a progress bar (only on a terminal; None if unknown)."""
    from api.errors import SdkError

    if not sys.stderr.isatty():
        return None
    try:
        return client.version(ref.asset_id, ref.version, verify=False).size
    except SdkError:
        return None


@asset_app.command("ls")
@cli_errors
def ls(
    org: OrgOpt,
    owner: Annotated[str | None, typer.Option("--owner", help="Only assets of this org (name or address)")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="Only this kind")] = None,
    home: HomeOpt = None, node: NodeOpt = None, rpc: RpcOpt = None, as_json: JsonOpt = False,
) -> None:
    """List the assets of the consortium (from the node's index)."""
    with open_client(home, org, node, rpc) as client:
        who = client.resolve_org(owner).address if owner else None
        items = list(client.iter_assets(owner=who, kind=kind))
    if as_json:
        echo_json(items)
        return
    for a in items:
        typer.echo(f"{a.get('asset_id'):>6}  {a.get('kind', ''):<8} v{a.get('version_count', '?'):<4} "
                   f"{a.get('owner')}  {a.get('name')}{'  (retired)' if a.get('retired') else ''}")
    if not items:
        typer.echo("no assets", err=True)


@asset_app.command("show")
@cli_errors
def show(
    asset: Annotated[int, typer.Argument(help="Asset id")],
    org: OrgOpt,
    home: HomeOpt = None, node: NodeOpt = None, rpc: RpcOpt = None, as_json: JsonOpt = False,
) -> None:
    """Show an asset, its versions and its grants."""
    with open_client(home, org, node, rpc) as client:
        detail = client.asset(asset)
        grants = client.grants(asset)
    if as_json:
        echo_json({**detail, "grants": grants})
        return
    typer.echo(f"asset {detail.get('asset_id')}: {detail.get('name')} ({detail.get('kind')})\n"
               f"  owner:   {detail.get('owner')}\n  retired: {detail.get('retired')}")
    for v in detail.get("versions", []):
        typer.echo(f"  v{v.get('version')}: {v.get('cid')}  {v.get('size')} bytes  block {v.get('block')}"
                   f"  parents {', '.join(v.get('parents') or []) or '-'}")
    for g in grants:
        state = "in force" if g.get("in_force", g.get("active")) else ("revoked" if not g.get("active") else "expired")
        typer.echo(f"  grant {g.get('grantee')}: {','.join(g.get('permissions', []))} until "
                   f"{iso(g.get('expiry', 0)) if g.get('expiry', 0) < 2**40 else 'forever'} "
                   f"purpose {g.get('purpose')!r} ({state})")


# -- grants ----------------------------------------------------------------------------------------


@cli_errors
def grant(
    asset: Annotated[int, typer.Argument(help="Asset id")],
    grantee: Annotated[str, typer.Argument(metavar="ORG_OR_ADDRESS", help="Org name (on chain) or address")],
    perm: Annotated[str, typer.Option("--perm", help="Comma-separated: read,sync,compute")],
    org: OrgOpt,
    ttl: Annotated[str | None, typer.Option("--ttl", help="Valid for: 30d, 12h, 90m, seconds")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Valid until: ISO 8601 time or unix seconds")] = None,
    purpose: Annotated[str, typer.Option("--purpose", help="Purpose (public on chain)")] = "",
    home: HomeOpt = None, node: NodeOpt = None, rpc: RpcOpt = None, as_json: JsonOpt = False,
) -> None:
    """Grant an org permissions on an asset (an on-chain transaction by the own node)."""
    from api.sdk import permission_names

    if (ttl is None) == (until is None):
        raise typer.BadParameter("give exactly one of --ttl or --until")
    names = permission_names(perm)
    with open_client(home, org, node, rpc) as client:
        result = client.grant(asset, grantee, names, purpose=purpose,
                              ttl_seconds=parse_duration(ttl) if ttl else None,
                              expiry=parse_time(until) if until else None)
    if as_json:
        echo_json(result)
        return
    typer.echo(f"granted {','.join(names).lower()} on asset {asset} to {grantee}\n"
               f"  tx: {result.get('tx_hash')} (block {result.get('block')}), audit record {result.get('audit_seq')}")


@cli_errors
def revoke(
    asset: Annotated[int, typer.Argument(help="Asset id")],
    grantee: Annotated[str, typer.Argument(metavar="ORG_OR_ADDRESS", help="Org name (on chain) or address")],
    org: OrgOpt,
    home: HomeOpt = None, node: NodeOpt = None, rpc: RpcOpt = None, as_json: JsonOpt = False,
) -> None:
    """Revoke an org's grant on an asset: no further key releases (bytes already released stay released)."""
    with open_client(home, org, node, rpc) as client:
        result = client.revoke(asset, grantee)
    if as_json:
        echo_json(result)
        return
    typer.echo(f"revoked the grant of {grantee} on asset {asset}\n"
               f"  tx: {result.get('tx_hash')} (block {result.get('block')}), audit record {result.get('audit_seq')}")
