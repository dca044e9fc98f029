"""The original's open question, answered with a controlled experiment.

``infinito compare`` trains the IIT model and the baseline (the same transformer with every IIT
feature off, its MLP widened so both have the same parameter count) on the same data, tokenizer,
step budget and seeds, and writes ``compare.json`` with per-seed and mean ± std validation bits per
byte, the phi-weight trajectories, Φ-proxy values (over training, and at the end with bootstrap
intervals and nulls), repetition metrics of generations next to human text, and PNG plots. It
also reruns the IIT model with dropout 0.25 (the original's Model B) with the phi loss really on, to
test the original's claim that dropout above 0.2 stops the phi weights from learning.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from lm_shared.metrics import repetition_report
from lm_shared.runs import atomic_write_text
from lm_shared.runtime import save_config, seed_everything

from .data import PreparedData, load_corpus, prepare_data
from .errors import InfinitoError
from .generate import DecodingConfig, decode, validation_prompts
from .model import PHI_COMPONENTS, InfinitoConfig, InfinitoLM
from .phi_proxy import PhiProxyReport, model_phi_proxy
from .train import TrainConfig, TrainResult, train


def _num_params(config: InfinitoConfig) -> int:
    with torch.device("meta"):
        return InfinitoLM(config).num_parameters()


def matched_baseline(config: InfinitoConfig) -> InfinitoConfig:
    """The baseline with its MLP widened so its parameter count is as close as possible to ``config``'s."""
    base = config.baseline()
    target, current = _num_params(config), _num_params(base)
    per_unit = config.num_layers * (
        2 * config.hidden_size + 1
    )  # params per extra MLP hidden unit, all layers
    extra = round((target - current) / per_unit)
    return replace(base, intermediate_size=base.ff_width + extra) if extra > 0 else base


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _generations(
    model: InfinitoLM, data, n: int = 8, new_tokens: int = 48, seed: int = 0
) -> tuple[list[str], list[str]]:
    pairs = validation_prompts(data.tokenizer.encode(data.corpus.valid), n, 16, new_tokens)
    cfg = DecodingConfig(max_new_tokens=new_tokens, top_k=40, seed=seed)
    texts = []
    for i, (prompt, _) in enumerate(pairs):
        out = decode(model, torch.tensor([prompt]), replace(cfg, seed=seed + i))
        texts.append(data.tokenizer.decode(out[0, len(prompt) :].tolist()))
    return texts, [data.tokenizer.decode(cont) for _, cont in pairs]


def _check_compare_args(seeds: int, out_dir: Path) -> None:
    """Refuse a seed count below 1 or an output folder that already holds a comparison."""
    if seeds < 1:
        raise InfinitoError(f"--seeds must be >= 1, got {seeds}")
    if (out_dir / "compare.json").exists():
        raise InfinitoError(
            f"{out_dir}/compare.json already exists; choose another --out (nothing was overwritten)"
        )


def _variants(
    iit: InfinitoConfig, *, dropout_study: bool, match_parameters: bool
) -> dict[str, InfinitoConfig]:
    """The model configs to compare, by name: the IIT model, the baseline and the dropout variants."""
    variants = {"iit": iit, "baseline": matched_baseline(iit) if match_parameters else iit.baseline()}
    if dropout_study:
        if iit.dropout != 0.15:
            variants["iit_dropout_0.15"] = replace(iit, dropout=0.15)
        variants["iit_dropout_0.25"] = replace(iit, dropout=0.25)
    return variants


def _final_phi_proxy(
    result: TrainResult,
    config: InfinitoConfig,
    data: PreparedData,
    train_config: TrainConfig,
    seed: int,
    proxy_bootstrap: int,
) -> PhiProxyReport:
    """The trained model's Φ proxy with bootstrap intervals, against a random-init null of ``config``."""
    # Seeded so the random-init null depends on the seed alone, not on what training drew.
    seed_everything(seed)
    null = InfinitoLM(config).eval()
    proxy_ids = data.valid.inputs[: train_config.proxy_sequences]
    if (data.valid.labels[proxy_ids.shape[0] - 1] < 0).any():
        proxy_ids = proxy_ids[:-1]
    return model_phi_proxy(
        result.model,
        proxy_ids,
        k=max(train_config.proxy_k, 2),
        n_bootstrap=proxy_bootstrap,
        null_model=null,
        seed=seed,
    )


