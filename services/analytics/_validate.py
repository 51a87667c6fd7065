"""The `validate` job: a twin model's flank-wear predictions against measured wear.

Prediction (physics in _twin_model): timestamps are made non-decreasing by a running
maximum (a repeated or backward timestamp adds no time); the cutting speed and feed of
each interval are those of its first sample, carried forward over missing or
implausible readings; the consumed life fraction tau and the cutting time are summed
over the intervals; VB = wear_curve(tau). The tool is taken to be new at the first row.

Each row's measurement is compared unless excluded, first matching reason wins:
missing_measurement (empty/NaN), measurement_out_of_physical_range,
measurement_out_of_valid_range, missing_input (speed or feed empty, non-finite or
physically implausible), input_out_of_valid_range (cutting, i.e. V >= idle_below, at V
or f outside the model's valid range), cutting_time_out_of_valid_range.

Metrics over compared rows, error e = predicted − measured (mm): MAE, RMSE, bias =
mean(e) (positive: the model over-predicts wear), max |e|, coverage = share of rows with
|e| <= the model's prediction-interval half-width at that prediction.
"""
from __future__ import annotations

import numpy as np

from ._report import md_table, num, rows
from ._twin_model import TwinModel
from .errors import JobInputError
from .tabular import Table

REASONS = ("missing_measurement", "measurement_out_of_physical_range", "measurement_out_of_valid_range",
           "missing_input", "input_out_of_valid_range", "cutting_time_out_of_valid_range")


def _inside(x: np.ndarray, rng: tuple[float, float] | None) -> np.ndarray:
    if rng is None:
        return np.isfinite(x)
    with np.errstate(invalid="ignore"):
        return np.isfinite(x) & (x >= rng[0]) & (x <= rng[1])


