"""The supply-chain pilot, for real: `twinledger pilot --json --out DIR` as a subprocess
(devnet + four node processes + sync + compute-to-data), once per session; its JSON report
is asserted step by step, and nothing it started may outlive it. The report logic
(services/pilot/report.py) is also checked on its own: a failed expectation or a crashed
step makes the pilot fail."""
from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from services.pilot.cluster import twinledger_command
from services.pilot.report import PilotReport
from services.pilot.run import STEPS

PILOT_TIMEOUT = 600


@pytest.fixture(scope="module")
def pilot(tmp_path_factory):
    out = tmp_path_factory.mktemp("pilot") / "report"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINLEDGER_")}
    proc = subprocess.run([*twinledger_command(), "pilot", "--json", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=PILOT_TIMEOUT, stdin=subprocess.DEVNULL)
    report = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
    return {"proc": proc, "report": report, "out": out}


@pytest.fixture(scope="module")
def report(pilot):
    assert pilot["report"] is not None, f"no JSON report (exit {pilot['proc'].returncode}):\n{pilot['proc'].stderr}"
    return pilot["report"]


@pytest.fixture(scope="module")
def steps(report):
    return {s["id"]: s for s in report["steps"]}


def ref(asset: int, version: int) -> str:
    return f"{asset}@{version}"


def on_the_pilot(test):
    """The tests reading the real run: slow, and in one xdist group (one run per worker)."""
    return pytest.mark.slow(pytest.mark.xdist_group("pilot")(test))


@on_the_pilot
def test_the_pilot_passes_and_exits_zero(pilot, report):
    failures = report["failures"]
    assert pilot["proc"].returncode == 0, f"{failures}\n{pilot['proc'].stderr[-2000:]}"
    assert report["ok"] is True and failures == []
    assert report["schema"] == "twinledger/pilot-report/1"


@on_the_pilot
def test_every_step_ran_in_order_with_its_expectations_met(report):
    assert [s["id"] for s in report["steps"]] == ["setup", *STEPS]
    for step in report["steps"]:
        assert step["error"] is None, step
        assert step["expectations"] and all(e["ok"] for e in step["expectations"]), step
        assert step["ok"] is True and step["duration_s"] >= 0


@on_the_pilot
def test_the_written_files_match_the_printed_report(pilot, report):
    written = json.loads((pilot["out"] / "report.json").read_text())
    assert written == report
    markdown = (pilot["out"] / "report.md").read_text()
    assert "**Result: PASSED**" in markdown and "## Sync lag" in markdown
    for job in ("profile", "validate"):
        assert (pilot["out"] / f"{job}-report.md").read_text().startswith("# ")
    assert "INSECURE fast scrypt" in report["environment"]["key_derivation"]
    assert set(report["environment"]["orgs"]) == {"builder", "plant", "maintenance", "auditor"}


@on_the_pilot
def test_a_b_assets_and_grants(steps):
    assert steps["a"]["data"]["model"]["version"] == 1
    assert steps["b"]["data"]["dataset"]["version"] == 1 and steps["b"]["data"]["dataset"]["format"] == "parquet"
    assert steps["a"]["data"]["model"]["asset_id"] != steps["b"]["data"]["dataset"]["asset_id"]


@on_the_pilot
def test_c_e_sync_materialised_both_versions_with_their_lag(steps, report):
    model = steps["a"]["data"]["model"]["asset_id"]
    assert steps["c"]["data"]["materialised"]["asset_id"] == model
    assert (steps["c"]["data"]["materialised"]["version"], steps["e"]["data"]["materialised"]["version"]) == (1, 2)
    lags = {(v["asset_id"], v["version"]): v for v in report["sync_lag"]["versions"]}
    assert set(lags) == {(model, 1), (model, 2)}
    assert lags[(model, 2)]["followed_live"] is True and lags[(model, 1)]["followed_live"] is False
    for v in lags.values():
        assert isinstance(v["lag_seconds"], float | int) and isinstance(v["publish_to_materialised_s"], float | int)
    assert report["sync_lag"]["max_seconds"] == lags[(model, 2)]["publish_to_materialised_s"]


@on_the_pilot
def test_d_reports_derive_from_the_exact_inputs(steps):
    model, dataset = steps["a"]["data"]["model"]["asset_id"], steps["b"]["data"]["dataset"]["asset_id"]
    inputs = sorted([ref(dataset, 1), ref(model, 1)])
    reports = set()
    for job in ("profile", "validate"):
        data = steps["d"]["data"][job]
        assert data["parents"] == inputs
        assert isinstance(data["audit_seq"], int) and data["job_id"]
        reports.add(data["report"])
    assert len(reports) == 2 and not reports & set(inputs)
    summary = steps["d"]["data"]["validate"]["summary"]
    assert summary["model_version"] == 1 and summary["n_used"] > 0 and summary["mae_mm"] > 0
    assert steps["d"]["data"]["profile"]["summary"]["rows"] > 0


@on_the_pilot
def test_f_g_denials_are_audited_with_their_reasons(steps, report):
    f, g = steps["f"]["data"]["maintenance_denial"], steps["g"]["data"]["plant_denial"]
    assert (f["owner"], f["reason"]) == ("plant", "permission_not_granted")
    assert (g["owner"], g["reason"]) == ("builder", "grant_revoked")
    assert isinstance(f["audit_seq"], int) and isinstance(g["audit_seq"], int)
    denied = report["counts"]["by_node"]["key_denied"]
    assert denied["plant"] >= 1 and denied["builder"] >= 1


@on_the_pilot
def test_h_counts_are_positive_and_consistent(steps, report):
    counts = report["counts"]
    by_node = counts["by_node"]
    assert counts["key_releases"] == sum(by_node["key_released"].values()) > 0
    assert counts["consumptions_recorded"] == sum(by_node["consumption_recorded"].values()) == counts["key_releases"]
    assert counts["denials"] == sum(by_node["key_denied"].values()) + sum(by_node["job_failed"].values()) >= 2
    assert counts["jobs_run"] == by_node["job_run"]["plant"] == 2
    heads = {name: steps["h"]["data"][name] for name in ("builder", "plant", "maintenance", "auditor")}
    assert all(h["last_seq"] > 0 and h["batches"] > 0 and h["proofs_verified"] == h["last_seq"] for h in heads.values())
    assert counts["anchor_batches"] == sum(h["batches"] for h in heads.values())
    assert counts["verified_proofs"] == counts["anchored_records"] == sum(h["last_seq"] for h in heads.values())


@on_the_pilot
def test_i_lineage_names_model_v1_and_dataset_v1(steps, report):
    model, dataset = steps["a"]["data"]["model"]["asset_id"], steps["b"]["data"]["dataset"]["asset_id"]
    lineage = report["lineage"]
    assert lineage["report"] == steps["d"]["data"]["validate"]["report"]
    assert lineage["parents"] == lineage["expected"] == sorted([ref(dataset, 1), ref(model, 1)])
    assert ref(model, 2) not in lineage["ancestors"]


@on_the_pilot
def test_nothing_outlives_the_pilot(report):
    teardown = report["environment"]["teardown"]
    assert teardown == {"stopped": True, "leftover_pids": []}
    ports = [int(o["url"].rsplit(":", 1)[1]) for o in report["environment"]["orgs"].values()]
    ports.append(int(report["environment"]["rpc_url"].rsplit(":", 1)[1]))
    for pid in Path("/proc").iterdir():
        if not pid.name.isdigit():
            continue
        try:
            argv = (pid / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for port in ports:
            assert str(port).encode() not in argv or b"--port" not in argv, f"process {pid.name} still runs: {argv}"
    for port in ports:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"
    assert report["environment"]["home"] == "(removed)"


# -- the report's verdict logic, without a cluster --------------------------------------------------


def test_a_failed_expectation_fails_the_pilot_and_is_listed(tmp_path):
    report = PilotReport()
    with report.step("a", "first") as step:
        step.expect("holds", True)
        step.expect("breaks", False, "detail")
    with report.step("b", "second") as step:
        step.expect("holds", True)
    assert not report.ok and report.failures() == ["a: breaks (detail)"]
    json_path, md_path = report.write(tmp_path)
    assert json.loads(json_path.read_text())["ok"] is False
    assert "**Result: FAILED**" in md_path.read_text()


def test_a_crashing_step_aborts_the_run():
    report = PilotReport()
    with report.step("a", "first") as step:
        step.expect("holds", True)
        raise RuntimeError("node gone")
    assert report.aborted and not report.ok
    report.skip("b", "second")
    assert report.failures() == ["a: RuntimeError: node gone", "b: not run"]
    assert report.to_json()["steps"][0]["data"]["traceback"]


def test_a_step_without_expectations_does_not_pass():
    report = PilotReport()
    with report.step("a", "first"):
        pass
    assert not report.ok
