"""A consortium of REAL node processes on loopback: a devnet plus one `twinledger serve`
per organisation, for the pilot (services/pilot/run.py), the e2e tests and benchmarks.

    with Cluster(tmp_dir, ["builder", "plant"], anchor_every_seconds=1.0) as cluster:
        client = cluster.client("plant")                      # the SDK, in this process
        cluster.cli("asset", "ls", "--org", "plant", "--json")  # the CLI, as a subprocess

What starts, in order: a devnet under `root` (ledger.devnet.Devnet: Anvil in its own
process, contracts deployed) on a free port; the organisations' keys (in-process
`init_org` with the INSECURE fast KDF — devnet only — or, with cli_setup=True,
`twinledger org init --insecure-fast-kdf` subprocesses and the first org registered through
`twinledger org register`, to exercise the CLI); registration by the devnet admin (dev
account 0); gas money for each org's account (anvil_setBalance); then `twinledger serve`
for every org on a free port, each in its own process group, until its /readyz answers 200
(with `workers=N`, TWINLEDGER_WORKERS: until N distinct worker processes answered it).

Teardown (`stop()`, also after a failure half-way, on Ctrl-C and SIGTERM when the caller
turns those into exceptions): SIGTERM to each node's process group, SIGKILL after a grace
period, then the devnet is stopped. On Linux each node also gets PR_SET_PDEATHSIG, so a
node dies with the process that started it even if that one is killed with SIGKILL.
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

from ledger.anvil import die_with_parent, free_port

PASSPHRASE = "devnet passphrase (insecure fast kdf)"
READY_TIMEOUT = 90.0
CLI_TIMEOUT = 180.0
GAS_MONEY_WEI = 10**21


def twinledger_command() -> list[str]:
    """The `twinledger` console script beside this interpreter, else `python -m twinledger.cli`."""
    script = Path(sys.executable).with_name("twinledger")
    return [str(script)] if script.exists() else [sys.executable, "-m", "twinledger.cli"]


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
                 env: dict[str, str] | None = None, fast_register: bool = True, cli_setup: bool = False,
                 workers: int | None = None) -> None:
        self.root = Path(root)
        self.fast_register = fast_register
        self.cli_setup = cli_setup
        self.nodes = {name: OrgNode(name, free_port()) for name in names}
        self.devnet = None
        self.rpc_url = ""
        self.chain_id: int | None = None
        self.command = twinledger_command()
        base = {k: v for k, v in os.environ.items() if not k.startswith("TWINLEDGER_")}
        self.env = {**base, "TWINLEDGER_HOME": str(self.root), "TWINLEDGER_PASSPHRASE": PASSPHRASE,
                    "TWINLEDGER_ANCHOR_EVERY_SECONDS": str(anchor_every_seconds), "PYTHONUNBUFFERED": "1",
                    **(env or {})}
        if workers is not None:
            self.env["TWINLEDGER_WORKERS"] = str(workers)
        self.workers = int(self.env.get("TWINLEDGER_WORKERS", "1"))

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
        from api.keystore import init_org, load_org_public
        from ledger.client import LedgerClient
        from ledger.deployment import dev_account
        from ledger.devnet import Devnet

        self.root.mkdir(parents=True, exist_ok=True)
        self.devnet = Devnet(self.root, port=free_port(), tied_to_parent=True)
        status = self.devnet.up()
        self.rpc_url, self.chain_id = status.url or "", status.chain_id
        self.env["TWINLEDGER_RPC_URL"] = self.rpc_url
        if self.cli_setup:
            inits = [self._popen("org", "init", name, "--insecure-fast-kdf") for name in self.nodes]
            for name, proc in zip(self.nodes, inits):
                _out, err = proc.communicate(timeout=CLI_TIMEOUT)
                if proc.returncode != 0:
                    raise ClusterError(f"org init {name} failed: {err.strip()}")
        else:
            for name in self.nodes:
                init_org(self.root, name, PASSPHRASE, insecure_fast_kdf=True)
        admin = None
        for index, node in enumerate(self.nodes.values()):
            public = load_org_public(self.root, node.name)
            node.address, node.recipient = public.address, public.age_recipient
            if self.cli_setup and (index == 0 or not self.fast_register):
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

    def fund(self, address: str, wei: int = GAS_MONEY_WEI) -> None:
        """Give an org's account gas money (devnet only: Anvil's anvil_setBalance). Its node
        sends the org's transactions (createAsset, addVersion, grant, anchor) from it."""
        answer = httpx.post(self.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "anvil_setBalance",
                                                "params": [address, hex(wei)]}, timeout=10)
        if answer.status_code != 200 or "error" in answer.json():
            raise ClusterError(f"cannot fund {address}: {answer.text[:200]}")

    def serve(self, node: OrgNode) -> None:
        node.log_path = self.root / f"serve-{node.name}.log"
        with open(node.log_path, "ab") as log:
            node.proc = subprocess.Popen([*self.command, "serve", "--org", node.name, "--port", str(node.port)],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=die_with_parent)

    def wait_ready(self, node: OrgNode, timeout: float = READY_TIMEOUT) -> None:
        """Until /readyz answers 200 — from every worker process when there are several
        (each request on a new connection, so the kernel hands them to any worker)."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        ready_workers: set[str] = set()
        while time.monotonic() < deadline:
            if node.proc is not None and node.proc.poll() is not None:
                raise ClusterError(f"node {node.name} exited with {node.proc.returncode}:\n{self.log_tail(node)}")
            try:
                answer = httpx.get(f"{node.url}/readyz", timeout=2.0)
                if answer.status_code == 200:
                    ready_workers.add(answer.headers.get("x-twinledger-worker", "the node"))
                    if len(ready_workers) >= self.workers:
                        return
                    time.sleep(0.05)
                    continue
                last = answer.text[:300]
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.2)
        raise ClusterError(f"node {node.name} not ready after {timeout:.0f}s ({last}):\n{self.log_tail(node)}")

    def stop_node(self, node: OrgNode, grace: float = 10.0) -> None:
        proc, node.proc = node.proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # anything the node left in its group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc.poll() is None:
            proc.wait(timeout=5.0)

    def stop(self) -> None:
        """Stop every node and the devnet; safe to call twice or after a partial start."""
        for node in self.nodes.values():
            self.stop_node(node)
        if self.devnet is not None:
            try:
                self.devnet.down()
            finally:
                self.devnet = None

    def pids(self) -> list[int]:
        """Process ids this cluster started that are still running (nodes and Anvil)."""
        found = [n.proc.pid for n in self.nodes.values() if n.proc is not None and n.proc.poll() is None]
        if self.devnet is not None:
            record = self.devnet.status()
            if record.running and record.pid:
                found.append(record.pid)
        return found

    # -- using it ----------------------------------------------------------------------------

    def _popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([*self.command, *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                                preexec_fn=die_with_parent)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run `twinledger ARGS` against this cluster; ClusterError (with stderr) if check
        and it fails."""
        proc = subprocess.run([*self.command, *args], env=self.env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=CLI_TIMEOUT)
        if check and proc.returncode != 0:
            raise ClusterError(f"twinledger {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def client(self, name: str, **kwargs: Any):
        """The SDK client of org `name` (its keys, its node, the cluster's chain)."""
        from api.sdk import TwinLedgerClient

        return TwinLedgerClient.from_home(self.root, name, PASSPHRASE, node_url=self.nodes[name].url,
                                          rpc_url=self.rpc_url, **kwargs)

    def db_path(self, name: str) -> Path:
        return self.root / "orgs" / name / "node.db"

    def log_tail(self, node: OrgNode, lines: int = 40) -> str:
        if node.log_path is None or not node.log_path.exists():
            return "(no log)"
        return "\n".join(node.log_path.read_text(errors="replace").splitlines()[-lines:])


__all__ = ["Cluster", "ClusterError", "OrgNode", "PASSPHRASE", "twinledger_command"]
