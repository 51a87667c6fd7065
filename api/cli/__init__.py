"""CLI sub-apps. Each module exposes `register(app)` adding its commands to the root app."""
from __future__ import annotations

import importlib

import typer

# Modules are imported lazily by name so that one area's import error names itself.
_MODULES = ("api.cli.devnet", "api.cli.vault_cmds", "api.cli.org", "api.cli.serve", "api.cli.chain", "api.cli.assets",
            "api.cli.audit", "api.cli.lineage")


def register(app: typer.Typer) -> None:
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # area not built yet
            raise
        module.register(app)
