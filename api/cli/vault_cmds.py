"""Vault commands of the `twinledger` CLI: keys, IPFS add/cat, CAR export/import.

    twinledger keygen [--pq] [-o FILE]               new age identity (mode 0600), prints recipient
    twinledger ipfs add [--only-hash] [--profile P] FILE|-    prints the CID (like `ipfs add -Q`)
    twinledger ipfs cat CID                          file bytes to stdout
    twinledger ipfs pin add|rm CID, ipfs pin ls      recursive pins (what gc keeps)
    twinledger ipfs gc                               remove the blocks no pin reaches
    twinledger car export CID -o FILE                the DAG as a CARv1 file
    twinledger car import FILE                       blocks into the store, prints the roots

Content goes to the embedded blockstore under the home directory (`--home`, else
$TWINLEDGER_HOME, else ~/.twinledger; blocks in <home>/blocks) or to a Kubo daemon with
`--kubo URL`. Errors print one line on stderr and exit 1; progress bars (add, cat, car
export, car import: verifying, then storing) appear on stderr only when it is a terminal,
for 8 MiB and more, or of a size not known ahead (a Kubo daemon's DAG export).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, TypeVar

import typer

from vault.errors import VaultError

if TYPE_CHECKING:  # the commands import the vault lazily: a fast start for --help
    from vault.cid import CID
    from vault.tempfiles import Output

F = TypeVar("F", bound=Callable[..., Any])
_PROGRESS_MIN = 8 << 20  # show a bar only for files at least this large
_READ = 1 << 20

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", envvar="TWINLEDGER_HOME", help="Node home directory [default: ~/.twinledger]",
                 show_default=False),
]
KuboOpt = Annotated[
    str | None, typer.Option("--kubo", metavar="URL", help="Use a Kubo RPC API instead of the embedded store")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON object instead of plain text")]

ipfs_app = typer.Typer(help="Add and read content-addressed files (UnixFS, Kubo-compatible CIDs).",
                       no_args_is_help=True)
car_app = typer.Typer(help="Move content to and from any IPFS node as CARv1 archives.", no_args_is_help=True)
pin_app = typer.Typer(help="Recursive pins: the DAGs that gc keeps.", no_args_is_help=True)
ipfs_app.add_typer(pin_app, name="pin")


def register(app: typer.Typer) -> None:
    app.command("keygen")(keygen)
    app.add_typer(ipfs_app, name="ipfs")
    app.add_typer(car_app, name="car")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _notes(exc: BaseException) -> str:
    """What the vault added to an error (e.g. blocks a failed import left for gc)."""
    return "".join(f" ({note})" for note in getattr(exc, "__notes__", ()))


def _cli_errors(fn: F) -> F:
    """Turn domain and OS errors into one line on stderr and exit status 1; a reader that
    went away (`| head`) into a quiet exit 141, as a shell reports a SIGPIPE death."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if sys.stdout is None:  # started with stdout closed: a CID or a file would be lost
            raise _fail("standard output is closed")
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            # nothing more can reach the reader; stdout goes to /dev/null so that the
            # interpreter's flush at exit does not fail (and print) a second time
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            raise typer.Exit(141) from None
        except VaultError as exc:
            raise _fail(str(exc) + _notes(exc)) from None
        except OSError as exc:
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            raise _fail(f"{exc.strerror or exc}{where}{_notes(exc)}") from None

    return wrapper  # type: ignore[return-value]


def _home(home: Path | None) -> Path:
    return (home or Path.home() / ".twinledger").expanduser()


def _store(home: Path | None):
    from vault.blockstore import FilesystemBlockstore

    # verify_writes=False: every block put here was just hashed by the importer or read_car.
    return FilesystemBlockstore(_home(home), verify_writes=False)


def _existing_store(home: Path | None):
    """The store for a command that only reads it (or removes from it), or None where
    there is none yet: opening one makes its directories, which a mistyped --home or a
    `cat` on a new machine should not leave behind."""
    return _store(home) if (_home(home) / "blocks").is_dir() else None


def _reading(home: Path | None, root: Any):
    """_existing_store for a command that needs `root`'s blocks: an error if there is no store."""
    store = _existing_store(home)
    if store is None:
        raise _fail(f"{root} is not in the store: there is no block store at {_home(home)}")
    return store


def _kubo(url: str):
    from vault.kubo import KuboClient

    return KuboClient(url)


def _cid(text: str):
    from vault.cid import CID

    return CID.decode(text)


