"""`twinledger lineage ASSET[@VERSION]` — where a version came from and what derives from it.

    twinledger lineage ASSET[@VERSION] [--direction ancestors|descendants|both] [--prov] [--json] --org ORG

Without @VERSION the asset's latest version (on chain) is used. --prov prints the W3C
PROV-JSON document (entities = versions, activities = publish/compute/sync, agents = orgs).
"""
from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from api.cli.assets import JsonOpt, NodeOpt, OrgOpt, echo_json, open_client
from api.cli.org import HomeOpt, RpcOpt, cli_errors


def register(app: typer.Typer) -> None:
    app.command("lineage")(lineage)


@cli_errors
def lineage(
    target: Annotated[str, typer.Argument(metavar="ASSET[@VERSION]", help="e.g. 12@3, or 12 for the latest")],
    org: OrgOpt,
    direction: Annotated[str, typer.Option("--direction", help="ancestors, descendants or both")] = "both",
    prov: Annotated[bool, typer.Option("--prov", help="Print W3C PROV-JSON")] = False,
    home: HomeOpt = None, node: NodeOpt = None, rpc: RpcOpt = None, as_json: JsonOpt = False,
) -> None:
    """Show the ancestors and descendants of an asset version."""
    from api.sdk import parse_target

    with open_client(home, org, node, rpc) as client:
        if "@" in target:
            ref = parse_target(target)
            asset_id, version = ref.asset_id, ref.version
        else:
            if not target.strip().isdigit():
                raise typer.BadParameter(f"expected ASSET or ASSET@VERSION, got {target!r}")
            asset_id = int(target)
            version = client.ledger.get_asset(asset_id).version_count
            if version == 0:
                raise typer.BadParameter(f"asset {asset_id} has no versions yet")
        if prov:
            typer.echo(json.dumps(client.prov(asset_id, version), sort_keys=True, indent=None if as_json else 2))
            return
        graph = client.lineage(asset_id, version, direction)
    if as_json:
        echo_json(graph)
        return
    typer.echo(f"{asset_id}@{version}")
    for side in ("ancestors", "descendants"):
        nodes: list[dict[str, Any]] = graph.get(side) or []
        if direction in (side, "both"):
            typer.echo(f"  {side}: {'none' if not nodes else ''}".rstrip())
            for n in nodes:
                depth = int(n.get("depth", 1))
                typer.echo(f"  {'  ' * depth}{n.get('asset_id')}@{n.get('version')}  (depth {depth})")
