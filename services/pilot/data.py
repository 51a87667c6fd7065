"""Pilot data the project generates itself: a CNC spindle / cutting-tool twin model (from
the machine builder) and the plant's sensor logs for one turning tool from new to worn.

Everything is deterministic: a run is a function of its arguments (numpy's seeded
PCG64 Generator), never of the clock. The plant's "true" physics are the model's own
equations (layout and physics: services/analytics/_twin_model.py) with the v2
parameters and, with `noise`, a per-tool scatter of Taylor's C (tool-life scatter is
real) — re-implemented here, not imported, so validating against the analytics engine
is an independent check. v1 is the builder's first, optimistic calibration; v2 is
recalibrated on plant data, so v1 under-predicts wear and v2 fits within noise.

Imperfections (each switchable): measurement noise and logger jitter (`noise`), a few
sampling gaps (`gaps`), and faulty readings (`faults`): sensor dropouts as empty
cells, a burst dropout of the vibration channel, a stuck temperature reading, a
vibration spike and a flank-wear spike beyond their physical ranges, and one
duplicated timestamp. `SensorRun.faults` records exactly what was injected.
"""
from __future__ import annotations

import copy
import csv
import io
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MODEL_SCHEMA = "twinledger/cnc-tool-twin/1"
COLUMNS = ("timestamp", "spindle_speed_rpm", "cutting_speed_m_min", "feed_mm_rev",
           "spindle_load_pct", "vibration_rms_g", "temperature_c", "flank_wear_mm")
_DECIMALS = {"spindle_speed_rpm": 1, "cutting_speed_m_min": 1, "feed_mm_rev": 3,
             "spindle_load_pct": 2, "vibration_rms_g": 4, "temperature_c": 2, "flank_wear_mm": 5}
START = datetime(2025, 3, 3, 6, 0, tzinfo=UTC)  # Monday, early shift
WORKPIECE_DIAMETER_MM = 80.0
_SPEED_MIX = (0.92, 0.96, 1.0, 1.04, 1.08)  # program set-points around the planned speed
_FEEDS = (0.15, 0.2, 0.25)               # mm/rev
_DROPOUT_COLUMNS = ("spindle_load_pct", "vibration_rms_g", "temperature_c", "flank_wear_mm")
_DROPOUT_RATE = 0.004

_CALIBRATION = {  # v1: builder's bench calibration; v2: recalibrated on plant data
    1: {"C": 700.0, "break_in_mm": 0.06, "break_in_tau": 0.04, "accelerated_mm": 0.08,
        "accelerated_exponent": 6.0, "note": "bench calibration (supplier test rig)"},
    2: {"C": 640.0, "break_in_mm": 0.07, "break_in_tau": 0.05, "accelerated_mm": 0.09,
        "accelerated_exponent": 7.0, "note": "recalibrated on plant run data (wear coefficients, C)"},
}


