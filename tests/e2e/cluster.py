"""A multi-node TwinLedger cluster of REAL processes on loopback, for the e2e tests and the
key-release benchmark.

    with Cluster(tmp_dir, ["alpha", "beta", "gamma"]) as cluster:
        cluster.cli("asset", "put", str(path), "--org", "alpha", "--name", "x", "--kind", "model", "--json")
        client = cluster.client("beta")                       # the SDK, in this process

What starts, in order: a devnet (Anvil + contracts, ledger.devnet.Devnet — Anvil runs as
its own process), `twinledger org init --insecure-fast-kdf` for every org (in parallel),
`twinledger org register --endpoint http://127.0.0.1:PORT` for the first org (the same
registration is done in-process for the others unless fast_register=False: each CLI start
costs ~2 s of imports), gas money for each org's account (anvil_setBalance), then `twinledger serve --org X --port P` for every org,
each in its own process group, until its /readyz answers 200.

Teardown (also after a failure half-way): SIGTERM to each node's process group, SIGKILL
after a grace period, then the devnet is stopped — no process outlives the cluster.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ledger.anvil import free_port

REPO = Path(__file__).resolve().parents[2]
TWINLEDGER = [str(REPO / ".venv" / "bin" / "twinledger")] if (REPO / ".venv" / "bin" / "twinledger").exists() \
    else [sys.executable, "-m", "twinledger.cli"]
PASSPHRASE = "e2e passphrase (insecure fast kdf)"
READY_TIMEOUT = 90.0
CLI_TIMEOUT = 180.0


class ClusterError(RuntimeError):
    """The cluster could not be started (the message carries the failing log's tail)."""


@dataclass
class OrgNode:
    name: str
    port: int
    address: str = ""
    recipient: str = ""
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Cluster:
    """A devnet plus one `twinledger serve` per org under `root` (the TWINLEDGER_HOME)."""

    def __init__(self, root: Path, names: Sequence[str], *, anchor_every_seconds: float = 1.0,
                 env: dict[str, str] | None = None, fast_register: bool = True) -> None:
        self.root = Path(root)
        self.fast_register = fast_register
        self.nodes = {name: OrgNode(name, free_port()) for name in names}
        self.devnet = None
        self.rpc_url = ""
        base = {k: v for k, v in os.environ.items() if not k.startswith("TWINLEDGER_")}
        self.env = {**base, "TWINLEDGER_HOME": str(self.root), "TWINLEDGER_PASSPHRASE": PASSPHRASE,
                    "TWINLEDGER_ANCHOR_EVERY_SECONDS": str(anchor_every_seconds), "PYTHONUNBUFFERED": "1",
                    **(env or {})}

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> "Cluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        from api.keystore import load_org_public
        from ledger.client import LedgerClient
        from ledger.deployment import dev_account
        from ledger.devnet import Devnet

        self.root.mkdir(parents=True, exist_ok=True)
        self.devnet = Devnet(self.root, port=free_port())
        status = self.devnet.up()
        self.rpc_url = status.url
        self.env["TWINLEDGER_RPC_URL"] = self.rpc_url
        inits = [self._popen("org", "init", name, "--insecure-fast-kdf") for name in self.nodes]
        for name, proc in zip(self.nodes, inits):
            out, err = proc.communicate(timeout=CLI_TIMEOUT)
            if proc.returncode != 0:
                raise ClusterError(f"org init {name} failed: {err.strip()}")
        admin = None
        for index, node in enumerate(self.nodes.values()):
            public = load_org_public(self.root, node.name)
            node.address, node.recipient = public.address, public.age_recipient
            if index == 0 or not self.fast_register:
                self.cli("org", "register", node.name, "--endpoint", node.url)
            else:  # the same transaction in-process: saves a CLI start (~2 s of imports) per org
                admin = admin or LedgerClient.connect(self.rpc_url, self.root / "devnet" / "deployment.json",
                                                      dev_account(0))
                admin.register_org(node.address, node.name, node.recipient, node.url)
            self.fund(node.address)
        for node in self.nodes.values():
            self.serve(node)
        for node in self.nodes.values():
            self.wait_ready(node)

    def fund(self, address: str, wei: int = 10**21) -> None:
        """Give an org's account gas money (devnet only: Anvil's anvil_setBalance). Its node
        sends the org's transactions (createAsset, addVersion, grant, anchor) from it."""
        answer = httpx.post(self.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "anvil_setBalance",
                                                "params": [address, hex(wei)]}, timeout=10)
        if answer.status_code != 200 or "error" in answer.json():
            raise ClusterError(f"cannot fund {address}: {answer.text[:200]}")

    def serve(self, node: OrgNode) -> None:
        node.log_path = self.root / f"serve-{node.name}.log"
        log = open(node.log_path, "ab")
        try:
            node.proc = subprocess.Popen([*TWINLEDGER, "serve", "--org", node.name, "--port", str(node.port)],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        finally:
            log.close()

    def wait_ready(self, node: OrgNode, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if node.proc is not None and node.proc.poll() is not None:
                raise ClusterError(f"node {node.name} exited with {node.proc.returncode}:\n{self.log_tail(node)}")
            try:
                answer = httpx.get(f"{node.url}/readyz", timeout=2.0)
                if answer.status_code == 200:
                    return
                last = answer.text[:300]
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.2)
        raise ClusterError(f"node {node.name} not ready after {timeout:.0f}s ({last}):\n{self.log_tail(node)}")

    def stop_node(self, node: OrgNode, grace: float = 10.0) -> None:
        proc, node.proc = node.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # anything the node left in its group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        for node in self.nodes.values():
            self.stop_node(node)
        if self.devnet is not None:
            try:
                self.devnet.down()
            finally:
                self.devnet = None

    # -- using it ----------------------------------------------------------------------------

    def _popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([*TWINLEDGER, *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, start_new_session=True)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run `twinledger ARGS` against this cluster; CalledProcessError (with stderr) if
        check and it fails."""
        proc = subprocess.run([*TWINLEDGER, *args], env=self.env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=CLI_TIMEOUT)
        if check and proc.returncode != 0:
            raise AssertionError(f"twinledger {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def client(self, name: str, **kwargs: Any):
        from api.sdk import TwinLedgerClient

        return TwinLedgerClient.from_home(self.root, name, PASSPHRASE, node_url=self.nodes[name].url,
                                          rpc_url=self.rpc_url, **kwargs)

    def db_path(self, name: str) -> Path:
        return self.root / "orgs" / name / "node.db"

    def log_tail(self, node: OrgNode, lines: int = 40) -> str:
        if node.log_path is None or not node.log_path.exists():
            return "(no log)"
        return "\n".join(node.log_path.read_text(errors="replace").splitlines()[-lines:])
