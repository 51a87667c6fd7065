"""Receive a streamed multipart/form-data upload into a temp file (bounded memory).

FastAPI's UploadFile would consume the body before the signed body hash can be checked,
so the raw request stream is fed to python-multipart's streaming MultipartParser here:

    part "file"     (required, once)   written to a temp file under <org dir>/tmp while
                                       hashed with SHA-256
    part "parents"  (optional, once)   JSON list of "assetId@version", at most 64 KiB

Any other part, a duplicate part, a missing end boundary or a body that does not match
X-TwinLedger-Body-Hash (raised by `caller.stream` after the last chunk) is refused and the
temp file is removed: nothing is sealed from a provisional body.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from api.deps import Caller
from api.errors import InputValidationError
from api.usecases._common import parse_refs
from ledger.models import VersionRef

MAX_FIELD_BYTES = 64 * 1024
FILE_PART = "file"
PARENTS_PART = "parents"


def _bad(message: str) -> InputValidationError:
    return InputValidationError(message, reason="invalid_multipart")


@dataclass
class Upload:
    path: Path
    sha256: str  # of the file part
    size: int
    parents: tuple[VersionRef, ...]

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class _Receiver:
    def __init__(self, fh, boundary: bytes) -> None:
        self.fh = fh
        self.digest = hashlib.sha256()
        self.size = 0
        self.parents = bytearray()
        self.seen: set[str] = set()
        self.current: str | None = None
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.headers: dict[str, bytes] = {}
        self.ended = False
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin, "on_part_data": self._part_data,
            "on_header_field": lambda d, s, e: self.header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self.header_value.extend(d[s:e]),
            "on_header_end": self._header_end, "on_headers_finished": self._headers_finished,
            "on_end": self._end,
        })

    def _part_begin(self) -> None:
        self.headers.clear()
        self.current = None

    def _header_end(self) -> None:
        self.headers[self.header_field.decode("latin-1").strip().lower()] = bytes(self.header_value).strip()
        self.header_field.clear()
        self.header_value.clear()

    def _headers_finished(self) -> None:
        disposition, params = parse_options_header(self.headers.get("content-disposition"))
        name = params.get(b"name", b"").decode("latin-1")
        if disposition != b"form-data" or name not in (FILE_PART, PARENTS_PART):
            raise _bad(f'unexpected part {name[:40]!r}: only "{FILE_PART}" and "{PARENTS_PART}" are accepted')
        if name in self.seen:
            raise _bad(f'part "{name}" appears twice')
        self.seen.add(name)
        self.current = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        if self.current == FILE_PART:
            self.fh.write(piece)
            self.digest.update(piece)
            self.size += len(piece)
        elif self.current == PARENTS_PART:
            if len(self.parents) + len(piece) > MAX_FIELD_BYTES:
                raise _bad(f'part "{PARENTS_PART}" is larger than {MAX_FIELD_BYTES} bytes')
            self.parents.extend(piece)

    def _end(self) -> None:
        self.ended = True


def _boundary(request: Request) -> bytes:
    content_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise _bad("the body must be multipart/form-data with a boundary")
    return boundary


def _parents(raw: bytes) -> tuple[VersionRef, ...]:
    if not raw.strip():
        return ()
    try:
        items = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InputValidationError('"parents" must be a JSON list of "assetId@version"',
                                   reason="invalid_parents") from None
    if not isinstance(items, list):
        raise InputValidationError('"parents" must be a JSON list of "assetId@version"', reason="invalid_parents")
    return parse_refs(items)


async def receive_upload(request: Request, caller: Caller, tmp_dir: Path) -> Upload:
    """Stream the body into a temp file; the Upload once the whole body is verified."""
    boundary = _boundary(request)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-", suffix=".part")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            try:
                receiver = _Receiver(fh, boundary)
                async for chunk in caller.stream(request):  # BodyHashMismatchError after the last chunk
                    receiver.parser.write(chunk)
                receiver.parser.finalize()
            except FormParserError as exc:
                raise _bad(f"malformed multipart body: {str(exc)[:120]}") from None
        if not receiver.ended:
            raise _bad("the multipart body ended before its closing boundary")
        if FILE_PART not in receiver.seen:
            raise _bad(f'the multipart body has no "{FILE_PART}" part')
        return Upload(path, receiver.digest.hexdigest(), receiver.size, _parents(bytes(receiver.parents)))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
