"""File I/O the vault's stores and outputs share: durable small files, directory fsyncs,
O_DIRECT writes and reads through per-thread aligned buffers, syncfs(2) and cachestat(2)
(through ctypes: the stdlib wraps neither). Private to the vault; no policy here (which
batch syncs how is vault/blockstore/_flusher.py's)."""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import platform
import secrets
import sys
import threading
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes | bytearray | memoryview) -> None:
    """Write a file whole or not at all: a temp file beside it (`.<name>.<hex>.tmp`),
    fsync, rename over `path`, fsync of the directory. A failure removes the temp file."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_text_durably(path: Path, text: str) -> None:
    """write_durably() of a small ASCII text (a pin, a layout marker)."""
    write_durably(path, text.encode("ascii"))


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


ALIGN = 4096  # O_DIRECT: offsets, lengths and memory aligned to >= any common logical block size
DIRECT_MIN = 64 << 10  # smaller blocks go through the page cache: a direct write would only add latency
O_DIRECT = getattr(os, "O_DIRECT", 0)


def thread_buffer(local: threading.local, size: int) -> mmap.mmap:
    """This thread's page-aligned buffer kept in `local`, grown to at least `size` bytes
    (a multiple of ALIGN)."""
    buf = getattr(local, "buf", None)
    if buf is None or len(buf) < size:
        buf = local.buf = mmap.mmap(-1, -(-size // ALIGN) * ALIGN)
    return buf


_WRITE_BUFFERS = threading.local()  # one aligned buffer per putting thread


def aligned_copy(data: bytes | bytearray | memoryview) -> memoryview:
    """`data` copied into this thread's page-aligned buffer (valid until its next call):
    a direct put of bytes that are not page-aligned (an Importer's blocks, as in `ipfs
    add`) would otherwise be refused and go through the page cache, and one copy costs
    far less than the new page-cache pages."""
    view = memoryview(thread_buffer(_WRITE_BUFFERS, len(data)))[: len(data)]
    view[:] = data
    return view


def write_direct(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write `data` to the new, empty file `fd`, opened with O_DIRECT. Memory that is not
    page-aligned makes the kernel refuse (EINVAL) before anything is written: then the file
    is written through the page cache instead."""
    try:
        write_all(fd, data)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        os.ftruncate(fd, 0)  # a partial direct write ahead of the refusal, if any
        os.lseek(fd, 0, os.SEEK_SET)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~O_DIRECT)
        write_all(fd, data)


def _libc_renameat2() -> Any:
    try:
        call = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return call


_RENAMEAT2 = _libc_renameat2()
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def rename_noreplace(src: Path | str, dst: Path | str, *, dir_fd: int = _AT_FDCWD) -> bool:
    """Rename `src` to `dst` (both relative to `dir_fd` if given) in one step unless `dst`
    exists (FileExistsError; also for a dangling symbolic link): renameat2(2) with
    RENAME_NOREPLACE (Linux >= 3.15; os.rename has no such flag). False where that is not
    available (no renameat2, or a filesystem that refuses the flag): the caller then needs
    another way."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(dir_fd, os.fsencode(src), dir_fd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(dst))  # EEXIST: FileExistsError


def _libc_syncfs() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):  # not Linux/glibc: per-file fsyncs only
        return None


SYNCFS = _libc_syncfs()


def syncfs(path: Path) -> None:
    """syncfs(2) of the filesystem holding `path`: every dirty inode, data and metadata
    block of that filesystem written, then one cache flush of its device."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}", str(path))
    finally:
        os.close(fd)


class _CacheStatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _CacheStat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64)
                for name in ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")]


# cachestat(2), Linux >= 6.5: 451 in the generic syscall table and on x86; only called
# where that number is known to be cachestat, since a wrong one would be another syscall.
_NR_CACHESTAT = 451 if sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64", "riscv64") else None
_PAGE = mmap.PAGESIZE


def _libc_syscall() -> Any:
    if _NR_CACHESTAT is None or not hasattr(os, "O_DIRECT"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None


SYSCALL = _libc_syscall()


def in_page_cache(fd: int, size: int) -> bool:
    """Whether every page of the first `size` bytes of `fd` is in the page cache, by
    cachestat(2) (no I/O, no change to the cache); False where that is unknown (an older
    kernel: ENOSYS). No library wraps it; the stdlib has no mincore either."""
    if SYSCALL is None:
        return False
    span, cached = _CacheStatRange(0, size), _CacheStat()
    if SYSCALL(ctypes.c_long(_NR_CACHESTAT), ctypes.c_int(fd), ctypes.byref(span), ctypes.byref(cached),
                ctypes.c_uint(0)) != 0:
        return False
    return cached.nr_cache * _PAGE >= size


_READ_BUFFERS = threading.local()  # one aligned buffer per reading thread


def read_direct(path: Path) -> bytes:
    """The file's bytes read with O_DIRECT through this thread's page-aligned buffer;
    through the page cache instead when the file is small, when all of it is already
    there (a block that `ipfs add` or another writer put through the page cache, or that
    was just read: 0.256 s against 0.315 s to open a 256 MiB asset whose blocks were all
    cached, the medians of six interleaved opens here), and on filesystems or files that
    refuse O_DIRECT."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | O_DIRECT)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return path.read_bytes()
    try:
        size = os.fstat(fd).st_size
        if size < DIRECT_MIN or in_page_cache(fd, size):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~O_DIRECT)
            return read_fd(fd, size)
        need = -(-size // ALIGN) * ALIGN
        view = memoryview(thread_buffer(_READ_BUFFERS, need))[:need]
        try:
            got = 0
            while got < size:
                n = os.preadv(fd, [view[got:]], got)
                if n == 0:
                    break
                got += n
            return bytes(view[:got])
        finally:
            view.release()
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return path.read_bytes()
    finally:
        os.close(fd)


def read_fd(fd: int, size: int) -> bytes:
    """Up to `size` bytes from the start of `fd` (fewer only at end of file)."""
    data = os.pread(fd, size, 0)
    while len(data) < size:
        more = os.pread(fd, size - len(data), len(data))
        if not more:
            break
        data += more
    return data


