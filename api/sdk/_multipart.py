"""The multipart/form-data body of an upload, streamed from a file, twice.

Hand-written (RFC 7578, ~40 lines) rather than httpx's encoder because the node
authenticates a streamed upload by the keccak256 of the *exact* body bytes, signed before
the first byte is sent (X-TwinLedger-Body-Hash). So the body must be reproducible: one
pass hashes it (and gives its length), a second pass — and one more per retry — sends
it. httpx's MultipartStream would do, but it is private API. Memory stays one chunk.

Layout (CRLF line ends, boundary random per upload):

    --B\r\n
    Content-Disposition: form-data; name="parents"\r\n
    Content-Type: application/json\r\n\r\n
    ["12@1","7@3"]\r\n                          (only when there are parents)
    --B\r\n
    Content-Disposition: form-data; name="file"; filename="<name>"\r\n
    Content-Type: application/octet-stream\r\n\r\n
    <file bytes>\r\n
    --B--\r\n
"""
from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from eth_hash.auto import keccak

CHUNK = 1 << 20
_UNSAFE = {ord('"'): "%22", ord("\\"): "%5C", ord("\r"): "%0D", ord("\n"): "%0A"}


class MultipartFile:
    """The upload body for `path` with optional form fields before the file part."""

    def __init__(self, path: Path, fields: Sequence[tuple[str, str]] = (), *, field: str = "file") -> None:
        self.path = Path(path)
        self.boundary = "twinledger-" + secrets.token_hex(16)
        head = b"".join(
            self._part_head(name, None, "application/json") + value.encode("utf-8") + b"\r\n"
            for name, value in fields)
        filename = self.path.name.translate(_UNSAFE) or "file"
        self._head = head + self._part_head(field, filename, "application/octet-stream")
        self._tail = f"\r\n--{self.boundary}--\r\n".encode("ascii")

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _part_head(self, name: str, filename: str | None, content_type: str) -> bytes:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        return (f"--{self.boundary}\r\nContent-Disposition: {disposition}\r\n"
                f"Content-Type: {content_type}\r\n\r\n").encode("utf-8")

    def file_size(self) -> int:
        return os.stat(self.path).st_size

    def chunks(self, progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
        """The body, streamed from the file; `progress(n)` gets file bytes sent."""
        yield self._head
        with open(self.path, "rb") as fh:
            while piece := fh.read(CHUNK):
                if progress is not None:
                    progress(len(piece))
                yield piece
        yield self._tail

    def digest(self) -> tuple[bytes, int]:
        """(keccak256 of the body, body length), by one streamed pass over the file."""
        hasher = keccak.new(b"")
        length = 0
        for piece in self.chunks():
            hasher.update(piece)
            length += len(piece)
        return hasher.digest(), length


def parents_field(parents: Sequence[object]) -> list[tuple[str, str]]:
    """The `parents` form field ("assetId@version" strings) or none."""
    if not parents:
        return []
    return [("parents", json.dumps([str(p) for p in parents], separators=(",", ":")))]
