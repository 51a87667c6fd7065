"""The `twinledger` command: one Typer app assembled from the sub-apps of api/ and services/."""
from __future__ import annotations

import typer

from api.cli import register as register_api
from services.cli import register as register_services

app = typer.Typer(
    name="twinledger",
    help="Secure digital-twin asset sharing and provenance ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
register_api(app)
register_services(app)


@app.callback()
def _root() -> None:
    """Secure digital-twin asset sharing and provenance ledger."""


@app.command()
def version() -> None:
    """Print the TwinLedger version."""
    from twinledger import __version__

    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
