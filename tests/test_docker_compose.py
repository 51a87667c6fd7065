"""Static validation of the production-shaped deployment in docker/ (no Docker engine on
these machines), plus real runs of its shell scripts: docker/init-org.sh against Anvil and
docker/postgres/10-org-databases.sh against the local PostgreSQL.

Every rule is a small checker returning the problems it finds; the real files must give
none, and modified copies must give exactly the planted problem (so each rule can fail).
"""
from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import re
import secrets
import shlex
import stat
import subprocess
import sys
import tomllib
from base64 import b64decode
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from api.settings import NodeSettings, load_settings
from tests.chain import anvil, deployment, dev_accounts, w3  # noqa: F401
from twinledger.cli import app as cli

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
NODE_IMAGE_DIR = "/opt/twinledger"  # WORKDIR of the Dockerfile's build stage
SETTINGS_VARS = {f"TWINLEDGER_{name.upper()}" for name in NodeSettings.model_fields}
TL_VAR = re.compile(r"\bTWINLEDGER_[A-Z0-9_]+")


def load_compose(text: str | None = None) -> dict:
    return yaml.safe_load(text if text is not None else (DOCKER / "compose.yml").read_text())


def dockerfile_text() -> str:
    return (DOCKER / "Dockerfile").read_text()


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        instr, _, args = full.partition(" ")
        out.append((instr.upper(), args.strip()))
    return out


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: str(v) for k, v in env.items()}


def is_node_image(service: dict) -> bool:
    return "build" in service


# --- images -----------------------------------------------------------------------------

# PostgreSQL (>= 10) versions are MAJOR.MINOR: there "17.6" is exact. Everything else
# needs MAJOR.MINOR.PATCH (a bare "3.11" or "17" floats to new releases).
EXACT_TAG = {"postgres": re.compile(r"\d+\.\d+(-[a-z0-9.]+)?")}
DEFAULT_EXACT_TAG = re.compile(r"v?\d+\.\d+\.\d+([-.+][A-Za-z0-9.-]+)?")


def image_problem(ref: str) -> str | None:
    if re.search(r"@sha256:[0-9a-f]{64}$", ref):
        return None
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"{ref}: no tag (means latest)"
    name, tag = last.split(":", 1)
    if not EXACT_TAG.get(name, DEFAULT_EXACT_TAG).fullmatch(tag):
        return f"{ref}: tag {tag!r} is not an exact version"
    return None


def image_refs(compose: dict, dockerfile: str) -> list[str]:
    stages = set()
    refs = []
    for instr, args in dockerfile_instructions(dockerfile):
        if instr == "FROM":
            parts = args.split()
            if parts[0] not in stages:
                refs.append(parts[0])
            if len(parts) == 3 and parts[1].upper() == "AS":
                stages.add(parts[2])
    return refs + [s["image"] for s in compose["services"].values() if "image" in s]


def test_every_image_is_pinned_to_an_exact_version():
    refs = image_refs(load_compose(), dockerfile_text())
    assert {"postgres:17.6-bookworm", "ipfs/kubo:v0.39.0", "python:3.11.14-slim-bookworm"} <= set(refs)
    assert [p for p in map(image_problem, refs) if p] == []


@pytest.mark.parametrize("ref", ["postgres:latest", "postgres:17", "python:3.11-slim", "ipfs/kubo",
                                 "ghcr.io/foundry-rs/foundry:nightly", "ipfs/kubo:v0.39", "localhost:5000/x"])
def test_unpinned_images_are_refused(ref):
    compose = load_compose()
    compose["services"]["kubo"]["image"] = ref
    problems = [p for p in map(image_problem, image_refs(compose, dockerfile_text())) if p]
    assert len(problems) == 1 and problems[0].startswith(ref)


def test_the_built_image_tag_is_the_project_version():
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    tags = {s["image"] for s in load_compose()["services"].values() if is_node_image(s)}
    assert tags == {f"twinledger-node:{version}"}


# --- TWINLEDGER_* settings --------------------------------------------------------------

