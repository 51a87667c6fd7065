"""`twinledger pilot` — the supply-chain pilot on a fresh local devnet (`make demo`).

    twinledger pilot [--json] [--out DIR] [--keep]

Starts a devnet and four organisations' nodes (builder, plant, maintenance, auditor) as
separate processes in a temporary home, runs steps a–i (services/pilot/run.py), writes
DIR/report.json and DIR/report.md (default ./pilot-report; also the decrypted
profile/validate reports the maintenance provider received), prints a short summary
(--json: the report JSON on stdout instead) and tears everything down — also on Ctrl-C
or SIGTERM. --keep keeps the temporary home (keys, node databases, logs) for inspection.
Exit status: 0 every expectation held, 1 one failed (listed), 130 interrupted.
"""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("pilot")(pilot)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pilot(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of a summary")] = False,
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Where to write report.json and report.md")]
    = Path("pilot-report"),
    keep: Annotated[bool, typer.Option("--keep", help="Keep the temporary devnet home after the run")] = False,
) -> None:
    """Run the supply-chain pilot end to end on a fresh local devnet."""
    from rich.console import Console

    from services.pilot.run import PilotOptions, run_pilot

    console = Console(stderr=as_json)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with console.status("running the pilot…") if sys.stderr.isatty() and not as_json else _Null() as status:
            def on_step(step) -> None:
                mark = "ok" if step.ok else "FAILED"
                if status is not None:
                    status.update(f"step {step.id} {mark}; running the pilot…")
                if not as_json:
                    console.print(f"[dim]{step.id}. {step.title}: {mark} ({step.duration_s:.1f} s)[/]")

            report = run_pilot(PilotOptions(out=out, keep=keep), on_step=on_step)
    except KeyboardInterrupt:
        typer.echo(f"error: interrupted; everything was stopped (partial report in {out})", err=True)
        raise typer.Exit(130) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, default=str))
    else:
        report.print_summary(console)
        console.print(f"report: {out / 'report.md'} and {out / 'report.json'}")
    if not report.ok:
        raise typer.Exit(1)


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