def _run_record(
    seed: int, run_dir: Path, result: TrainResult, proxy: PhiProxyReport, texts: list[str]
) -> dict[str, Any]:
    """One trained run as ``compare.json`` reports it: final metrics, curves, Φ proxy, generations."""
    history = result.history
    return {
        "seed": seed,
        "run_dir": str(run_dir),
        "parameters": result.model.num_parameters(),
        "bpb": result.final["bits_per_byte"],
        "loss": result.final["loss"],
        "perplexity": result.final["perplexity"],
        "word_perplexity": result.final["word_perplexity"],
        "steps": history["train"][-1]["step"] if history["train"] else 0,
        "stopped": result.stopped_early,
        "train_seconds": result.seconds,
        "phi_weights_final": result.final.get("phi_weights"),
        "phi_weight_trajectory": [
            {"step": e["step"], **{c: e[f"phi_weight/{c}"] for c in PHI_COMPONENTS}}
            for e in history["train"]
            if f"phi_weight/{PHI_COMPONENTS[0]}" in e
        ],
        "components_final": {
            k.split("/", 1)[1]: v
            for k, v in (history["train"][-1] if history["train"] else {}).items()
            if k.startswith("component/")
        },
        "loss_curve": [{"step": e["step"], "train_ce": e.get("ce", e["loss"])} for e in history["train"]],
        "eval_curve": [
            {k: e[k] for k in ("step", "loss", "bits_per_byte", "phi_proxy") if k in e}
            for e in history["eval"]
        ],
        "phi_proxy": proxy.as_dict(),
        "generation": repetition_report(texts),
        "samples": texts[:3],
    }