def unknown_settings_vars(compose: dict, dockerfile: str, scripts: dict[str, str]) -> list[str]:
    """TWINLEDGER_* names passed (compose environment, Dockerfile ENV) or read (scripts)
    that are not NodeSettings fields."""
    found: list[str] = []
    for name, service in compose["services"].items():
        found += [f"{name}: {var}" for var in env_of(service) if var.startswith("TWINLEDGER_")]
    for instr, args in dockerfile_instructions(dockerfile):
        if instr == "ENV":
            found += [f"Dockerfile: {var}" for var in TL_VAR.findall(args)]
    for path, text in scripts.items():
        found += [f"{path}: {var}" for var in TL_VAR.findall(text)]
    return sorted({f for f in found if f.rsplit(": ", 1)[1] not in SETTINGS_VARS})


def scripts() -> dict[str, str]:
    return {str(p.relative_to(REPO)): p.read_text() for p in sorted(DOCKER.rglob("*.sh"))}


def test_every_twinledger_variable_is_a_node_setting():
    assert {"TWINLEDGER_DATABASE_URL", "TWINLEDGER_KUBO_URL", "TWINLEDGER_PASSPHRASE_FILE"} <= SETTINGS_VARS
    assert unknown_settings_vars(load_compose(), dockerfile_text(), scripts()) == []


@pytest.mark.parametrize("where", ["node_mapping", "job_list_form", "dockerfile_env", "script"])
def test_an_unknown_twinledger_variable_is_caught(where):
    compose, dockerfile, texts = copy.deepcopy(load_compose()), dockerfile_text(), scripts()
    if where == "node_mapping":
        compose["services"]["builder"]["environment"]["TWINLEDGER_DATABSE_URL"] = "postgresql://x"
        expected = "builder: TWINLEDGER_DATABSE_URL"
    elif where == "job_list_form":
        compose["services"]["deployer"]["environment"] = ["TWINLEDGER_RPC=http://chain:8545"]
        expected = "deployer: TWINLEDGER_RPC"
    elif where == "dockerfile_env":
        dockerfile = dockerfile.replace("TWINLEDGER_PORT=8700", "TWINLEDGER_PORT=8700 TWINLEDGER_BIND=0.0.0.0")
        expected = "Dockerfile: TWINLEDGER_BIND"
    else:
        texts["docker/init-org.sh"] += '\necho "$TWINLEDGER_ENDPOINT"\n'
        expected = "docker/init-org.sh: TWINLEDGER_ENDPOINT"
    assert unknown_settings_vars(compose, dockerfile, texts) == [expected]


def test_each_services_settings_validate_and_agree_with_the_deployer(monkeypatch):
    compose = load_compose()
    deployer = compose["services"]["deployer"]["command"]
    rpc, manifest = deployer[deployer.index("--rpc") + 1], deployer[deployer.index("--manifest") + 1]
    node_orgs = []
    for name, service in compose["services"].items():
        env = {k: v for k, v in env_of(service).items() if k.startswith("TWINLEDGER_")}
        if not env:
            continue
        for var in [v for v in os.environ if v.startswith("TWINLEDGER_")]:
            monkeypatch.delenv(var)
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        settings = load_settings()  # ConfigError names any bad value
        assert (settings.rpc_url, str(settings.manifest)) == (rpc, manifest), name
        if service.get("command") == ["serve"]:
            node_orgs.append(settings.org)
            assert settings.store == "kubo" and settings.host == "0.0.0.0"
            assert settings.public_url == f"http://{name}:{settings.port}" and name == settings.org
            assert settings.database_url.startswith(f"postgresql://{name}@postgres:5432/{name}?passfile=")
    assert sorted(node_orgs) == ["auditor", "builder", "maintenance", "plant"]
    postgres = compose["services"]["postgres"]
    assert sorted(env_of(postgres)["ORG_DATABASES"].split()) == sorted(node_orgs)
    assert {f"{org}_db_password" for org in node_orgs} <= set(postgres["secrets"])


# --- secrets ----------------------------------------------------------------------------

def secret_targets(service: dict) -> set[str]:
    return {s if isinstance(s, str) else s.get("target", s["source"]) for s in service.get("secrets", [])}


