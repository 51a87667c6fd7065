"""CLI commands of the services. Each module exposes `register(app)` adding its commands
to the root `twinledger` app (twinledger/cli.py calls `register` below).

Add a service's CLI by appending its module name to `_MODULES` (one line per service).
"""
from __future__ import annotations

import importlib

import typer

# Imported lazily by name so that one service's import error names itself.
_MODULES = (
    "services.sync.cli",
    "services.analytics.cli",
    "services.pilot.cli",
)


def register(app: typer.Typer) -> None:
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # service not built yet
            raise
        module.register(app)
