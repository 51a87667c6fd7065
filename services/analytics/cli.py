"""`twinledger analytics` — compute-to-data from the command line.

    twinledger analytics run JOB --asset A@V [--model M@V] [--param k=v ...] --org ORG
                             [--output FILE] [--json] [--home DIR] [--node URL] [--rpc URL]
    twinledger analytics jobs [--json]

`run` asks the node of the asset's owner (its endpoint from the on-chain registry) to
run built-in JOB (profile, stats, validate) on the version: the raw data stays there, the
result is a new `report` asset owned by the data owner, derived from the inputs, which
the caller may READ. With --output the report is fetched at once (key release, verified,
decrypted, written atomically); later: `twinledger asset get R@1 -o FILE --purpose
"compute result" --org ORG`. --param values are JSON when they parse as JSON
(`gap_factor=3`, `ranges={"temperature_c":[0,120]}`), else strings (`window=15min`).
Errors: one `error: …` line (bad data: the job's reason code, e.g. `missing_columns`), exit 1.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from api.cli.assets import JsonOpt, NodeOpt, OrgOpt, echo_json, open_client
from api.cli.org import HomeOpt, RpcOpt, cli_errors

analytics_app = typer.Typer(help="Compute-to-data: run built-in jobs next to the data.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(analytics_app, name="analytics")


def parse_params(items: list[str]) -> dict[str, Any]:
    """["k=v", ...] → {k: JSON value or string}."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}")
        try:
            params[key.strip()] = json.loads(value)
        except ValueError:
            params[key.strip()] = value
    return params


@analytics_app.command("run")
@cli_errors
def run(
    job: Annotated[str, typer.Argument(help="profile, stats or validate")],
    asset: Annotated[str, typer.Option("--asset", metavar="A@V", help="The input dataset version")],
    org: OrgOpt,
    model: Annotated[str | None, typer.Option("--model", metavar="M@V", help="Twin model version")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", metavar="KEY=VALUE",
                                                     help="Job parameter (repeatable)")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Fetch the report into this file")] = None,
    home: HomeOpt = None, node: NodeOpt = None, rpc: RpcOpt = None, as_json: JsonOpt = False,
) -> None:
    """Run JOB on the owner's node; the report becomes an asset the caller may read."""
    from api.sdk import parse_target
    from services.analytics import available_jobs
    from services.analytics.client import run_job

    if job not in available_jobs():
        raise typer.BadParameter(f"JOB must be one of {', '.join(available_jobs())}")
    target = parse_target(asset)
    model_ref = parse_target(model) if model else None
    params = parse_params(param or [])
    if output is not None and not output.parent.is_dir():
        raise typer.BadParameter(f"output directory {output.parent} does not exist")
    with open_client(home, org, node, rpc) as client:
        result = run_job(client, None, job, target.asset_id, target.version, model=model_ref, params=params)
        fetched = None
        if output is not None:
            fetched = client.get(result.result.asset_id, result.result.version, output, purpose=result.purpose)
    if as_json:
        echo_json({**result.to_json(), **({"output": fetched.to_json()} if fetched is not None else {})})
        return
    ref = f"{result.result.asset_id}@{result.result.version}"
    typer.echo(f"{job} ran on {result.owner_node} (job {result.job_id}, its audit record {result.audit_seq})\n"
               f"  report: {ref}  cid {result.cid}\n  parents: {asset}{', ' + model if model else ''}")
    if fetched is not None:
        typer.echo(f"  wrote {fetched.path} ({fetched.size} bytes)")
    else:
        typer.echo(f"  fetch it: twinledger asset get {ref} -o report.json --purpose \"{result.purpose}\" --org {org}")


@analytics_app.command("jobs")
def jobs(as_json: JsonOpt = False) -> None:
    """List the built-in jobs and their inputs."""
    from services.analytics import available_jobs

    found = available_jobs()
    if as_json:
        echo_json(found)
        return
    for name, spec in found.items():
        optional = f" [{', '.join(spec['optional_inputs'])}]" if spec["optional_inputs"] else ""
        typer.echo(f"{name:<9} {spec['title']}  inputs: {', '.join(spec['inputs'])}{optional}")
