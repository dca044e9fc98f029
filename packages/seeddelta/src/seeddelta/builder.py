"""``seeddelta build``: the fork's ``llama-seeddelta-build`` in Python.

Reads a llama GGUF (F32/F16 or quantized, dequantized first as the fork does), encodes the chosen
FFN tensors with SeedΔ under the CLI options and the policy, and writes a copy of the input with
all its key-values and tensors plus the SeedΔ tensors (``blk.N.ffn_*.d_idx`` ...) and the
``seeddelta.*`` keys; dense weights of emitted tensors are dropped with ``--strip-dense``. The
report JSON carries the fork's fields. The input file is only ever read.

:func:`build` runs three steps: the checks (``_plan``: paths, layers, policy, imatrix and every
target tensor, before anything is encoded), the per-tensor encode (``_encode_tensor``: resolve the
policy, try the autotune schedule, gate, decide) and the write (``_write_outputs``: the GGUF, the
report, the resolved policy).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seeddelta.delta import (
    IDX_TYPES,
    DeltaConfig,
    SeedDeltaTensor,
    check_index_type,
    encode,
    importance_weights,
    refit_values,
)
from seeddelta.errors import SeedDeltaError
from seeddelta.metrics import bits_per_weight, cost, ffn_proxy, tensor_metrics
from seeddelta.policy import (
    KINDS,
    Policy,
    StackState,
    TensorPolicy,
    gate_value,
    parse_layers,
    resolve,
    stack_cost,
    thresholds,
)


@dataclass
class BuildConfig:
    """The builder's options (defaults are the fork's, ``sd_cli.cpp``); one field per CLI flag.

    Raises:
        SeedDeltaError: ``K`` < 1, ``eval_cols`` or ``eval_x`` < 0, an unknown ``idx_type``,
            ``base_kind`` or tensor kind.
    """

    input: str  # source GGUF (never modified)
    output: str  # SeedΔ GGUF to write
    layers: str | None = None  # "A-B" (or "1,3,5-6"); all layers when None
    K: int = 32  # kept residuals per row
    K_gate: int | None = None  # per-tensor K (defaults to K)
    K_up: int | None = None  # K of ffn_up (defaults to K)
    K_down: int | None = None  # K of ffn_down (defaults to K)
    kinds: tuple[str, ...] = KINDS  # which FFN tensors to consider
    scheme: str = "coo"  # coo | block
    block: int = 32  # block length of the block scheme
    idx_type: str = "i16"  # i16 | i32
    val_type: str = "f16"  # f16 | f32
    row_scale: bool = False  # weighted least-squares row scale
    base: bool = False  # fit a base W0 (the fork's --base)
    base_kind: str = "xor"  # xor (the fork's) | cyclic (extension)
    base_max_samples: int = 2048  # rows per block used to fit the base
    base_perm_trials: int = 1  # permutation trials of the xor base
    imatrix: str | None = None  # llama.cpp GGUF imatrix file
    imatrix_eps: float = 1e-8  # floor of the imatrix before the power
    imatrix_power: float = 1.0  # ws = imatrix^(power/2)
    eval_cols: int = 0  # sampled output rows for metrics (0 = metrics off)
    eval_x: int = 0  # Gaussian x vectors for functional metrics (0 = off)
    policy: str | None = None  # policy.json
    policy_strict: bool = False  # policy layers outside the model are errors, not warnings
    policy_export: str | None = None  # write the resolved per-tensor policy here
    strip_dense: bool = False  # drop dense weights of emitted tensors
    report_json: str | None = None  # report path
    seed: int = 1234  # row sampling, base permutations, Gaussian x
    stack_cost_cap: float = float("inf")  # cap on the summed stack cost of emitted tensors
    delta_norm_clamp_down: float | None = None  # ||Δ|| <= F ||W|| for ffn_down
    refit: bool = False  # activation-aware least-squares refit of Δ values (needs activations)
    activations: dict[str, np.ndarray] | None = field(default=None, repr=False)  # captured FFN inputs

    def __post_init__(self) -> None:
        if self.K < 1:
            raise SeedDeltaError(f"--K must be >= 1, got {self.K}")
        if self.eval_cols < 0 or self.eval_x < 0:
            raise SeedDeltaError("--eval-cols and --eval-x must be >= 0")
        if self.idx_type not in IDX_TYPES:
            raise SeedDeltaError(f"--idx-type must be i16 or i32, got {self.idx_type!r}")
        if self.base_kind not in ("xor", "cyclic"):
            raise SeedDeltaError(f"--base-kind must be xor or cyclic, got {self.base_kind!r}")
        for k in self.kinds:
            if k not in KINDS:
                raise SeedDeltaError(f"unknown tensor kind {k!r} (expected {', '.join(KINDS)})")


def _sd_tensors(prefix: str, enc: SeedDeltaTensor) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if enc.scheme == "coo":
        out[f"{prefix}.d_idx"], out[f"{prefix}.d_val"] = enc.coo_arrays()
    else:
        out[f"{prefix}.b_idx"], out[f"{prefix}.b_val"] = enc.block_arrays()
    if enc.row_scale is not None:
        out[f"{prefix}.d_row_scale"] = enc.row_scale.astype(np.float16)
    if enc.base is not None:
        b = enc.base
        vdt = b.diag.dtype if b.diag.dtype in (np.float16, np.float32) else np.float32
        if b.kind == "xor":
            ones = np.ones((b.B, b.L), dtype=vdt)
            out[f"{prefix}.base_d1"] = ones
            out[f"{prefix}.base_d2"] = b.diag.astype(vdt)
            out[f"{prefix}.base_d3"] = ones
            out[f"{prefix}.base_perm1"] = b.perm.astype(np.int16 if b.L <= 32768 else np.int32)
        else:
            out[f"{prefix}.base_cyc"] = b.diag.astype(vdt)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def write_gguf_with(
    src: Path, dst: Path, add_kv: dict[str, Any], add_tensors: dict[str, np.ndarray], drop: set[str]
) -> Path:
    """Copy ``src`` to ``dst`` with every key-value and tensor (minus ``drop``), then the additions.

    ``dst`` is written as ``dst.partial`` and renamed when complete, so it is never half-written.

    Args:
        src: The GGUF to copy (only read); its tensors keep their GGML types (quantized ones raw).
        dst: The GGUF to write (replaced if it exists); its folder must exist.
        add_kv: Extra key-values, replacing a source key of the same name; ``bool`` is stored as
            BOOL, ``int`` as UINT32, ``float`` as FLOAT32, anything else as STRING.
        add_tensors: Extra tensors by name, written after the source's with their own dtype and
            shape (C-contiguous numpy arrays).
        drop: Names of source tensors to leave out.

    Returns:
        ``dst``.
    """
    import gguf

    reader = gguf.GGUFReader(str(src), "r")
    arch = reader.fields["general.architecture"].contents()
    tmp = dst.with_name(dst.name + ".partial")
    writer = gguf.GGUFWriter(str(tmp), arch)
    for name, fld in reader.fields.items():
        if (
            name.startswith("GGUF.")
            or name in ("general.architecture", "general.alignment")
            or name in add_kv
        ):
            continue
        vtype = fld.types[0]
        sub = fld.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, fld.contents(), vtype, sub_type=sub)
    for key, value in add_kv.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_string(key, str(value))
    for t in reader.tensors:
        if t.name in drop:
            continue
        data = np.asarray(t.data)
        if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            writer.add_tensor(t.name, data)
        else:
            writer.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=t.tensor_type)
    for name, arr in add_tensors.items():
        writer.add_tensor(name, arr)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    tmp.replace(dst)
    return dst


def _metric_block(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("rel_l2_mean", "rel_l2_p95", "cos_mean", "cos_p05", "norm_ratio_mean")
    out = {}
    for suffix in ("", "_w", "_x", "_x_w", "_act"):
        for k in keys:
            if k + suffix in m:
                out[k + suffix] = m[k + suffix]
    return out


# ------------------------------------------------------------------------------------ the checks
@dataclass(frozen=True)
class BuildPlan:
    """What the checks established before any tensor is encoded (the input is valid, every target
    tensor exists and is 2-D, the policy and imatrix are loaded)."""

    src: Path  # input GGUF (only ever read)
    dst: Path  # output GGUF
    tensors: dict[str, np.ndarray]  # the input's tensors by name, as stored (maybe quantized)
    types: dict[str, str]  # their GGML type names
    targets: tuple[tuple[int, str], ...]  # (layer, kind) to encode, in order
    policy: Policy | None
    imatrix: dict[str, np.ndarray] | None  # "blk.N.ffn_*" -> (n_in,) float32 sum of squares
    cli_policy: dict[str, TensorPolicy]  # per kind: the CLI's K, block and strip_dense

    def weight(self, name: str) -> np.ndarray:
        """Tensor ``name`` dequantized to a float64 array (shape as stored: (n_out, n_in))."""
        from seeddelta.gguf_io import dequantize

        return dequantize(self.tensors[name], self.types[name], name).astype(np.float64)


def _plan(cfg: BuildConfig) -> BuildPlan:
    """The checks: paths, metadata, layers, policy, imatrix and every target tensor (in that order)."""
    from seeddelta.calibrate import read_imatrix
    from seeddelta.gguf_io import read_checked

    src, dst = Path(cfg.input), Path(cfg.output)
    if not src.is_file():
        raise SeedDeltaError(f"{src}: input GGUF not found")
    if dst.resolve() == src.resolve():
        raise SeedDeltaError(f"{dst}: output would overwrite the input; choose another path")
    contents = read_checked(src)
    md, tensors = contents.metadata, contents.tensors
    n_layers_key = f"{md.get('general.architecture')}.block_count"
    if n_layers_key not in md:
        raise SeedDeltaError(f"{src}: metadata key {n_layers_key!r} is missing")
    n_layers = int(md[n_layers_key])
    layers = sorted(parse_layers(cfg.layers, "--layers")) if cfg.layers else list(range(n_layers))
    bad = [layer for layer in layers if layer >= n_layers]
    if bad:
        raise SeedDeltaError(f"--layers: layer {bad[0]} does not exist ({src} has {n_layers} layers)")
    policy = Policy.load(cfg.policy) if cfg.policy else None
    if policy is not None:
        outside = sorted(x for x in policy.mentioned_layers() if x >= n_layers)
        if outside and cfg.policy_strict:
            raise SeedDeltaError(
                f"{cfg.policy}: layer {outside[0]} does not exist (the model has {n_layers} layers)"
            )
    imatrix = read_imatrix(Path(cfg.imatrix)) if cfg.imatrix else None
    targets = tuple((layer, kind) for layer in layers for kind in KINDS if kind in cfg.kinds)
    # check every target exists before spending time on any of them
    for layer, kind in targets:
        name = f"blk.{layer}.{kind}.weight"
        if name not in tensors:
            raise SeedDeltaError(f"{src}: tensor {name!r} is missing (needed for layer {layer} {kind})")
        if len(tensors[name].shape) != 2:
            raise SeedDeltaError(f"{src}: tensor {name!r} is not 2-D")
    Ks = {"ffn_gate": cfg.K_gate, "ffn_up": cfg.K_up, "ffn_down": cfg.K_down}
    cli_policy = {
        kind: TensorPolicy(strip_dense=cfg.strip_dense, block=cfg.block, K=Ks[kind] or cfg.K)
        for kind in KINDS
    }
    return BuildPlan(src, dst, tensors, contents.tensor_types, targets, policy, imatrix, cli_policy)


# ---------------------------------------------------------------------------- per-tensor encode
@dataclass(frozen=True)
class Attempt:
    """One K of the autotune schedule (a single attempt without autotune): encoding and verdict."""

    K_budget: int  # the K asked for
    enc: SeedDeltaTensor
    metrics: dict[str, Any]  # tensor_metrics (+ ffn_proxy_*); empty when --eval-cols is 0
    value: float | None  # gating metric's mean (None: gating off or the metric is unavailable)
    p05: float | None  # its 5th percentile
    metric_used: str  # the metric gated on (the fork forces one for gate/up with --eval-x)
    passed: bool  # True when gating is off
    tau_used: tuple[float, float]  # (min_mean, min_p05) after the stack guard
    seconds: float  # wall time of the encode, metrics and verdict

    def record(self) -> dict[str, Any]:
        """The report's ``autotune_attempts`` item."""
        return {
            "K_budget": self.K_budget,
            "K_eff": self.enc.K,
            "metric_value": self.value,
            "metric_p05": self.p05,
            "pass": self.passed,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class Decision:
    """Whether the chosen encoding is emitted, and why."""

    decision: str  # no_gating | metric_unavailable | gating_fail | autotune_failed_keep_dense | ...
    emit: bool
    reason: str  # reject_reason ("" when emitted)
    stack_cost: float = 0.0  # stack cost the tensor adds (0 unless it passed gating and fits the cap)


@dataclass
class TensorResult:
    """What one target contributes to the output: its report entry and, if emitted, its tensors."""

    entry: dict[str, Any]  # one item of the report's "weights"
    tensors: dict[str, np.ndarray] = field(default_factory=dict)  # SeedΔ tensors to add
    kv: dict[str, Any] = field(default_factory=dict)  # seeddelta.blk.N.ffn_*.* keys
    drop: str | None = None  # the dense weight removed by strip_dense


@dataclass(frozen=True)
class Target:
    """One FFN weight to encode and everything its attempts share."""

    layer: int
    kind: str  # ffn_gate | ffn_up | ffn_down
    W: np.ndarray  # (n_out, n_in) float64, dequantized
    tp: TensorPolicy  # resolved CLI -> policy settings
    imatrix: np.ndarray | None  # (n_in,) imatrix entry, None without --imatrix
    ws: np.ndarray  # (n_in,) importance weights, mean 1
    activations: np.ndarray | None  # (rows, n_in) captured inputs (--refit, --act-metrics)
    schedule: list[int]  # the Ks to try in order (autotune), else [tp.K]
    gating_enabled: bool  # a policy is given and neither threshold is -1
    tau: tuple[float, float]  # (min_mean, min_p05) before the stack guard

    @property
    def prefix(self) -> str:
        return f"blk.{self.layer}.{self.kind}"


def _delta_config(cfg: BuildConfig, K: int, block: int, kind: str) -> DeltaConfig:
    return DeltaConfig(
        K=K,
        scheme=cfg.scheme,
        block=block,
        idx_type=cfg.idx_type,
        val_type=cfg.val_type,
        row_scale=cfg.row_scale,
        base=cfg.base_kind if cfg.base else "none",
        base_max_samples=cfg.base_max_samples,
        base_perm_trials=cfg.base_perm_trials,
        delta_norm_clamp=cfg.delta_norm_clamp_down if kind == "ffn_down" else None,
    )


def _measure(
    cfg: BuildConfig, plan: BuildPlan, t: Target, enc: SeedDeltaTensor, rng: np.random.Generator
) -> dict[str, Any]:
    """tensor_metrics, plus the fork's ffn_proxy for COO gate/up without a base when eval-x is on."""
    if cfg.eval_cols <= 0:
        return {}
    m = tensor_metrics(
        t.W, enc, ws=t.ws, eval_cols=cfg.eval_cols, eval_x=cfg.eval_x, activations=t.activations, rng=rng
    )
    if cfg.scheme == "coo" and not cfg.base and cfg.eval_x > 0 and t.kind in ("ffn_gate", "ffn_up"):
        others = {kk: f"blk.{t.layer}.{kk}.weight" for kk in KINDS}
        if all(n in plan.tensors for n in others.values()):
            mats = {kk: plan.weight(n) for kk, n in others.items()}
            m.update(
                ffn_proxy(
                    mats["ffn_gate"],
                    mats["ffn_up"],
                    mats["ffn_down"],
                    "gate" if t.kind == "ffn_gate" else "up",
                    enc.delta_dense(),
                    eval_cols=cfg.eval_cols,
                    eval_x=cfg.eval_x,
                    rng=rng,
                )
            )
    return m


def _attempt(
    cfg: BuildConfig, plan: BuildPlan, t: Target, K: int, stack: StackState, rng: np.random.Generator
) -> Attempt:
    """Encode the target at ``K`` (and refit), measure it and apply the gate."""
    t0 = time.perf_counter()
    enc = encode(
        t.W,
        _delta_config(cfg, K, t.tp.block, t.kind),
        imatrix=t.imatrix,
        imatrix_eps=cfg.imatrix_eps,
        imatrix_power=cfg.imatrix_power,
        rng=rng,
        name=t.prefix,
    )
    if cfg.refit:
        if t.activations is None:
            raise SeedDeltaError(f"{t.prefix}: --refit needs calibration activations")
        enc = refit_values(enc, t.W, t.activations)
    m = _measure(cfg, plan, t, enc, rng)
    value = p05 = None
    metric_used = t.tp.gating_metric
    passed = True
    tau_used = stack.guarded(t.kind, t.tau) if t.gating_enabled else t.tau
    if t.gating_enabled:
        value, p05, metric_used = gate_value(m, t.tp.gating_metric, t.kind, cfg.eval_x)
        passed = value is not None and p05 is not None and value >= tau_used[0] and p05 >= tau_used[1]
    return Attempt(K, enc, m, value, p05, metric_used, passed, tau_used, time.perf_counter() - t0)


def _decide(
    cfg: BuildConfig, tp: TensorPolicy, gating_enabled: bool, chosen: Attempt, stack: StackState
) -> Decision:
    """The fork's decision for the chosen attempt; the stack cost cap is checked before emitting."""
    if not gating_enabled:
        return Decision("no_gating", True, "")
    value, p05, tau = chosen.value, chosen.p05, chosen.tau_used
    if value is None or p05 is None:  # gate_value gives both or neither
        return Decision("metric_unavailable", False, "gating needs metrics: set --eval-cols (and --eval-x)")
    if not chosen.passed:
        return Decision(
            "autotune_failed_keep_dense" if tp.autotune else "gating_fail",
            False,
            f"{chosen.metric_used} {value:.4f}/{p05:.4f} below {tau[0]:.3f}/{tau[1]:.3f}",
        )
    delta_cost = stack_cost(value, p05)
    if stack.total_cost + delta_cost > cfg.stack_cost_cap:
        return Decision(
            "stack_cost_cap",
            False,
            f"stack cost {stack.total_cost + delta_cost:.4f} > cap {cfg.stack_cost_cap}",
        )
    return Decision("pass_gating", True, "", delta_cost)


def _measured_fields(chosen: Attempt) -> dict[str, Any]:
    """The report entry's size, cost and metric fields of the chosen encoding (in the fork's order)."""
    enc, m = chosen.enc, chosen.metrics
    out: dict[str, Any] = {
        "K": enc.K,
        "n_blocks": int(enc.block_arrays()[0].shape[1]) if enc.scheme == "block" else 0,
    }
    ops = ("ops_dense", "ops_delta", "ops_base", "ops_ratio", "base_L", "base_B")
    out.update({key: m[key] for key in ops if key in m})
    if not m:
        out.update(cost(enc))
    out.update(_metric_block(m))
    out.update({key: v for key, v in m.items() if key.startswith("ffn_proxy_")})
    out["ffn_score"] = m.get("ffn_score")
    return out


def _skipped(entry: dict[str, Any], decision: str, reason: str) -> TensorResult:
    entry.update(emit=False, decision=decision, reject_reason=reason, strip_dense=False)
    return TensorResult(entry)


def _target(
    cfg: BuildConfig,
    plan: BuildPlan,
    layer: int,
    kind: str,
    W: np.ndarray,
    tp: TensorPolicy,
    imat: np.ndarray | None,
) -> Target:
    """The target's importance weights, checked K schedule and gating thresholds."""
    prefix = f"blk.{layer}.{kind}"
    n_in = W.shape[1]
    ws = importance_weights(imat, n_in, cfg.imatrix_eps, cfg.imatrix_power)
    schedule = tp.schedule[: tp.max_iters] if tp.autotune and tp.schedule else [tp.K]
    check_index_type(cfg.idx_type, n_in, prefix)
    for k in schedule:
        if k > n_in:
            raise SeedDeltaError(f"{prefix}: K={k} is larger than n_in={n_in}")
    tau = thresholds(tp, kind)
    gating_enabled = plan.policy is not None and tau[0] >= 0 and tau[1] >= 0
    acts = cfg.activations.get(prefix) if cfg.activations else None
    return Target(layer, kind, W, tp, imat, ws, acts, schedule, gating_enabled, tau)


def _autotune(
    cfg: BuildConfig, plan: BuildPlan, t: Target, stack: StackState, rng: np.random.Generator
) -> list[Attempt]:
    """Attempts along the schedule up to the first that passes; the last one is the chosen one."""
    attempts: list[Attempt] = []
    for k in t.schedule:
        attempts.append(_attempt(cfg, plan, t, k, stack, rng))
        if attempts[-1].passed:
            break
    return attempts


def _verdict_fields(
    t: Target, attempts: list[Attempt], verdict: Decision, stack: StackState
) -> dict[str, Any]:
    """The report entry's gating, size, stack and decision fields (in the fork's order)."""
    chosen = attempts[-1]
    return {
        "gating_enabled": t.gating_enabled,
        "gating_metric": t.tp.gating_metric,
        "gating_value": chosen.value,
        "gating_p05": chosen.p05,
        "gating_min_mean": chosen.tau_used[0],
        "gating_min_p05": chosen.tau_used[1],
        "gating_pass": bool(chosen.passed) if t.gating_enabled else None,
        "metric_used": chosen.metric_used,
        "targets_used": {"tau_mean": chosen.tau_used[0], "tau_p05": chosen.tau_used[1]},
        "autotune_attempts": [a.record() for a in attempts] if t.tp.autotune else [],
        "bytes": chosen.enc.n_bytes(),
        "bits_per_weight": bits_per_weight(chosen.enc),
        "stack_cost_delta": verdict.stack_cost,
        "stack_cost_total": stack.total_cost,
        "emit": verdict.emit,
        "strip_dense": bool(verdict.emit and t.tp.strip_dense),
        "decision": verdict.decision,
        "reject_reason": verdict.reason,
    }


def _encode_tensor(
    cfg: BuildConfig,
    plan: BuildPlan,
    layer: int,
    kind: str,
    tp: TensorPolicy,
    stack: StackState,
    rng: np.random.Generator,
) -> TensorResult:
    """Choose (autotune), encode, gate and decide one target; updates ``stack`` when it emits."""
    prefix = f"blk.{layer}.{kind}"
    W = plan.weight(prefix + ".weight")
    n_out, n_in = W.shape
    entry: dict[str, Any] = {
        "name": prefix,
        "layer": layer,
        "kind": kind,
        "n_in": n_in,
        "n_out": n_out,
        "K_budget": tp.K,
        "block": tp.block,
    }
    if not tp.enabled:
        return _skipped(entry, "disabled", "disabled by policy")
    imat = plan.imatrix.get(prefix) if plan.imatrix is not None else None
    if plan.imatrix is not None and imat is None:
        return _skipped(entry, "missing_imatrix", f"no imatrix entry for {prefix}")
    target = _target(cfg, plan, layer, kind, W, tp, imat)
    attempts = _autotune(cfg, plan, target, stack, rng)
    chosen = attempts[-1]
    verdict = _decide(cfg, tp, target.gating_enabled, chosen, stack)
    if verdict.emit and target.gating_enabled:
        stack.passes[stack.group(kind)] += 1
        stack.total_cost += verdict.stack_cost
    entry.update(_measured_fields(chosen))
    entry.update(_verdict_fields(target, attempts, verdict, stack))
    strip = entry["strip_dense"]
    kv = {
        f"seeddelta.{prefix}.enabled": verdict.emit,
        f"seeddelta.{prefix}.gating_pass": bool(chosen.passed),
        f"seeddelta.{prefix}.strip_dense": strip,
        f"seeddelta.{prefix}.K": int(chosen.enc.K),
    }
    if not verdict.emit:
        return TensorResult(entry, kv=kv)
    return TensorResult(entry, _sd_tensors(prefix, chosen.enc), kv, prefix + ".weight" if strip else None)


@dataclass
class Encoded:
    """Every target's result, gathered for the writer and the report."""

    entries: list[dict[str, Any]]  # the report's "weights", in target order
    tensors: dict[str, np.ndarray]  # SeedΔ tensors to add
    kv: dict[str, Any]  # per-tensor seeddelta.blk.* keys
    drop: set[str]  # dense weights to leave out (strip_dense)
    resolved: dict[str, dict[str, Any]]  # "blk.N.ffn_*" -> the resolved TensorPolicy (policy export)
    stack: StackState
    seconds: float  # wall time of the encoding


def _encode_all(cfg: BuildConfig, plan: BuildPlan, progress: bool) -> Encoded:
    """Resolve the policy of every target and encode it in order, with one RNG (``cfg.seed``)."""
    from rich.progress import Progress

    rng = np.random.default_rng(cfg.seed)
    stack = StackState(plan.policy.stack_guard if plan.policy else {"direction": "off"}, cfg.stack_cost_cap)
    out = Encoded([], {}, {}, set(), {}, stack, 0.0)
    t_start = time.perf_counter()
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("SeedΔ build", total=len(plan.targets))
        for layer, kind in plan.targets:
            bar.update(task, advance=1, description=f"blk.{layer}.{kind}")
            tp = resolve(plan.policy, plan.cli_policy[kind], layer, kind)
            out.resolved[f"blk.{layer}.{kind}"] = asdict(tp)
            result = _encode_tensor(cfg, plan, layer, kind, tp, stack, rng)
            out.entries.append(result.entry)
            out.tensors.update(result.tensors)
            out.kv.update(result.kv)
            if result.drop is not None:
                out.drop.add(result.drop)
    out.seconds = time.perf_counter() - t_start
    return out


# ---------------------------------------------------------------------------------------- write
def _head_kv(cfg: BuildConfig, plan: BuildPlan, encoded: Encoded) -> dict[str, Any]:
    """The model-wide ``seeddelta.*`` keys (the fork's names and types)."""
    Ks = {kind: plan.cli_policy[kind].K for kind in KINDS}
    return {
        "seeddelta.enabled": any(e.get("emit") for e in encoded.entries),
        "seeddelta.version": 1,
        "seeddelta.scheme": 0 if cfg.scheme == "coo" else 1,
        "seeddelta.row_scale": bool(cfg.row_scale),
        "seeddelta.resid.K": int(cfg.K),
        "seeddelta.resid.block": int(cfg.block),
        "seeddelta.resid.K_variable": len(set(Ks.values())) > 1 or plan.policy is not None,
        "seeddelta.resid.K_gate": int(Ks["ffn_gate"]),
        "seeddelta.resid.K_up": int(Ks["ffn_up"]),
        "seeddelta.resid.K_down": int(Ks["ffn_down"]),
        "seeddelta.strip_dense": bool(encoded.drop),
        "seeddelta.base.enabled": bool(cfg.base),
        "seeddelta.base.kind": 1 if cfg.base_kind == "xor" else 2,
        "seeddelta.base.depth": 2,
        "seeddelta.base.R": 1,
        "seeddelta.base.max_samples": int(cfg.base_max_samples),
        "seeddelta.base.perm_trials": int(cfg.base_perm_trials),
    }


def _report(cfg: BuildConfig, plan: BuildPlan, encoded: Encoded) -> dict[str, Any]:
    """The report (the fork's report.json fields plus ``refit`` and ``seed``)."""
    entries, stack, seconds = encoded.entries, encoded.stack, encoded.seconds
    Ks = {kind: plan.cli_policy[kind].K for kind in KINDS}
    n_weights = sum(e["n_in"] * e["n_out"] for e in entries if "K" in e)
    return {
        "input": str(plan.src),
        "output": str(plan.dst),
        "base": bool(cfg.base),
        "base_kind": "xor_circulant" if cfg.base_kind == "xor" else "cyclic_circulant",
        "base_max_samples": cfg.base_max_samples,
        "base_perm_trials": cfg.base_perm_trials,
        "policy_file": cfg.policy,
        "policy_hash": plan.policy.text_hash if plan.policy else None,
        "imatrix": {
            "file": cfg.imatrix,
            "eps": cfg.imatrix_eps,
            "power": cfg.imatrix_power,
            "datasets": [cfg.imatrix] if cfg.imatrix else [],
        },
        "resid": {
            "scheme": cfg.scheme,
            "block": cfg.block,
            "K": cfg.K,
            "K_gate": Ks["ffn_gate"],
            "K_up": Ks["ffn_up"],
            "K_down": Ks["ffn_down"],
            "idx_type": cfg.idx_type,
            "val_type": cfg.val_type,
            "row_scale": cfg.row_scale,
        },
        "eval_cols": cfg.eval_cols,
        "eval_x": cfg.eval_x,
        "stack_pass_gate_up": stack.passes["gate_up"],
        "stack_pass_down": stack.passes["down"],
        "stack_cost_total": stack.total_cost,
        "stack_guard": stack.guard if plan.policy else None,
        "refit": cfg.refit,
        "seed": cfg.seed,
        "n_emitted": sum(bool(e.get("emit")) for e in entries),
        "build_seconds": seconds,
        "build_weights_per_s": n_weights / max(seconds, 1e-9),
        "weights": entries,
    }


def _write_outputs(cfg: BuildConfig, plan: BuildPlan, encoded: Encoded, report: dict[str, Any]) -> None:
    """The SeedΔ GGUF, then the report JSON and the resolved policy when they were asked for."""
    plan.dst.parent.mkdir(parents=True, exist_ok=True)
    add_kv = {**_head_kv(cfg, plan, encoded), **encoded.kv}
    write_gguf_with(plan.src, plan.dst, add_kv, encoded.tensors, encoded.drop)
    if cfg.report_json:
        Path(cfg.report_json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.report_json).write_text(json.dumps(report, indent=2) + "\n")
    if cfg.policy_export:
        Path(cfg.policy_export).write_text(
            json.dumps({"version": 1, "resolved": encoded.resolved}, indent=2) + "\n"
        )


def build(cfg: BuildConfig, progress: bool = True) -> dict[str, Any]:
    """Encode the chosen FFN tensors, gate them, write ``cfg.output`` and return the report.

    The steps: check the input, layers, policy, imatrix and every target tensor before encoding
    any; per target (``blk.N.ffn_*`` in layer order) resolve its policy, encode it at each K of
    its autotune schedule until one passes the gate, and decide whether it is emitted (gating,
    stack guard, stack cost cap); then write the output GGUF, ``cfg.report_json`` and
    ``cfg.policy_export``. One ``np.random.Generator(cfg.seed)`` drives every sampled row,
    permutation trial and Gaussian x in that order, so a build is reproducible.

    Args:
        cfg: The options; ``cfg.input`` is only ever read.
        progress: Show a transient rich progress bar, one tick per target tensor.

    Returns:
        The report: the fork's report.json fields (``input``, ``resid``, ``stack_cost_total``,
        ``n_emitted``, ``build_seconds`` (wall seconds of the encoding), ``build_weights_per_s``,
        ...) and ``weights``, one dict per target tensor with its shape (``n_out``, ``n_in``),
        ``K``, metrics, gating values, ``bytes``, ``bits_per_weight``, ``decision``, ``emit``
        and ``reject_reason``.

    Raises:
        SeedDeltaError: The input is missing, unreadable or lacks ``{arch}.block_count``; the output
            is the input; ``--layers`` names a layer the model lacks (or the policy does, with
            ``policy_strict``); a target tensor is missing or not 2-D; a K exceeds the tensor's
            n_in; i16 indices cannot address n_in; ``--refit`` lacks activations; or the policy or
            imatrix file is malformed.
    """
    plan = _plan(cfg)
    encoded = _encode_all(cfg, plan, progress)
    report = _report(cfg, plan, encoded)
    _write_outputs(cfg, plan, encoded, report)
    return report
