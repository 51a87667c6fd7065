"""Pilot data: deterministic, physically consistent, and faulty exactly where it says."""
from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from services.analytics._twin_model import parse_model
from services.pilot.data import COLUMNS, sensor_dataset, sensor_dataset_parquet, simulate, twin_model


def parse_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def column(rows: list[dict[str, str]], name: str) -> np.ndarray:
    return np.array([float(r[name]) if r[name] else np.nan for r in rows])


@pytest.fixture(scope="module")
def run():
    return simulate(11)


@pytest.fixture(scope="module")
def rows(run):
    return parse_csv(run.to_csv())


def test_same_seed_same_bytes_other_seed_other_bytes():
    assert sensor_dataset(5, hours=2) == sensor_dataset(5, hours=2)
    assert sensor_dataset_parquet(5, hours=2) == sensor_dataset_parquet(5, hours=2)
    assert sensor_dataset(5, hours=2) != sensor_dataset(6, hours=2)
    assert json.dumps(twin_model(2), sort_keys=True) == json.dumps(twin_model(2), sort_keys=True)


@pytest.mark.parametrize("version", [1, 2])
def test_twin_model_is_json_and_self_consistent(version):
    doc = json.loads(json.dumps(twin_model(version)))
    assert doc["name"] == "CNC spindle cutting-tool twin" and doc["model_version"] == version
    model = parse_model(doc)  # the analytics engine accepts it
    wc = doc["wear_curve"]
    at_life = (wc["break_in_mm"] * (1 - math.exp(-1 / wc["break_in_tau"])) + wc["linear_mm"]
               + wc["accelerated_mm"])
    assert at_life == pytest.approx(wc["wear_criterion_mm"], rel=1e-9)
    # Taylor: V * T^n * (f/f_ref)^a = C holds for the model's tool life
    v, f = 150.0, 0.25
    t = float(model.tool_life_min(np.float64(v), np.float64(f)))
    tay = doc["taylor"]
    mat = tay["materials"][tay["material"]]
    assert v * t ** mat["n"] * (f / tay["reference_feed_mm_rev"]) ** tay["feed_exponent"] == pytest.approx(mat["C"])
    for spec in doc["inputs"].values():
        assert spec["unit"] in ("m/min", "mm/rev", "min")


def test_v2_is_a_recalibration_of_v1():
    v1, v2 = twin_model(1), twin_model(2)
    assert v1["wear_curve"] != v2["wear_curve"]
    assert v1["taylor"]["materials"]["coated_carbide"]["C"] != v2["taylor"]["materials"]["coated_carbide"]["C"]
    with pytest.raises(ValueError):
        twin_model(3)


def test_columns_and_size(run, rows):
    assert list(rows[0].keys()) == list(COLUMNS)
    assert len(rows) == run.n_rows
    # 8 h at 10 s = 2,880 samples, minus the gaps, plus one duplicated sample
    lost = sum(round(g["interval_ms"] / 10_000) - 1 for g in run.faults["gaps"])
    assert abs(len(rows) - (2880 - lost + 1)) <= 3


def test_faults_are_where_the_manifest_says(run, rows):
    f = run.faults
    for name, dropped in f["dropouts"].items():
        empty = [i for i, r in enumerate(rows) if r[name] == ""]
        assert empty == dropped and len(empty) > 0
    assert float(rows[f["spikes"]["vibration_rms_g"]]["vibration_rms_g"]) > 16.0
    assert float(rows[f["spikes"]["flank_wear_mm"]]["flank_wear_mm"]) > 1.5
    stuck = f["stuck"]["temperature_c"]
    values = {rows[i]["temperature_c"] for i in range(stuck["row"], stuck["row"] + stuck["length"])} - {""}
    assert len(values) == 1
    dup = f["duplicate_row"]
    assert rows[dup]["timestamp"] == rows[dup - 1]["timestamp"]
    stamps = run.timestamps_ms
    gap_rows = [g["row"] for g in f["gaps"]]
    assert gap_rows == [int(i) + 1 for i in np.flatnonzero(np.diff(stamps) > 30_000)]


def test_clean_run_has_no_imperfections():
    rows = parse_csv(sensor_dataset(3, hours=2, noise=False, gaps=False, faults=False))
    assert all(all(r[c] != "" for c in COLUMNS) for r in rows)
    stamps = [r["timestamp"] for r in rows]
    assert len(rows) == 720 and len(set(stamps)) == 720 and stamps == sorted(stamps)


def test_wear_grows_and_sensors_follow_it(rows):
    wear = column(rows, "flank_wear_mm")
    speed = column(rows, "cutting_speed_m_min")
    ok = np.isfinite(wear) & (wear < 1.5)
    assert np.nanmean(wear[ok][-100:]) > np.nanmean(wear[ok][:100]) + 0.1
    assert 0.15 < np.nanmax(wear[ok]) < 0.45  # one tool, close to the 0.3 mm criterion
    cutting = ok & (speed > 0)
    for name, upper in (("vibration_rms_g", 16.0), ("temperature_c", 150.0)):
        x = column(rows, name)
        sel = cutting & np.isfinite(x) & (x < upper)
        assert np.corrcoef(x[sel], wear[sel])[0, 1] > 0.5, name
    rpm = column(rows, "spindle_speed_rpm")
    assert np.allclose(rpm[cutting], 1000 * speed[cutting] / (math.pi * 80.0), rtol=0.02)


def test_parquet_variant_holds_the_csv_cells(run):
    table = pq.read_table(io.BytesIO(run.to_parquet()))
    rows = parse_csv(run.to_csv())
    assert table.column_names == list(COLUMNS)
    assert str(table.schema.field("timestamp").type) == "timestamp[ms, tz=UTC]"
    for name in COLUMNS[1:]:
        assert table.column(name).to_pylist() == [float(r[name]) if r[name] else None for r in rows]


def test_rate_hz_is_an_alternative_to_interval():
    assert sensor_dataset(1, hours=0.5, rate_hz=0.1) == sensor_dataset(1, hours=0.5, interval_s=10)
