"""Compile contracts/src into committed artifacts (ABI + bytecode), deterministically.

The compiler is the npm package `solc` at the exact version pinned in package-lock.json,
driven through standard JSON (contracts/solc-compile.cjs). Where a native solc of the
same version is installed, py-solc-x can drive it with the same standard-JSON input; both
must give byte-identical artifacts (tests/ledger/test_artifacts.py checks it).

All sources (ours and OpenZeppelin's, from node_modules) are inlined into the input, so
the input — and its hash, recorded in the build info — pins every byte that reaches the
compiler. `python -m ledger.compiler --write` regenerates; `--check` exits 1 if stale.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ledger.errors import CompilerError

REPO = Path(__file__).resolve().parent.parent
CONTRACTS_DIR = REPO / "contracts"
SOURCE_DIR = CONTRACTS_DIR / "src"
ARTIFACT_DIR = CONTRACTS_DIR / "artifacts"
NODE_MODULES = REPO / "node_modules"

SOLC_VERSION = "0.8.37"
EVM_VERSION = "cancun"
# Contracts whose artifacts are committed (deployable units).
CONTRACTS = {
    "Consortium": "consortium/Consortium.sol",
    "AssetLedger": "assets/AssetLedger.sol",
    "AuditAnchors": "audit/AuditAnchors.sol",
}

_IMPORT = re.compile(r'^\s*import\s+(?:[^"\']*?\s+from\s+)?["\']([^"\']+)["\']\s*;', re.MULTILINE)


def _read_unit(unit: str) -> str:
    if unit.startswith("@"):
        path = NODE_MODULES / unit
    else:
        path = SOURCE_DIR / unit
    if not path.is_file():
        raise CompilerError(f"import not found: {unit} (looked at {path}; run `make setup`)")
    return path.read_text(encoding="utf-8")


def collect_sources() -> dict[str, str]:
    """Every source unit reachable from CONTRACTS, keyed by its solc source-unit name."""
    sources: dict[str, str] = {}
    pending = sorted(CONTRACTS.values())
    while pending:
        unit = pending.pop()
        if unit in sources:
            continue
        text = _read_unit(unit)
        sources[unit] = text
        for target in _IMPORT.findall(text):
            if target.startswith("."):
                target = posixpath.normpath(posixpath.join(posixpath.dirname(unit), target))
            pending.append(target)
    return dict(sorted(sources.items()))


def standard_input() -> dict:
    return {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in collect_sources().items()},
        "settings": {
            "optimizer": {"enabled": True, "runs": 200},
            "evmVersion": EVM_VERSION,
            "metadata": {"bytecodeHash": "ipfs"},
            "outputSelection": {
                "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}
            },
        },
    }


def _canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def input_hash(std_input: dict) -> str:
    return hashlib.sha256(_canonical(std_input).encode()).hexdigest()


def compile_with_npm(std_input: dict) -> dict:
    script = CONTRACTS_DIR / "solc-compile.cjs"
    if not (NODE_MODULES / "solc").is_dir():
        raise CompilerError("npm solc is not installed (run `make setup`)")
    node = shutil.which("node")
    if node is None:
        raise CompilerError("node is not on PATH; the npm solc compiler needs Node.js")
    proc = subprocess.run(
        [node, str(script)], input=_canonical(std_input), capture_output=True, text=True,
        cwd=REPO, check=False,
    )
    if proc.returncode != 0:
        raise CompilerError(f"solc (npm) failed: {proc.stderr.strip()[:2000]}")
    return json.loads(proc.stdout)


def native_solc() -> str | None:
    """Path of a native solc of exactly SOLC_VERSION, via py-solc-x's install dir or PATH."""
    candidates: list[str] = []
    try:
        import solcx  # type: ignore[import-untyped]

        for version in solcx.get_installed_solc_versions():
            if str(version) == SOLC_VERSION:
                candidates.append(str(solcx.install.get_executable(version)))
    except Exception:  # py-solc-x missing or its install dir unreadable: just no candidate
        pass
    on_path = shutil.which("solc")
    if on_path:
        candidates.append(on_path)
    for path in candidates:
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
        except OSError:
            continue
        if f"Version: {SOLC_VERSION}+" in out:
            return path
    return None


def compile_with_native(std_input: dict, solc_binary: str) -> dict:
    import solcx  # type: ignore[import-untyped]

    # allow_paths: sources are inlined, nothing is read from disk by the compiler.
    return solcx.compile_standard(std_input, solc_binary=solc_binary)


def artifacts_from_output(output: dict, std_input: dict) -> dict[str, dict]:
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise CompilerError("compilation failed:\n" + "\n".join(e["formattedMessage"] for e in errors))
    result: dict[str, dict] = {}
    for name, unit in CONTRACTS.items():
        compiled = output["contracts"][unit][name]
        result[name] = {
            "contractName": name,
            "sourceName": unit,
            "compiler": f"solc {SOLC_VERSION}",
            "evmVersion": EVM_VERSION,
            "inputHash": input_hash(std_input),
            "abi": compiled["abi"],
            "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
            "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
        }
    return result


def build(native: bool = False) -> dict[str, dict]:
    std_input = standard_input()
    if native:
        binary = native_solc()
        if binary is None:
            raise CompilerError(f"no native solc {SOLC_VERSION} installed")
        output = compile_with_native(std_input, binary)
    else:
        output = compile_with_npm(std_input)
    return artifacts_from_output(output, std_input)


def render(artifact: dict) -> str:
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def write(artifacts: dict[str, dict], directory: Path = ARTIFACT_DIR) -> None:
    """Write each artifact atomically (temp file + rename) so a crash never leaves half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, artifact in artifacts.items():
        target = directory / f"{name}.json"
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(render(artifact))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)


def stale(artifacts: dict[str, dict], directory: Path = ARTIFACT_DIR) -> list[str]:
    """Names of committed artifacts that differ from `artifacts` (or are missing)."""
    out = []
    for name, artifact in artifacts.items():
        path = directory / f"{name}.json"
        if not path.is_file() or path.read_text(encoding="utf-8") != render(artifact):
            out.append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ledger.compiler", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="regenerate contracts/artifacts")
    group.add_argument("--check", action="store_true", help="exit 1 if the committed artifacts are stale")
    parser.add_argument("--native", action="store_true", help="use a native solc via py-solc-x")
    args = parser.parse_args(argv)
    try:
        artifacts = build(native=args.native)
    except CompilerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.write:
        write(artifacts)
        print(f"wrote {len(artifacts)} artifacts to {ARTIFACT_DIR}")
        return 0
    names = stale(artifacts)
    if names:
        print(f"stale artifacts: {', '.join(names)} (run `make compile`)", file=sys.stderr)
        return 1
    print("artifacts are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