def secret_problems(compose: dict) -> list[str]:
    """/run/secrets paths used but not mounted, undeclared sources, inline secret values."""
    problems = []
    declared = set(compose.get("secrets", {}))
    for name, service in compose["services"].items():
        sources = {s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])}
        problems += [f"{name}: undeclared secret {s}" for s in sorted(sources - declared)]
        used = json.dumps([service.get("command"), service.get("environment")])
        for target in sorted(set(re.findall(r"/run/secrets/(\w+)", used)) - secret_targets(service)):
            problems.append(f"{name}: /run/secrets/{target} is not mounted")
        for var, value in env_of(service).items():
            if re.search(r"PASS|SECRET|TOKEN|PRIVATE|_KEY", var) and not var.endswith(("_FILE", "_ENV")) and value:
                problems.append(f"{name}: {var} holds a secret inline")
    return problems


def test_secrets_are_mounted_files_never_inline_values():
    compose = load_compose()
    assert secret_problems(compose) == []
    init_uses = {"org_passphrase", "admin_keystore", "admin_passphrase"}  # what init-org.sh reads
    for name, service in compose["services"].items():
        if service.get("entrypoint") == [f"{NODE_IMAGE_DIR}/docker/init-org.sh"]:
            assert secret_targets(service) == init_uses, name
    broken = copy.deepcopy(compose)
    broken["services"]["builder"]["environment"]["TWINLEDGER_PASSPHRASE_FILE"] = "/run/secrets/other"
    broken["services"]["plant"]["environment"]["POSTGRES_PASSWORD"] = "hunter2"
    assert secret_problems(broken) == ["builder: /run/secrets/other is not mounted",
                                       "plant: POSTGRES_PASSWORD holds a secret inline"]


def test_make_secrets_writes_exactly_the_files_compose_mounts(tmp_path):
    sys.path.insert(0, str(DOCKER))
    try:
        import make_secrets
    finally:
        sys.path.remove(str(DOCKER))
    from eth_account import Account

    from ledger.deployment import dev_account

    out = tmp_path / "secrets"
    address = make_secrets.make_secrets(out, insecure_fast_kdf=True)
    declared = {Path(s["file"]).name for s in load_compose()["secrets"].values()}
    assert {p.name for p in out.iterdir()} == declared == set(make_secrets.secret_files())
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    keystore = json.loads((out / "admin_keystore.json").read_text())
    passphrase = (out / "admin_passphrase").read_text().splitlines()[0]
    assert Account.from_key(Account.decrypt(keystore, passphrase)).address == address == dev_account(0).address
    for org in make_secrets.ORGS:
        password = (out / f"{org}_db_password").read_text().strip()
        assert (out / f"{org}_pgpass").read_text() == f"postgres:5432:{org}:{org}:{password}\n"
        assert stat.S_IMODE((out / f"{org}_pgpass").stat().st_mode) == 0o600  # libpq ignores looser modes
    with pytest.raises(SystemExit, match="already holds"):
        make_secrets.make_secrets(out, insecure_fast_kdf=True)


# --- services, health and dependencies --------------------------------------------------

def one_shots(compose: dict) -> set[str]:
    return {dep for s in compose["services"].values() for dep, cond in (s.get("depends_on") or {}).items()
            if cond.get("condition") == "service_completed_successfully"}


def health_problems(compose: dict) -> list[str]:
    problems = []
    jobs = one_shots(compose)
    for name, service in compose["services"].items():
        if name in jobs:
            if service.get("restart") != "no":
                problems.append(f"{name}: one-shot job must not restart")
            continue
        check = service.get("healthcheck") or {}
        if check.get("disable") or not check.get("test"):
            problems.append(f"{name}: long-running service without a healthcheck")
    return problems


def dependency_problems(compose: dict) -> list[str]:
    services, jobs = compose["services"], one_shots(compose)
    problems = []
    for name, service in services.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            condition = cond.get("condition")
            if dep not in services:
                problems.append(f"{name}: depends on unknown service {dep}")
            elif condition != ("service_completed_successfully" if dep in jobs else "service_healthy"):
                problems.append(f"{name}: {dep} with condition {condition}")
    return problems


