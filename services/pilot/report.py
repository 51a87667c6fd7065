"""The pilot's report: steps with their expectations and timings, sync lag, counts, lineage.

    report = PilotReport()
    with report.step("a", "builder publishes twin model v1") as step:
        step.expect("model v1 registered", published.version == 1, f"asset {published.asset_id}")
    report.write(out_dir)          # report.json + report.md
    report.ok                      # every expectation of every step held, no step crashed

report.json (`"schema": "twinledger/pilot-report/1"`):
    {"schema", "ok", "started_at", "duration_s", "environment": {...}, "steps": [{"id", "title",
     "ok", "duration_s", "expectations": [{"what", "ok", "detail"}], "data": {...}, "error"}],
     "sync_lag": {"versions": [...], "max_seconds"}, "counts": {...}, "lineage": {...}, "failures": [...]}
A step that raised records its error and ends the run: the steps after it are listed with
`"error": "not run"` (and count as failed).
"""
from __future__ import annotations

import contextlib
import json
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA = "twinledger/pilot-report/1"


class StepAborted(Exception):
    """Raised inside a step to end it (and the run) after a failed precondition."""


@dataclass
class Expectation:
    what: str
    ok: bool
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"what": self.what, "ok": self.ok, "detail": self.detail}


@dataclass
class Step:
    id: str
    title: str
    expectations: list[Expectation] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.expectations) and all(e.ok for e in self.expectations)

    def expect(self, what: str, ok: bool, detail: Any = "") -> bool:
        self.expectations.append(Expectation(what, bool(ok), str(detail)))
        return bool(ok)

    def require(self, what: str, ok: bool, detail: Any = "") -> None:
        """An expectation the rest of the run depends on: failing it ends the run."""
        if not self.expect(what, ok, detail):
            raise StepAborted(f"{what}: {detail}")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "ok": self.ok, "duration_s": round(self.duration_s, 3),
                "expectations": [e.to_json() for e in self.expectations], "data": self.data, "error": self.error}


