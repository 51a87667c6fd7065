"""Background loops in exactly one of several processes serving one node (api/leadership.py,
the lifespan in api/app.py): the flock excludes, a SIGKILLed holder frees it, and a
standby app reports itself ready, follows the indexer, and takes the loops over once the
leader is gone."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from fastapi.testclient import TestClient

from api.app import STANDBY_RETRY_SECONDS, create_app
from api.leadership import LoopLeadership
from api.settings import load_settings
from tests.api.node_fixtures import node_home  # noqa: F401

TAKEOVER_WAIT = 10 * STANDBY_RETRY_SECONDS


def test_the_lock_excludes_other_holders_and_names_its_holder(tmp_path):
    path = tmp_path / "org" / "loops.lock"
    first, second = LoopLeadership(path), LoopLeadership(path)
    assert first.try_acquire() and first.held
    assert first.try_acquire()  # idempotent for the holder
    assert not second.try_acquire() and not second.held
    assert second.holder() == os.getpid()
    first.release()
    assert second.try_acquire()
    assert not first.try_acquire()
    second.release()


def test_a_killed_holder_frees_the_lock(tmp_path):
    path = tmp_path / "loops.lock"
    code = ("import sys, time\n"
            "from api.leadership import LoopLeadership\n"
            "assert LoopLeadership(sys.argv[1]).try_acquire()\n"
            "print('held', flush=True)\n"
            "time.sleep(600)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True,
                             cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert child.stdout.readline().strip() == "held"
        mine = LoopLeadership(path)
        assert not mine.try_acquire()
        assert mine.holder() == child.pid
        child.kill()  # SIGKILL: no clean-up runs in the holder
        child.wait(timeout=10)
        assert mine.try_acquire()
        assert mine.holder() == os.getpid()
        mine.release()
    finally:
        child.kill()
        child.wait(timeout=10)


def _counting_loop(counts: dict[str, int], name: str):
    def factory(node) -> None:
        def tick() -> None:
            counts[name] += 1
        node.loops.add("tick", tick, interval=0.05)
    return factory


def _wait(condition, what: str, timeout: float = TAKEOVER_WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g}s"
        time.sleep(0.05)


def test_a_standby_app_is_ready_follows_and_takes_over(node_home, anvil, tmp_path):
    settings = load_settings(home=node_home, org="acme", rpc_url=anvil.url, passphrase_file=node_home / "pass.txt",
                             database_url=f"sqlite:///{tmp_path / 'node.db'}")
    lock = tmp_path / "loops.lock"
    counts = {"leader": 0, "standby": 0}
    leader = create_app(settings, loop_lock=lock, loop_factories=[_counting_loop(counts, "leader")])
    standby = create_app(settings, loop_lock=lock, loop_factories=[_counting_loop(counts, "standby")])
    second = TestClient(standby)
    with TestClient(leader) as first:
        assert first.get("/readyz").json()["checks"]["loops"] == "ok"
        second.__enter__()
        try:
            answer = second.get("/readyz")
            assert answer.status_code == 200, answer.text
            assert answer.json()["checks"]["loops"] == f"standby: loops run in worker pid {os.getpid()}"
            assert standby.state.node.indexer.follower and not standby.state.node.loops.started
            assert not leader.state.node.indexer.follower
            _wait(lambda: counts["leader"] >= 2, "the leader's loop ticking")
        except BaseException:
            second.__exit__(None, None, None)
            raise
    # the leader stopped and gave the lock up: the standby takes the loops over
    try:
        _wait(lambda: second.get("/readyz").json()["checks"]["loops"] == "ok", "the take-over")
        assert standby.state.node.loops.started and not standby.state.node.indexer.follower
        _wait(lambda: counts["standby"] >= 2, "the new leader's loop ticking")
    finally:
        second.__exit__(None, None, None)