def test_long_running_services_have_healthchecks_and_jobs_run_once():
    compose = load_compose()
    assert one_shots(compose) == {"deployer", "init-builder", "init-plant", "init-maintenance", "init-auditor"}
    assert health_problems(compose) == []
    broken = copy.deepcopy(compose)
    del broken["services"]["kubo"]["healthcheck"]
    broken["services"]["sync-maintenance"]["healthcheck"] = {"disable": True}
    broken["services"]["deployer"]["restart"] = "unless-stopped"
    assert sorted(health_problems(broken)) == ["deployer: one-shot job must not restart",
                                               "kubo: long-running service without a healthcheck",
                                               "sync-maintenance: long-running service without a healthcheck"]


def test_dependencies_exist_use_the_right_condition_and_form_no_cycle():
    compose = load_compose()
    assert dependency_problems(compose) == []
    graph = {n: set(s.get("depends_on") or {}) for n, s in compose["services"].items()}
    order: list[str] = []
    while graph:  # Kahn: a cycle would leave nodes that never become free
        free = sorted(n for n, deps in graph.items() if not deps - set(order))
        assert free, f"dependency cycle among {sorted(graph)}"
        order += free
        graph = {n: d for n, d in graph.items() if n not in free}
    assert order.index("deployer") < order.index("init-builder") < order.index("builder")
    broken = copy.deepcopy(compose)
    broken["services"]["builder"]["depends_on"]["ledger"] = {"condition": "service_healthy"}
    broken["services"]["plant"]["depends_on"]["init-plant"] = {"condition": "service_started"}
    assert dependency_problems(broken) == ["builder: depends on unknown service ledger",
                                           "plant: init-plant with condition service_started"]


def test_internal_services_publish_nothing_and_sit_on_an_internal_network():
    compose = load_compose()
    internal = {n for n, net in compose["networks"].items() if (net or {}).get("internal")}
    for name in ("chain", "kubo", "postgres"):
        service = compose["services"][name]
        assert "ports" not in service and set(service["networks"]) <= internal, name
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


# --- the Dockerfile ---------------------------------------------------------------------

def test_dockerfile_pins_its_base_installs_from_the_lock_and_runs_unprivileged():
    steps = dockerfile_instructions(dockerfile_text())
    froms = [a.split()[0] for i, a in steps if i == "FROM"]
    assert froms and all(image_problem(ref) is None for ref in froms)
    copies = [a.split() for i, a in steps if i == "COPY" and not a.startswith("--from")]
    lock_dest = next(dest for *srcs, dest in copies if srcs == ["requirements.lock"])
    runs = [a for i, a in steps if i == "RUN"]
    assert any(re.search(rf"pip install -r {re.escape(lock_dest)}(\s|$)", r) for r in runs)
    assert any("--no-deps" in r and "-e ." in r for r in runs)  # the project adds no unlocked dependency
    for *srcs, _ in copies:  # every context path exists (README.md* is optional)
        assert all(s.endswith("*") or (REPO / s).exists() for s in srcs), srcs
    user = [a for i, a in steps if i == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    assert [a for i, a in steps if i == "ENTRYPOINT"][-1] == '["twinledger"]'
    health = [a for i, a in steps if i == "HEALTHCHECK"][-1]
    assert "/healthz" in health
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "docker/secrets/" in ignored and ".venv/" in ignored and "node_modules/" in ignored
    init = DOCKER / "init-org.sh"
    assert os.access(init, os.X_OK) and ["docker/init-org.sh", "./docker/init-org.sh"] in copies


# --- every `twinledger ...` command line parses with the real CLI ------------------------

def _shell_invocations(text: str) -> list[list[str]]:
    """`twinledger ...` argument lists in a shell script (redirections and operators dropped)."""
    text = text.replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for match in re.finditer(r"(?:^\s*|[;&|(]\s*|\b(?:if|then|else|do|!)\s+)twinledger\s", line):
            segment = re.sub(r"\s\d?>{1,2}&?[\w/.-]*", " ", line[match.end():])
            lexer = shlex.shlex(segment, posix=True, punctuation_chars=";&|()")
            lexer.whitespace_split = True
            args = []
            for token in lexer:
                if set(token) <= set(";&|()"):
                    break
                args.append(token)
            found.append(args)
    return found


def twinledger_invocations() -> list[tuple[str, list[str], dict[str, str]]]:
    compose, steps = load_compose(), dockerfile_instructions(dockerfile_text())
    default_cmd = json.loads([a for i, a in steps if i == "CMD"][-1])
    out = [("Dockerfile CMD", default_cmd, {})]
    out += [("Dockerfile RUN", args, {}) for i, a in steps if i == "RUN" for args in _shell_invocations(a)]
    for name, service in compose["services"].items():
        if not is_node_image(service):
            continue
        entrypoint = service.get("entrypoint", ["twinledger"])
        if entrypoint == ["twinledger"]:
            out.append((name, service.get("command", default_cmd), env_of(service)))
            continue
        script = REPO / entrypoint[0].removeprefix(NODE_IMAGE_DIR + "/")
        for args in _shell_invocations(script.read_text()):
            out.append((f"{name} ({script.name})", args, env_of(service)))
    return out


def _expand(arg: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), "placeholder"), arg)


