"""An Anvil tied to its parent must not outlive it, whatever way the parent dies."""
from __future__ import annotations

import os
import subprocess
import sys
import time

CHILD = """
import os
from ledger.anvil import AnvilProcess, free_port
p = AnvilProcess(port=free_port(), tied_to_parent={tied}).start()
print(p.proc.pid, flush=True)
os._exit(0)  # no teardown, like a SIGKILLed test worker
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"


def _run(tied: bool) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD.format(tied=tied)], capture_output=True, text=True,
                         timeout=60, check=True)
    return int(out.stdout.strip())


def test_tied_anvil_dies_with_its_parent() -> None:
    pid = _run(True)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


def test_detached_anvil_survives_its_parent_as_devnet_up_needs() -> None:
    pid = _run(False)
    try:
        time.sleep(0.5)
        assert _alive(pid)
    finally:
        os.kill(pid, 15)
