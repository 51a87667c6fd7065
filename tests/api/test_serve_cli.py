"""`twinledger serve --workers N` refuses what it cannot run, before starting anything:
the worker count is checked (flag and TWINLEDGER_WORKERS), and with several workers the
node is built once in the serve process, so a bad keystore is one clear error, not a
worker crash loop."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.e2e.cluster import TWINLEDGER


def _serve(*args: str, home, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TWINLEDGER_")}
    return subprocess.run([*TWINLEDGER, "serve", "--org", "acme", "--home", str(home), *args],
                          env={**base, "TWINLEDGER_RPC_URL": "http://127.0.0.1:9", **env},
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("args", "env"), [
    (("--workers", "0"), {}),
    (("--workers", "33"), {}),
    (("--workers", "many"), {}),
    ((), {"TWINLEDGER_WORKERS": "0"}),
    ((), {"TWINLEDGER_WORKERS": "64"}),
])
def test_an_invalid_worker_count_is_a_clear_error(tmp_path, args, env):
    result = _serve(*args, home=tmp_path, **env)
    assert result.returncode != 0
    message = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.stderr).split())  # unwrap the CLI's error box
    assert "Invalid value for '--workers'" in message
    assert re.search(r"less than or equal to 32|greater than or equal to 1|valid integer", message), message
    assert not (tmp_path / "orgs").exists()  # nothing was started or created


def test_several_workers_without_a_keystore_fail_once_and_clearly(tmp_path):
    result = _serve("--workers", "2", home=tmp_path, TWINLEDGER_PASSPHRASE="whatever")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "acme" in result.stderr
    assert "Started parent process" not in result.stderr  # no worker was spawned
