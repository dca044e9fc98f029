"""``seeddelta scan``: SeedΔ one layer at a time and in the original's sets, the first cliff, and the
fragile-layer table with recommended thresholds (JSON + Markdown + PNG).

Sets (seed B2-B4): every single layer; even and odd layers; ``interleaved`` (even layers then odd
ones, added one at a time: {0}, {0,2}, ... {0,2,4,6,1}, ...) and ``growing`` ({0}, {0,1}, ...).
The first cliff is the first set of the interleaved and growing sequences whose mean exact match
falls more than ``cliff_drop`` below the base model's.

Recommended thresholds replace the fork's autogate (whose ΔPPL logs were never written): a layer is
"safe" when applying SeedΔ to it alone keeps the mean exact match within ``tolerance`` of the base;
for each tensor kind the recommended ``min_mean`` is the smallest gate metric seen on a safe layer
that still separates it from every unsafe one (the largest metric of an unsafe layer, plus 1e-3,
when the two overlap), so that a policy with it admits only measured-safe layers. The scan also
writes ``policy.recommended.json`` enabling just the safe layers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seeddelta.apply import apply_seeddelta, encode_model, ffn_weight
from seeddelta.delta import DeltaConfig, SeedDeltaTensor
from seeddelta.evaluate import answer_scores, exact_match
from seeddelta.metrics import tensor_metrics
from seeddelta.policy import gate_value


@dataclass
class ScanConfig:
    """What ``seeddelta scan`` encodes and measures (defaults: the fork's tiny-model scans)."""

    K: int = 32  # kept residuals per row for gate/up
    K_down: int | None = None  # kept residuals per row for down (default: K's value)
    kinds: tuple[str, ...] = ("ffn_gate", "ffn_up")  # the fork's tiny runs: gate and up, down off
    base: str = "xor"  # none | xor | cyclic
    row_scale: bool = True  # fit the weighted least-squares row scale
    val_type: str = "f16"  # Δ and base value storage (f16 | f32)
    samples: int = 150  # held-out samples evaluated per set
    cliff_drop: float = 0.10  # mean exact-match fall that counts as a cliff
    tolerance: float = 0.02  # mean exact-match fall still counted as safe
    eval_x: int = 32  # Gaussian x for the gate metric
    seed: int = 1  # dataset seed

    def __post_init__(self) -> None:
        if self.K_down is None:
            self.K_down = self.K


def _evaluate(model: Any, tok: Any, samples: list, reference: Any) -> dict[str, Any]:
    em, _ = exact_match(model, tok, samples)
    scores = answer_scores(model, tok, samples, reference)
    return {
        "exact_match": em,
        "em_mean": float(np.mean(list(em.values()))),
        "answer_nll": scores["answer_nll"],
        "kl_to_reference": scores["kl_to_reference"],
    }


def scan(model: Any, tok: Any, cfg: ScanConfig, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Encode every layer's tensors, evaluate the layer sets, and write the scan's four files.

    Returns the ``scan.json`` report (also written to ``out_dir`` with
    ``policy.recommended.json``, ``fragile_layers.md`` and ``scan.png``).
    """
    from seeddelta.tasks import validation_set

    out_dir.mkdir(parents=True, exist_ok=True)
    n = model.cfg.num_layers
    samples = validation_set(cfg.seed, cfg.samples)
    encodings, metrics = _encode_layers(model, cfg)
    evens, odds = list(range(0, n, 2)), list(range(1, n, 2))
    order = evens + odds
    sets: list[tuple[str, str, list[int]]] = [("single", f"L{i}", [i]) for i in range(n)]
    sets += [("even", "even", evens), ("odd", "odd", odds)]
    sets += [("interleaved", f"interleaved{k}", order[:k]) for k in range(2, n + 1)]
    sets += [("growing", f"growing{k}", list(range(k))) for k in range(2, n + 1)]
    base_eval, results = _evaluate_sets(model, tok, samples, encodings, sets, progress)
    # single "growing1"/"interleaved1" are the single layer-0 result
    single = {r["layers"][0]: r for r in results if r["family"] == "single"}
    cliffs = _first_cliffs(results, single, order, cfg.cliff_drop)
    table = _fragile_table(single, metrics, cfg, n)
    thresholds = _recommended_thresholds(table, cfg.kinds)
    safe_layers = sorted(r["layer"] for r in table if r["safe"])
    policy = {
        "version": 1,
        "defaults": {
            "enabled": False,
            "K": {"gate": cfg.K, "up": cfg.K, "down": cfg.K_down},
            "gating": {"metric": "cos_x_w", "min_mean": -1, "min_p05": -1},
        },
        "ranges": [{"layers": ",".join(map(str, safe_layers)), "enabled": True}] if safe_layers else [],
    }
    report = {
        "config": asdict(cfg),
        "base": base_eval,
        "sets": results,
        "first_cliff": cliffs,
        "fragile_layers": table,
        "recommended_thresholds": thresholds,
        "safe_layers": safe_layers,
        "tensor_metrics": metrics,
    }
    (out_dir / "scan.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "policy.recommended.json").write_text(json.dumps(policy, indent=2) + "\n")
    (out_dir / "fragile_layers.md").write_text(_markdown(report, cfg))
    _plot(report, out_dir / "scan.png")
    return report


def _encode_layers(
    model: Any, cfg: ScanConfig
) -> tuple[dict[str, SeedDeltaTensor], dict[str, dict[str, Any]]]:
    """SeedΔ encodings of ``cfg.kinds`` in every layer, and each one's error and gate metric."""
    assert cfg.K_down is not None  # ScanConfig.__post_init__ resolves None to K
    configs = {
        kind: DeltaConfig(
            K=cfg.K_down if kind == "ffn_down" else cfg.K,
            base=cfg.base,
            row_scale=cfg.row_scale,
            val_type=cfg.val_type,
            idx_type="i16",
        )
        for kind in cfg.kinds
    }
    encodings = encode_model(model, configs, range(model.cfg.num_layers))
    metrics: dict[str, dict[str, Any]] = {}
    rng = np.random.default_rng(cfg.seed)
    for name, enc in encodings.items():
        _, layer, kind = name.split(".")
        m = tensor_metrics(ffn_weight(model, int(layer), kind), enc, eval_cols=0, eval_x=cfg.eval_x, rng=rng)
        value, p05, used = gate_value(m, "cos_x_w", kind, cfg.eval_x)
        metrics[name] = {
            "S_mean": m["rel_l2_mean"],
            "cos_mean": m["cos_mean"],
            "cos_mean_x_w": m["cos_mean_x_w"],
            "cos_p05_x_w": m["cos_p05_x_w"],
            "gate_metric": value,
        }
    return encodings, metrics


def _evaluate_sets(
    model: Any,
    tok: Any,
    samples: list,
    encodings: dict[str, SeedDeltaTensor],
    sets: list[tuple[str, str, list[int]]],
    progress: bool,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The base model's evaluation, and one per layer set with SeedΔ applied to those layers."""
    from rich.progress import Progress

    results: list[dict[str, Any]] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("scan", total=len(sets) + 1)
        base_eval = _evaluate(model, tok, samples, None)
        bar.advance(task)
        for family, label, layers in sets:
            sub = {k: v for k, v in encodings.items() if int(k.split(".")[1]) in layers}
            r = _evaluate(apply_seeddelta(model, sub), tok, samples, model)
            r.update(
                {
                    "family": family,
                    "set": label,
                    "layers": layers,
                    "em_drop": base_eval["em_mean"] - r["em_mean"],
                }
            )
            results.append(r)
            bar.advance(task)
    return base_eval, results


def _first_cliffs(
    results: list[dict[str, Any]], single: dict[int, dict[str, Any]], order: list[int], cliff_drop: float
) -> dict[str, dict[str, Any] | None]:
    """Per accumulating family, the first set whose exact match falls more than ``cliff_drop``."""
    cliffs: dict[str, dict[str, Any] | None] = {}
    for family in ("interleaved", "growing"):
        seq = [single[order[0] if family == "interleaved" else 0]] + [
            r for r in results if r["family"] == family
        ]
        hit = next((r for r in seq if r["em_drop"] > cliff_drop), None)
        cliffs[family] = (
            None
            if hit is None
            else {
                "set": hit["set"] if hit["family"] != "single" else f"{family}1",
                "n_layers": len(hit["layers"]),
                "layers": hit["layers"],
                "em_mean": hit["em_mean"],
                "em_drop": hit["em_drop"],
            }
        )
    return cliffs


def _fragile_table(
    single: dict[int, dict[str, Any]], metrics: dict[str, dict[str, Any]], cfg: ScanConfig, n: int
) -> list[dict[str, Any]]:
    """One row per layer (SeedΔ on it alone), most sensitive (largest KL to base) first."""
    table = []
    for layer in range(n):
        r = single[layer]
        row = {
            "layer": layer,
            "em_mean": r["em_mean"],
            "em_drop": r["em_drop"],
            "kl_to_reference": r["kl_to_reference"],
            "answer_nll": r["answer_nll"],
            "safe": r["em_drop"] <= cfg.tolerance,
        }
        for kind in cfg.kinds:
            row[f"{kind}_S_mean"] = metrics[f"blk.{layer}.{kind}"]["S_mean"]
            row[f"{kind}_gate_metric"] = metrics[f"blk.{layer}.{kind}"]["gate_metric"]
        table.append(row)
    table.sort(key=lambda r: -r["kl_to_reference"])
    return table


def _recommended_thresholds(table: list[dict[str, Any]], kinds: tuple[str, ...]) -> dict[str, float | None]:
    """Per kind, the gate ``min_mean`` that admits the safe layers only (see the module docstring)."""
    thresholds: dict[str, float | None] = {}
    for kind in kinds:
        safe_vals = [r[f"{kind}_gate_metric"] for r in table if r["safe"]]
        unsafe_vals = [r[f"{kind}_gate_metric"] for r in table if not r["safe"]]
        if not safe_vals:
            thresholds[kind] = None
        elif not unsafe_vals:
            thresholds[kind] = float(min(safe_vals))
        else:
            thresholds[kind] = float(max(min(safe_vals), max(unsafe_vals) + 1e-3))
    return thresholds


def _markdown(report: dict[str, Any], cfg: ScanConfig) -> str:
    kinds = cfg.kinds
    lines = [
        f"# SeedΔ layer scan (K={cfg.K}, tensors {', '.join(kinds)}, base {cfg.base})",
        "",
        f"Base model mean exact match: {report['base']['em_mean']:.3f} on {cfg.samples} held-out samples.",
        "",
    ]
    for fam, c in report["first_cliff"].items():
        lines.append(
            f"- first cliff ({fam}): "
            + (
                "none"
                if c is None
                else f"{c['set']} (layers {c['layers']}, EM {c['em_mean']:.3f}, drop {c['em_drop']:.3f})"
            )
        )
    lines += [
        "",
        "| layer | EM | EM drop | KL to base | answer NLL | "
        + " | ".join(f"{k} gate metric" for k in kinds)
        + " | safe |",
        "|---|---|---|---|---|" + "---|" * len(kinds) + "---|",
    ]
    for r in report["fragile_layers"]:
        lines.append(
            f"| {r['layer']} | {r['em_mean']:.3f} | {r['em_drop']:+.3f} | {r['kl_to_reference']:.4f} | {r['answer_nll']:.4f} | "
            + " | ".join(f"{r[f'{k}_gate_metric']:.4f}" for k in kinds)
            + f" | {'yes' if r['safe'] else 'no'} |"
        )
    lines += [
        "",
        "Recommended gate thresholds (min_mean on the forced cos_x_w metric): "
        + ", ".join(
            f"{k}: {v if v is None else round(v, 4)}" for k, v in report["recommended_thresholds"].items()
        ),
        "",
    ]
    return "\n".join(lines)


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    single = sorted((r for r in report["sets"] if r["family"] == "single"), key=lambda r: r["layers"][0])
    a1.bar([r["layers"][0] for r in single], [r["kl_to_reference"] for r in single], color="tab:red")
    a1.set_xlabel("layer (SeedΔ on this layer only)")
    a1.set_ylabel("KL to base (nats/answer token)")
    a1.set_title("per-layer sensitivity")
    base = report["base"]["em_mean"]
    for fam, color in (("growing", "tab:blue"), ("interleaved", "tab:green")):
        rs = [r for r in report["sets"] if r["family"] == fam]
        first = single[0]["em_mean"]
        a2.plot(
            [1] + [len(r["layers"]) for r in rs],
            [first] + [r["em_mean"] for r in rs],
            "o-",
            color=color,
            label=fam,
        )
    a2.axhline(base, color="gray", ls="--", label="base")
    a2.set_xlabel("layers with SeedΔ")
    a2.set_ylabel("mean exact match")
    a2.set_title("accumulation and first cliff")
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
