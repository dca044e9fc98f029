"""The fork's policy file (``seeddelta_policy.cpp``), gating, autotune, stack guard and stack cost.

Format::

    {"version": 1,
     "defaults": {rule},
     "ranges": [{"layers": "10-11,14", ...rule}],
     "layers": {"23": {rule}}}

A rule may hold ``enabled``, ``strip_dense``, ``block``, ``K`` (a number or ``{gate, up, down}``;
``K_gate``/``K_up``/``K_down`` also work), ``gating`` (``metric``: cos | cos_x | cos_w | cos_x_w |
ffn_score; ``min_mean`` and ``min_p05``: a number or ``{gate, up, down}``; -1 disables),
``autotune`` (``enabled``, ``schedule_gate_up``, ``schedule_down``, ``max_iters``) and ``tensors``
(``ffn_gate`` | ``ffn_up`` | ``ffn_down``: rule). Merge order, later wins: CLI, defaults, matching
ranges in file order, ``layers[L]``, then the ``tensors[T]`` sub-rules of those levels in the same
order.

Differences from the fork (documented in the README):

* stack guard: the fork's code tightens the thresholds after 3 passes per group while its comment
  says it relaxes them. Tightening is the design its floors (0.60/0.45, down 0.35/0.25 after 8
  passes) and the fork's own measurements (error compounds with every stacked tensor) call for,
  so it is kept, named ``tighten``, and configurable (``stack_guard`` in the policy).
* stack cost: the fork adds ``max(0, τ_mean - m) + max(0, τ_p05 - p05)``, which is 0 for every
  tensor that passed, so its cap never binds. Here each emitted tensor adds the error it brings,
  ``(1 - m) + (1 - p05)``, and the cap is checked before the tensor is emitted (the fork checks
  after adding, so one overflow blocks every later tensor; here a cheaper later tensor may still fit).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seeddelta.errors import SeedDeltaError

KINDS = ("ffn_gate", "ffn_up", "ffn_down")
SHORT = {"ffn_gate": "gate", "ffn_up": "up", "ffn_down": "down"}
METRICS = ("cos", "cos_x", "cos_w", "cos_x_w", "ffn_score")
BASELINE_THRESHOLDS = {"gate_up": (0.45, 0.30), "down": (0.25, 0.15)}
RULE_KEYS = {
    "enabled",
    "strip_dense",
    "block",
    "K",
    "K_gate",
    "K_up",
    "K_down",
    "gating",
    "autotune",
    "tensors",
    "layers",
}
GATING_KEYS = {"metric", "min_mean", "min_p05"}
AUTOTUNE_KEYS = {"enabled", "schedule_gate_up", "schedule_down", "max_iters"}


@dataclass
class TensorPolicy:
    """The resolved settings for one tensor."""

    enabled: bool = True
    strip_dense: bool = False
    block: int = 32
    K: int = 32
    gating_metric: str = "cos_x_w"
    min_mean: float | None = None  # None = baseline threshold of the group
    min_p05: float | None = None
    autotune: bool = False
    schedule: list[int] = field(default_factory=list)
    max_iters: int = 8


def parse_layers(spec: str, where: str) -> set[int]:
    """``"10-11,14"`` -> {10, 11, 14}."""
    out: set[int] = set()
    if not isinstance(spec, str) or not spec.strip():
        raise SeedDeltaError(f'{where}: expected a layer list like "10-11,14", got {spec!r}')
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                if a > b or a < 0:
                    raise ValueError
                out.update(range(a, b + 1))
            else:
                if int(part) < 0:
                    raise ValueError
                out.add(int(part))
        except ValueError:
            raise SeedDeltaError(
                f"{where}: bad layer range {part!r} (expected N or A-B with A <= B)"
            ) from None
    return out


def _num(v: Any, where: str, kind_map: bool = True) -> Any:
    if isinstance(v, bool) or not isinstance(v, int | float | dict):
        raise SeedDeltaError(
            f"{where}: expected a number{' or {gate, up, down}' if kind_map else ''}, got {v!r}"
        )
    if isinstance(v, dict):
        if not kind_map:
            raise SeedDeltaError(f"{where}: expected a number, got an object")
        unknown = set(v) - {"gate", "up", "down"}
        if unknown:
            raise SeedDeltaError(f"{where}: unknown keys {sorted(unknown)} (expected gate, up, down)")
        for k, x in v.items():
            _num(x, f"{where}.{k}", kind_map=False)
    return v


def _check_rule(rule: Any, where: str, allow_layers: bool = False) -> None:
    if not isinstance(rule, dict):
        raise SeedDeltaError(f"{where}: expected an object, got {type(rule).__name__}")
    allowed = RULE_KEYS if allow_layers else RULE_KEYS - {"layers"}
    unknown = set(rule) - allowed
    if unknown:
        raise SeedDeltaError(f"{where}: unknown keys {sorted(unknown)}")
    for key in ("enabled", "strip_dense"):
        if key in rule and not isinstance(rule[key], bool):
            raise SeedDeltaError(f"{where}.{key}: expected true or false, got {rule[key]!r}")
    if "block" in rule and (
        not isinstance(rule["block"], int) or isinstance(rule["block"], bool) or rule["block"] < 1
    ):
        raise SeedDeltaError(f"{where}.block: expected a positive integer, got {rule['block']!r}")
    if "K" in rule:
        _num(rule["K"], f"{where}.K")
    for key in ("K_gate", "K_up", "K_down"):
        if key in rule:
            _num(rule[key], f"{where}.{key}", kind_map=False)
    if "gating" in rule:
        g = rule["gating"]
        if not isinstance(g, dict):
            raise SeedDeltaError(f"{where}.gating: expected an object")
        unknown = set(g) - GATING_KEYS
        if unknown:
            raise SeedDeltaError(f"{where}.gating: unknown keys {sorted(unknown)}")
        if "metric" in g and g["metric"] not in METRICS:
            raise SeedDeltaError(
                f"{where}.gating.metric: expected one of {', '.join(METRICS)}, got {g['metric']!r}"
            )
        for key in ("min_mean", "min_p05"):
            if key in g:
                _num(g[key], f"{where}.gating.{key}")
    if "autotune" in rule:
        a = rule["autotune"]
        if not isinstance(a, dict):
            raise SeedDeltaError(f"{where}.autotune: expected an object")
        unknown = set(a) - AUTOTUNE_KEYS
        if unknown:
            raise SeedDeltaError(f"{where}.autotune: unknown keys {sorted(unknown)}")
        for key in ("schedule_gate_up", "schedule_down"):
            if key in a and (
                not isinstance(a[key], list) or not all(isinstance(x, int) and x > 0 for x in a[key])
            ):
                raise SeedDeltaError(f"{where}.autotune.{key}: expected a list of positive integers")
        if "max_iters" in a and (
            isinstance(a["max_iters"], bool) or not isinstance(a["max_iters"], int) or a["max_iters"] < 1
        ):
            raise SeedDeltaError(
                f"{where}.autotune.max_iters: expected a positive integer, got {a['max_iters']!r}"
            )
    if "tensors" in rule:
        t = rule["tensors"]
        if not isinstance(t, dict):
            raise SeedDeltaError(f"{where}.tensors: expected an object")
        for name, sub in t.items():
            if name not in KINDS:
                raise SeedDeltaError(
                    f"{where}.tensors: unknown tensor {name!r} (expected {', '.join(KINDS)})"
                )
            _check_rule(sub, f"{where}.tensors.{name}")


@dataclass
class Policy:
    """A parsed policy file."""

    data: dict[str, Any]
    path: str = ""
    text_hash: str = ""
    stack_guard: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        path = Path(path)
        if not path.is_file():
            raise SeedDeltaError(f"{path}: policy file not found")
        raw = path.read_bytes()
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SeedDeltaError(
                f"{path}: line {exc.lineno} column {exc.colno}: invalid JSON ({exc.msg})"
            ) from None
        except (ValueError, RecursionError) as exc:  # not UTF-8/16/32 text, or nested too deeply
            raise SeedDeltaError(f"{path}: not a JSON policy ({type(exc).__name__})") from None
        return cls.from_dict(data, str(path), "fnv1a64:" + fnv1a64(raw))

    @classmethod
    def from_dict(cls, data: Any, path: str = "<policy>", text_hash: str = "") -> Policy:
        where = path
        if not isinstance(data, dict):
            raise SeedDeltaError(f"{where}: the policy must be a JSON object")
        unknown = set(data) - {"version", "defaults", "ranges", "layers", "stack_guard", "comment", "notes"}
        if unknown:
            raise SeedDeltaError(f"{where}: unknown top-level keys {sorted(unknown)}")
        if data.get("version") != 1:
            raise SeedDeltaError(f"{where}: field 'version' must be 1, got {data.get('version')!r}")
        if "defaults" in data:
            _check_rule(data["defaults"], f"{where}: defaults")
        ranges = data.get("ranges", [])
        if not isinstance(ranges, list):
            raise SeedDeltaError(f"{where}: ranges: expected a list")
        for i, r in enumerate(ranges):
            _check_rule(r, f"{where}: ranges[{i}]", allow_layers=True)
            if "layers" not in r:
                raise SeedDeltaError(f"{where}: ranges[{i}]: field 'layers' is missing")
            parse_layers(r["layers"], f"{where}: ranges[{i}].layers")
        layers = data.get("layers", {})
        if not isinstance(layers, dict):
            raise SeedDeltaError(f"{where}: layers: expected an object keyed by layer number")
        for key, rule in layers.items():
            if not str(key).isdigit():
                raise SeedDeltaError(f"{where}: layers: key {key!r} is not a layer number")
            _check_rule(rule, f"{where}: layers.{key}")
        guard = {"direction": "tighten", "after": 3, "step": 0.05, "floor_after": 8}
        g = data.get("stack_guard", {})
        if not isinstance(g, dict) or set(g) - set(guard) - {"enabled"}:
            raise SeedDeltaError(f"{where}: stack_guard: expected an object with {sorted(guard)} / enabled")
        if g.get("direction", "tighten") not in ("tighten", "off"):
            raise SeedDeltaError(f"{where}: stack_guard.direction: expected 'tighten' or 'off'")
        guard.update(g)
        return cls(
            data=data,
            path=path,
            text_hash=text_hash or "fnv1a64:" + fnv1a64(json.dumps(data).encode()),
            stack_guard=guard,
        )

    def levels(self, layer: int) -> list[dict[str, Any]]:
        """The rules that apply to ``layer``, in merge order (without tensor sub-rules)."""
        out = []
        if "defaults" in self.data:
            out.append(self.data["defaults"])
        for i, r in enumerate(self.data.get("ranges", [])):
            if layer in parse_layers(r["layers"], f"ranges[{i}].layers"):
                out.append(r)
        if str(layer) in self.data.get("layers", {}):
            out.append(self.data["layers"][str(layer)])
        return out

    def mentioned_layers(self) -> set[int]:
        out = {int(k) for k in self.data.get("layers", {})}
        for i, r in enumerate(self.data.get("ranges", [])):
            out |= parse_layers(r["layers"], f"ranges[{i}].layers")
        return out


def _apply(tp: TensorPolicy, rule: dict[str, Any], kind: str) -> None:
    short = SHORT[kind]
    for key in ("enabled", "strip_dense", "block"):
        if key in rule:
            setattr(tp, key, rule[key])
    if "K" in rule:
        k = rule["K"]
        if isinstance(k, dict):
            if short in k:
                tp.K = int(k[short])
        else:
            tp.K = int(k)
    if f"K_{short}" in rule:
        tp.K = int(rule[f"K_{short}"])
    g = rule.get("gating", {})
    if "metric" in g:
        tp.gating_metric = g["metric"]
    for key in ("min_mean", "min_p05"):
        if key in g:
            v = g[key]
            if isinstance(v, dict):
                if short in v:
                    setattr(tp, key, float(v[short]))
            else:
                setattr(tp, key, float(v))
    a = rule.get("autotune", {})
    if "enabled" in a:
        tp.autotune = bool(a["enabled"])
    sched = a.get("schedule_down" if kind == "ffn_down" else "schedule_gate_up")
    if sched is not None:
        tp.schedule = list(sched)
    if "max_iters" in a:
        tp.max_iters = int(a["max_iters"])


def resolve(policy: Policy | None, cli: TensorPolicy, layer: int, kind: str) -> TensorPolicy:
    """CLI -> defaults -> ranges -> layers[L] -> tensors[T] (later wins)."""
    tp = TensorPolicy(**asdict(cli))
    if policy is None:
        return tp
    levels = policy.levels(layer)
    for rule in levels:
        _apply(tp, rule, kind)
    for rule in levels:
        sub = rule.get("tensors", {}).get(kind)
        if sub:
            _apply(tp, sub, kind)
    return tp


def thresholds(tp: TensorPolicy, kind: str) -> tuple[float, float]:
    base = BASELINE_THRESHOLDS["down" if kind == "ffn_down" else "gate_up"]
    return (
        tp.min_mean if tp.min_mean is not None else base[0],
        tp.min_p05 if tp.min_p05 is not None else base[1],
    )


class StackState:
    """Counts passes per group and applies the stack guard; accumulates stack cost."""

    FLOORS = {"gate_up": (0.60, 0.45), "down": (0.35, 0.25)}

    def __init__(self, guard: dict[str, Any], cap: float) -> None:
        self.guard = guard
        self.cap = cap
        self.passes = {"gate_up": 0, "down": 0}
        self.total_cost = 0.0

    @staticmethod
    def group(kind: str) -> str:
        return "down" if kind == "ffn_down" else "gate_up"

    def guarded(self, kind: str, tau: tuple[float, float]) -> tuple[float, float]:
        """Thresholds after the stack guard: +step once `after` tensors of the group passed,
        floored at the group's floors after `floor_after` passes."""
        if self.guard.get("direction") == "off" or self.guard.get("enabled") is False:
            return tau
        n = self.passes[self.group(kind)]
        m, p = tau
        if m < 0 or p < 0:
            return tau
        if n >= self.guard["after"]:
            m, p = m + self.guard["step"], p + self.guard["step"]
        if n >= self.guard["floor_after"]:
            fm, fp = self.FLOORS[self.group(kind)]
            m, p = max(m, fm), max(p, fp)
        return m, p


def gate_value(
    metrics: dict[str, Any], metric: str, kind: str, eval_x: int
) -> tuple[float | None, float | None, str]:
    """(value, p05, metric_used) for a gating metric; the fork forces min(x_w mean, x_w p05) for
    gate/up when eval_x is on, checked against both thresholds."""
    if kind in ("ffn_gate", "ffn_up") and eval_x > 0 and "cos_mean_x_w" in metrics:
        v = min(metrics["cos_mean_x_w"], metrics["cos_p05_x_w"])
        return v, v, "ffn_score_x_w_forced"
    if metric == "ffn_score":
        v = metrics.get("ffn_score")
        return v, v, "ffn_score"
    suffix = {"cos": "", "cos_x": "_x", "cos_w": "_w", "cos_x_w": "_x_w"}[metric]
    if f"cos_mean{suffix}" not in metrics:
        return None, None, metric
    return metrics[f"cos_mean{suffix}"], metrics[f"cos_p05{suffix}"], metric


def stack_cost(value: float, p05: float) -> float:
    """The error an emitted tensor adds to the stack: distance of its gate metric from perfect."""
    return max(0.0, 1.0 - value) + max(0.0, 1.0 - p05)


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
