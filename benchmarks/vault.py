"""Vault throughput and memory, compared with the `age` command-line tool in the same run.

Prints ONE JSON line:
  - seal (age-encrypt + commitment + UnixFS import + store blocks + fsync + pin) and open
    (fetch + verify blocks + decrypt + commitment check + write + fsync + rename)
    throughput on a random file of --size-mib (default 256 MiB), in MB/s (10^6 bytes/s);
  - the same file through `age -e` / `age -d` (same recipient, output to a file in the
    same temp directory, i.e. the same disk), and the ratios ours/age (target >= 1.0);
  - peak RSS of seal and of open on a --rss-size-mib file (default 1 GiB), each in a fresh
    subprocess (its own VmHWM), plus the RSS of a child that only
    imports the vault (target <= 100 MiB).
The raw disk in the same run (disk_write_s, disk_read_and_write_s: 1 MiB O_DIRECT requests)
is reported too: it is what seal and open must wait for whatever the CPU does.
Timing protocol: the plaintext is written, then read once more so it sits in the page
cache for both tools; seal writes into one store for all rounds, as a node does (nothing
is deleted until the end: see _throughput); every timed run starts after an (untimed) sync(2), so that a tool
that fsyncs does not also pay for the writeback of the previous run's output; then
--repeat rounds (default 4) of `age -e`, seal, `age -e` + fsync, `age -d`, open, `age -d` + fsync, interleaved
so that noise from a shared machine hits both tools alike, the order within a pair
alternating from round to round (whichever writes first gets the pages just freed). The ratios use the
best (minimum) wall time of each tool; medians are reported too. CPU seconds (all threads
of this process / the age child, user + system), the 1-minute load average before and
after, and the CPU steal share (steal_percent per timed run, steal_percent_throughput over
all rounds: the time a shared VM's CPUs were running other guests, from /proc/stat) are
reported, since wall time on a loaded machine says little. Targets are reported, not
asserted.

    .venv/bin/python benchmarks/vault.py [--size-mib 256] [--rss-size-mib 1024] [--repeat 4]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MIB = 1 << 20


def _random_file(path: Path, size_mib: int) -> None:
    with open(path, "wb") as fh:
        for _ in range(size_mib):
            fh.write(os.urandom(MIB))


def _identity(workdir: Path):
    from vault.age import X25519Identity

    identity = X25519Identity.generate()
    key = workdir / "identity.key"
    key.write_text(f"{identity}\n")
    key.chmod(0o600)
    return identity, key


def cpu_ticks(stat: str) -> tuple[int, int] | None:
    """(steal, total) clock ticks of all CPUs from the text of /proc/stat, None when its
    first line is not the aggregate "cpu" line or has no steal column (Linux < 2.6.11)."""
    fields = stat.split("\n", 1)[0].split()
    if len(fields) < 9 or fields[0] != "cpu" or not all(f.isdigit() for f in fields[1:]):
        return None
    ticks = [int(f) for f in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return ticks[7], sum(ticks)  # guest time is already counted in user (and nice)


def steal_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of CPU time the hypervisor gave to other guests between two readings:
    on a shared VM, a round with a high share ran on less than the machine's CPUs (CPU-bound
    work such as `age` slows with it; work waiting for the disk less so)."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round(100 * (after[0] - before[0]) / (after[1] - before[1]), 1)


def _read_ticks() -> tuple[int, int] | None:
    try:
        with open("/proc/stat") as fh:
            return cpu_ticks(fh.read(4096))
    except OSError:  # not Linux
        return None


def _timed(fn, cpu: list[float], steal: list[float | None]) -> float:
    """Wall seconds of fn(); appends its CPU seconds (this process's threads + children) to
    cpu and the machine's steal share during it (steal_percent) to steal."""
    def used() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    os.sync()  # untimed: nobody's fsync pays for the previous run's dirty pages
    ticks, start, cpu0 = _read_ticks(), time.perf_counter(), used()
    fn()
    wall = time.perf_counter() - start
    cpu.append(used() - cpu0)
    steal.append(steal_percent(ticks, _read_ticks()))
    return wall


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _warm(path: Path) -> None:
    """Read `path` once so that both tools start from the page cache."""
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(MIB)
        while fh.readinto(buf):
            pass


def _throughput(size_mib: int, repeat: int, workdir: Path, accelerate: bool = True) -> dict:
    from vault.blockstore import FilesystemBlockstore
    from vault.vault import Vault

    age = shutil.which("age")
    if age is None:
        raise SystemExit("the `age` tool is required (Debian package age)")
    src = workdir / "plain.bin"
    _random_file(src, size_mib)
    _warm(src)
    identity, key = _identity(workdir)
    times: dict[str, list[float]] = {"seal": [], "open": [], "age_e": [], "age_d": [], "age_e_fsync": [],
                                     "age_d_fsync": []}
    cpu: dict[str, list[float]] = {k: [] for k in times}
    steal: dict[str, list[float | None]] = {k: [] for k in times}
    ticks = _read_ticks()
    profile = None
    # One store for every round, as a node keeps one: a new version lands among the shard
    # directories that earlier ones made (the first round makes most of them). Nothing is
    # deleted until all rounds are done: on ext4 without a journal (these machines), a new
    # inode skips those freed in the last minute, one lookup each, so deleting a round's
    # 257 block files would slow the next round's seal (and not age's one output file).
    store_dir = workdir / "store"
    vault = Vault(FilesystemBlockstore(store_dir, verify_writes=False), identity, accelerate=accelerate)
    # The outputs, unlike the store, are removed after each round: keeping them made
    # `age -e` 3-4x slower in later rounds here, its page-cache writes then taking pages
    # the VM had handed back to the host (free page reporting), not recently freed ones.
    for n in range(repeat):
        enc, dec = workdir / "age.out", workdir / "age.plain"
        enc_synced, out = workdir / "age.synced.out", workdir / "opened.bin"
        dec_synced = workdir / "age.synced.plain"
        sealed = None

        def seal() -> None:
            nonlocal sealed
            sealed = vault.seal(src)

        def age_e(target: Path = enc) -> None:
            _run([age, "-e", "-r", str(identity.recipient), "-o", str(target), str(src)])

        def age_e_fsync() -> None:
            # Reference with seal's durability: age -e, then fsync of its output (seal
            # returns only once every block is on disk; age -e never fsyncs). Reported
            # beside the target ratio, which stays against plain `age -e`.
            age_e(enc_synced)
            _fsync(enc_synced)

        def age_d(target: Path = dec) -> None:
            _run([age, "-d", "-i", str(key), "-o", str(target), str(enc)])

        def age_d_fsync() -> None:
            # Reference with open's durability: age -d, then fsync of its output (open
            # returns only once the plaintext is on disk). For context, like age_e_fsync.
            age_d(dec_synced)
            _fsync(dec_synced)

        steps = {
            "age_e": age_e,
            "seal": seal,
            "age_e_fsync": age_e_fsync,
            "age_d": age_d,
            "age_d_fsync": age_d_fsync,
            "open": lambda: vault.open(sealed.cid, None, identity, out, commitment=sealed.commitment),
        }
        # The order alternates between rounds, so that neither tool always runs right
        # after the other one's writes (page-cache state, pending writeback): a fixed
        # order could favour one side.
        order = (["age_e", "seal", "age_e_fsync", "age_d", "open", "age_d_fsync"] if n % 2 == 0
                 else ["seal", "age_e", "age_e_fsync", "open", "age_d", "age_d_fsync"])
        for name in order:
            times[name].append(_timed(steps[name], cpu[name], steal[name]))
        assert sealed is not None
        profile = sealed.profile
        if out.stat().st_size != src.stat().st_size or dec.stat().st_size != src.stat().st_size:
            raise SystemExit("a decryption produced a file of the wrong size")
        for path in (enc, dec, enc_synced, dec_synced, out):
            path.unlink()
    shutil.rmtree(store_dir)
    src.unlink()
    steal_all = steal_percent(ticks, _read_ticks())
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_best = {k: min(v) for k, v in cpu.items()}
    size = size_mib * MIB

    def mbs(seconds: float) -> float:
        return round(size / seconds / 1e6, 1)

    return {
        "file_mib": size_mib,
        "profile": profile,
        "repeats": repeat,
        "seal_mb_per_s": mbs(best["seal"]),
        "open_mb_per_s": mbs(best["open"]),
        "age_encrypt_mb_per_s": mbs(best["age_e"]),
        "age_decrypt_mb_per_s": mbs(best["age_d"]),
        "seal_ratio_vs_age": round(best["age_e"] / best["seal"], 2),
        "open_ratio_vs_age": round(best["age_d"] / best["open"], 2),
        "seal_ratio_vs_age_median": round(med["age_e"] / med["seal"], 2),
        "seal_ratio_vs_age_fsync": round(best["age_e_fsync"] / best["seal"], 2),
        "age_encrypt_fsync_mb_per_s": mbs(best["age_e_fsync"]),
        "open_ratio_vs_age_median": round(med["age_d"] / med["open"], 2),
        "open_ratio_vs_age_fsync": round(best["age_d_fsync"] / best["open"], 2),
        "age_decrypt_fsync_mb_per_s": mbs(best["age_d_fsync"]),
        "wall_seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "cpu_seconds": {k: [round(t, 3) for t in v] for k, v in cpu.items()},
        "seal_cpu_ratio_vs_age": round(cpu_best["age_e"] / cpu_best["seal"], 2),
        "open_cpu_ratio_vs_age": round(cpu_best["age_d"] / cpu_best["open"], 2),
        "steal_percent": dict(steal),
        "steal_percent_throughput": steal_all,
    }


def _direct_io(path: Path, size_mib: int, write: bool) -> None:
    """Write (or read back) `size_mib` MiB at `path` in 1 MiB O_DIRECT requests, as seal
    and open do; a write ends with an fsync."""
    import mmap

    buf = mmap.mmap(-1, MIB)  # page-aligned, as O_DIRECT wants
    buf.write(os.urandom(MIB))
    flags = (os.O_WRONLY | os.O_CREAT | os.O_TRUNC) if write else os.O_RDONLY
    fd = os.open(path, flags | getattr(os, "O_DIRECT", 0), 0o600)
    try:
        for _ in range(size_mib):
            (os.write if write else os.readv)(fd, buf if write else [buf])
        if write:
            os.fsync(fd)
    finally:
        os.close(fd)


def _disk(size_mib: int, workdir: Path) -> dict:
    """What the disk alone allows, in the same run: seal must write the ciphertext
    (`disk_write_s`: size_mib MiB, O_DIRECT, fsync); open must read it back from the disk
    (seal wrote it past the page cache) while writing the plaintext out
    (`disk_read_and_write_s`: both at once, as open overlaps them). age -d does neither:
    its input is in the page cache and its output stays there."""
    import threading

    first, second = workdir / "disk.1", workdir / "disk.2"
    start = time.perf_counter()
    _direct_io(first, size_mib, write=True)
    wrote = time.perf_counter() - start
    os.sync()
    start = time.perf_counter()
    reader = threading.Thread(target=_direct_io, args=(first, size_mib, False))
    reader.start()
    _direct_io(second, size_mib, write=True)
    reader.join()
    both = time.perf_counter() - start
    first.unlink()
    second.unlink()
    return {"disk_write_s": round(wrote, 3), "disk_read_and_write_s": round(both, 3)}


def _child_peak_rss_mib(args: list[str], accelerate: bool = True) -> tuple[float, dict]:
    """Run this script with `args` in a fresh interpreter; its peak RSS (MiB) and result.

    The child reports VmHWM from /proc/self/status: exec starts a new address space, so
    this is the high-water mark of the child alone (rusage of a forked child can carry
    the parent's RSS from before exec)."""
    switch = [] if accelerate else ["--no-accel"]
    proc = subprocess.run([sys.executable, __file__, *switch, "--child", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child {args[0]} failed: {proc.stderr.strip()[-500:]}")
    doc = json.loads(proc.stdout)
    return round(doc.pop("vmhwm_kib") / 1024, 1), doc


def _vmhwm_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _memory(size_mib: int, workdir: Path, accelerate: bool = True) -> dict:
    src = workdir / "big.bin"
    _random_file(src, size_mib)
    _, key = _identity(workdir)
    store = workdir / "rss-store"
    base, _ = _child_peak_rss_mib(["imports"], accelerate)
    seal_rss, sealed = _child_peak_rss_mib(["seal", str(key), str(store), str(src)], accelerate)
    src.unlink()
    open_rss, _ = _child_peak_rss_mib(["open", str(key), str(store), sealed["cid"],
                                       sealed["commitment"], str(workdir / "big.out")], accelerate)
    if (workdir / "big.out").stat().st_size != size_mib * MIB:
        raise SystemExit("open produced a file of the wrong size")
    return {"rss_file_mib": size_mib, "seal_peak_rss_mib": seal_rss, "open_peak_rss_mib": open_rss,
            "imports_only_rss_mib": base}


def _child(argv: list[str], accelerate: bool) -> None:
    from vault.age import X25519Identity
    from vault.blockstore import FilesystemBlockstore
    from vault.vault import Vault

    what = argv[0]
    result: dict = {}
    if what != "imports":
        identity = X25519Identity.parse(Path(argv[1]).read_text().strip())
        vault = Vault(FilesystemBlockstore(Path(argv[2]), verify_writes=False), identity, accelerate=accelerate)
        if what == "seal":
            sealed = vault.seal(Path(argv[3]))
            result = {"cid": sealed.cid, "commitment": sealed.commitment.hex()}
        elif what == "open":
            vault.open(argv[3], None, identity, Path(argv[5]), commitment=bytes.fromhex(argv[4]))
    print(json.dumps({**result, "vmhwm_kib": _vmhwm_kib()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256, help="throughput file size (MiB)")
    parser.add_argument("--rss-size-mib", type=int, default=1024, help="peak-RSS file size (MiB)")
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--dir", type=Path, default=None, help="where to put temp files (default: system temp)")
    parser.add_argument("--no-accel", action="store_true",
                        help="without vault/_accel (hashlib, cryptography and Python file I/O only), for comparison")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.no_accel:  # the store's native put too (a module switch: the store has no option for it)
        from vault.blockstore import filesystem as bs_filesystem

        bs_filesystem._NATIVE = False
    if args.child:  # a peak-RSS child, with the parent's --no-accel
        _child(args.child, accelerate=not args.no_accel)
        return
    workdir = Path(tempfile.mkdtemp(prefix="twinledger-bench-vault-", dir=args.dir))
    try:
        result = {"benchmark": "vault", "cpus": os.cpu_count(), "loadavg_1m_before": round(os.getloadavg()[0], 2)}
        from vault import _accel

        result["accelerator"] = {"used": _accel.available and not args.no_accel, "built": _accel.available,
                                 "sha256_lanes": (_accel.lanes or 1) if not args.no_accel else 1}
        result |= _throughput(args.size_mib, max(1, args.repeat), workdir, accelerate=not args.no_accel)
        result |= _disk(args.size_mib, workdir)
        result["loadavg_1m_after_throughput"] = round(os.getloadavg()[0], 2)
        result |= _memory(args.rss_size_mib, workdir, accelerate=not args.no_accel)
        version = subprocess.run(["age", "--version"], capture_output=True, text=True).stdout.strip()
        result["reference"] = f"age {version} ({shutil.which('age')}), same file, same recipient, same disk"
        result["notes"] = ("ratios = age's best wall time / ours (best of the interleaved rounds); "
                           "seal and open fsync their output (blocks, shard dirs, pins, the opened file), "
                           "age -e/-d do not, so ours also wait for the disk; seal also computes the keyed-BLAKE3 "
                           "commitment (v2) and the block SHA-256s, open checks both; open writes its output "
                           "with O_DIRECT where the filesystem allows it; seal_ratio_vs_age_fsync compares seal "
                           "with age -e followed by an fsync of its output (the same durability), "
                           "open_ratio_vs_age_fsync open with age -d followed by one, for context only: the "
                           "targets are against plain age -e / age -d")
        result["targets"] = {"seal_ratio_vs_age": ">= 1.0", "open_ratio_vs_age": ">= 1.0", "peak_rss_mib": "<= 100"}
        print(json.dumps(result, sort_keys=True))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
