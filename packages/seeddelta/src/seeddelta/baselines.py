"""Section 6: SeedΔ against honest baselines at equal bytes per FFN weight, on the same protocol.

Methods, all applied to every FFN tensor (gate, up, down) of every layer, with the same per-row
density (K_down = K * n_ff / d so every tensor keeps the same fraction of its inputs):

* ``seeddelta``: the fork's best configuration (xor base, row scale, COO, f16 values, i16 indices);
* ``seeddelta_refit``: the same support with Δ values refit by least squares on calibration
  activations (goes beyond the fork);
* ``magnitude``: per-row magnitude pruning (W0 = 0, same K, f16/i16): SeedΔ without the base;
* ``q8_0`` / ``q4_0``: llama.cpp block quantization of the FFN tensors (gguf-py's reference
  quantizer, bit-identical to ggml's), 8.5 and 4.5 bits per weight.

Bits per FFN weight count every stored byte (indices, values, row scales, base diagonals and
permutations; quant scales). Every variant is also written as a stock dense GGUF; llama.cpp
greedy answers of the materialised SeedΔ file are compared with the PyTorch SeedDeltaLinear run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seeddelta.apply import KINDS, apply_seeddelta, encode_model, ffn_weight
from seeddelta.delta import DeltaConfig
from seeddelta.evaluate import EOS_ID, decode_answer, encode_sample, evaluate_model
from seeddelta.gguf_io import HF_MLP, write_model_gguf

QUANT_BPW = {"q8_0": 8.5, "q4_0": 4.5}


def quantize_ffn(model: Any, qtype: str) -> Any:
    """A copy of ``model`` whose FFN weights went through Q8_0/Q4_0 and back."""
    import copy

    import gguf

    qt = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}[qtype]
    new = copy.deepcopy(model)
    for layer in new.model.layers:
        for hf in HF_MLP.values():
            lin = getattr(layer.mlp, hf)
            w = lin.weight.detach().float().numpy()
            deq = gguf.quants.dequantize(gguf.quants.quantize(w, qt), qt)
            lin.weight.data = torch.from_numpy(np.ascontiguousarray(deq, dtype=np.float32))
    return new


def llamacpp_agreement(gguf_path: Path, model: Any, tok: Any, samples: list) -> dict[str, Any]:
    """Greedy answers of ``gguf_path`` in llama.cpp vs the PyTorch ``model`` (same prompts)."""
    from lm_shared.gguf import llamacpp_greedy, load_llamacpp
    from seeddelta.evaluate import greedy_generate

    llm = load_llamacpp(gguf_path, n_ctx=256)
    try:
        enc = [encode_sample(tok, s) for s in samples]
        ours = greedy_generate(model, [e.prompt for e in enc], 40)
        same = 0
        for e, o in zip(enc, ours):
            cpp = llamacpp_greedy(llm, e.prompt, 40, stop_ids=[EOS_ID])
            same += decode_answer(tok, cpp) == decode_answer(tok, o)
    finally:
        llm.close()
    return {"llamacpp_answer_agreement": same / len(samples), "llamacpp_checked": len(samples)}


def run_baselines(
    model: Any,
    tok: Any,
    out_dir: Path,
    *,
    densities: tuple[float, ...] = (1 / 16, 1 / 8, 1 / 4),
    samples: int = 200,
    calib_samples: int = 200,
    llamacpp_samples: int = 40,
    seed: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the base model and every method at every density; write JSON, Markdown and a plot.

    Returns the ``baselines.json`` report (``samples``, ``densities`` and one row per variant).
    """
    from rich.progress import Progress

    from seeddelta.calibrate import capture_ffn_inputs
    from seeddelta.tasks import make_split, validation_set

    out_dir.mkdir(parents=True, exist_ok=True)
    val = validation_set(seed, samples)
    acts = capture_ffn_inputs(model, tok, make_split(seed + 7, calib_samples))
    rows: list[dict[str, Any]] = []
    jobs: list[tuple[str, float | None]] = [("q8_0", None), ("q4_0", None)]
    for density in densities:
        jobs += [("seeddelta", density), ("seeddelta_refit", density), ("magnitude", density)]
    have_cpp = True
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        have_cpp = False
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("baselines", total=len(jobs) + 1)
        base = evaluate_model(model, tok, val)
        rows.append(_row("base_f32", None, 32.0, base))
        bar.advance(task)
        for method, rho in jobs:
            bar.update(task, description=f"{method} {rho or ''}")
            if rho is None:  # the quantizers
                variant = quantize_ffn(model, method)
                bpw = QUANT_BPW[method]
                extra: dict[str, Any] = {}
            else:
                variant, bpw, extra = _sparse_variant(model, method, rho, acts, seed)
                if method == "seeddelta" and not have_cpp:
                    extra["llamacpp_answer_agreement"] = None
                    extra["llamacpp_note"] = (
                        "llama-cpp-python is not installed: pip install 'seeddelta[llamacpp]'"
                    )
                if method == "seeddelta" and have_cpp and llamacpp_samples > 0:
                    path = write_model_gguf(
                        variant, tok, out_dir / f"seeddelta_dense_rho{rho:.4f}.gguf", dtype="f32"
                    )
                    extra.update(llamacpp_agreement(path, variant, tok, val[:llamacpp_samples]))
                    path.unlink()
            r = evaluate_model(variant, tok, val, model)
            row = _row(method, rho, bpw, r)
            row.update(extra)
            rows.append(row)
            bar.advance(task)
    report = {"samples": samples, "densities": list(densities), "rows": rows}
    (out_dir / "baselines.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "baselines.md").write_text(_markdown(rows))
    _plot(rows, out_dir / "quality_vs_bytes.png")
    return report


def _sparse_variant(
    model: Any, method: str, rho: float, acts: dict[str, np.ndarray], seed: int
) -> tuple[Any, float, dict[str, Any]]:
    """``model`` with every FFN tensor SeedΔ-encoded (or magnitude-pruned) at density ``rho``.

    Returns the variant, its bits per FFN weight, and its row's extra keys: the per-row K of
    gate/up and down and the mean relative error of the tensors' outputs on the activations.
    """
    n = model.cfg.num_layers
    d, ff = model.cfg.hidden_size, model.cfg.intermediate_size
    k_in = max(1, round(rho * d))
    k_ff = max(1, round(rho * ff))
    base_kind = "none" if method == "magnitude" else "xor"
    cfgs = {
        kind: DeltaConfig(
            K=k_ff if kind == "ffn_down" else k_in, base=base_kind, row_scale=base_kind != "none"
        )
        for kind in KINDS
    }
    encs = encode_model(model, cfgs, range(n), activations=acts, refit=method == "seeddelta_refit", seed=seed)
    variant = apply_seeddelta(model, encs)
    bpw = 8.0 * sum(e.n_bytes() for e in encs.values()) / (3 * d * ff * n)
    extra = {
        "K_gate_up": k_in,
        "K_down": k_ff,
        "act_rel_l2_mean": float(
            np.mean(
                [
                    np.linalg.norm(
                        acts[name]
                        @ (ffn_weight(model, int(name.split(".")[1]), name.split(".")[2]) - e.dense()).T
                    )
                    / np.linalg.norm(
                        acts[name] @ ffn_weight(model, int(name.split(".")[1]), name.split(".")[2]).T
                    )
                    for name, e in encs.items()
                ]
            )
        ),
    }
    return variant, bpw, extra


def _row(method: str, rho: float | None, bpw: float, r: dict[str, Any]) -> dict[str, Any]:
    return {
        "method": method,
        "density": rho,
        "bits_per_ffn_weight": bpw,
        "exact_match": r["exact_match"],
        "exact_match_mean": r["exact_match_mean"],
        "answer_nll": r["answer_nll"],
        "kl_to_reference": r["kl_to_reference"],
        "ppl": r["ppl"],
        "greedy_pack": r["greedy_pack"],
    }


def _markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| method | density | bits/FFN weight | copy | sum | brackets | answer NLL | KL to base | ppl |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        em = r["exact_match"]
        kl = "-" if r["kl_to_reference"] is None else f"{r['kl_to_reference']:.4f}"
        dens = "-" if r["density"] is None else f"{r['density']:.4f}"
        lines.append(
            f"| {r['method']} | {dens} | {r['bits_per_ffn_weight']:.2f} | {em.get('copy', 0):.3f} | "
            f"{em.get('sum', 0):.3f} | {em.get('brackets', 0):.3f} | {r['answer_nll']:.4f} | {kl} | {r['ppl']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {
        "seeddelta": "o-",
        "seeddelta_refit": "s-",
        "magnitude": "^-",
        "q8_0": "D",
        "q4_0": "D",
        "base_f32": "*",
    }
    for method, style in styles.items():
        pts = sorted((r["bits_per_ffn_weight"], r["exact_match_mean"]) for r in rows if r["method"] == method)
        if pts:
            ax.plot(*zip(*pts), style, label=method, markersize=8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bits per FFN weight")
    ax.set_ylabel("mean exact match (copy, sum, brackets)")
    ax.set_title("quality vs bytes (all FFN tensors, all layers)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def llamacpp_quantize(src: Path, dst: Path, qtype: str, threads: int = 2) -> Path:
    """Quantize a whole GGUF with llama.cpp's own quantizer (llama-cpp-python's quantize API)."""
    import ctypes

    from seeddelta.errors import SeedDeltaError

    try:
        import llama_cpp
    except ImportError:
        raise SeedDeltaError("llama-cpp-python is not installed: pip install 'seeddelta[llamacpp]'") from None
    ftypes = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0}
    if qtype not in ftypes:
        raise SeedDeltaError(f"--type must be one of {sorted(ftypes)}, got {qtype!r}")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise SeedDeltaError(f"{src}: input GGUF not found")
    if dst.resolve() == src.resolve():
        raise SeedDeltaError(f"{dst}: output would overwrite the input; choose another path")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[qtype]
    params.nthread = threads
    tmp = dst.with_name(dst.name + ".partial")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0:
        tmp.unlink(missing_ok=True)
        raise SeedDeltaError(f"{src}: llama.cpp quantization to {qtype} failed (code {rc})")
    tmp.replace(dst)
    return dst