INVOCATIONS = twinledger_invocations()


@pytest.mark.parametrize("where,args,env", INVOCATIONS,
                         ids=[f"{w}: {' '.join(a[:3])}" for w, a, _ in INVOCATIONS])
def test_every_twinledger_command_line_parses(where, args, env, monkeypatch):
    for var in [v for v in os.environ if v.startswith("TWINLEDGER_")]:
        monkeypatch.delenv(var)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    args = [_expand(a, env) for a in args]
    command, path = typer.main.get_command(cli), []
    while hasattr(command, "commands") and len(args) > len(path) and args[len(path)] in command.commands:
        name = args[len(path)]
        command = command.commands[name]
        path.append(name)
    helped = CliRunner().invoke(cli, [*path, "--help"])
    assert helped.exit_code == 0 and "Usage:" in helped.output, helped.output
    rest = list(args[len(path):])
    if "--help" not in rest:  # --help exits; it was checked just above
        command.make_context(" ".join(["twinledger", *path]), rest)  # raises on a bad option or value


def test_the_command_line_check_catches_a_misspelt_option(monkeypatch):
    command = typer.main.get_command(cli).commands["chain"].commands["deploy"]
    with pytest.raises(Exception, match="--admin-keystor"):
        command.make_context("deploy", ["--rpc", "http://chain:8545", "--admin-keystor", "/x", "--manifest", "/m"])
    assert ["org", "register", "$TWINLEDGER_ORG", "--endpoint", "$TWINLEDGER_PUBLIC_URL"] == \
        _shell_invocations('if out="$(twinledger org register "$TWINLEDGER_ORG" --endpoint '
                           '"$TWINLEDGER_PUBLIC_URL" 2>&1)"; then')[0]


# --- the scripts, run for real -----------------------------------------------------------

def _run_init_org(env: dict[str, str]) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # the venv's `twinledger`
    return subprocess.run(["sh", str(DOCKER / "init-org.sh")], capture_output=True, text=True, timeout=300,
                          env={"PATH": path, "HOME": env["TWINLEDGER_HOME"], **env})


@pytest.mark.slow
def test_init_org_script_initialises_and_registers_once_then_is_idempotent(tmp_path, anvil, deployment,
                                                                           dev_accounts):
    from eth_account import Account

    from api.keystore import load_org_keys, load_org_public
    from ledger.client import LedgerClient

    secrets_dir = tmp_path / "run-secrets"
    secrets_dir.mkdir()
    org_pass, admin_pass = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    (secrets_dir / "org_passphrase").write_text(org_pass + "\n")
    (secrets_dir / "admin_passphrase").write_text(admin_pass + "\n")
    (secrets_dir / "admin_keystore").write_text(json.dumps(
        Account.encrypt(dev_accounts[0].key, admin_pass, kdf="scrypt", iterations=2**10)))  # cheap: test only
    deployment.save(tmp_path / "manifest" / "deployment.json")
    env = {"TWINLEDGER_HOME": str(tmp_path / "home"), "TWINLEDGER_ORG": "plant",
           "TWINLEDGER_PUBLIC_URL": "http://plant:8700", "TWINLEDGER_RPC_URL": anvil.url,
           "TWINLEDGER_MANIFEST": str(tmp_path / "manifest" / "deployment.json"), "SECRETS_DIR": str(secrets_dir)}

    first = _run_init_org(env)
    assert first.returncode == 0, first.stderr
    assert "created organisation plant" in first.stdout and "registered plant" in first.stdout
    public = load_org_public(tmp_path / "home", "plant")
    assert load_org_keys(tmp_path / "home", "plant", org_pass).address == public.address
    org = LedgerClient.connect(anvil.url, tmp_path / "manifest" / "deployment.json").get_org(public.address)
    assert (org.name, org.endpoint, org.age_recipient, org.active) == \
        ("plant", "http://plant:8700", public.age_recipient, True)
    assert org_pass not in first.stdout + first.stderr and admin_pass not in first.stdout + first.stderr

    again = _run_init_org(env)
    assert again.returncode == 0, again.stderr
    assert "already initialised" in again.stdout and "already registered" in again.stdout
    assert load_org_public(tmp_path / "home", "plant") == public  # keys kept, not regenerated

    (secrets_dir / "admin_passphrase").write_text("wrong\n")
    failed = _run_init_org(env)  # any other registration error must fail the job
    assert failed.returncode == 1 and "cannot open admin keystore" in failed.stderr


