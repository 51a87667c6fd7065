"""Typed node settings from TWINLEDGER_* environment variables and CLI flags.

Built only by `load_settings()` — called in the app factory and the CLI, never at import
time — and validated at once: a bad value is a ConfigError naming every bad field.
Flags passed to `load_settings(**flags)` win over the environment.

    TWINLEDGER_HOME=/srv/tl TWINLEDGER_ORG=acme twinledger serve

Secrets are never settings: `passphrase_env` is the *name* of the variable that holds the
keystore passphrase (or `passphrase_file` a file holding it); `read_passphrase()` reads it
on demand, so no repr or log of the settings can contain it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.errors import ConfigError

DEFAULT_HOME = Path("~/.twinledger")
DEFAULT_PASSPHRASE_ENV = "TWINLEDGER_PASSPHRASE"
# Org names are directory names under <home>/orgs: letters, digits, '.', '_', '-'.
ORG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
GiB = 1 << 30
MiB = 1 << 20
MAX_WORKERS = 32


def check_org_name(name: str) -> str:
    if not isinstance(name, str) or not ORG_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"org name must be 1-64 characters of A-Z a-z 0-9 . _ - (not starting with . _ -), got {name!r}")
    return name


class NodeSettings(BaseSettings):
    """One organisation node's configuration. Every field maps to TWINLEDGER_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="TWINLEDGER_", extra="forbid", validate_default=True,
                                      frozen=True)

    home: Path = Field(DEFAULT_HOME, description="Home directory; one sub-directory per org under <home>/orgs.")
    org: str | None = Field(None, description="Name of the organisation this node serves (<home>/orgs/<org>).")
    host: str = Field("127.0.0.1", description="Interface the HTTP server binds to.")
    port: int = Field(8700, ge=1, le=65535, description="TCP port of the HTTP server.")
    workers: int = Field(
        1, ge=1, le=MAX_WORKERS, description="Worker processes sharing the port (twinledger serve --workers); "
                                             "1 = one in-process server.")
    rpc_url: str = Field("http://127.0.0.1:8545", description="JSON-RPC URL of the EVM node.")
    manifest: Path | None = Field(None, description="Deployment manifest; default <home>/devnet/deployment.json.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL (sqlite:///… or postgresql://…); default SQLite <home>/orgs/<org>/node.db.")
    store: Literal["embedded", "kubo"] = Field(
        "embedded", description="Block store: 'embedded' filesystem blockstore or a 'kubo' daemon.")
    kubo_url: str = Field("http://127.0.0.1:5001", description="Kubo RPC API URL (store = kubo).")
    blocks_dir: Path | None = Field(None, description="Embedded blockstore directory; default <home>/orgs/<org>/blocks.")
    anchor_every_records: int = Field(1000, ge=1, description="Anchor the audit log every N new records ...")
    anchor_every_seconds: float = Field(10.0, gt=0, description="... or every T seconds, whichever comes first.")
    request_max_age: int = Field(
        300, ge=1, le=3600, description="Max seconds a signed request's deadline may lie ahead (replay window).")
    max_upload_bytes: int = Field(4 * GiB, ge=1, description="Largest request body accepted (413 above).")
    max_body_bytes: int = Field(
        MiB, ge=1, description="Largest body read into memory to hash for signature checks (JSON bodies); "
                               "bigger uploads must stream with X-TwinLedger-Body-Hash.")
    passphrase_env: str = Field(
        DEFAULT_PASSPHRASE_ENV, description="Name of the environment variable holding the keystore passphrase.")
    passphrase_file: Path | None = Field(
        None, description="File holding the keystore passphrase (first line); wins over passphrase_env.")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        "info", description="Log level of the node and uvicorn.")
    public_url: str | None = Field(
        None, description="URL other orgs reach this node at (registered on chain); default http://<host>:<port>.")

    @field_validator("home", "manifest", "blocks_dir", "passphrase_file", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("org")
    @classmethod
    def _org(cls, value: str | None) -> str | None:
        return check_org_name(value) if value is not None else None

    @field_validator("rpc_url", "kubo_url", "public_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError(f"must be an http(s):// URL, got {value!r}")
        return value

    @field_validator("database_url")
    @classmethod
    def _db(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        return value

    @field_validator("passphrase_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(f"must be an environment variable name, got {value!r}")
        return value

    @model_validator(mode="after")
    def _derived(self) -> "NodeSettings":
        defaults: dict[str, object] = {}
        if self.manifest is None:
            defaults["manifest"] = self.home / "devnet" / "deployment.json"
        if self.public_url is None:
            defaults["public_url"] = f"http://{self.host}:{self.port}"
        if self.org is not None:
            if self.database_url is None:
                defaults["database_url"] = f"sqlite:///{self.org_dir / 'node.db'}"
            if self.blocks_dir is None:
                defaults["blocks_dir"] = self.org_dir / "blocks"
        for key, value in defaults.items():
            object.__setattr__(self, key, value)
        return self

    @property
    def org_dir(self) -> Path:
        if self.org is None:
            raise ConfigError("no organisation configured (set TWINLEDGER_ORG or pass --org)")
        return self.home / "orgs" / self.org

    def read_passphrase(self) -> str:
        """The keystore passphrase from passphrase_file or the passphrase_env variable."""
        if self.passphrase_file is not None:
            try:
                text = self.passphrase_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read passphrase file {self.passphrase_file}: {exc.strerror}") from None
            lines = text.splitlines()
            if not lines or not lines[0]:
                raise ConfigError(f"passphrase file {self.passphrase_file} is empty")
            return lines[0]
        value = os.environ.get(self.passphrase_env)
        if not value:
            raise ConfigError(f"no keystore passphrase: set {self.passphrase_env} (or passphrase_file)")
        return value


def load_settings(**flags: object) -> NodeSettings:
    """Settings from the environment, overridden by `flags` whose value is not None."""
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        return NodeSettings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'} ({_env_name(err['loc'])}): {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False))
        raise ConfigError(f"invalid settings: {problems}") from None


def _env_name(loc: tuple) -> str:
    return "TWINLEDGER_" + str(loc[0]).upper() if loc else "TWINLEDGER_*"
