"""`twinledger devnet up|status|down`: the local Anvil devnet (ledger.devnet).

ledger.devnet (and with it web3) is imported inside the commands, so that other
`twinledger` commands do not pay for it at start-up."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from ledger.errors import LedgerError

devnet_app = typer.Typer(help="Run a local Anvil devnet with the TwinLedger contracts.", no_args_is_help=True)

HomeOption = Annotated[Path | None, typer.Option("--home", help="TwinLedger home (default $TWINLEDGER_HOME or ~/.twinledger)")]


def register(app: typer.Typer) -> None:
    app.add_typer(devnet_app, name="devnet")


def _home(home: Path | None) -> Path:
    if home is not None:
        return home.expanduser()
    return Path(os.environ.get("TWINLEDGER_HOME") or "~/.twinledger").expanduser()


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


@devnet_app.command()
def up(port: Annotated[int | None, typer.Option("--port", help="RPC port (default: last used, else 8545)")] = None,
       home: HomeOption = None) -> None:
    """Start the devnet (deploying the contracts on first start) and return."""
    from ledger.devnet import Devnet

    try:
        status = Devnet(_home(home), port=port).up()
    except (LedgerError, OSError) as exc:
        raise _fail(exc) from None
    typer.echo(f"devnet up at {status.url} (chain {status.chain_id}, block {status.block}, pid {status.pid})")
    for name, address in status.contracts.items():
        typer.echo(f"  {name:14} {address}")


@devnet_app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False, home: HomeOption = None) -> None:
    """Show whether the devnet runs, where, and whether it holds the deployment."""
    from ledger.devnet import Devnet

    try:
        st = Devnet(_home(home), port=None).status()
    except (LedgerError, OSError) as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(st.to_dict(), sort_keys=True))
    elif not st.running:
        typer.echo(f"devnet not running (home {st.home})")
    else:
        health = "healthy" if st.healthy else f"UNHEALTHY: {st.problem}"
        typer.echo(f"devnet running at {st.url} (chain {st.chain_id}, block {st.block}, pid {st.pid}) — {health}")
        for name, address in st.contracts.items():
            typer.echo(f"  {name:14} {address}")
    if st.running and not st.healthy:
        raise typer.Exit(1)


@devnet_app.command()
def down(home: HomeOption = None) -> None:
    """Stop the devnet gracefully; its chain state is kept for the next `up`."""
    from ledger.devnet import Devnet

    try:
        stopped = Devnet(_home(home), port=None).down()
    except (LedgerError, OSError) as exc:
        raise _fail(exc) from None
    typer.echo("devnet stopped" if stopped else "devnet was not running")
