"""A local devnet: a detached Anvil whose chain persists in `<home>/devnet/state.json`,
with the contracts deployed once and described by `<home>/devnet/deployment.json`.

Files in `<home>/devnet/`:
    state.json        Anvil's --state (loaded at start, dumped on SIGTERM)
    deployment.json   the deployment manifest (ledger.deployment.Deployment)
    anvil.pid         {"pid", "host", "port"} of the running Anvil (removed by down())
    devnet.json       {"host", "port"} last used, so `up` without --port reuses it
    anvil.log         Anvil's output

Anvil runs in its own session, so `up()` returns and `down()`/`status()` work from any
other process through the pid file. web3 (slow to import: it pulls in py_ecc's BLS
curves) is imported only by the code paths that talk to a running chain, so `down` and
`status` of a stopped devnet stay quick.
"""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ledger.anvil import AnvilProcess, anvil_binary, port_in_use, rpc_chain_id
from ledger.errors import DeploymentError, DevnetError

DEFAULT_PORT = 8545


@dataclass(frozen=True)
class DevnetStatus:
    home: str
    running: bool
    healthy: bool  # answers RPC and holds the manifest's deployment
    url: str | None = None
    pid: int | None = None
    chain_id: int | None = None
    block: int | None = None
    contracts: dict[str, str] = field(default_factory=dict)
    problem: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DevnetError(f"{path} is corrupt ({exc}); remove it") from None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    """True if `pid` runs (a zombie child of ours counts as gone, and is reaped)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _is_anvil(pid: int) -> bool:
    try:
        return b"anvil" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid file


class Devnet:
    """The devnet under `home` (its files live in `home/devnet/`)."""

    def __init__(self, home: Path, port: int | None = DEFAULT_PORT, host: str = "127.0.0.1",
                 *, tied_to_parent: bool = False) -> None:
        self.tied_to_parent = tied_to_parent  # Anvil dies with this process (pilot, tests)
        self.home = Path(home).expanduser()
        self.dir = self.home / "devnet"
        self.state_file = self.dir / "state.json"
        self.manifest_path = self.dir / "deployment.json"
        self.pid_file = self.dir / "anvil.pid"
        self.config_file = self.dir / "devnet.json"
        self.log_file = self.dir / "anvil.log"
        self.host = host
        if port is None:
            port = (_read_json(self.config_file) or {}).get("port", DEFAULT_PORT)
        self.port = int(port)

    # -- process bookkeeping -----------------------------------------------------------

    def _running(self) -> dict | None:
        """The pid record of a live Anvil, or None (a stale pid file is removed)."""
        record = _read_json(self.pid_file)
        if record is None:
            return None
        if _alive(record["pid"]) and _is_anvil(record["pid"]):
            return record
        self.pid_file.unlink(missing_ok=True)
        return None

    @staticmethod
    def _url(record: dict) -> str:
        return f"http://{record['host']}:{record['port']}"

    # -- commands ----------------------------------------------------------------------

    def up(self, timeout: float = 30.0) -> DevnetStatus:
        """Start Anvil (or find it running), deploy on first start, verify the manifest."""
        self.dir.mkdir(parents=True, exist_ok=True)
        record = self._running()
        if record is None:
            if port_in_use(self.port, self.host):
                raise DevnetError(f"port {self.port} is already in use by another process; choose another with --port")
            anvil_binary()  # fail fast, before the slow imports below
            proc = AnvilProcess(port=self.port, host=self.host, state_file=self.state_file, log_file=self.log_file,
                                tied_to_parent=self.tied_to_parent)
            proc.start(timeout=timeout)
            record = {"pid": proc.proc.pid, "host": self.host, "port": self.port}
            _write_json(self.pid_file, record)
            _write_json(self.config_file, {"host": self.host, "port": self.port})
        from web3 import Web3

        from ledger.deployment import Deployment, check, deploy, dev_account

        w3 = Web3(Web3.HTTPProvider(self._url(record), request_kwargs={"timeout": 30}))
        try:
            if self.manifest_path.exists():
                check(w3, Deployment.load(self.manifest_path))
            else:
                deploy(w3, dev_account(0)).save(self.manifest_path)
        except DeploymentError as exc:
            self.down()
            raise DevnetError(f"{self.manifest_path} does not match the devnet chain ({exc}); "
                              f"remove {self.dir} to start a fresh devnet") from None
        return self.status()

    def down(self, timeout: float = 20.0) -> bool:
        """Stop Anvil gracefully (SIGTERM: it dumps its state). False if it was not running."""
        record = self._running()
        if record is None:
            return False
        pid = record["pid"]
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                self.pid_file.unlink(missing_ok=True)
                raise DevnetError(f"Anvil (pid {pid}) did not stop within {timeout:.0f}s; killed, state may be lost")
            time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> DevnetStatus:
        """What runs where; works from any process."""
        problem = None
        try:
            manifest = _read_json(self.manifest_path)
        except DevnetError as exc:
            manifest, problem = None, str(exc)
        names = ("consortium", "asset_ledger", "audit_anchors")
        contracts = {n: manifest.get(n) for n in names} if isinstance(manifest, dict) else {}
        record = self._running()
        if record is None:
            return DevnetStatus(home=str(self.home), running=False, healthy=False, contracts=contracts,
                                problem=problem or "not running")
        url = self._url(record)
        chain_id = rpc_chain_id(url)
        block = None
        if chain_id is None:
            problem = problem or "Anvil runs but does not answer RPC"
        else:
            from web3 import Web3

            from ledger.deployment import Deployment, check

            w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 10}))
            block = w3.eth.block_number
            if manifest is None:
                problem = problem or "no deployment manifest"
            else:
                try:
                    check(w3, Deployment.load(self.manifest_path))
                except DeploymentError as exc:
                    problem = str(exc)
        return DevnetStatus(home=str(self.home), running=True, healthy=problem is None, url=url, pid=record["pid"],
                            chain_id=chain_id, block=block, contracts=contracts, problem=problem)