def _echo_json(obj: dict[str, Any]) -> None:
    typer.echo(json.dumps(obj, sort_keys=True))


def _echo_cid(cid: Any, key: str, as_json: bool) -> None:
    """The CID a command acted on: alone on a line, or as {key: cid} with --json."""
    if as_json:
        _echo_json({key: str(cid)})
    else:
        typer.echo(str(cid))


def _interactive() -> bool:
    """Progress bars only for a person watching stderr (a terminal)."""
    return sys.stderr.isatty()


@contextlib.contextmanager
def _progress(total: int | None, label: str) -> Iterator[_Bar | None]:
    """A Rich bar on stderr for large inputs when stderr is a terminal; else None."""
    with _phases(total, label) as (advance,):
        yield advance


class _Bar:
    """One task of a Rich display: called with a byte count to advance it; `retotal` when
    the real total becomes known (a CAR's distinct blocks, once they are all checked)."""

    def __init__(self, display: Any, task: Any) -> None:  # Rich's Progress and TaskID, imported lazily
        self._display, self._task = display, task

    def __call__(self, n: int) -> None:
        self._display.advance(self._task, n)

    def retotal(self, total: int) -> None:
        self._display.update(self._task, total=total)

    def finish(self) -> None:
        """Done: the bar shows its total, whatever the estimate was (a DAG's Tsizes count
        a subtree linked twice twice, an export writes it once)."""
        task = self._display.tasks[self._task]
        self._display.update(self._task, total=task.completed)


@contextlib.contextmanager
def _phases(total: int | None, *labels: str) -> Iterator[tuple[_Bar | None, ...]]:
    """One bar per label, all of `total` bytes, in one display (Rich allows one at a time):
    for work that passes over the same bytes more than once. Nones when not interactive
    or below _PROGRESS_MIN. Each bar is finished (shows 100%) when the work succeeds."""
    if not _interactive() or (total is not None and total < _PROGRESS_MIN):
        yield (None,) * len(labels)
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=Console(stderr=True), transient=True) as display:
        bars = tuple(_Bar(display, display.add_task(label, total=total)) for label in labels)
        yield bars
        for bar in bars:
            bar.finish()
        display.refresh()


class _Counted:
    """A file object whose read() and write() report the bytes they move to `advance`."""

    def __init__(self, fh: BinaryIO, advance: Callable[[int], None] | None) -> None:
        self._fh = fh
        self._advance = advance

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        if data and self._advance is not None:
            self._advance(len(data))
        return data

    def write(self, data: bytes) -> int:
        n = self._fh.write(data)
        if self._advance is not None:
            self._advance(len(data))
        return n


def _pieces(src: BinaryIO, advance: Callable[[int], None] | None) -> Iterator[bytes]:
    while piece := src.read(_READ):
        if advance is not None:
            advance(len(piece))
        yield piece


@contextlib.contextmanager
def _open_input(path: str) -> Iterator[tuple[BinaryIO, int | None]]:
    """(file, its size or None): `path` opened for reading, or standard input for "-"."""
    if path == "-":
        if sys.stdin is None:
            raise _fail("standard input is closed")
        yield sys.stdin.buffer, None
        return
    p = Path(path).expanduser()
    if p.is_dir():
        raise _fail(f"{path} is a directory (a file is needed)")
    with open(p, "rb") as fh:
        st = os.fstat(fh.fileno())
        yield fh, st.st_size if stat.S_ISREG(st.st_mode) else None


# -- keygen -------------------------------------------------------------------------------