def twin_model(version: int = 1) -> dict:
    """The machine builder's parametric cutting-tool twin, version 1 or 2 (JSON-ready)."""
    if version not in _CALIBRATION:
        raise ValueError(f"twin model version must be 1 or 2, not {version!r}")
    cal = _CALIBRATION[version]
    criterion = 0.3  # ISO 3685 uniform flank wear criterion VB = 0.3 mm
    linear = criterion - cal["break_in_mm"] * -math.expm1(-1.0 / cal["break_in_tau"]) - cal["accelerated_mm"]
    return {
        "schema": MODEL_SCHEMA,
        "name": "CNC spindle cutting-tool twin",
        "model_version": version,
        "publisher": "Machine builder (pilot)",
        "description": "Turning of C45E steel with coated carbide inserts: extended Taylor tool "
                       "life and a three-phase flank-wear curve. " + cal["note"] + ".",
        "tool": {"material": "coated_carbide", "insert": "CNMG 120408", "workpiece": "C45E steel",
                 "workpiece_diameter_mm": WORKPIECE_DIAMETER_MM, "depth_of_cut_mm": 2.0},
        "taylor": {
            "equation": "V * T^n * (f / f_ref)^a = C",
            "material": "coated_carbide",
            "materials": {
                "hss": {"n": 0.125, "C": 75.0},
                "uncoated_carbide": {"n": 0.25, "C": round(cal["C"] * 0.7, 1)},
                "coated_carbide": {"n": 0.25, "C": cal["C"]},
                "ceramic": {"n": 0.5, "C": 2600.0},
            },
            "feed_exponent": 0.35,
            "reference_feed_mm_rev": 0.2,
            "units": {"V": "m/min", "T": "min", "f": "mm/rev"},
        },
        "wear_curve": {
            "equation": "VB = B*(1-exp(-tau/tau_b)) + L*tau + A*tau^m; "
                        "tau = sum over sampling intervals of dt / T(V, f)",
            "unit": "mm",
            "wear_criterion_mm": criterion,
            "break_in_mm": cal["break_in_mm"],
            "break_in_tau": cal["break_in_tau"],
            "linear_mm": round(linear, 12),
            "accelerated_mm": cal["accelerated_mm"],
            "accelerated_exponent": cal["accelerated_exponent"],
        },
        "prediction_interval": {"confidence": 0.95, "half_width_mm": 0.015, "relative": 0.05},
        "idle_below_m_min": 1.0,
        "inputs": {
            "cutting_speed": {"column": "cutting_speed_m_min", "unit": "m/min",
                              "valid_range": [80.0, 250.0], "physical_range": [0.0, 600.0]},
            "feed": {"column": "feed_mm_rev", "unit": "mm/rev",
                     "valid_range": [0.08, 0.4], "physical_range": [0.0, 2.0]},
            "cutting_time": {"column": "timestamp", "unit": "min", "valid_range": [0.0, 720.0]},
        },
        "output": {"flank_wear": {"column": "flank_wear_mm", "unit": "mm",
                                  "valid_range": [0.0, 0.6], "physical_range": [0.0, 1.5]}},
        "sensors": {
            "spindle_speed_rpm": {"unit": "rpm", "physical_range": [0.0, 6000.0]},
            "spindle_load_pct": {"unit": "%", "physical_range": [0.0, 150.0]},
            "vibration_rms_g": {"unit": "g RMS", "physical_range": [0.0, 16.0]},
            "temperature_c": {"unit": "°C", "physical_range": [-20.0, 150.0]},
        },
    }


@dataclass
class SensorRun:
    """One simulated run: formatted cells per column (None = empty cell) and the faults."""

    timestamps_ms: np.ndarray
    cells: dict[str, list[str | None]]
    true_wear_mm: np.ndarray
    faults: dict = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return len(self.timestamps_ms)

    def to_csv(self) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        stamps = [_iso(ms) for ms in self.timestamps_ms.tolist()]
        cols = [self.cells[c] for c in COLUMNS[1:]]
        for i, stamp in enumerate(stamps):
            writer.writerow([stamp, *("" if col[i] is None else col[i] for col in cols)])
        return out.getvalue().encode("utf-8")

    def to_parquet(self) -> bytes:
        """The same cells as the CSV (numbers parsed from the CSV text, empty = null)."""
        arrays = {"timestamp": pa.array(self.timestamps_ms, pa.timestamp("ms", "UTC"))}
        for c in COLUMNS[1:]:
            arrays[c] = pa.array([None if s is None else float(s) for s in self.cells[c]], pa.float64())
        sink = io.BytesIO()
        pq.write_table(pa.table(arrays), sink, compression="zstd")
        return sink.getvalue()


