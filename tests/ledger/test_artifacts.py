"""The committed contract artifacts are exactly what the pinned compiler makes of the
sources (npm solc; and a native solc of the same version via py-solc-x, if installed)."""
from __future__ import annotations

import shutil

import pytest

from ledger import compiler


@pytest.fixture(scope="module")
def npm_build() -> dict[str, dict]:
    return compiler.build()


@pytest.mark.slow
def test_committed_artifacts_are_up_to_date(npm_build):
    assert set(npm_build) == set(compiler.CONTRACTS)
    assert compiler.stale(npm_build) == [], "contracts/artifacts are stale: run `make compile`"


@pytest.mark.slow
def test_native_solc_gives_byte_identical_artifacts(npm_build):
    binary = compiler.native_solc()
    if binary is None:
        pytest.skip(f"no native solc {compiler.SOLC_VERSION} installed (py-solc-x install dir or PATH)")
    native = compiler.artifacts_from_output(compiler.compile_with_native(compiler.standard_input(), binary),
                                            compiler.standard_input())
    assert {n: compiler.render(a) for n, a in native.items()} == {n: compiler.render(a) for n, a in npm_build.items()}


@pytest.mark.slow
def test_check_reports_a_modified_source_as_stale(tmp_path, monkeypatch, capsys):
    """Compile a modified copy of the sources; the real files are never touched."""
    source_copy = tmp_path / "src"
    shutil.copytree(compiler.SOURCE_DIR, source_copy)
    target = source_copy / "assets" / "AssetLedger.sol"
    text = target.read_text()
    assert "MAX_PARENTS = 32;" in text
    target.write_text(text.replace("MAX_PARENTS = 32;", "MAX_PARENTS = 33;"))
    committed = {p.name: p.read_bytes() for p in compiler.ARTIFACT_DIR.glob("*.json")}

    monkeypatch.setattr(compiler, "SOURCE_DIR", source_copy)
    assert compiler.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "stale artifacts:" in err and "AssetLedger" in err
    assert {p.name: p.read_bytes() for p in compiler.ARTIFACT_DIR.glob("*.json")} == committed