@dataclass
class PilotReport:
    started_at: float = field(default_factory=time.time)
    environment: dict[str, Any] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    sync_lag: dict[str, Any] = field(default_factory=lambda: {"versions": [], "max_seconds": None})
    counts: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    aborted: bool = False

    @property
    def ok(self) -> bool:
        return not self.aborted and bool(self.steps) and all(s.ok for s in self.steps)

    @contextlib.contextmanager
    def step(self, step_id: str, title: str) -> Iterator[Step]:
        """Run one step: timed; an exception is recorded as the step's error and ends the
        run (later steps are recorded as not run by `skip_rest`)."""
        step = Step(step_id, title)
        self.steps.append(step)
        start = time.perf_counter()
        try:
            yield step
        except StepAborted as exc:
            step.error = str(exc)
            self.aborted = True
        except KeyboardInterrupt:
            step.error = "interrupted"
            self.aborted = True
            raise
        except Exception as exc:  # the report must name what broke, whatever it was
            step.error = f"{type(exc).__name__}: {exc}"
            step.data["traceback"] = traceback.format_exc(limit=6)
            self.aborted = True
        finally:
            step.duration_s = time.perf_counter() - start

    def skip(self, step_id: str, title: str) -> None:
        self.steps.append(Step(step_id, title, error="not run"))

    def failures(self) -> list[str]:
        out = []
        for s in self.steps:
            if s.error is not None:
                out.append(f"{s.id}: {s.error}")
            out += [f"{s.id}: {e.what} ({e.detail})" for e in s.expectations if not e.ok]
        return out

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "ok": self.ok, "started_at": _iso(self.started_at),
                "duration_s": round(self.duration_s, 3), "environment": self.environment,
                "steps": [s.to_json() for s in self.steps], "sync_lag": self.sync_lag, "counts": self.counts,
                "lineage": self.lineage, "failures": self.failures()}

    # -- output ---------------------------------------------------------------------------------

    def write(self, out: Path) -> tuple[Path, Path]:
        out.mkdir(parents=True, exist_ok=True)
        json_path, md_path = out / "report.json", out / "report.md"
        _atomic_write(json_path, json.dumps(self.to_json(), indent=2, sort_keys=False, default=str) + "\n")
        _atomic_write(md_path, self.markdown())
        return json_path, md_path

    def markdown(self) -> str:
        lines = ["# TwinLedger supply-chain pilot", "",
                 f"**Result: {'PASSED' if self.ok else 'FAILED'}** — {len(self.steps)} steps in "
                 f"{self.duration_s:.1f} s, started {_iso(self.started_at)}.", ""]
        env = self.environment
        if env:
            lines += ["## Environment", ""]
            lines += [f"- {k}: {v}" for k, v in env.items() if k != "orgs"]
            for name, org in (env.get("orgs") or {}).items():
                lines.append(f"- org **{name}** ({org.get('role', '')}): {org.get('address')} at {org.get('url')}")
            lines.append("")
        lines += ["## Steps", "", "| step | what | outcome | time |", "|---|---|---|---|"]
        for s in self.steps:
            outcome = "ok" if s.ok else ("not run" if s.error == "not run" else "FAILED")
            lines.append(f"| {s.id} | {s.title} | {outcome} | {s.duration_s:.2f} s |")
        lines.append("")
        for s in self.steps:
            lines.append(f"### {s.id}. {s.title}")
            lines.append("")
            for e in s.expectations:
                lines.append(f"- [{'x' if e.ok else ' '}] {e.what}" + (f" — {e.detail}" if e.detail else ""))
            if s.error:
                lines.append(f"- error: {s.error}")
            lines.append("")
        lines += ["## Sync lag (registration → materialised at the consumer)", "",
                  "Live: the version was registered while the sync service was already following (v1 was "
                  "registered before it started). Chain timestamps have whole-second resolution.", "",
                  "| version | live | block timestamp → materialised | publish answer → materialised |",
                  "|---|---|---|---|"]
        for v in self.sync_lag.get("versions", []):
            lines.append(f"| {v.get('asset_id')}@{v.get('version')} | {'yes' if v.get('followed_live') else 'no'} | "
                         f"{_s(v.get('lag_seconds'))} | {_s(v.get('publish_to_materialised_s'))} |")
        lines += ["", "## Counts", ""]
        lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in self.counts.items()]
        lines += ["", "## Lineage of the validation report", ""]
        if self.lineage:
            lines.append(f"- report: {self.lineage.get('report')}")
            lines.append(f"- parents (depth 1): {', '.join(self.lineage.get('parents', [])) or '-'}")
            lines.append(f"- expected: {', '.join(self.lineage.get('expected', []))}")
            lines.append(f"- all ancestors: {', '.join(self.lineage.get('ancestors', [])) or '-'}")
        failures = self.failures()
        if failures:
            lines += ["", "## Failures", ""] + [f"- {f}" for f in failures]
        return "\n".join(lines).rstrip() + "\n"

    def print_summary(self, console: Any) -> None:
        """A short Rich summary: one line per step, then the counts."""
        from rich.table import Table

        table = Table(title="TwinLedger pilot", show_lines=False)
        for column in ("step", "what", "outcome", "time"):
            table.add_column(column)
        for s in self.steps:
            outcome = "[green]ok[/]" if s.ok else ("[yellow]not run[/]" if s.error == "not run" else "[red]FAILED[/]")
            table.add_row(s.id, s.title, outcome, f"{s.duration_s:.2f} s")
        console.print(table)
        c = self.counts
        if c:
            console.print(f"releases {c.get('key_releases')} · denials {c.get('denials')} · jobs {c.get('jobs_run')} · "
                          f"anchors {c.get('anchor_batches')} · verified proofs {c.get('verified_proofs')} · "
                          f"max sync lag {_s(self.sync_lag.get('max_seconds'))}")
        for failure in self.failures():
            console.print(f"[red]✗ {failure}[/]")
        console.print(("[bold green]PASSED[/]" if self.ok else "[bold red]FAILED[/]") +
                      f" in {self.duration_s:.1f} s")


def _s(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f} s"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


__all__ = ["Expectation", "PilotReport", "SCHEMA", "Step", "StepAborted"]
