"""CLI sub-apps. Each module exposes `register(app)` adding its commands to the root app."""
from __future__ import annotations

import importlib
from collections.abc import Iterable

import typer

_MODULES = ("api.cli.devnet", "api.cli.vault_cmds", "api.cli.org", "api.cli.serve", "api.cli.chain", "api.cli.assets",
            "api.cli.audit", "api.cli.lineage")


def register_modules(app: typer.Typer, modules: Iterable[str]) -> None:
    """Import each module by name and let it add its commands. A missing or broken module
    is an error at start-up, never a command that silently disappears."""
    for name in modules:
        importlib.import_module(name).register(app)


def register(app: typer.Typer) -> None:
    register_modules(app, _MODULES)
