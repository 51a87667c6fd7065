"""CLI front of the SDK without a node: argument parsing, and one `error:` line with exit 1
(never a traceback) for bad input. The commands against real nodes are in tests/e2e."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from api.cli.assets import parse_duration, parse_time
from twinledger.cli import app

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "": 1}


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 10**6), st.sampled_from(sorted(UNITS)))
def test_durations(n, unit):
    assert parse_duration(f"{n}{unit}") == n * UNITS[unit]


@pytest.mark.parametrize("text", ["", "0", "0d", "-1d", "1y", "d", "1.5h", "1 day"])
def test_bad_durations_are_refused(text):
    with pytest.raises(typer.BadParameter):
        parse_duration(text)


@settings(max_examples=50, deadline=None)
@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)).map(lambda d: d.replace(microsecond=0)))
def test_iso_times_are_utc_unless_zoned(moment):
    expected = int(moment.replace(tzinfo=timezone.utc).timestamp())
    assert parse_time(moment.isoformat()) == expected
    assert parse_time(moment.isoformat() + "Z") == expected
    assert parse_time(moment.isoformat() + "+02:00") == expected - 7200
    assert parse_time(str(expected)) == expected


def test_bad_times_are_refused():
    with pytest.raises(typer.BadParameter):
        parse_time("next tuesday")


@pytest.fixture
def run(tmp_path, monkeypatch):
    for var in ("TWINLEDGER_ORG", "TWINLEDGER_RPC_URL", "TWINLEDGER_PASSPHRASE_FILE", "TWINLEDGER_PASSPHRASE_ENV"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TWINLEDGER_HOME", str(tmp_path))
    monkeypatch.setenv("TWINLEDGER_PASSPHRASE", "irrelevant")

    def invoke(*args: str):
        return CliRunner().invoke(app, list(args))

    return invoke


def test_an_unknown_org_is_one_error_line(run, tmp_path):
    result = run("asset", "get", "1@1", "-o", str(tmp_path / "x"), "--org", "nobody")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert result.output.startswith("error: no organisation 'nobody'")
    assert "Traceback" not in result.output


def test_a_malformed_target_is_one_error_line(run, tmp_path):
    result = run("asset", "get", "12-3", "-o", str(tmp_path / "x"), "--org", "nobody")
    assert result.exit_code == 1 and result.output.startswith("error: ASSET@VERSION: must be ASSET@VERSION")


def test_usage_errors_exit_2(run):
    assert run("grant", "1", "bob", "--perm", "read", "--org", "a").exit_code == 2  # neither --ttl nor --until
    assert run("grant", "1", "bob", "--perm", "read", "--ttl", "1d", "--until", "2030-01-01", "--org", "a").exit_code == 2
    assert run("asset", "put", "/nonexistent", "--org", "a", "--name", "n", "--kind", "model").exit_code == 2
    assert run("audit", "verify").exit_code == 2  # --org is required


def test_bad_permissions_are_one_error_line(run):
    result = run("grant", "1", "bob", "--perm", "read,fly", "--ttl", "1d", "--org", "nobody")
    assert result.exit_code == 1 and result.output.startswith("error: permissions: unknown permission 'fly'")
