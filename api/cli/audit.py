"""`twinledger audit log|proof|verify` — read a node's audit log and verify it against the chain.

    twinledger audit log [--asset ID] [--kind K] [--actor A] [--since T] [--until T]
                         [--after-seq N] [--limit N] [--node URL] [--json] --org ORG
    twinledger audit proof SEQ [--node URL] --org ORG          the inclusion proof (JSON)
    twinledger audit verify [--node URL] [--all] [--json] --org ORG

`verify` trusts no node: it checks every anchored record's proof against the AuditAnchors
contract, and with --all that the log is complete (1..anchored head, each batch giving its
anchored root). It exits 1 on any problem and names each failing seq. --node defaults to
the org's own node; point it at another org's node to audit that org (the request is
signed by --org, which must be an active member). Times for --since/--until: ISO 8601 or
unix milliseconds (a record's `time`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from api.cli.assets import JsonOpt, NodeOpt, OrgOpt, echo_json, open_client, parse_time
from api.cli.org import HomeOpt, RpcOpt, cli_errors

audit_app = typer.Typer(help="Read and verify audit logs (records, proofs, anchoring on chain).",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


def _millis(text: str | None) -> int | None:
    if text is None:
        return None
    return int(text) if text.isdigit() else parse_time(text) * 1000


@audit_app.command("log")
@cli_errors
def log(
    org: OrgOpt,
    asset: Annotated[int | None, typer.Option("--asset", help="Only records about this asset")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="Only this kind, e.g. key_released, key_denied")] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="Only records of this actor (address)")] = None,
    since: Annotated[str | None, typer.Option("--since", help="From this time (ISO 8601 or unix ms)")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Before this time (ISO 8601 or unix ms)")] = None,
    after_seq: Annotated[int | None, typer.Option("--after-seq", help="Only records after this seq")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many records")] = 100,
    home: HomeOpt = None, node: NodeOpt = None, rpc: RpcOpt = None, as_json: JsonOpt = False,
) -> None:
    """Show audit records (ascending seq) of the org's node, or of --node."""
    items: list[dict[str, Any]] = []
    with open_client(home, org, node, rpc) as client:
        cursor = after_seq
        while len(items) < limit:
            page = client.audit_records(asset=asset, kind=kind, actor=actor, since=_millis(since),
                                        until=_millis(until), after_seq=cursor, limit=min(1000, limit - len(items)),
                                        )
            items.extend(page.get("items", []))
            cursor = page.get("next_after_seq")
            if cursor is None or not page.get("items"):
                break
    if as_json:
        echo_json({"items": items, "next_after_seq": cursor})
        return
    from api.cli.assets import iso

    for r in items:
        where = f"{r.get('asset')}@{r.get('version')}" if r.get("version") is not None else str(r.get("asset") or "-")
        typer.echo(f"{r.get('seq'):>6}  {iso(r.get('time', 0) / 1000)}  {r.get('kind'):<20} {r.get('actor')}  "
                   f"{where}  {json.dumps(r.get('details', {}), sort_keys=True)}")
    if not items:
        typer.echo("no records", err=True)


@audit_app.command("proof")
@cli_errors
def proof(
    seq: Annotated[int, typer.Argument(help="Audit record seq")],
    org: OrgOpt,
    out: Annotated[Path | None, typer.Option("-o", "--output", help="Write the proof to this file")] = None,
    home: HomeOpt = None, node: NodeOpt = None, rpc: RpcOpt = None,
) -> None:
    """Print the inclusion proof of one anchored record (checkable with `audit verify`)."""
    with open_client(home, org, node, rpc) as client:
        document = client.audit_proof(seq)
    text = json.dumps(document, sort_keys=True, indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")


@audit_app.command("verify")
@cli_errors
def verify(
    org: OrgOpt,
    all_: Annotated[bool, typer.Option("--all", help="Also check completeness: every seq up to the anchored head")]
    = False,
    of: Annotated[str | None, typer.Option("--of", metavar="ORG_OR_ADDRESS",
                                           help="Whose log the node must keep [default: whoever it says]")] = None,
    home: HomeOpt = None, node: NodeOpt = None, rpc: RpcOpt = None, as_json: JsonOpt = False,
) -> None:
    """Verify a node's audit log against the chain alone; exit 1 on any problem."""
    with open_client(home, org, node, rpc) as client:
        whose = client.resolve_org(of).address if of else None
        report = client.verify(all=all_, org=whose)
    if as_json:
        echo_json(report.to_dict())
    else:
        scope = "complete log" if report.complete else "listed records"
        status = "OK" if report.ok else f"FAILED ({len(report.problems)} problems)"
        typer.echo(f"audit log of {report.org} at {report.node}: {status}\n"
                   f"  {scope}: {report.records_checked} records, {report.proofs_verified} proofs verified on chain\n"
                   f"  anchored on chain: seq 1..{report.anchored_seq} in {report.batches} batches; "
                   f"{report.unanchored_records} records not anchored yet")
        for p in report.problems:
            where = f"seq {p['seq']}" if p["seq"] is not None else "log"
            typer.echo(f"  {where}: {p['reason']}: {p['detail']}", err=True)
    if not report.ok:
        raise typer.Exit(1)
