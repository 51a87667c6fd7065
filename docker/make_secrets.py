"""Create the docker secrets that docker/compose.yml mounts, in docker/secrets/ (mode 0700).

    .venv/bin/python docker/make_secrets.py [--dir docker/secrets] [--admin anvil-dev|new]

Files (one value each, never committed — .dockerignore and .gitignore keep them out):

    admin_keystore.json      V3 keystore (scrypt n=2**18) of the consortium admin
    admin_passphrase         its passphrase
    postgres_password        the PostgreSQL superuser's password
    <org>_passphrase         each org's keystore passphrase          (read by init-<org>, <org>)
    <org>_db_password        each org's database role password       (read by postgres' init script)
    <org>_pgpass             the same password as a libpq passfile   (read by <org> via
                             TWINLEDGER_DATABASE_URL=...?passfile=/run/secrets/org_pgpass)

--admin anvil-dev (default) encrypts Anvil's development account 0 — its key is PUBLIC;
only for the Anvil stand-in chain, which funds it. --admin new makes a fresh key (fund
its address on your chain before `docker compose up`).

Docker Compose bind-mounts file secrets with their host owner and mode (it cannot remap
them). Values are 0444 inside the 0700 directory; libpq ignores a passfile readable by
group or others, so the <org>_pgpass files are 0600 and must belong to uid 10001 (the
node image's user): run this as root, or `sudo chown 10001:10001 docker/secrets/*_pgpass`.
Existing files are never overwritten.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path

ORGS = ("builder", "plant", "maintenance", "auditor")
NODE_UID = 10001
PG_HOST, PG_PORT = "postgres", 5432


def secret_files(orgs: tuple[str, ...] = ORGS) -> list[str]:
    """The file names this script writes (docker/compose.yml's `secrets:` point at them)."""
    names = ["admin_keystore.json", "admin_passphrase", "postgres_password"]
    for org in orgs:
        names += [f"{org}_passphrase", f"{org}_db_password", f"{org}_pgpass"]
    return names


def _admin_account(kind: str):
    from eth_account import Account

    if kind == "new":
        return Account.create()
    from ledger.deployment import dev_account  # Anvil's public development mnemonic

    return dev_account(0)


def make_secrets(directory: Path, *, admin: str = "anvil-dev", orgs: tuple[str, ...] = ORGS,
                 insecure_fast_kdf: bool = False) -> str:
    """Write every secret file; returns the admin address. Refuses to overwrite."""
    from eth_account import Account

    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    existing = [name for name in secret_files(orgs) if (directory / name).exists()]
    if existing:
        raise SystemExit(f"error: {directory} already holds {', '.join(existing)}; remove them to start over")
    values: dict[str, tuple[str, int]] = {}
    account = _admin_account(admin)
    admin_pass = secrets.token_urlsafe(32)
    # n=2**10 only for tests (INSECURE); the default n=2**18 is what a real admin key needs.
    keystore = Account.encrypt(account.key, admin_pass, kdf="scrypt", iterations=2**10 if insecure_fast_kdf else None)
    values["admin_keystore.json"] = (json.dumps(keystore), 0o444)
    values["admin_passphrase"] = (admin_pass + "\n", 0o444)
    values["postgres_password"] = (secrets.token_urlsafe(32) + "\n", 0o444)
    for org in orgs:
        db_password = secrets.token_urlsafe(32)  # URL-safe alphabet: no ':' or '\\' to escape in a passfile
        values[f"{org}_passphrase"] = (secrets.token_urlsafe(32) + "\n", 0o444)
        values[f"{org}_db_password"] = (db_password + "\n", 0o444)
        values[f"{org}_pgpass"] = (f"{PG_HOST}:{PG_PORT}:{org}:{org}:{db_password}\n", 0o600)
    for name, (text, mode) in values.items():
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        path.chmod(mode)
        if name.endswith("_pgpass") and os.geteuid() == 0:
            os.chown(path, NODE_UID, NODE_UID)
    return account.address


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(__file__).resolve().parent / "secrets")
    parser.add_argument("--admin", choices=("anvil-dev", "new"), default="anvil-dev")
    parser.add_argument("--insecure-fast-kdf", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    address = make_secrets(args.dir, admin=args.admin, insecure_fast_kdf=args.insecure_fast_kdf)
    print(f"secrets written to {args.dir}; consortium admin {address}")
    if args.admin == "anvil-dev":
        print("warning: the admin is Anvil's public development account 0 — for the Anvil stand-in chain only",
              file=sys.stderr)
    else:
        print(f"fund {address} on your chain before `docker compose up`", file=sys.stderr)
    if os.geteuid() != 0:
        print(f"now run: sudo chown {NODE_UID}:{NODE_UID} {args.dir}/*_pgpass  (libpq needs its passfile 0600, "
              "owned by the node's user)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for ledger.deployment
    raise SystemExit(main())