def _carry_forward(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """x with every not-ok entry replaced by the last ok one before it (NaN if none)."""
    idx = np.where(ok, np.arange(len(x)), -1)
    np.maximum.accumulate(idx, out=idx)
    return np.where(idx >= 0, x[np.maximum(idx, 0)], np.nan)


def validate(model: TwinModel, table: Table) -> tuple[dict, dict, str]:
    v = table.columns[model.speed.column]
    f = table.columns[model.feed.column]
    measured = table.columns[model.wear.column]
    ts = table.timestamps
    t_eff = np.maximum.accumulate(ts)
    dt_min = np.diff(t_eff) / 60000.0

    input_ok = _inside(v, model.speed.physical_range) & _inside(f, model.feed.physical_range)
    v_c, f_c = _carry_forward(v, input_ok), _carry_forward(f, input_ok)
    with np.errstate(invalid="ignore"):
        cutting = v_c >= model.idle_below  # False where no valid reading yet (NaN)
    life = np.full(len(v), np.inf)
    life[cutting] = model.tool_life_min(v_c[cutting], f_c[cutting])
    tau = np.concatenate([[0.0], np.cumsum(dt_min / life[:-1])])
    cut_min = np.concatenate([[0.0], np.cumsum(np.where(cutting[:-1], dt_min, 0.0))])
    predicted = model.wear_mm(tau)

    in_valid = _inside(v_c, model.speed.valid_range) & _inside(f_c, model.feed.valid_range)
    extrapolated = cutting & ~in_valid
    checks = (
        ~np.isfinite(measured),
        ~_inside(measured, model.wear.physical_range),
        ~_inside(measured, model.wear.valid_range),
        ~input_ok,
        extrapolated,
        ~_inside(cut_min, model.cutting_time.valid_range),
    )
    excluded = np.zeros(len(v), dtype=bool)
    by_reason = {}
    for reason, hit in zip(REASONS, checks):
        new = hit & ~excluded
        if new.any():
            by_reason[reason] = {"count": int(new.sum()), "rows": rows(np.flatnonzero(new))}
        excluded |= new
    used = ~excluded
    if not used.any():
        counts = ", ".join(f"{k}: {x['count']}" for k, x in by_reason.items())
        raise JobInputError("model_mismatch", f"no row of the dataset can be compared with the "
                            f"model ({counts})", input_name="dataset")

    err = predicted[used] - measured[used]
    half = model.interval_half_width(predicted[used])
    worst = int(np.argmax(np.abs(err)))
    metrics = {
        "n_used": int(used.sum()), "n_excluded": int(excluded.sum()),
        "mae_mm": num(np.mean(np.abs(err))), "rmse_mm": num(np.sqrt(np.mean(err * err))),
        "bias_mm": num(np.mean(err)), "max_abs_error_mm": num(abs(err[worst])),
        "max_abs_error_row": int(np.flatnonzero(used)[worst]),
        "coverage": num(np.mean(np.abs(err) <= half)),
        "interval_confidence": model.pi_confidence,
    }
    details = {
        "model": {"name": model.name, "version": model.version, "material": model.material,
                  "taylor_n": model.n, "taylor_C": model.C},
        "metrics": metrics,
        "excluded": by_reason,
        "timestamps_non_increasing": int(np.sum(np.diff(ts) <= 0)),
        "extrapolated_cutting_min": num(np.sum(np.where(extrapolated[:-1], dt_min, 0.0))),
        "tool_life": _tool_life(model, tau, cut_min, predicted, measured, used, cutting, v_c, f_c),
    }
    summary = {"model_name": model.name, "model_version": model.version,
               **{k: metrics[k] for k in ("n_used", "n_excluded", "mae_mm", "rmse_mm", "bias_mm", "coverage")}}
    return summary, details, _markdown(details)


def _first_at(values: np.ndarray, mask: np.ndarray, cut_min: np.ndarray, level: float) -> float | None:
    hit = np.flatnonzero(mask & (values >= level))
    return num(cut_min[hit[0]]) if len(hit) else None


def _tool_life(model: TwinModel, tau, cut_min, predicted, measured, used, cutting, v_c, f_c) -> dict:
    crit = model.criterion_mm
    out = {
        "wear_criterion_mm": crit,
        "cutting_time_min": num(cut_min[-1]),
        "consumed_life_fraction": num(tau[-1]),
        "predicted_criterion_at_cutting_min": _first_at(predicted, np.ones(len(tau), bool), cut_min, crit),
        "measured_criterion_at_cutting_min": _first_at(measured, used, cut_min, crit),
        "tool_life_at_mean_conditions_min": None,
        "remaining_life_at_last_conditions_min": None,
    }
    if cutting.any():
        mean_life = model.tool_life_min(np.mean(v_c[cutting]), np.mean(f_c[cutting]))
        out["tool_life_at_mean_conditions_min"] = num(mean_life)
        last = int(np.flatnonzero(cutting)[-1])
        remaining = max(0.0, 1.0 - float(tau[-1])) * float(model.tool_life_min(v_c[last], f_c[last]))
        out["remaining_life_at_last_conditions_min"] = num(remaining)
    return out


def _markdown(details: dict) -> str:
    m, life, model = details["metrics"], details["tool_life"], details["model"]
    parts = [f"Model **{model['name']}** v{model['version']} ({model['material']}, "
             f"Taylor n = {model['taylor_n']}, C = {model['taylor_C']}).",
             md_table(("metric", "value"), [
                 ("rows compared", m["n_used"]), ("rows excluded", m["n_excluded"]),
                 ("MAE (mm)", m["mae_mm"]), ("RMSE (mm)", m["rmse_mm"]), ("bias (mm)", m["bias_mm"]),
                 ("max |error| (mm)", m["max_abs_error_mm"]),
                 (f"coverage of the {m['interval_confidence']:.0%} interval", m["coverage"])]),
             md_table(("tool life", "value"), [(k.replace("_", " "), v) for k, v in life.items()])]
    if details["excluded"]:
        parts.append(md_table(("excluded because", "rows", "first rows"),
                              [(k, x["count"], ", ".join(map(str, x["rows"])))
                               for k, x in details["excluded"].items()]))
    return "\n\n".join(parts)