def simulate(seed: int, hours: float = 8.0, interval_s: float = 10.0, *, rate_hz: float | None = None,
             model: dict | None = None, noise: bool = True, gaps: bool = True,
             faults: bool = True) -> SensorRun:
    """Simulate one tool's life on the plant's lathe (truth: `model`, default v2)."""
    if rate_hz is not None:
        interval_s = 1.0 / rate_hz
    if not (hours > 0 and interval_s > 0):
        raise ValueError("hours and interval_s must be positive")
    model = copy.deepcopy(model if model is not None else twin_model(2))
    rng = np.random.default_rng(seed)
    n = int(round(hours * 3600.0 / interval_s))
    step_ms = int(round(interval_s * 1000))
    # Set-points: programs of 10-40 min; about one in seven is a stop (setup, measuring).
    # The speed level is planned so that one tool lasts the run (~90 % of its nominal life).
    tay = model["taylor"]
    mat = tay["materials"][tay["material"]]
    level, feed = np.empty(n), np.empty(n)
    i = 0
    while i < n:
        length = max(1, int(rng.integers(600, 2400) * 1000 // step_ms))
        idle = rng.random() < 0.15
        level[i:i + length] = 0.0 if idle else rng.choice(_SPEED_MIX)
        feed[i:i + length] = 0.0 if idle else rng.choice(_FEEDS)
        i += length
    on = level > 0
    unit_life = np.full(n, np.inf)  # T at speed level 1 m/min; T scales as V^(-1/n)
    unit_life[on] = (mat["C"] / (level[on] * (feed[on] / tay["reference_feed_mm_rev"])
                                 ** tay["feed_exponent"])) ** (1.0 / mat["n"])
    unit_tau = float(np.sum(interval_s / 60.0 / unit_life))
    scale = (0.9 / unit_tau) ** mat["n"] if unit_tau > 0 else 0.0
    speed = np.where(on, np.clip(5.0 * np.round(scale * level / 5.0), 80.0, 250.0), 0.0)
    stamps = START.timestamp() * 1000 + np.arange(n, dtype=np.int64) * step_ms
    if noise:
        stamps = stamps + rng.integers(-150, 151, n)  # logger jitter, ms
    keep = np.ones(n, dtype=bool)
    gap_list: list[dict] = []
    if gaps and n > 100:
        for start in np.sort(rng.choice(np.arange(20, n - 40), size=3, replace=False)):
            length = max(2, int(rng.integers(120, 600) * 1000 // step_ms))
            keep[start:start + length] = False
    stamps, speed, feed = stamps[keep].astype(np.int64), speed[keep], feed[keep]
    if gaps and n > 100:
        for row in np.flatnonzero(np.diff(np.flatnonzero(keep)) > 1) + 1:
            gap_list.append({"row": int(row), "interval_ms": int(stamps[row] - stamps[row - 1])})
    m = len(stamps)

    # Wear: Miner sum of dt / T(V, f) with conditions held from each interval's first sample.
    c_true = mat["C"] * (math.exp(rng.normal(0.0, 0.01)) if noise else 1.0)
    cutting = speed >= model["idle_below_m_min"]
    life = np.full(m, np.inf)
    life[cutting] = (c_true / (speed[cutting] * (feed[cutting] / tay["reference_feed_mm_rev"])
                               ** tay["feed_exponent"])) ** (1.0 / mat["n"])
    dt_min = np.diff(np.maximum.accumulate(stamps)) / 60000.0
    tau = np.concatenate([[0.0], np.cumsum(dt_min / life[:-1])])
    wc = model["wear_curve"]
    wear = (wc["break_in_mm"] * -np.expm1(-tau / wc["break_in_tau"]) + wc["linear_mm"] * tau
            + wc["accelerated_mm"] * tau ** wc["accelerated_exponent"])

    # Sensors: cutting power (kc·ap·f·V) rises with wear; vibration and heat follow.
    sd = (lambda s: rng.normal(0.0, s, m)) if noise else (lambda s: np.zeros(m))
    rpm = np.where(cutting, 1000.0 * speed / (math.pi * WORKPIECE_DIAMETER_MM), 0.0)
    power_kw = 2100.0 * 2.0 * feed * speed / 60000.0 * (1.0 + 1.5 * wear)
    load = np.where(cutting, 4.0 + 100.0 * power_kw / 7.5, 0.0) + np.where(cutting, sd(0.8), 0.0)
    vib = np.where(cutting, 0.2 + 0.001 * speed + 3.0 * wear ** 1.5, 0.05) + sd(0.02)
    temp = np.empty(m)
    ambient = 22.0 + 1.5 * np.sin((stamps - stamps[0]) / 3.6e6 / 24.0 * 2 * math.pi)
    target = np.where(cutting, ambient + 0.45 * load + 25.0 * wear, ambient)
    alpha = 1.0 - np.exp(-np.concatenate([[interval_s / 60.0], dt_min]) / 15.0)  # 15 min lag
    temp[0] = ambient[0]
    for k in range(1, m):
        temp[k] = temp[k - 1] + alpha[k] * (target[k] - temp[k - 1])
    temp = temp + sd(0.15)
    measured = wear + sd(0.006)
    values = {"spindle_speed_rpm": rpm * (1.0 + sd(0.002)), "cutting_speed_m_min": speed,
              "feed_mm_rev": feed, "spindle_load_pct": np.clip(load, 0.0, None),
              "vibration_rms_g": np.clip(vib, 0.0, None), "temperature_c": temp,
              "flank_wear_mm": np.clip(measured, 0.0, None)}
    injected: dict = {"gaps": gap_list, "dropouts": {}, "spikes": {}, "stuck": {}, "duplicate_row": None}
    cells = {c: [f"{x:.{_DECIMALS[c]}f}" for x in values[c].tolist()] for c in COLUMNS[1:]}
    if faults and m > 200:
        _inject_faults(rng, m, cells, injected)
        dup = int(rng.integers(50, m - 50))  # the logger writes one sample twice
        stamps = np.insert(stamps, dup + 1, stamps[dup])
        wear = np.insert(wear, dup + 1, wear[dup])
        for c in COLUMNS[1:]:
            cells[c].insert(dup + 1, cells[c][dup])
        injected["duplicate_row"] = dup + 1
        _shift_rows(injected, after=dup)
    return SensorRun(timestamps_ms=stamps, cells=cells, true_wear_mm=wear, faults=injected)


def sensor_dataset(seed: int, hours: float = 8.0, interval_s: float = 10.0, **kwargs) -> bytes:
    """The plant's sensor log as CSV bytes (keyword options as for `simulate`)."""
    return simulate(seed, hours, interval_s, **kwargs).to_csv()


def sensor_dataset_parquet(seed: int, hours: float = 8.0, interval_s: float = 10.0, **kwargs) -> bytes:
    """The same log as Parquet (timestamp[ms, UTC], float64 columns, nulls for empty cells)."""
    return simulate(seed, hours, interval_s, **kwargs).to_parquet()


def _inject_faults(rng: np.random.Generator, m: int, cells: dict, injected: dict) -> None:
    stuck = int(rng.integers(100, m - 100))  # temperature transmitter freezes for 40 samples
    spikes = {c: int(rng.integers(50, m - 50)) for c in ("vibration_rms_g", "flank_wear_mm")}
    burst = int(rng.integers(100, m - 100))  # vibration cable unplugged for 12 samples
    for c in _DROPOUT_COLUMNS:
        rows = set(np.flatnonzero(rng.random(m) < _DROPOUT_RATE).tolist())
        if c == "vibration_rms_g":
            rows |= set(range(burst, burst + 12))
        if c == "temperature_c":
            rows -= set(range(stuck, stuck + 40))
        rows.discard(spikes.get(c))
        injected["dropouts"][c] = sorted(int(r) for r in rows)
        for r in rows:
            cells[c][r] = None
    for r in range(stuck, stuck + 40):
        cells["temperature_c"][r] = cells["temperature_c"][stuck]
    injected["stuck"]["temperature_c"] = {"row": stuck, "length": 40}
    for c, value in (("vibration_rms_g", "48.0000"), ("flank_wear_mm", "2.45000")):
        cells[c][spikes[c]] = value
        injected["spikes"][c] = spikes[c]


def _shift_rows(injected: dict, after: int) -> None:
    """Row indices past the duplicated row `after` move down by one; the copy (after + 1)
    carries the same cells, so a dropout or spike at `after` appears twice."""
    def bump(r: int) -> int:
        return r + 1 if r > after else r

    injected["gaps"] = [{**g, "row": bump(g["row"])} for g in injected["gaps"]]
    injected["dropouts"] = {c: sorted({bump(r) for r in rows} | ({after + 1} if after in rows else set()))
                            for c, rows in injected["dropouts"].items()}
    injected["spikes"] = {c: bump(r) for c, r in injected["spikes"].items()}
    injected["stuck"] = {c: {**s, "row": bump(s["row"])} for c, s in injected["stuck"].items()}


def _iso(ms: int) -> str:
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
