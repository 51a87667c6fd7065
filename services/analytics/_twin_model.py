"""The parametric CNC cutting-tool twin model: JSON layout, validation, predictions.

Layout (schema "twinledger/cnc-tool-twin/1"; unknown keys are ignored):

    {"schema": "twinledger/cnc-tool-twin/1", "name": str, "model_version": int,
     "taylor": {"material": str, "materials": {str: {"n": >0, "C": >0}},
                "feed_exponent": >=0, "reference_feed_mm_rev": >0,
                "units": {"V": "m/min", "T": "min", "f": "mm/rev"}},
     "wear_curve": {"unit": "mm", "wear_criterion_mm": >0, "break_in_mm": >=0,
                    "break_in_tau": >0, "linear_mm": >=0, "accelerated_mm": >=0,
                    "accelerated_exponent": >=1},
     "prediction_interval": {"confidence": (0,1), "half_width_mm": >=0, "relative": >=0},
     "idle_below_m_min": >=0,
     "inputs": {"cutting_speed": {"column", "unit": "m/min", "valid_range", "physical_range"},
                "feed":          {"column", "unit": "mm/rev", "valid_range", "physical_range"},
                "cutting_time":  {"column" (the time column), "unit": "min", "valid_range"}},
     "output": {"flank_wear": {"column", "unit": "mm", "valid_range", "physical_range"}},
     "sensors": {column: {"unit": str, "physical_range": [lo, hi]}}}

Physics: extended Taylor tool life  V · T^n · (f / f_ref)^a = C  gives T(V, f) in
minutes; the consumed life fraction is the Miner sum  tau = Σ dt / T(V, f)  over the
sampling intervals (conditions held from the interval's first sample; intervals with
V < idle_below do not wear the tool); flank wear follows the three-phase curve

    VB(tau) = B·(1 − exp(−tau/tau_b)) + L·tau + A·tau^m     (break-in, linear, accelerated)

and tool life is reached when VB = wear_criterion_mm, i.e. VB(1) must equal the
criterion (checked to 1 %). The prediction interval is VB ± (half_width + relative·VB).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import JobInputError, JobLimitError

SCHEMA = "twinledger/cnc-tool-twin/1"
MAX_MODEL_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Channel:
    column: str
    unit: str
    valid_range: tuple[float, float] | None
    physical_range: tuple[float, float] | None


@dataclass(frozen=True)
class TwinModel:
    name: str
    version: int
    material: str
    n: float
    C: float
    feed_exponent: float
    reference_feed: float
    criterion_mm: float
    break_in_mm: float
    break_in_tau: float
    linear_mm: float
    accelerated_mm: float
    accelerated_exponent: float
    pi_confidence: float
    pi_half_width_mm: float
    pi_relative: float
    idle_below: float
    speed: Channel
    feed: Channel
    cutting_time: Channel
    wear: Channel
    sensors: dict[str, Channel]

    def tool_life_min(self, v: np.ndarray, f: np.ndarray) -> np.ndarray:
        """T(V, f) in minutes from the extended Taylor equation."""
        with np.errstate(all="ignore"):
            return (self.C / (v * (f / self.reference_feed) ** self.feed_exponent)) ** (1.0 / self.n)

    def wear_mm(self, tau: np.ndarray) -> np.ndarray:
        """VB(tau): the three-phase flank-wear curve."""
        with np.errstate(all="ignore"):
            return (self.break_in_mm * -np.expm1(-tau / self.break_in_tau)
                    + self.linear_mm * tau + self.accelerated_mm * tau ** self.accelerated_exponent)

    def interval_half_width(self, vb: np.ndarray) -> np.ndarray:
        return self.pi_half_width_mm + self.pi_relative * np.abs(vb)

    def declared_ranges(self) -> dict[str, tuple[tuple[float, float] | None, tuple[float, float] | None]]:
        """column → (physical_range, valid_range) for every column the model describes."""
        out = {c.column: (c.physical_range, c.valid_range) for c in self.sensors.values()}
        for ch in (self.speed, self.feed, self.wear):
            out[ch.column] = (ch.physical_range, ch.valid_range)
        return out


def load_model(source: bytes | bytearray | memoryview | Path) -> TwinModel:
    """Parse and validate a model JSON document; JobInputError("invalid_model") if bad."""
    if isinstance(source, Path):
        try:
            size = source.stat().st_size
            if size > MAX_MODEL_BYTES:
                raise JobLimitError("bytes", MAX_MODEL_BYTES, size)
            data = source.read_bytes()
        except OSError as exc:
            raise JobInputError("unreadable_format", f"cannot open model: {exc.strerror}") from None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        raise JobInputError("invalid_parameters", f"an input must be bytes or a Path, not {type(source).__name__}")
    if len(data) > MAX_MODEL_BYTES:
        raise JobLimitError("bytes", MAX_MODEL_BYTES, len(data))
    if not data.strip():
        raise JobInputError("empty_input", "the model document is empty")
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _invalid(f"not valid JSON ({str(exc)[:120]})") from None
    return parse_model(doc)


def parse_model(doc: object) -> TwinModel:
    root = _obj(doc, "$")
    schema = root.get("schema")
    if schema != SCHEMA:
        raise _invalid(f"schema must be {SCHEMA!r}, found {str(schema)[:60]!r}")
    taylor = _obj(root.get("taylor"), "taylor")
    material = _str(taylor, "material", "taylor")
    materials = _obj(taylor.get("materials"), "taylor.materials")
    if material not in materials:
        raise _invalid(f"taylor.material {material[:40]!r} is not in taylor.materials")
    for name, entry in materials.items():
        _pos(_obj(entry, f"taylor.materials.{name}"), "n", f"taylor.materials.{name}")
        _pos(entry, "C", f"taylor.materials.{name}")
    _units(taylor, "taylor", {"V": "m/min", "T": "min", "f": "mm/rev"})
    curve = _obj(root.get("wear_curve"), "wear_curve")
    _unit(curve, "wear_curve", "mm")
    pi = _obj(root.get("prediction_interval"), "prediction_interval")
    inputs = _obj(root.get("inputs"), "inputs")
    output = _obj(root.get("output"), "output")
    sensors = _obj(root.get("sensors", {}), "sensors")
    model = TwinModel(
        name=_str(root, "name", "$"),
        version=_int(root, "model_version", "$"),
        material=material,
        n=float(materials[material]["n"]),
        C=float(materials[material]["C"]),
        feed_exponent=_num(taylor, "feed_exponent", "taylor", lo=0),
        reference_feed=_pos(taylor, "reference_feed_mm_rev", "taylor"),
        criterion_mm=_pos(curve, "wear_criterion_mm", "wear_curve"),
        break_in_mm=_num(curve, "break_in_mm", "wear_curve", lo=0),
        break_in_tau=_pos(curve, "break_in_tau", "wear_curve"),
        linear_mm=_num(curve, "linear_mm", "wear_curve", lo=0),
        accelerated_mm=_num(curve, "accelerated_mm", "wear_curve", lo=0),
        accelerated_exponent=_num(curve, "accelerated_exponent", "wear_curve", lo=1),
        pi_confidence=_num(pi, "confidence", "prediction_interval", lo=0, hi=1),
        pi_half_width_mm=_num(pi, "half_width_mm", "prediction_interval", lo=0),
        pi_relative=_num(pi, "relative", "prediction_interval", lo=0),
        idle_below=_num(root, "idle_below_m_min", "$", lo=0),
        speed=_channel(inputs, "cutting_speed", "inputs", "m/min", ranges=True),
        feed=_channel(inputs, "feed", "inputs", "mm/rev", ranges=True),
        cutting_time=_channel(inputs, "cutting_time", "inputs", "min", ranges=False),
        wear=_channel(output, "flank_wear", "output", "mm", ranges=True),
        sensors={col: _sensor(sensors, col) for col in sensors},
    )
    at_life = float(model.wear_mm(np.float64(1.0)))
    if not math.isclose(at_life, model.criterion_mm, rel_tol=0.01):
        raise _invalid(f"wear_curve reaches {at_life:.4g} mm at tau = 1, but the tool-life "
                       f"criterion is {model.criterion_mm:.4g} mm (they must agree within 1 %)")
    return model


# --- validation helpers: every failure names the JSON path ------------------------------

def _invalid(message: str) -> JobInputError:
    return JobInputError("invalid_model", message)


def _obj(value: object, path: str) -> dict:
    if not isinstance(value, dict):
        raise _invalid(f"{path} must be a JSON object")
    return value


def _str(obj: dict, key: str, path: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise _invalid(f"{path}.{key} must be a non-empty string")
    return value


def _int(obj: dict, key: str, path: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _invalid(f"{path}.{key} must be a positive integer")
    return value


def _num(obj: dict, key: str, path: str, lo: float | None = None, hi: float | None = None) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _invalid(f"{path}.{key} must be a finite number")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _invalid(f"{path}.{key} = {value!r} is outside [{lo}, {hi}]")
    return float(value)


def _pos(obj: dict, key: str, path: str) -> float:
    value = _num(obj, key, path)
    if value <= 0:
        raise _invalid(f"{path}.{key} must be positive")
    return value


def _unit(obj: dict, path: str, expected: str) -> None:
    if obj.get("unit") != expected:
        raise _invalid(f"{path}.unit must be {expected!r} (units are not converted), "
                       f"found {str(obj.get('unit'))[:20]!r}")


def _units(obj: dict, path: str, expected: dict[str, str]) -> None:
    units = _obj(obj.get("units"), f"{path}.units")
    for key, unit in expected.items():
        _unit({"unit": units.get(key)}, f"{path}.units.{key}", unit)


def _range(obj: dict, key: str, path: str) -> tuple[float, float] | None:
    if key not in obj:
        return None
    value = obj[key]
    ok = (isinstance(value, list) and len(value) == 2
          and all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) for v in value))
    if not ok or value[0] >= value[1]:
        raise _invalid(f"{path}.{key} must be [low, high] with low < high")
    return float(value[0]), float(value[1])


def _channel(group: dict, key: str, path: str, unit: str, *, ranges: bool) -> Channel:
    spec = _obj(group.get(key), f"{path}.{key}")
    _unit(spec, f"{path}.{key}", unit)
    return Channel(
        column=_str(spec, "column", f"{path}.{key}"),
        unit=unit,
        valid_range=_range(spec, "valid_range", f"{path}.{key}"),
        physical_range=_range(spec, "physical_range", f"{path}.{key}") if ranges else None,
    )


def _sensor(group: dict, column: str) -> Channel:
    spec = _obj(group[column], f"sensors.{column}")
    return Channel(column=column, unit=_str(spec, "unit", f"sensors.{column}"), valid_range=None,
                   physical_range=_range(spec, "physical_range", f"sensors.{column}"))
