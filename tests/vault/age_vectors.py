"""A tiny loader for the C2SP CCTV age vectors (../shared/testdata/age/README.md).

A vector file is `key: value` lines, an empty line, then the age file (zlib-compressed
when `compressed: zlib`). Keys may repeat (identity, passphrase); unknown keys are kept.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

EXPECTATIONS = {"success", "no match", "HMAC failure", "header failure", "payload failure", "armor failure"}


@dataclass(frozen=True)
class AgeVector:
    name: str
    expect: str
    payload_sha256: str | None
    identities: tuple[str, ...]
    passphrases: tuple[str, ...]
    armored: bool
    file_key: bytes | None
    comment: str | None
    data: bytes  # the age file, decompressed

    @property
    def unsupported_feature(self) -> str | None:
        """The unimplemented feature this vector needs, named for pytest.skip, or None.
        ASCII armor, scrypt passphrases and post-quantum hybrid keys are all implemented."""
        return None


def vector_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file() and not p.name.endswith(".md"))


def _fields(meta: bytes) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for line in meta.decode("utf-8").split("\n"):
        key, _, value = line.partition(": ")
        fields.setdefault(key, []).append(value)
    return fields


def vector_expectation(path: Path) -> str:
    """The `expect:` value, reading only the vector's text header (cheap, for collection)."""
    with path.open("rb") as f:
        meta = f.read(4096).partition(b"\n\n")[0]
    return _fields(meta)["expect"][0]


def load_vector(path: Path) -> AgeVector:
    raw = path.read_bytes()
    meta, sep, body = raw.partition(b"\n\n")
    if not sep:
        raise ValueError(f"{path.name}: no blank line after the vector header")
    fields = _fields(meta)
    expect = fields["expect"][0]
    if expect not in EXPECTATIONS:
        raise ValueError(f"{path.name}: unknown expectation {expect!r}")
    if fields.get("compressed", [None])[0] == "zlib":
        body = zlib.decompress(body)
    file_key = fields.get("file key", [None])[0]
    return AgeVector(
        name=path.name,
        expect=expect,
        payload_sha256=fields.get("payload", [None])[0],
        identities=tuple(fields.get("identity", [])),
        passphrases=tuple(fields.get("passphrase", [])),
        armored=fields.get("armored", ["no"])[0] == "yes",
        file_key=bytes.fromhex(file_key) if file_key else None,
        comment=fields.get("comment", [None])[0],
        data=body,
    )
