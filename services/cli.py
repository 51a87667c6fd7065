"""CLI commands of the services. Each module exposes `register(app)` adding its commands
to the root `twinledger` app (twinledger/cli.py calls `register` below).

Add a service's CLI by appending its module name to `_MODULES` (one line per service).
"""
from __future__ import annotations

import typer

from api.cli import register_modules

_MODULES = (
    "services.sync.cli",
    "services.analytics.cli",
    "services.pilot.cli",
)


def register(app: typer.Typer) -> None:
    register_modules(app, _MODULES)
