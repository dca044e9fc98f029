"""``seeddelta build``: the fork's ``llama-seeddelta-build`` in Python.

Reads a llama GGUF (F32/F16 or quantized, dequantized first as the fork does), encodes the chosen
FFN tensors with SeedΔ under the CLI options and the policy, and writes a copy of the input with
all its key-values and tensors plus the SeedΔ tensors (``blk.N.ffn_*.d_idx`` ...) and the
``seeddelta.*`` keys; dense weights of emitted tensors are dropped with ``--strip-dense``. The
report JSON carries the fork's fields. The input file is only ever read.
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
from seeddelta.metrics import bits_per_weight, ffn_proxy, tensor_metrics
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
    """The builder's options (defaults are the fork's, ``sd_cli.cpp``)."""

    input: str  # source GGUF (never modified)
    output: str  # SeedΔ GGUF to write
    layers: str | None = None  # "A-B" (or "1,3,5-6"); all layers when None
    K: int = 32  # kept residuals per row
    K_gate: int | None = None  # per-tensor K (defaults to K)
    K_up: int | None = None
    K_down: int | None = None
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
        out[f"{prefix}.d_idx"] = enc.d_idx
        out[f"{prefix}.d_val"] = enc.d_val
    else:
        out[f"{prefix}.b_idx"] = enc.b_idx
        out[f"{prefix}.b_val"] = enc.b_val
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
    """Copy ``src`` to ``dst`` with every key-value and tensor (minus ``drop``), then the additions."""
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


def build(cfg: BuildConfig, progress: bool = True) -> dict[str, Any]:
    """Encode, gate, write ``cfg.output`` and return the report (also written to report_json)."""
    from rich.progress import Progress

    from seeddelta.calibrate import read_imatrix
    from seeddelta.gguf_io import dequantize, read_checked

    src, dst = Path(cfg.input), Path(cfg.output)
    if not src.is_file():
        raise SeedDeltaError(f"{src}: input GGUF not found")
    if dst.resolve() == src.resolve():
        raise SeedDeltaError(f"{dst}: output would overwrite the input; choose another path")
    contents = read_checked(src)
    md, tensors, types = contents.metadata, contents.tensors, contents.tensor_types
    arch = md.get("general.architecture")
    n_layers_key = f"{arch}.block_count"
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
    rng = np.random.default_rng(cfg.seed)
    cli_policy = {
        kind: TensorPolicy(
            strip_dense=cfg.strip_dense,
            block=cfg.block,
            K={"ffn_gate": cfg.K_gate, "ffn_up": cfg.K_up, "ffn_down": cfg.K_down}[kind] or cfg.K,
        )
        for kind in KINDS
    }
    stack = StackState(policy.stack_guard if policy else {"direction": "off"}, cfg.stack_cost_cap)
    entries: list[dict[str, Any]] = []
    add_tensors: dict[str, np.ndarray] = {}
    add_kv: dict[str, Any] = {}
    drop: set[str] = set()
    resolved_export: dict[str, Any] = {}
    todo = [(layer, kind) for layer in layers for kind in KINDS if kind in cfg.kinds]
    # check every target exists before spending time on any of them
    for layer, kind in todo:
        name = f"blk.{layer}.{kind}.weight"
        if name not in tensors:
            raise SeedDeltaError(f"{src}: tensor {name!r} is missing (needed for layer {layer} {kind})")
        if len(tensors[name].shape) != 2:
            raise SeedDeltaError(f"{src}: tensor {name!r} is not 2-D")
    t_start = time.perf_counter()
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("SeedΔ build", total=len(todo))
        for layer, kind in todo:
            bar.update(task, advance=1, description=f"blk.{layer}.{kind}")
            prefix = f"blk.{layer}.{kind}"
            tp = resolve(policy, cli_policy[kind], layer, kind)
            resolved_export[prefix] = asdict(tp)
            W = dequantize(tensors[prefix + ".weight"], types[prefix + ".weight"], prefix + ".weight").astype(
                np.float64
            )
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
                entry.update(
                    emit=False, decision="disabled", reject_reason="disabled by policy", strip_dense=False
                )
                entries.append(entry)
                continue
            imat = None
            if imatrix is not None:
                imat = imatrix.get(prefix)
                if imat is None:
                    entry.update(
                        emit=False,
                        decision="missing_imatrix",
                        reject_reason=f"no imatrix entry for {prefix}",
                        strip_dense=False,
                    )
                    entries.append(entry)
                    continue
            ws = importance_weights(imat, n_in, cfg.imatrix_eps, cfg.imatrix_power)
            schedule = tp.schedule[: tp.max_iters] if tp.autotune and tp.schedule else [tp.K]
            check_index_type(cfg.idx_type, n_in, prefix)
            for k in schedule:
                if k > n_in:
                    raise SeedDeltaError(f"{prefix}: K={k} is larger than n_in={n_in}")
            tau = thresholds(tp, kind)
            gating_enabled = policy is not None and tau[0] >= 0 and tau[1] >= 0
            attempts = []
            chosen = None
            for k in schedule:
                t0 = time.perf_counter()
                dcfg = DeltaConfig(
                    K=k,
                    scheme=cfg.scheme,
                    block=tp.block,
                    idx_type=cfg.idx_type,
                    val_type=cfg.val_type,
                    row_scale=cfg.row_scale,
                    base=cfg.base_kind if cfg.base else "none",
                    base_max_samples=cfg.base_max_samples,
                    base_perm_trials=cfg.base_perm_trials,
                    delta_norm_clamp=cfg.delta_norm_clamp_down if kind == "ffn_down" else None,
                )
                enc = encode(
                    W,
                    dcfg,
                    imatrix=imat,
                    imatrix_eps=cfg.imatrix_eps,
                    imatrix_power=cfg.imatrix_power,
                    rng=rng,
                    name=prefix,
                )
                acts = cfg.activations.get(prefix) if cfg.activations else None
                if cfg.refit:
                    if acts is None:
                        raise SeedDeltaError(f"{prefix}: --refit needs calibration activations")
                    enc = refit_values(enc, W, acts)
                m: dict[str, Any] = {}
                if cfg.eval_cols > 0:
                    m = tensor_metrics(
                        W, enc, ws=ws, eval_cols=cfg.eval_cols, eval_x=cfg.eval_x, activations=acts, rng=rng
                    )
                    if (
                        cfg.scheme == "coo"
                        and not cfg.base
                        and cfg.eval_x > 0
                        and kind in ("ffn_gate", "ffn_up")
                    ):
                        others = {kk: f"blk.{layer}.{kk}.weight" for kk in KINDS}
                        if all(n in tensors for n in others.values()):
                            mats = {
                                kk: dequantize(tensors[n], types[n], n).astype(np.float64)
                                for kk, n in others.items()
                            }
                            m.update(
                                ffn_proxy(
                                    mats["ffn_gate"],
                                    mats["ffn_up"],
                                    mats["ffn_down"],
                                    "gate" if kind == "ffn_gate" else "up",
                                    enc.delta_dense(),
                                    eval_cols=cfg.eval_cols,
                                    eval_x=cfg.eval_x,
                                    rng=rng,
                                )
                            )
                value = p05 = None
                metric_used = tp.gating_metric
                passed = True
                tau_used = stack.guarded(kind, tau) if gating_enabled else tau
                if gating_enabled:
                    value, p05, metric_used = gate_value(m, tp.gating_metric, kind, cfg.eval_x)
                    passed = value is not None and value >= tau_used[0] and p05 >= tau_used[1]
                attempts.append(
                    {
                        "K_budget": k,
                        "K_eff": enc.K,
                        "metric_value": value,
                        "metric_p05": p05,
                        "pass": passed,
                        "seconds": time.perf_counter() - t0,
                    }
                )
                chosen = (k, enc, m, value, p05, metric_used, passed, tau_used)
                if passed:
                    break
            k, enc, m, value, p05, metric_used, passed, tau_used = chosen
            entry.update({"K": enc.K, "n_blocks": int(enc.b_idx.shape[1]) if enc.scheme == "block" else 0})
            entry.update(
                {
                    key: m[key]
                    for key in ("ops_dense", "ops_delta", "ops_base", "ops_ratio", "base_L", "base_B")
                    if key in m
                }
            )
            if not m:
                from seeddelta.metrics import cost

                entry.update(cost(enc))
            entry.update(_metric_block(m))
            entry.update({key: v for key, v in m.items() if key.startswith("ffn_proxy_")})
            entry["ffn_score"] = m.get("ffn_score")
            entry.update(
                {
                    "gating_enabled": gating_enabled,
                    "gating_metric": tp.gating_metric,
                    "gating_value": value,
                    "gating_p05": p05,
                    "gating_min_mean": tau_used[0],
                    "gating_min_p05": tau_used[1],
                    "gating_pass": bool(passed) if gating_enabled else None,
                    "metric_used": metric_used,
                    "targets_used": {"tau_mean": tau_used[0], "tau_p05": tau_used[1]},
                    "autotune_attempts": attempts if tp.autotune else [],
                    "bytes": enc.n_bytes(),
                    "bits_per_weight": bits_per_weight(enc),
                }
            )
            delta_cost = 0.0
            if not gating_enabled:
                decision, emit, reason = "no_gating", True, ""
            elif value is None:
                decision, emit, reason = (
                    "metric_unavailable",
                    False,
                    "gating needs metrics: set --eval-cols (and --eval-x)",
                )
            elif not passed:
                decision = "autotune_failed_keep_dense" if tp.autotune else "gating_fail"
                emit, reason = (
                    False,
                    f"{metric_used} {value:.4f}/{p05:.4f} below {tau_used[0]:.3f}/{tau_used[1]:.3f}",
                )
            else:
                delta_cost = stack_cost(value, p05)
                if stack.total_cost + delta_cost > cfg.stack_cost_cap:
                    decision, emit, reason = (
                        "stack_cost_cap",
                        False,
                        f"stack cost {stack.total_cost + delta_cost:.4f} > cap {cfg.stack_cost_cap}",
                    )
                    delta_cost = 0.0
                else:
                    decision, emit, reason = "pass_gating", True, ""
            if emit and gating_enabled:
                stack.passes[stack.group(kind)] += 1
                stack.total_cost += delta_cost
            entry.update(
                {
                    "stack_cost_delta": delta_cost,
                    "stack_cost_total": stack.total_cost,
                    "emit": emit,
                    "strip_dense": bool(emit and tp.strip_dense),
                    "decision": decision,
                    "reject_reason": reason,
                }
            )
            if emit:
                add_tensors.update(_sd_tensors(prefix, enc))
                if tp.strip_dense:
                    drop.add(prefix + ".weight")
            add_kv[f"seeddelta.blk.{layer}.{kind}.enabled"] = bool(emit)
            add_kv[f"seeddelta.blk.{layer}.{kind}.gating_pass"] = bool(passed)
            add_kv[f"seeddelta.blk.{layer}.{kind}.strip_dense"] = bool(emit and tp.strip_dense)
            add_kv[f"seeddelta.blk.{layer}.{kind}.K"] = int(enc.K)
            entries.append(entry)
    build_seconds = time.perf_counter() - t_start
    Ks = {kind: (cli_policy[kind].K) for kind in KINDS}
    head_kv: dict[str, Any] = {
        "seeddelta.enabled": any(e.get("emit") for e in entries),
        "seeddelta.version": 1,
        "seeddelta.scheme": 0 if cfg.scheme == "coo" else 1,
        "seeddelta.row_scale": bool(cfg.row_scale),
        "seeddelta.resid.K": int(cfg.K),
        "seeddelta.resid.block": int(cfg.block),
        "seeddelta.resid.K_variable": len(set(Ks.values())) > 1 or policy is not None,
        "seeddelta.resid.K_gate": int(Ks["ffn_gate"]),
        "seeddelta.resid.K_up": int(Ks["ffn_up"]),
        "seeddelta.resid.K_down": int(Ks["ffn_down"]),
        "seeddelta.strip_dense": bool(drop),
        "seeddelta.base.enabled": bool(cfg.base),
        "seeddelta.base.kind": 1 if cfg.base_kind == "xor" else 2,
        "seeddelta.base.depth": 2,
        "seeddelta.base.R": 1,
        "seeddelta.base.max_samples": int(cfg.base_max_samples),
        "seeddelta.base.perm_trials": int(cfg.base_perm_trials),
    }
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_gguf_with(src, dst, {**head_kv, **add_kv}, add_tensors, drop)
    n_weights = sum(e["n_in"] * e["n_out"] for e in entries if "K" in e)
    report: dict[str, Any] = {
        "input": str(src),
        "output": str(dst),
        "base": bool(cfg.base),
        "base_kind": "xor_circulant" if cfg.base_kind == "xor" else "cyclic_circulant",
        "base_max_samples": cfg.base_max_samples,
        "base_perm_trials": cfg.base_perm_trials,
        "policy_file": cfg.policy,
        "policy_hash": policy.text_hash if policy else None,
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
        "stack_guard": stack.guard if policy else None,
        "refit": cfg.refit,
        "seed": cfg.seed,
        "n_emitted": sum(bool(e.get("emit")) for e in entries),
        "build_seconds": build_seconds,
        "build_weights_per_s": n_weights / max(build_seconds, 1e-9),
        "weights": entries,
    }
    if cfg.report_json:
        Path(cfg.report_json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.report_json).write_text(json.dumps(report, indent=2) + "\n")
    if cfg.policy_export:
        Path(cfg.policy_export).write_text(
            json.dumps({"version": 1, "resolved": resolved_export}, indent=2) + "\n"
        )
    return report
