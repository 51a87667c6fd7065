"""The supply-chain pilot (issue #5 item 4): four organisations as separate node processes
on a fresh devnet, steps a–i, every expectation checked, a report written.

    report = run_pilot(PilotOptions(out=Path("pilot-report")))
    report.ok          # False if any expectation failed (the CLI then exits 1)

Organisations: builder (machine builder), plant (plant operator), maintenance
(maintenance provider), auditor. The pilot drives them with the SDK (one client per org,
in this process, talking HTTP to the org's own `twinledger serve` process), the
compute-to-data job client, and the twin-sync service running as a background loop of the
maintenance provider (it picks up model v2 without being asked).

    a  builder publishes twin model v1; grants plant READ, maintenance SYNC
    b  plant publishes its sensor dataset (Parquet); grants maintenance COMPUTE
    c  maintenance's sync materialises model v1
    d  maintenance runs profile and validate by compute-to-data on the plant's node; the
       reports are derived assets whose parents are the exact model and dataset versions
    e  builder publishes model v2; the running sync materialises it (lag measured)
    f  maintenance asks for the raw dataset: denied (no READ), audited by the plant
    g  plant downloads the model, builder revokes the plant, the plant's next download is
       denied, audited by the builder
    h  every node's audit log is anchored; the auditor verifies every record of every node
       against the chain alone (proof per record, completeness)
    i  the validation report's lineage names model v1 and dataset v1 exactly

Keys use the INSECURE fast KDF (scrypt n=2**10): a throwaway devnet, said in the report.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.errors import RemoteForbiddenError, RemoteNotFoundError
from ledger.models import Permission, VersionRef
from services.pilot.cluster import Cluster
from services.pilot.report import PilotReport, Step

ROLES = {"builder": "machine builder", "plant": "plant operator", "maintenance": "maintenance provider",
         "auditor": "auditor"}
STEPS = {
    "a": "builder publishes twin model v1; grants plant READ, maintenance SYNC",
    "b": "plant publishes its sensor dataset; grants maintenance COMPUTE",
    "c": "maintenance's twin sync materialises model v1",
    "d": "maintenance runs profile and validate by compute-to-data",
    "e": "builder publishes model v2; sync picks it up unasked",
    "f": "maintenance asks for the raw dataset: denied, audited",
    "g": "builder revokes the plant; the plant's next download is denied",
    "h": "every node anchors its audit log; the auditor verifies every record against the chain",
    "i": "the validation report's lineage names the exact input versions",
}
PURPOSES = {"plant": "plant operation", "sync": "predictive maintenance", "compute": "condition monitoring",
            "audit": "audit"}
GRANT_TTL = 30 * 86400
KDF_NOTE = "INSECURE fast scrypt (n=2**10) for the throwaway devnet keys; production keys use n=2**18"


@dataclass
class PilotOptions:
    out: Path = Path("pilot-report")
    keep: bool = False  # keep the devnet home (keys, databases, logs) after the run
    anchor_every_seconds: float = 1.0
    sync_poll_seconds: float = 0.5
    wait_seconds: float = 60.0  # the longest any single wait (sync, anchoring, indexing) may take
    seed: int = 7
    hours: float = 8.0


class _SyncLoop:
    """The maintenance provider's SyncService following its SYNC grants in a thread."""

    def __init__(self, client: Any, into: Path, poll: float) -> None:
        from services.sync import SyncService

        self.events: list[Any] = []
        self.failures: list[str] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.service = SyncService(client, into, poll_interval=poll, on_event=self._on_event)
        self._thread = threading.Thread(target=self._run, name="pilot-sync", daemon=True)
        self._poll = poll

    def _on_event(self, event: Any) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                report = self.service.run_once(self._stop)
                self.failures += [str(e) for e in report.errors]
            except Exception as exc:  # keep following; the pilot reports what went wrong
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self._poll)

    def start(self) -> None:
        self._thread.start()

    def wait_for(self, asset_id: int, version: int, timeout: float) -> Any:
        from services.sync import Materialised

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if isinstance(event, Materialised) and (event.asset_id, event.version) == (asset_id, version):
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"sync did not materialise {asset_id}@{version} within {timeout:.0f}s "
                                       f"(sync errors: {self.failures[-3:]})")
                self._cond.wait(min(left, 0.5))

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.service.close()