@_cli_errors
def keygen(
    output: Annotated[str | None, typer.Option("-o", "--output", help="Identity file, or - for standard output "
                                               "[default: <home>/identity.key]", show_default=False)] = None,
    home: HomeOpt = None,
    pq: Annotated[bool, typer.Option("--pq", help="A post-quantum hybrid (ML-KEM-768 + X25519) identity, "
                                     "as `age-keygen -pq` makes; opening its files with the age tool "
                                     "needs age 1.3 or later")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate an age identity (X25519, or post-quantum with --pq), write it (mode 0600)
    and print its recipient. `-o -` prints the identity file instead, as `age-keygen`
    does, and the recipient (or the --json report) goes to standard error."""
    from vault.age import HybridIdentity, X25519Identity

    identity = HybridIdentity.generate() if pq else X25519Identity.generate()
    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    text = f"# created: {created}\n# public key: {identity.recipient}\n{identity}\n"
    if output == "-":  # the text as given: ./- is a file named -
        typer.echo(text, nl=False)
        if as_json:
            typer.echo(json.dumps({"recipient": str(identity.recipient), "path": "-"}, sort_keys=True), err=True)
        else:
            typer.echo(f"Public key: {identity.recipient}", err=True)
        return
    given = os.path.expanduser(output) if output is not None else str(_home(home) / "identity.key")
    path = Path(given)
    from vault._fileio import write_all
    from vault.blockstore import FilesystemBlockstore
    from vault.tempfiles import atomic_output, resolve_output

    path.parent.mkdir(parents=True, exist_ok=True)
    # written whole beside it, then moved into place (never over an existing file, which
    # the install refuses in one step): a failed write (a full disk) or a kill leaves no
    # empty or partial identity behind, and claiming the temp name removes what a killed
    # run left there; the directory is found once and held (vault/_outdir.py)
    try:
        with resolve_output(given, follow=False) as target:
            if FilesystemBlockstore.owned_by(_home(home), target.name, dir_fd=target.dir.fd):
                raise _fail(f"{path} is inside the node's block store: write the identity elsewhere")
            with atomic_output(target, "keygen", 0o600, overwrite=False) as (fd, _tmp):
                os.fchmod(fd, 0o600)  # whatever the umask; on the descriptor, not a path that could be swapped
                write_all(fd, text.encode("ascii"))
                os.fsync(fd)
    except FileExistsError:
        raise _fail(f"{path} already exists; refusing to overwrite an identity") from None
    if as_json:
        _echo_json({"recipient": str(identity.recipient), "path": str(path)})
    else:
        typer.echo(str(identity.recipient))


# -- ipfs ---------------------------------------------------------------------------------


@ipfs_app.command("add")
@_cli_errors
def ipfs_add(
    file: Annotated[str, typer.Argument(help="File to add, or - for standard input")],
    only_hash: Annotated[bool, typer.Option("--only-hash", "-n", help="Only compute the CID; store nothing")] = False,
    profile: Annotated[str, typer.Option("--profile", help="Import profile: v0, v1, unixfs-v1-2025")] = (
        "unixfs-v1-2025"),
    home: HomeOpt = None,
    kubo: KuboOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import FILE as UnixFS (CIDs equal Kubo's for the profile), pin it, print its CID."""
    from vault.unixfs import Importer

    with _open_input(file) as (src, size), _progress(size, "adding") as advance:
        if kubo:
            with _kubo(kubo) as client:
                cid = client.add(_pieces(src, advance), profile=profile, only_hash=only_hash,
                                 filename=Path(file).name if file != "-" else "stdin")
        elif only_hash:
            importer = Importer(profile, None)
            for piece in _pieces(src, advance):
                importer.write(piece)
            cid = str(importer.finish())
        else:
            Importer(profile, None)  # validate the profile before creating a store
            store = _store(home)
            with store.importing():  # a gc elsewhere waits until the pin protects these blocks
                # as seal writes its blocks: past the page cache, fsynced in the background
                try:
                    with store.batch(background=True, direct=True):
                        importer = Importer(profile, store.put)
                        for piece in _pieces(src, advance):
                            importer.write(piece)
                        root = importer.finish()
                except Exception as exc:
                    exc.add_note("the blocks stored before this failure are not pinned: "
                                 "`twinledger ipfs gc` removes them")
                    raise
                store.pin(root)
            cid = str(root)
    if as_json:
        _echo_json({"cid": cid, "profile": profile, "stored": not only_hash})
    else:
        typer.echo(cid)


@ipfs_app.command("cat")
@_cli_errors
def ipfs_cat(
    cid: Annotated[str, typer.Argument(help="CID of a UnixFS file")],
    home: HomeOpt = None,
    kubo: KuboOpt = None,
) -> None:
    """Write the file stored under CID to standard output (every block verified)."""
    from vault.unixfs import dag_stat, export
    from vault.vault import read_file

    root = _cid(cid)
    out = sys.stdout.buffer
    with contextlib.ExitStack() as stack:
        if kubo:
            client = stack.enter_context(_kubo(kubo))
            get = client.block_get  # online: Kubo may fetch; we verify
            pieces = export(root, get)
        else:
            store = _reading(home, root)
            get = store.get
            pieces = stack.enter_context(contextlib.closing(read_file(store, root)))
        size = dag_stat(root, get).size if _interactive() else None
        # no bar for a root that is not a file: export() refuses it at its first block
        advance = stack.enter_context(_progress(size, "reading")) if size is not None else None
        for piece in pieces:
            out.write(piece)
            if advance is not None:
                advance(len(piece))
    out.flush()


# -- pins and gc --------------------------------------------------------------------------


@pin_app.command("add")
@_cli_errors
def pin_add(
    cid: Annotated[str, typer.Argument(help="Root CID of a DAG whose every block is in the store")],
    home: HomeOpt = None,
    kubo: KuboOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pin CID recursively (after `car import --no-pin`, say); every block must be present."""
    root = _cid(cid)
    if kubo:
        with _kubo(kubo) as client:
            client.pin_add(root)
    else:
        _reading(home, root).pin(root)  # BlockNotFoundError names the first missing block
    _echo_cid(root, "pinned", as_json)


@pin_app.command("rm")
@_cli_errors
def pin_rm(
    cid: Annotated[str, typer.Argument(help="A pinned root CID")],
    home: HomeOpt = None,
    kubo: KuboOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Unpin CID; its blocks stay until `twinledger ipfs gc` (unless another pin reaches them)."""
    root = _cid(cid)
    if kubo:
        with _kubo(kubo) as client:
            client.pin_rm(root)  # Kubo's own "not pinned" error if it is not
    elif (store := _existing_store(home)) is None or not store.unpin(root):
        raise _fail(f"{root} is not pinned")
    _echo_cid(root, "unpinned", as_json)


@pin_app.command("ls")
@_cli_errors
def pin_ls(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """List the pinned roots of the embedded store, one per line."""
    store = _existing_store(home)
    pins = sorted(str(c) for c in store.pins()) if store is not None else []
    if as_json:
        _echo_json({"pins": pins})
    else:
        for cid in pins:
            typer.echo(cid)


@ipfs_app.command("gc")
@_cli_errors
def ipfs_gc(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Remove every block of the embedded store that no pin reaches: what failed or
    unpinned imports left behind. Waits for imports running meanwhile (a node sealing a
    version, another `ipfs add`), in any process, to pin their roots first."""
    store = _existing_store(home)
    removed = store.gc() if store is not None else 0
    if as_json:
        _echo_json({"removed_blocks": removed})
    else:
        typer.echo(f"removed {removed} blocks")


# -- car ----------------------------------------------------------------------------------


@car_app.command("export")
@_cli_errors
def car_export(
    cid: Annotated[str, typer.Argument(help="Root CID of the DAG to export")],
    output: Annotated[str, typer.Option("-o", "--output", help="CAR file to write, or - for standard output")],
    home: HomeOpt = None,
    kubo: KuboOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the DAG under CID as a CARv1 file (written to a temp file, then renamed; from
    a Kubo daemon, checked before the rename: root, every block, the whole DAG). `-o -`,
    a FIFO or a character device (/dev/null) is written to as the blocks are read, each
    verified first."""
    from vault.tempfiles import resolve_output

    root = _cid(cid)
    to_stdout = output == "-"  # the text as given: ./- is a file named -
    if to_stdout or _streams(Path(output)):
        if kubo:
            raise _fail("--kubo needs a file to write: its CAR is checked whole before it is put in place")
        written = _export_stream(root, None if to_stdout else Path(output), home)
        if as_json:  # on stderr when the CAR itself is on stdout
            typer.echo(json.dumps({"root": str(root), "path": output, "blocks": written[0],
                                   "bytes": written[1]}, sort_keys=True), err=to_stdout)
        return
    given, output = output, Path(output).expanduser()
    if output.is_dir():
        raise _fail(f"{output} is a directory: name the CAR file to write")
    # the CAR's directory, found once and held open (through a symbolic link; not over a
    # device or a read-only file): the store check and the write are in the same one
    with resolve_output(os.path.expanduser(given)) as target:  # text: a trailing slash counts
        _export_file(root, target, given, home, kubo, as_json)


def _export_file(root: CID, target: Output, given: str, home: Path | None, kubo: str | None, as_json: bool) -> None:
    from vault.blockstore import FilesystemBlockstore
    from vault.car import export_car
    from vault.tempfiles import atomic_output
    from vault.unixfs import dag_stat

    output = target.path
    store = None if kubo else _reading(home, root)
    if FilesystemBlockstore.owned_by(_home(home), target.name, dir_fd=target.dir.fd):
        raise _fail(f"{output} is inside the node's block store: write the CAR elsewhere")
    # one short temp name per output, locked while written (vault/tempfiles.py): a second
    # export to the same path is refused, and what a crashed one left is removed
    blocks = None
    with atomic_output(target, "car-export", 0o666) as (fd, _tmp), open(fd, "wb", closefd=False) as fh:
        if kubo:
            with _kubo(kubo) as client, _progress(None, "exporting") as advance:
                for piece in client.dag_export(root):
                    fh.write(piece)
                    if advance is not None:
                        advance(len(piece))
            fh.flush()
            blocks = _check_car(fd, root)  # Kubo reports a failure mid-stream only in a trailer
        else:
            assert store is not None
            total = dag_stat(root, store.get).dag_size if _interactive() else None
            # total: the root's estimate of the blocks' bytes (CAR framing aside); the
            # bar is finished on success, whatever the DAG links twice
            with _progress(total, "exporting") as advance:
                blocks = export_car(store, root, _Counted(fh, advance))  # type: ignore[arg-type]
        fh.flush()
        os.fsync(fh.fileno())
        size = os.fstat(fh.fileno()).st_size
    if as_json:
        _echo_json({"root": str(root), "path": given, "blocks": blocks, "bytes": size})


def _streams(output: Path) -> bool:
    """Whether `output` is written as a stream (a FIFO or a character device: there is
    nothing to rename over it) rather than as a file put in place whole."""
    try:
        mode = os.stat(output.expanduser()).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def _export_stream(root: CID, output: Path | None, home: Path | None) -> tuple[int, int]:
    """(blocks, bytes): the CAR of `root` from the embedded store written to standard
    output (None) or to the FIFO or device `output` as it is read (each block verified
    before it is written; on a failure the reader has a truncated CAR, as from Kubo)."""
    from vault.car import export_car

    store = _reading(home, root)
    with contextlib.ExitStack() as stack:
        if output is None:
            fh = sys.stdout.buffer
            if fh.isatty():
                raise _fail("refusing to write a CAR to a terminal: redirect it or use -o FILE")
        else:
            fh = stack.enter_context(open(output.expanduser(), "wb"))  # a FIFO: waits for its reader
        sizes: list[int] = []
        blocks = export_car(store, root, _Counted(fh, sizes.append))  # type: ignore[arg-type]
        fh.flush()
    return blocks, sum(sizes)


def _check_car(fd: int, root: CID) -> int:
    """How many blocks the CAR written to `fd` holds, once it is known to be the whole DAG
    under `root`: every block hashed against its CID, each linked from an earlier one, none
    missing (vault.car.require_root, linked_only); else IntegrityError / InvalidCARError.
    Read through a descriptor of its own (the file may have no name yet)."""
    from vault.car import linked_only, read_car, require_root

    with open(os.dup(fd), "rb") as fh:
        fh.seek(0)
        roots, blocks = read_car(fh)
        require_root(roots, root)
        return sum(1 for _ in linked_only(root, blocks))


@car_app.command("import")
@_cli_errors
def car_import(
    file: Annotated[str, typer.Argument(help="CARv1 file to import, or - for standard input")],
    pin: Annotated[bool, typer.Option("--pin/--no-pin", help="Pin the roots (their DAGs must be complete)")] = True,
    home: HomeOpt = None,
    kubo: KuboOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import every block of a CAR file (all verified before any is stored) and print its roots."""
    from vault.car import import_car

    with _open_input(file) as (fh, size):
        if kubo:
            with _kubo(kubo) as client, _progress(size, "uploading") as advance:
                result = client.dag_import(_pieces(fh, advance), pin_roots=pin)
            failed = [f"{r.cid}: {r.pin_error}" for r in result.roots if r.pin_error]
            if failed:
                raise _fail("could not pin " + "; ".join(failed))
            roots = [r.cid for r in result.roots]
        else:
            store = _store(home)
            with store.importing():  # a gc elsewhere waits until the pins protect these blocks
                with _phases(size, "verifying", "storing") as (verified, stored):
                    # in a batch of its own: durable when it returns
                    cids = import_car(store, _Counted(fh, verified), stored,  # type: ignore[arg-type]
                                      stored.retotal if stored is not None else None)
                if pin:
                    for root in cids:
                        store.pin(root)
            roots = [str(c) for c in cids]
    if as_json:
        _echo_json({"roots": roots, "pinned": pin})
    else:
        for root in roots:
            typer.echo(root)