def _train_variants(
    variants: dict[str, InfinitoConfig],
    train_config: TrainConfig,
    data: PreparedData,
    out_dir: Path,
    *,
    seeds: int,
    proxy_bootstrap: int,
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Train every variant with every seed (seed-major order) under ``out_dir/runs``.

    Returns:
        The run records by variant name, and the human continuations of the generation prompts.
    """
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    human_texts: list[str] = []
    for seed in range(seeds):
        for name, config in variants.items():
            run_dir = out_dir / "runs" / f"{name}_seed{seed}"
            if (run_dir / "checkpoint.pt").exists():
                raise InfinitoError(f"{run_dir}: already holds a run; choose another --out")
            result = train(config, replace(train_config, seed=seed), run_dir, data=data, log=lambda s: None)
            proxy = _final_phi_proxy(result, config, data, train_config, seed, proxy_bootstrap)
            texts, human_texts = _generations(result.model, data, seed=seed)
            results[name].append(_run_record(seed, run_dir, result, proxy, texts))
    return results, human_texts


def _summary(results: dict[str, list[dict[str, Any]]], variants: dict[str, InfinitoConfig]) -> dict[str, Any]:
    """Per variant: mean ± std over seeds of the bpb and the final Φ proxy, its size, config and runs."""
    summary: dict[str, Any] = {}
    for name, runs in results.items():
        mean, std = _mean_std([r["bpb"] for r in runs])
        pmean, pstd = _mean_std([r["phi_proxy"]["phi"] for r in runs])
        summary[name] = {
            "bpb_mean": mean,
            "bpb_std": std,
            "phi_proxy_mean": pmean,
            "phi_proxy_std": pstd,
            "parameters": runs[0]["parameters"],
            "model_config": asdict(variants[name]),
            "per_seed": runs,
        }
    return summary


def _report(
    summary: dict[str, Any],
    results: dict[str, list[dict[str, Any]]],
    human_texts: list[str],
    train_config: TrainConfig,
    data: PreparedData,
    seeds: int,
) -> dict[str, Any]:
    """The ``compare.json`` contents: the summary, the paired IIT − baseline bpb, human text, settings."""
    diffs = [a["bpb"] - b["bpb"] for a, b in zip(results["iit"], results["baseline"])]
    dmean, dstd = _mean_std(diffs)
    return {
        **summary,
        "iit_minus_baseline_bpb": {"per_seed": diffs, "mean": dmean, "std": dstd},
        "human_repetition": repetition_report(human_texts) if len(human_texts) > 1 else None,
        "train_config": asdict(train_config),
        "data": data.summary(),
        "seeds": seeds,
    }


def run_compare(
    model_config: InfinitoConfig,
    train_config: TrainConfig,
    out_dir: Path,
    *,
    seeds: int = 3,
    dropout_study: bool = True,
    match_parameters: bool = True,
    proxy_bootstrap: int = 50,
    command_config: str | None = None,
) -> dict[str, Any]:
    """Train the IIT model, the baseline and the dropout variants on the same data and seeds.

    Writes ``compare.json``, the PNG plots and one run folder per variant and seed under
    ``out_dir``, and prints a summary table. ``command_config`` (the command's settings as YAML)
    is saved there as ``config.yaml``, which ``infinito compare --config`` loads again.

    Returns:
        The report written to ``compare.json``.
    """
    _check_compare_args(seeds, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if command_config is not None:
        atomic_write_text(out_dir / "config.yaml", command_config)
    corpus = load_corpus(train_config.data, valid_fraction=train_config.valid_fraction)
    data = prepare_data(
        corpus, train_config.seq_len, kind=train_config.tokenizer, vocab_size=train_config.vocab_size
    )
    iit = replace(model_config, vocab_size=data.tokenizer.vocab_size)
    variants = _variants(iit, dropout_study=dropout_study, match_parameters=match_parameters)
    results, human_texts = _train_variants(
        variants, train_config, data, out_dir, seeds=seeds, proxy_bootstrap=proxy_bootstrap
    )
    summary = _summary(results, variants)
    report = _report(summary, results, human_texts, train_config, data, seeds)
    if dropout_study:
        report["dropout_study"] = _dropout_study(summary, iit)
    _plots(summary, out_dir)
    save_config(report, out_dir / "compare.json")
    _print_table(summary, report, out_dir)
    return report


def _dropout_study(summary: dict[str, Any], iit: InfinitoConfig) -> dict[str, Any]:
    """Does dropout 0.25 stop the phi weights from moving, with the phi loss on in both?"""
    low = summary["iit"] if iit.dropout == 0.15 else summary["iit_dropout_0.15"]
    high = summary["iit_dropout_0.25"]
    init = dict(zip(PHI_COMPONENTS, (w / sum(iit.phi_weight_init) for w in iit.phi_weight_init)))

    def movement(runs: list[dict[str, Any]]) -> list[float]:
        return [sum(abs(r["phi_weights_final"][c] - init[c]) for c in PHI_COMPONENTS) for r in runs]

    out = {}
    for label, block in (("0.15", low), ("0.25", high)):
        moved = movement(block["per_seed"])
        out[label] = {
            "bpb_mean": block["bpb_mean"],
            "bpb_std": block["bpb_std"],
            "phi_weight_l1_movement_mean": statistics.fmean(moved),
            "phi_weights_final": [r["phi_weights_final"] for r in block["per_seed"]],
        }
    return out


def _plots(summary: dict[str, Any], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(summary, ("tab:red", "tab:blue", "tab:green", "tab:purple")))
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for name, block in summary.items():
        for i, run in enumerate(block["per_seed"]):
            label = name if i == 0 else None
            ax[0].plot(
                [p["step"] for p in run["loss_curve"]],
                [p["train_ce"] for p in run["loss_curve"]],
                color=colors[name],
                alpha=0.4,
                label=label,
            )
            ax[1].plot(
                [p["step"] for p in run["eval_curve"]],
                [p["bits_per_byte"] for p in run["eval_curve"]],
                color=colors[name],
                marker="o",
                label=label,
            )
    ax[0].set(title="training cross-entropy (nats/token)", xlabel="step")
    ax[1].set(title="validation bits per byte", xlabel="step")
    ax[0].legend()
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(out_dir / "loss_curves.png", dpi=110)
    plt.close(fig)

    iit_like = [n for n in summary if n != "baseline"]
    fig, axes = plt.subplots(1, len(iit_like), figsize=(5.5 * len(iit_like), 4), squeeze=False)
    for ax_, name in zip(axes[0], iit_like):
        for i, run in enumerate(summary[name]["per_seed"]):
            traj = run["phi_weight_trajectory"]
            for j, comp in enumerate(PHI_COMPONENTS):
                ax_.plot(
                    [p["step"] for p in traj],
                    [p[comp] for p in traj],
                    color=f"C{j}",
                    alpha=0.6,
                    label=comp if i == 0 else None,
                )
        ax_.set(title=f"phi weights: {name}", xlabel="step", ylim=(0, 1))
        ax_.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "phi_weights.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, block in summary.items():
        for i, run in enumerate(block["per_seed"]):
            pts = [p for p in run["eval_curve"] if "phi_proxy" in p]
            ax.plot(
                [p["step"] for p in pts],
                [p["phi_proxy"] for p in pts],
                color=colors[name],
                marker="o",
                label=name if i == 0 else None,
            )
    ax.set(title="Gaussian Φ_AR proxy (validation, K leading PCs)", xlabel="step", ylabel="nats")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "phi_proxy.png", dpi=110)
    plt.close(fig)


def _print_table(summary: dict[str, Any], report: dict[str, Any], out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"infinito compare ({report['data']['corpus']}, {report['seeds']} seeds) -> {out_dir}/compare.json"
    )
    for col in (
        "variant",
        "params",
        "val bpb (mean ± std)",
        "Φ proxy (mean ± std)",
        "distinct-2",
        "seq-rep-4",
    ):
        table.add_column(col, justify="right")
    for name, block in summary.items():
        gens = [r["generation"] for r in block["per_seed"]]
        table.add_row(
            name,
            f"{block['parameters']:,}",
            f"{block['bpb_mean']:.4f} ± {block['bpb_std']:.4f}",
            f"{block['phi_proxy_mean']:.4f} ± {block['phi_proxy_std']:.4f}",
            f"{statistics.fmean(g['distinct_2'] for g in gens):.3f}",
            f"{statistics.fmean(g['seq_rep_4'] for g in gens):.3f}",
        )
    if report.get("human_repetition"):
        h = report["human_repetition"]
        table.add_row("human text", "", "", "", f"{h['distinct_2']:.3f}", f"{h['seq_rep_4']:.3f}")
    Console().print(table)
    print(json.dumps({"iit_minus_baseline_bpb": report["iit_minus_baseline_bpb"]}, indent=1))
