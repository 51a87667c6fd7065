"""`twinledger serve --org NAME`: run an organisation's node (uvicorn on create_app).

Settings come from TWINLEDGER_* variables; the flags here override them. The keystore
passphrase is read from $TWINLEDGER_PASSPHRASE (or TWINLEDGER_PASSPHRASE_ENV names
another variable, or TWINLEDGER_PASSPHRASE_FILE a file). Without TWINLEDGER_RPC_URL or
--rpc the node talks to the local devnet of its home.

`--workers N` (TWINLEDGER_WORKERS, 1..32, default 1): N >= 2 serves the port from N
worker processes under uvicorn's supervisor (api/workers.py) — one process per core is
what lifts a CPU-bound node past one core. With 1 the node runs in this process.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from api.cli.org import HomeOpt, cli_errors, default_rpc, home_dir
from api.settings import MAX_WORKERS


def _prefer_fast_keccak() -> None:
    """Let eth-hash (eth_utils.keccak: EIP-712 hashes, addresses, ABI) use safe-pysha3, a C
    extension with ~9x less overhead a call than pycryptodome, when it is installed and
    ETH_HASH_BACKEND is not set. Same digests; eth-hash picks its backend at the first
    hash, so this runs before the app is imported."""
    if "ETH_HASH_BACKEND" in os.environ:
        return
    try:
        import sha3  # noqa: F401  (safe-pysha3)
    except ImportError:
        return
    os.environ["ETH_HASH_BACKEND"] = "pysha3"


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


@cli_errors
def serve(
    org: Annotated[str | None, typer.Option("--org", envvar="TWINLEDGER_ORG", help="Organisation to serve")] = None,
    port: Annotated[int | None, typer.Option("--port", help="HTTP port [default: 8700]", show_default=False)] = None,
    host: Annotated[str | None, typer.Option("--host", help="Bind address [default: 127.0.0.1]",
                                             show_default=False)] = None,
    rpc: Annotated[str | None, typer.Option("--rpc", metavar="URL", help="EVM JSON-RPC URL",
                                            show_default=False)] = None,
    home: HomeOpt = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", envvar="TWINLEDGER_WORKERS", min=1, max=MAX_WORKERS, show_default=False,
        help=f"Worker processes sharing the port (1..{MAX_WORKERS}) [default: 1]")] = None,
) -> None:
    """Run the organisation's node until interrupted."""
    _prefer_fast_keccak()  # before anything hashes: eth-hash picks its backend at the first call
    import uvicorn

    from api.app import create_app
    from api.settings import load_settings

    if org is None:
        raise typer.BadParameter("--org NAME is required (or set TWINLEDGER_ORG)")
    base = home_dir(home) if home is not None else None
    if rpc is None and "TWINLEDGER_RPC_URL" not in os.environ:
        rpc = default_rpc(base or Path(os.environ.get("TWINLEDGER_HOME") or "~/.twinledger").expanduser())
    settings = load_settings(org=org, port=port, host=host, rpc_url=rpc, home=base, workers=workers)
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    if settings.workers > 1:
        from api.workers import prepare_node, run_workers

        prepare_node(settings)
        typer.echo(f"serving {settings.org} on http://{settings.host}:{settings.port} with {settings.workers} "
                   f"workers (chain {settings.rpc_url})", err=True)
        status = run_workers(settings)
        if status:
            raise typer.Exit(status)
        return
    app = create_app(settings)
    typer.echo(f"serving {settings.org} on http://{settings.host}:{settings.port} (chain {settings.rpc_url})",
               err=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False)