def _scram_matches(rolpassword: str, password: str) -> bool:
    """Does a PostgreSQL SCRAM-SHA-256 verifier belong to `password`? (RFC 5802 StoredKey)"""
    method, rest = rolpassword.split("$", 1)
    iterations_salt, keys = rest.split("$", 1)
    iterations, salt = iterations_salt.split(":")
    stored_key = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return method == "SCRAM-SHA-256" and hashlib.sha256(client_key).digest() == b64decode(stored_key)


@pytest.mark.postgres
def test_postgres_init_script_makes_one_private_database_per_org(tmp_path):
    import psycopg

    from tests.db import PG_ADMIN_DSN, _pg_available

    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_DSN} in CI")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_DSN}")
    info = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    suffix = secrets.token_hex(4)
    orgs = [f"tl_{suffix}_a", f"tl-{suffix}-b"]
    passwords = {org: secrets.token_urlsafe(24) for org in orgs}
    for org, password in passwords.items():
        (tmp_path / f"{org}_db_password").write_text(password + "\n")
    env = {**os.environ, "ORG_DATABASES": " ".join(orgs), "SECRETS_DIR": str(tmp_path),
           "POSTGRES_USER": info.get("user", "postgres"), "POSTGRES_DB": info.get("dbname", "postgres"),
           "PGHOST": info.get("host", "127.0.0.1"), "PGPORT": str(info.get("port", 5432))}
    script = DOCKER / "postgres" / "10-org-databases.sh"
    try:
        for _ in range(2):  # idempotent
            run = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=60)
            assert run.returncode == 0, run.stderr
        assert passwords[orgs[0]] not in run.stdout + run.stderr
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            for org in orgs:
                owner, = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                                      (org,)).fetchone()
                verifier, = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (org,)).fetchone()
                assert owner == org and _scram_matches(verifier, passwords[org])
                assert not _scram_matches(verifier, passwords[org] + "x")
        base = {k: v for k, v in info.items() if k not in ("user", "dbname", "password")}
        with psycopg.connect(**base, user=orgs[0], dbname=orgs[0]) as own:
            assert own.execute("SELECT current_user").fetchone() == (orgs[0],)
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            psycopg.connect(**base, user=orgs[0], dbname=orgs[1]).close()
        bad = subprocess.run(["sh", str(script)], env={**env, "ORG_DATABASES": "x;drop"}, capture_output=True,
                             text=True, timeout=60)
        assert bad.returncode == 1 and "bad org name" in bad.stderr
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            for org in orgs:
                conn.execute(f'DROP DATABASE IF EXISTS "{org}" WITH (FORCE)')
                conn.execute(f'DROP ROLE IF EXISTS "{org}"')


def test_the_sync_healthcheck_is_healthy_exactly_while_a_worker_holds_its_directory(tmp_path):
    from services.sync._layout import SyncDir

    test = load_compose()["services"]["sync-maintenance"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    code = test[3].replace("/data/sync", str(tmp_path / "sync"))

    def probe() -> int:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30).returncode

    assert probe() == 1  # no worker has ever run
    worker = SyncDir(tmp_path / "sync")
    worker.open()  # what `twinledger sync --into DIR` does at start: mkdir + flock
    try:
        assert probe() == 0
    finally:
        worker.close()
    assert probe() == 1  # the worker is gone, its lock free