@dataclass
class _State:
    clients: dict[str, Any] = field(default_factory=dict)
    model: int = 0
    dataset: int = 0
    model_bytes: dict[int, bytes] = field(default_factory=dict)
    reports: dict[str, Any] = field(default_factory=dict)  # job → JobRun
    sync: _SyncLoop | None = None
    published_at: dict[int, float] = field(default_factory=dict)  # model version → wall time of the answer


def run_pilot(options: PilotOptions, *, on_step: Callable[[Step], None] | None = None) -> PilotReport:
    """Run the whole pilot on a fresh devnet in a temporary home; always tears down (also
    on KeyboardInterrupt, which is re-raised after the report is written)."""
    report = PilotReport()
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="twinledger-pilot-"))
    cluster = Cluster(root, list(ROLES), anchor_every_seconds=options.anchor_every_seconds)
    state = _State()
    pilot = _Pilot(options, report, cluster, state, root / "work")
    try:
        pilot.run(on_step)
    finally:
        pilot.teardown()
        report.environment["home"] = str(root) if options.keep else "(removed)"
        if not options.keep:
            shutil.rmtree(root, ignore_errors=True)
        report.duration_s = time.perf_counter() - started
        report.write(options.out)
    return report


class _Pilot:
    def __init__(self, options: PilotOptions, report: PilotReport, cluster: Cluster, state: _State,
                 work: Path) -> None:
        self.o, self.report, self.cluster, self.s, self.work = options, report, cluster, state, work

    def run(self, on_step: Callable[[Step], None] | None) -> None:
        plan = [("setup", "fresh devnet, four organisations, four node processes", self.setup),
                *((key, STEPS[key], getattr(self, f"step_{key}")) for key in STEPS)]
        for index, (key, title, body) in enumerate(plan):
            with self.report.step(key, title) as step:
                body(step)
            if on_step is not None:
                on_step(self.report.steps[-1])
            if self.report.aborted:
                for later_key, later_title, _ in plan[index + 1:]:
                    self.report.skip(later_key, later_title)
                return

    def teardown(self) -> None:
        if self.s.sync is not None:
            self.s.sync.close()
        for client in self.s.clients.values():
            client.close()
        self.cluster.stop()
        left = self.cluster.pids()
        self.report.environment["teardown"] = {"stopped": not left, "leftover_pids": left}

    # -- helpers -----------------------------------------------------------------------------------

    def url(self, name: str) -> str:
        return self.cluster.nodes[name].url

    def until(self, what: str, probe: Callable[[], Any]) -> Any:
        """probe() until it returns something truthy (RemoteNotFoundError: not indexed yet)."""
        deadline = time.monotonic() + self.o.wait_seconds
        while True:
            try:
                value = probe()
                if value:
                    return value
            except RemoteNotFoundError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {self.o.wait_seconds:.0f}s")
            time.sleep(0.2)

    def records(self, node: str, kind: str) -> list[dict[str, Any]]:
        """Every audit record of `kind` in `node`'s log, read by the auditor."""
        auditor, items, after = self.s.clients["auditor"], [], None
        while True:
            page = auditor.audit_records(kind=kind, after_seq=after, limit=1000, node_url=self.url(node))
            items += page["items"]
            after = page.get("next_after_seq")
            if after is None:
                return items

    def parents(self, client: Any, asset_id: int, version: int) -> list[str]:
        graph = self.until(f"lineage of {asset_id}@{version}", lambda: client.lineage(asset_id, version, "ancestors"))
        return sorted(f"{n['asset_id']}@{n['version']}" for n in graph["ancestors"] if n["depth"] == 1)

    def write(self, name: str, data: bytes) -> Path:
        self.work.mkdir(parents=True, exist_ok=True)
        path = self.work / name
        path.write_bytes(data)
        return path

    # -- steps -------------------------------------------------------------------------------------

    def setup(self, step: Step) -> None:
        self.cluster.start()
        self.s.clients = {name: self.cluster.client(name) for name in ROLES}
        self.report.environment.update({
            "chain_id": self.cluster.chain_id, "rpc_url": self.cluster.rpc_url, "key_derivation": KDF_NOTE,
            "anchor_every_seconds": self.o.anchor_every_seconds,
            "orgs": {n: {"role": ROLES[n], "address": node.address, "url": node.url}
                     for n, node in self.cluster.nodes.items()}})
        for name in ROLES:
            step.expect(f"{name}'s node is ready at its registered endpoint",
                        self.s.clients[name].resolve_org(name).endpoint == self.url(name), self.url(name))

    def step_a(self, step: Step) -> None:
        from services.pilot.data import twin_model

        builder = self.s.clients["builder"]
        self.s.model_bytes[1] = json.dumps(twin_model(1), indent=2, sort_keys=True).encode()
        pub = builder.publish(self.write("spindle-twin-v1.json", self.s.model_bytes[1]), name="CNC spindle tool twin",
                              kind="model")
        self.s.model = pub.asset_id
        self.s.published_at[1] = time.time()
        step.require("twin model v1 registered", pub.version == 1, f"asset {pub.asset_id}@{pub.version} cid {pub.cid}")
        builder.grant(pub.asset_id, "plant", ["READ"], ttl_seconds=GRANT_TTL, purpose=PURPOSES["plant"])
        builder.grant(pub.asset_id, "maintenance", ["SYNC"], ttl_seconds=GRANT_TTL, purpose=PURPOSES["sync"])
        grants = {g["grantee"]: g for g in builder.grants(pub.asset_id)}
        for org, perm in (("plant", "READ"), ("maintenance", "SYNC")):
            g = grants.get(self.cluster.nodes[org].address, {})
            step.expect(f"{org} holds {perm} on the model", g.get("permissions") == [perm] and g.get("in_force"),
                        f"{g.get('permissions')} purpose {g.get('purpose')!r}")
        step.data.update(model={"asset_id": pub.asset_id, "version": 1, "cid": pub.cid, "tx": pub.tx_hash})

    def step_b(self, step: Step) -> None:
        from services.pilot.data import sensor_dataset_parquet

        plant = self.s.clients["plant"]
        data = sensor_dataset_parquet(self.o.seed, hours=self.o.hours)
        pub = plant.publish(self.write("line3-spindle-run.parquet", data), name="line 3 spindle run", kind="dataset")
        self.s.dataset = pub.asset_id
        step.require("sensor dataset v1 registered", pub.version == 1, f"asset {pub.asset_id}@1, {pub.size} bytes")
        plant.grant(pub.asset_id, "maintenance", ["COMPUTE"], ttl_seconds=GRANT_TTL, purpose=PURPOSES["compute"])
        on_chain = plant.ledger.has_access(pub.asset_id, self.cluster.nodes["maintenance"].address,
                                           Permission.COMPUTE)
        step.expect("maintenance holds COMPUTE (and only COMPUTE) on the dataset", on_chain and not plant.ledger.has_access(
            pub.asset_id, self.cluster.nodes["maintenance"].address, Permission.READ), "hasAccess on chain")
        step.data.update(dataset={"asset_id": pub.asset_id, "version": 1, "cid": pub.cid, "bytes": pub.size,
                                  "format": "parquet", "hours": self.o.hours, "seed": self.o.seed})

    def step_c(self, step: Step) -> None:
        self.s.sync = _SyncLoop(self.cluster.client("maintenance"), self.work / "maintenance-twins",
                                self.o.sync_poll_seconds)
        self.s.sync.start()
        event = self.s.sync.wait_for(self.s.model, 1, self.o.wait_seconds)
        self._check_materialised(step, event, 1)

    def _check_materialised(self, step: Step, event: Any, version: int) -> None:
        path = Path(event.path)
        step.expect(f"model v{version} materialised with the published bytes",
                    path.read_bytes() == self.s.model_bytes[version], str(path))
        current = path.parent.parent / "current"
        step.expect(f"`current` points at v{version}", current.resolve() == path.parent.resolve(), str(current))
        live = version > 1  # v1 was registered before the sync service started (step c)
        entry = {"asset_id": event.asset_id, "version": event.version, "lag_seconds": round(event.lag_seconds, 3),
                 "publish_to_materialised_s": round(event.materialised_at - self.s.published_at[version], 3),
                 "followed_live": live}
        self.report.sync_lag["versions"].append(entry)
        lags = [v["publish_to_materialised_s"] for v in self.report.sync_lag["versions"] if v["followed_live"]]
        self.report.sync_lag["max_seconds"] = round(max(lags), 3) if lags else None
        step.data.update(materialised=entry)

    def step_d(self, step: Step) -> None:
        """profile through the SDK's job client, validate through `twinledger analytics run`."""
        from services.analytics.client import JobRun, run_job

        maint = self.s.clients["maintenance"]
        inputs = sorted([f"{self.s.dataset}@1", f"{self.s.model}@1"])
        for job in ("profile", "validate"):
            out = self.work / f"{job}-result.json"
            if job == "profile":
                run = run_job(maint, None, job, self.s.dataset, 1, model=(self.s.model, 1))
                maint.get(run.result.asset_id, run.result.version, out, purpose=run.purpose)
            else:
                answer = self.cluster.cli_json("analytics", "run", job, "--asset", f"{self.s.dataset}@1", "--model",
                                               f"{self.s.model}@1", "--org", "maintenance", "-o", str(out))
                run = JobRun(answer["job_id"], answer["status"], VersionRef(answer["result"]["asset_id"],
                                                                            answer["result"]["version"]),
                             answer["result"]["cid"], answer["audit_seq"], answer["owner_node"])
            self.s.reports[job] = run
            step.expect(f"{job} ran on the plant's node", run.status == "succeeded"
                        and run.owner_node.rstrip("/") == self.url("plant"),
                        f"report {run.result.asset_id}@{run.result.version}, plant audit record {run.audit_seq}")
            document = json.loads(out.read_bytes())
            step.expect(f"maintenance obtains the {job} report by an ordinary key release",
                        document.get("job") == job and document["report"].get("job") == job, run.cid)
            self.o.out.mkdir(parents=True, exist_ok=True)
            (self.o.out / f"{job}-report.md").write_text(document["markdown"], encoding="utf-8")
            parents = self.parents(maint, run.result.asset_id, run.result.version)
            step.expect(f"the {job} report derives from the exact model and dataset versions", parents == inputs,
                        ", ".join(parents))
            step.data[job] = {"report": f"{run.result.asset_id}@{run.result.version}", "job_id": run.job_id,
                              "audit_seq": run.audit_seq, "parents": parents, "via": "sdk" if job == "profile"
                              else "cli", "summary": document["report"].get("summary")}
        released = [r for r in self.records("plant", "key_released") if r["asset"] == self.s.dataset]
        step.expect("the raw dataset never left the plant (no key released for it)", not released,
                    f"{len(released)} releases")

    def step_e(self, step: Step) -> None:
        from services.pilot.data import twin_model

        builder = self.s.clients["builder"]
        self.s.model_bytes[2] = json.dumps(twin_model(2), indent=2, sort_keys=True).encode()
        pub = builder.publish(self.write("spindle-twin-v2.json", self.s.model_bytes[2]), asset_id=self.s.model,
                              parents=[f"{self.s.model}@1"])
        self.s.published_at[2] = time.time()
        step.require("twin model v2 registered", pub.version == 2, f"{pub.asset_id}@{pub.version}")
        assert self.s.sync is not None
        event = self.s.sync.wait_for(self.s.model, 2, self.o.wait_seconds)  # nobody asks: the loop follows
        self._check_materialised(step, event, 2)

    def step_f(self, step: Step) -> None:
        maint = self.s.clients["maintenance"]
        out = self.work / "stolen-dataset.parquet"
        try:
            maint.get(self.s.dataset, 1, out, purpose=PURPOSES["compute"])
            step.expect("the plant refuses to release the raw dataset", False, "a key was released")
            return
        except RemoteForbiddenError as exc:
            denial = exc
        step.expect("the plant refuses to release the raw dataset", True, f"{denial.status} {denial.reason}")
        step.expect("nothing was written", not out.exists(), str(out))
        self._check_denial_record(step, "plant", denial, "maintenance", {"permission_not_granted"})

    def _check_denial_record(self, step: Step, owner: str, denial: RemoteForbiddenError, who: str,
                             reasons: set[str]) -> None:
        found = [r for r in self.records(owner, "key_denied") if r["seq"] == denial.audit_seq]
        record = found[0] if found else {}
        step.expect(f"the denial is audited in the {owner}'s log with its reason",
                    record.get("actor") == self.cluster.nodes[who].address
                    and record.get("details", {}).get("reason") in reasons,
                    f"record {denial.audit_seq}: {record.get('details', {}).get('reason')}")
        step.data[f"{who}_denial"] = {"owner": owner, "audit_seq": denial.audit_seq, "reason": denial.reason}

    def step_g(self, step: Step) -> None:
        plant, builder = self.s.clients["plant"], self.s.clients["builder"]
        before = plant.get(self.s.model, 1, self.work / "plant-model-before.json", purpose=PURPOSES["plant"])
        step.expect("the plant downloads the model while its grant is in force",
                    before.path.read_bytes() == self.s.model_bytes[1], f"builder audit record {before.key_audit_seq}")
        revoked = builder.revoke(self.s.model, "plant")
        step.data["revoke"] = {"tx": revoked.get("tx_hash"), "audit_seq": revoked.get("audit_seq")}
        after = self.work / "plant-model-after.json"
        try:
            plant.get(self.s.model, 1, after, purpose=PURPOSES["plant"])
            step.expect("the plant's next download is denied", False, "a key was released after the revocation")
            return
        except RemoteForbiddenError as exc:
            denial = exc
        step.expect("the plant's next download is denied", denial.reason == "grant_revoked",
                    f"{denial.status} {denial.reason}")
        step.expect("nothing was written", not after.exists(), str(after))
        self._check_denial_record(step, "builder", denial, "plant", {"grant_revoked"})

    def step_h(self, step: Step) -> None:
        if self.s.sync is not None:  # stop the follower first: the logs must stand still to be compared
            self.s.sync.close()
            self.s.sync = None
        auditor, plant = self.s.clients["auditor"], self.s.clients["plant"]
        # the auditor reviews the validation report (derived data, never the raw dataset):
        # the plant shares it, the auditor fetches it — the auditor's own log records that
        run = self.s.reports["validate"]
        plant.grant(run.result.asset_id, "auditor", ["READ"], ttl_seconds=GRANT_TTL, purpose=PURPOSES["audit"])
        got = auditor.get(run.result.asset_id, run.result.version, self.work / "auditor-validate.json",
                          purpose=PURPOSES["audit"])
        step.expect("the auditor obtains the validation report (shared by the plant)",
                    json.loads(got.path.read_bytes()).get("job") == "validate",
                    f"consumption recorded as auditor record {got.consumption_audit_seq}")
        total = {"anchor_batches": 0, "anchored_records": 0, "verified_proofs": 0}
        for name in ROLES:
            head = self.until(f"{name}'s audit log anchored", lambda n=name: self._anchored_head(n))
            verdict = auditor.verify(self.url(name), all=True)
            step.expect(f"{name}: every record verified against the chain",
                        verdict.ok and verdict.complete and verdict.unanchored_records == 0
                        and verdict.proofs_verified == verdict.records_checked == head["last_seq"],
                        f"{verdict.proofs_verified}/{head['last_seq']} records, {head['batches']} anchor batches"
                        + (f", problems {verdict.problems[:3]}" if verdict.problems else ""))
            step.data[name] = {"last_seq": head["last_seq"], "batches": head["batches"],
                               "proofs_verified": verdict.proofs_verified}
            total["anchor_batches"] += head["batches"]
            total["anchored_records"] += head["anchored_seq"]
            total["verified_proofs"] += verdict.proofs_verified
        self._counts(step, total)

    def _anchored_head(self, name: str) -> dict[str, Any] | None:
        head = self.s.clients["auditor"].audit_head(node_url=self.url(name))
        return head if 0 < head["last_seq"] <= head["anchored_seq"] else None

    def _counts(self, step: Step, total: dict[str, int]) -> None:
        per_kind = {kind: {n: len(self.records(n, kind)) for n in ROLES}
                    for kind in ("key_released", "key_denied", "consumption_recorded", "job_run", "job_failed")}
        counts = {"key_releases": sum(per_kind["key_released"].values()),
                  "consumptions_recorded": sum(per_kind["consumption_recorded"].values()),
                  "denials": sum(per_kind["key_denied"].values()) + sum(per_kind["job_failed"].values()),
                  "jobs_run": sum(per_kind["job_run"].values()), **total, "by_node": per_kind}
        self.report.counts = counts
        step.expect("every key release has a consumption recorded by its consumer",
                    counts["key_releases"] == counts["consumptions_recorded"] > 0,
                    f"{counts['key_releases']} releases, {counts['consumptions_recorded']} consumptions")
        step.expect("both denials of the run are on record", counts["denials"] >= 2, f"{counts['denials']} denials")
        step.expect("verified proofs = anchored records > 0",
                    counts["verified_proofs"] == counts["anchored_records"] > 0 and counts["anchor_batches"] >= 4,
                    f"{counts['verified_proofs']} proofs, {counts['anchor_batches']} batches")

    def step_i(self, step: Step) -> None:
        auditor = self.s.clients["auditor"]
        run = self.s.reports["validate"]
        parents = self.parents(auditor, run.result.asset_id, run.result.version)
        graph = auditor.lineage(run.result.asset_id, run.result.version, "ancestors")
        ancestors = sorted(f"{n['asset_id']}@{n['version']}" for n in graph["ancestors"])
        expected = sorted([f"{self.s.dataset}@1", f"{self.s.model}@1"])
        step.expect("the validation report's parents are dataset v1 and model v1", parents == expected,
                    ", ".join(parents))
        step.expect("model v2 (published later) is not in its lineage", f"{self.s.model}@2" not in ancestors,
                    ", ".join(ancestors))
        prov = auditor.prov(run.result.asset_id, run.result.version)
        step.expect("the W3C PROV export names the report and both inputs as entities",
                    {f"tl:asset-{a.replace('@', '-v')}" for a in [*expected, f"{run.result.asset_id}@1"]}
                    <= set(prov.get("entity", {})), f"{len(prov.get('entity', {}))} entities")
        self.report.lineage = {"report": f"{run.result.asset_id}@{run.result.version}", "parents": parents,
                               "expected": expected, "ancestors": ancestors,
                               "activities": sorted(prov.get("activity", {}))}


__all__ = ["PilotOptions", "ROLES", "STEPS", "run_pilot"]
