"""The validate job: twin-model predictions against measured flank wear."""
from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.analytics import JobInputError, run_job
from services.analytics._twin_model import load_model
from services.pilot.data import simulate, twin_model


def model_bytes(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def edit_csv(data: bytes, column: str, fn) -> bytes:
    rows = list(csv.reader(io.StringIO(data.decode())))
    j = rows[0].index(column)
    for i, row in enumerate(rows[1:]):
        row[j] = fn(i, row[j])
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


def wear_column(data: bytes) -> list[float]:
    return [float(r["flank_wear_mm"]) for r in csv.DictReader(io.StringIO(data.decode()))]


@pytest.fixture(scope="module")
def exact():
    """Generated from model v1 itself, no noise or faults (sampling gaps kept)."""
    return simulate(5, model=twin_model(1), noise=False, faults=False)


@pytest.fixture(scope="module")
def plant():
    return simulate(17)  # the plant: v2 physics, tool scatter, noise, gaps, faults


def test_data_generated_from_the_model_validates_exactly(exact):
    r = run_job("validate", {"model": model_bytes(twin_model(1)), "dataset": exact.to_csv()}, {})
    m = r.report["details"]["metrics"]
    assert m["mae_mm"] < 1e-5 and abs(m["bias_mm"]) < 1e-5  # CSV keeps 5 decimals
    assert m["coverage"] == 1.0 and m["n_used"] == exact.n_rows and m["n_excluded"] == 0
    assert r.report["details"]["excluded"] == {}
    assert exact.faults["gaps"]  # the gaps are bridged with the conditions held


def test_a_known_bias_is_measured(exact):
    offset = 0.02
    data = edit_csv(exact.to_csv(), "flank_wear_mm", lambda i, v: f"{float(v) + offset:.5f}")
    r = run_job("validate", {"model": model_bytes(twin_model(1)), "dataset": data}, {})
    m = r.report["details"]["metrics"]
    assert m["bias_mm"] == pytest.approx(-offset, abs=1e-5)  # predicted − measured
    assert m["mae_mm"] == pytest.approx(offset, abs=1e-5)
    assert m["rmse_mm"] == pytest.approx(offset, abs=1e-5)
    # inside the interval iff 0.02 <= 0.015 + 0.05·VB, i.e. VB >= 0.1 mm
    truth = wear_column(exact.to_csv())
    share = sum(v >= 0.1 for v in truth) / len(truth)
    assert m["coverage"] == pytest.approx(share, abs=3 / len(truth))


def test_tool_life_figures(exact):
    doc = twin_model(1)
    life = run_job("validate", {"model": model_bytes(doc), "dataset": exact.to_csv()}, {}) \
        .report["details"]["tool_life"]
    wc = doc["wear_curve"]
    tau = life["consumed_life_fraction"]
    vb = (wc["break_in_mm"] * (1 - math.exp(-tau / wc["break_in_tau"])) + wc["linear_mm"] * tau
          + wc["accelerated_mm"] * tau ** wc["accelerated_exponent"])
    assert vb == pytest.approx(exact.true_wear_mm[-1], abs=1e-9)
    speed = np.array([float(r["cutting_speed_m_min"]) for r in csv.DictReader(io.StringIO(exact.to_csv().decode()))])
    stamps = exact.timestamps_ms
    cutting_min = float(np.sum(np.diff(stamps)[speed[:-1] > 0]) / 60000)
    assert life["cutting_time_min"] == pytest.approx(cutting_min)
    assert 0 < life["remaining_life_at_last_conditions_min"]


def test_recalibrated_model_fits_the_plant_better(plant):
    data = plant.to_csv()
    v1 = run_job("validate", {"model": model_bytes(twin_model(1)), "dataset": data}, {}).summary
    v2 = run_job("validate", {"model": model_bytes(twin_model(2)), "dataset": data}, {}).summary
    assert v1["bias_mm"] < -0.005          # the optimistic v1 under-predicts wear
    assert v2["mae_mm"] < v1["mae_mm"] and v2["coverage"] > v1["coverage"]
    assert v2["coverage"] >= 0.95
    assert v2["mae_mm"] < 0.015            # measurement noise is 0.006 mm


def test_faulty_rows_are_excluded_with_reasons(plant):
    r = run_job("validate", {"model": model_bytes(twin_model(2)), "dataset": plant.to_csv()}, {})
    ex = r.report["details"]["excluded"]
    dropped = plant.faults["dropouts"]["flank_wear_mm"]
    assert ex["missing_measurement"] == {"count": len(dropped), "rows": dropped[:10]}
    assert ex["measurement_out_of_physical_range"] == {"count": 1, "rows": [plant.faults["spikes"]["flank_wear_mm"]]}
    assert r.summary["n_used"] + r.summary["n_excluded"] == plant.n_rows
    assert r.report["details"]["timestamps_non_increasing"] == 1


def test_missing_and_out_of_range_inputs(exact):
    base = exact.to_csv()
    speeds = [float(r["cutting_speed_m_min"]) for r in csv.DictReader(io.StringIO(base.decode()))]
    hole = next(i for i in range(1, len(speeds)) if speeds[i] > 0 and speeds[i - 1] == speeds[i] == speeds[i + 1])
    data = edit_csv(base, "cutting_speed_m_min", lambda i, v: "" if i == hole else v)
    r = run_job("validate", {"model": model_bytes(twin_model(1)), "dataset": data}, {})
    assert r.report["details"]["excluded"] == {"missing_input": {"count": 1, "rows": [hole]}}
    assert r.report["details"]["metrics"]["mae_mm"] < 1e-5  # the speed was carried forward

    narrow = twin_model(1)
    top = max(speeds)
    narrow["inputs"]["cutting_speed"]["valid_range"] = [80.0, top - 1]
    r = run_job("validate", {"model": model_bytes(narrow), "dataset": base}, {})
    fast = [i for i, s in enumerate(speeds) if s == top]
    assert r.report["details"]["excluded"]["input_out_of_valid_range"]["count"] == len(fast)
    assert r.report["details"]["extrapolated_cutting_min"] > 0


def test_csv_and_parquet_reports_are_identical(plant):
    model = model_bytes(twin_model(2))
    a = run_job("validate", {"model": model, "dataset": plant.to_csv()}, {})
    b = run_job("validate", {"model": model, "dataset": plant.to_parquet()}, {})
    assert a.report_json == b.report_json


# --- models that do not fit or do not parse -------------------------------------------------

def test_dataset_without_the_models_columns(exact):
    data = b"timestamp,cutting_speed_m_min,feed_mm_rev\n0,150,0.2\n"
    with pytest.raises(JobInputError) as exc:
        run_job("validate", {"model": model_bytes(twin_model(1)), "dataset": data}, {})
    assert (exc.value.reason, exc.value.columns) == ("model_mismatch", ("flank_wear_mm",))
    doc = twin_model(1)
    doc["inputs"]["feed"]["column"] = "feed_in_rev"
    with pytest.raises(JobInputError) as exc:
        run_job("validate", {"model": model_bytes(doc), "dataset": exact.to_csv()}, {})
    assert (exc.value.reason, exc.value.columns) == ("model_mismatch", ("feed_in_rev",))


def test_no_row_within_the_models_validity(exact):
    data = edit_csv(exact.to_csv(), "cutting_speed_m_min", lambda i, v: "400.0")
    with pytest.raises(JobInputError) as exc:
        run_job("validate", {"model": model_bytes(twin_model(1)), "dataset": data}, {})
    assert exc.value.reason == "model_mismatch" and "input_out_of_valid_range" in str(exc.value)


def _broken(path: str, value):
    doc = twin_model(1)
    *parents, key = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[key]
    else:
        node[key] = value
    return model_bytes(doc)


@pytest.mark.parametrize("model", [
    b"{not json", b"[1, 2, 3]", b"\xff\xfe", b'"a string"', b"{}",
    b"[" * 100_000,
    _broken("schema", "someone-else/v9"),
    _broken("taylor", KeyError),
    _broken("taylor.material", "diamond"),
    _broken("taylor.materials.coated_carbide.n", -0.25),
    _broken("taylor.materials.coated_carbide.C", "700"),
    _broken("taylor.materials.coated_carbide.n", True),
    _broken("taylor.units", {"V": "ft/min", "T": "min", "f": "mm/rev"}),
    _broken("wear_curve.linear_mm", 0.5),                      # VB(1) no longer the criterion
    _broken("wear_curve.break_in_tau", 0),
    _broken("inputs.cutting_speed.valid_range", [250, 80]),
    _broken("inputs.cutting_speed.unit", "in/min"),
    _broken("inputs.feed", KeyError),
    _broken("output.flank_wear.column", ""),
    _broken("prediction_interval.confidence", 1.5),
    _broken("sensors", {"x": {"unit": "g", "physical_range": [1]}}),
    _broken("model_version", 0),
    json.dumps(twin_model(1)).replace('"n": 0.25', '"n": NaN').encode(),
])
def test_invalid_model(model):
    with pytest.raises(JobInputError) as exc:
        run_job("validate", {"model": model, "dataset": b"timestamp,a\n0,1\n"}, {})
    assert exc.value.reason == "invalid_model" and exc.value.input_name == "model"


def test_empty_model_document():
    with pytest.raises(JobInputError) as exc:
        run_job("validate", {"model": b"  \n", "dataset": b"timestamp,a\n0,1\n"}, {})
    assert exc.value.reason == "empty_input"


# --- the model parser --------------------------------------------------------------------

def _leaves(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, path + (i,))
    else:
        yield path


LEAVES = list(_leaves(twin_model(1)))
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                           max_leaves=5)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(LEAVES), json_values), min_size=1, max_size=3))
def test_mutated_models_parse_or_fail_as_invalid_model(mutations):
    doc = twin_model(1)
    for path, value in mutations:
        node = doc
        for key in path[:-1]:
            node = node[key] if isinstance(node, dict) or (isinstance(node, list) and isinstance(key, int)
                                                            and key < len(node)) else None
            if not isinstance(node, (dict, list)):
                break
        else:
            if isinstance(node, dict) or (isinstance(node, list) and path[-1] < len(node)):
                node[path[-1]] = value
    try:
        model = load_model(json.dumps(doc).encode())
    except JobInputError as exc:
        assert exc.reason == "invalid_model"
    else:
        assert model.criterion_mm > 0 and model.n > 0 and model.C > 0


def test_model_round_trip():
    doc = twin_model(2)
    model = load_model(json.dumps(doc).encode())
    mat = doc["taylor"]["materials"][doc["taylor"]["material"]]
    assert (model.name, model.version, model.n, model.C) == (doc["name"], 2, mat["n"], mat["C"])
    assert model.speed.valid_range == tuple(doc["inputs"]["cutting_speed"]["valid_range"])
    assert model.wear.column == doc["output"]["flank_wear"]["column"]
    assert set(model.sensors) == set(doc["sensors"])
