"""The real `twinledger devnet` CLI as subprocesses, in a temporary home on a free port:
up/status/down/up keeps the deployment and the chain state; errors are one line."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.anvil import free_port
from ledger.client import LedgerClient
from ledger.deployment import Deployment, dev_account

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / ".venv" / "bin" / "twinledger"
RECIPIENT = "age1" + "q" * 58


def run(*args: str, home: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "twinledger.cli"]
    full_env = {**os.environ, "TWINLEDGER_HOME": str(home), **(env or {})}
    return subprocess.run([*command, "devnet", *args], capture_output=True, text=True, env=full_env, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.slow
def test_up_status_down_up_keeps_the_deployment_and_state(tmp_path):
    home, port = tmp_path / "home", free_port()
    try:
        first = run("up", "--port", str(port), home=home)
        assert first.returncode == 0, first.stderr
        manifest_path = home / "devnet" / "deployment.json"
        manifest = Deployment.load(manifest_path)
        url = f"http://127.0.0.1:{port}"
        admin = LedgerClient.connect(url, manifest_path, dev_account(0))
        org = dev_account(1).address
        admin.register_org(org, "acme", RECIPIENT, "http://127.0.0.1:9001")

        status = run("status", "--json", home=home)
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        assert info["running"] and info["healthy"] and info["url"] == url and info["chain_id"] == 31337
        assert info["contracts"]["asset_ledger"] == manifest.asset_ledger
        assert info["block"] == admin.block_number()

        again = run("up", home=home)  # already running: idempotent, same port remembered
        assert again.returncode == 0 and url in again.stdout

        down = run("down", home=home)
        assert down.returncode == 0 and "stopped" in down.stdout
        stopped = json.loads(run("status", "--json", home=home).stdout)
        assert stopped["running"] is False
        assert (home / "devnet" / "state.json").stat().st_size > 0

        restarted = run("up", home=home)
        assert restarted.returncode == 0, restarted.stderr
        assert Deployment.load(manifest_path) == manifest
        client = LedgerClient.connect(url, manifest_path)
        assert client.members() == [org]
        assert client.get_org(org).name == "acme"
    finally:
        run("down", home=home)


@pytest.mark.slow
def test_errors_are_one_clear_line(tmp_path):
    home, port = tmp_path / "home", free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        assert_one_line_error(run("up", "--port", str(port), home=home), f"port {port} is already in use")

    assert_one_line_error(run("up", "--port", str(free_port()), home=home,
                              env={"TWINLEDGER_ANVIL": str(tmp_path / "no-anvil")}), "Anvil not found")

    # a manifest that the chain does not hold (here: a fresh chain) is refused, Anvil stopped
    manifest_path = home / "devnet" / "deployment.json"
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps({
        "version": 1, "chain_id": 31337, "consortium": "0x" + "41" * 20, "asset_ledger": "0x" + "42" * 20,
        "audit_anchors": "0x" + "43" * 20, "deployment_block": 1, "admin": dev_account(0).address,
        "artifact_sha256": {}}))
    try:
        assert_one_line_error(run("up", "--port", str(free_port()), home=home), "does not match")
        assert json.loads(run("status", "--json", home=home).stdout)["running"] is False  # not left running
    finally:
        run("down", home=home)
