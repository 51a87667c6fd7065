"""Run a pinned Anvil (npm `@foundry-rs/anvil-linux-amd64`) as a child process.

Anvil is started from node_modules, never downloaded. `--state FILE` makes it load the
chain from FILE at start and dump it there on a graceful stop (SIGTERM), so a devnet
survives restarts.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ledger.errors import DevnetError

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CHAIN_ID = 31337
# Anvil's well-known development mnemonic ("test test ... junk"): devnet only.
DEV_MNEMONIC = "test test test test test test test test test test test junk"


def anvil_binary() -> Path:
    """The Anvil executable shipped in the npm package; a clear error if missing."""
    override = os.environ.get("TWINLEDGER_ANVIL")
    if override:
        path = Path(override)
    else:
        path = REPO / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
    if not path.is_file():
        found = shutil.which("anvil")
        if found and not override:
            return Path(found)
        raise DevnetError(f"Anvil not found at {path}: run `make setup` (npm ci installs @foundry-rs/anvil)")
    return path


def die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGTERM this child when the process that started it dies
    (PR_SET_PDEATHSIG), so a killed test run or pilot leaves no Anvil behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux/glibc: best effort only
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def rpc_chain_id(url: str, timeout: float = 1.0) -> int | None:
    """eth_chainId of the node at `url`, or None if it does not answer."""
    try:
        r = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=timeout)
        return int(r.json()["result"], 16)
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


@dataclass
class AnvilProcess:
    """A running Anvil child. Use as a context manager or call stop()."""

    port: int
    host: str = "127.0.0.1"
    state_file: Path | None = None
    chain_id: int = DEFAULT_CHAIN_ID
    accounts: int = 10
    block_time: float | None = None
    log_file: Path | None = None
    # Tests and the pilot set this: Anvil then dies with its parent. `devnet up` leaves it
    # False, because there Anvil must outlive the command that started it.
    tied_to_parent: bool = False
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> "AnvilProcess":
        if port_in_use(self.port, self.host):
            raise DevnetError(f"port {self.port} is already in use; choose another with --port")
        cmd = [
            str(anvil_binary()), "--host", self.host, "--port", str(self.port),
            "--chain-id", str(self.chain_id), "--accounts", str(self.accounts),
            "--mnemonic", DEV_MNEMONIC, "--silent",
        ]
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            cmd += ["--state", str(self.state_file)]
        if self.block_time:
            cmd += ["--block-time", str(self.block_time)]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True,
                                         preexec_fn=die_with_parent if self.tied_to_parent else None)
        finally:
            if self.log_file:
                out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DevnetError(f"Anvil exited at start with code {self.proc.returncode} (see {self.log_file})")
            if rpc_chain_id(self.url, timeout=0.5) == self.chain_id:
                return self
            time.sleep(0.05)
        self.stop()
        raise DevnetError(f"Anvil did not answer on {self.url} within {timeout:.0f}s")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (Anvil dumps --state), then SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self) -> "AnvilProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
