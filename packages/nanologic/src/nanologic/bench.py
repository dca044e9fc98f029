"""``nanologic bench``: every figure measured in one run on this machine, as ratios to a reference.

- training throughput of our model vs transformers' ``LlamaForCausalLM`` of the same size (same
  batch, forward + backward + AdamW step, loss on every token for both; medians of interleaved
  steps), fp32, plus ours under bf16 autocast on the CPU and ours at a default run's vocabulary
  (the bench's own tokenizer is smaller, and the output head and copy mixture grow with it);
- padding efficiency (non-pad fraction) of naive padding to the batch's longest sequence vs
  packing with document masks (and the length-bucketing sampler, for reference);
- real (non-pad) training tokens per second over the same documents, each model fed by its own
  pipeline: ours length-bucketed (what ``train`` does), transformers' Llama in random padded
  batches (its ``Trainer``'s default);
- greedy decoding of 128 tokens with vs without the KV cache;
- greedy decoding speed of the exported GGUF in llama.cpp vs PyTorch with the cache;
- where one training step's time goes (``torch.profiler``: matmuls, attention, norms/elementwise,
  optimizer, Python and data, the health check) for ours and the reference, this machine's matmul
  peak (fp32, and bf16 where the CPU has it natively) and each model's MFU against it.
"""

from __future__ import annotations

import dataclasses
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from nanologic.configs import DEFAULT_VOCAB_SIZE
from nanologic.data import SPECIAL_TOKENS, prompt_text, target_text
from nanologic.model import NanoLogic, build_config

LLAMACPP_MISSING = (
    "llama-cpp-python is not installed, so no llama.cpp figure: run "
    "`uv run --package nanologic --extra llamacpp nanologic bench` (builds llama.cpp once, ~5 min)"
)


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def _time_interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds per call of each function, calls interleaved so drift hits all alike."""
    for fn in fns.values():
        fn()  # warm-up
    samples: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: sorted(ts)[len(ts) // 2] for name, ts in samples.items()}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _train_step_fn(model, ids, labels_fn, dtype=None, device: str = "cpu"):
    """One AdamW training step; ``dtype`` is the autocast dtype (None = full fp32)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = labels_fn(model, ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)

    return step


def _where_time_goes(
    results, ours, hf, ids, ours_loss, hf_loss, cfg, ours_tps, hf_tps, quick, device, dtype
) -> None:  # noqa: ANN001
    """Profile split of one step for both models, the machine's matmul peaks and each model's MFU.

    MFU is against the matmul peak of the precision the throughput was measured in."""
    from lm_shared.profiling import (
        matmul_peak_flops,
        model_flops_utilization,
        profile_training_step,
        transformer_training_flops_per_token,
    )
    from lm_shared.runtime import cpu_has_native_bf16
    from lm_shared.stability import grad_health

    def profiled(model, loss_fn, health):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def optimizer_step():
            opt.step()
            opt.zero_grad(set_to_none=True)

        def forward_backward(_batch):
            with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = loss_fn(model, ids)
            loss.backward()

        return profile_training_step(
            forward_backward,
            optimizer_step,
            data=lambda: ids.clone(),
            health=health,
            steps=1 if quick else 3,
            device=device,
        )

    # Ours runs the gradient-health statistics training runs every step; the reference has none.
    results["profile_ours"] = profiled(ours, ours_loss, lambda: grad_health(ours.parameters())).as_dict()
    results["profile_hf"] = profiled(hf, hf_loss, None).as_dict()
    size = 256 if quick else None  # None: lm_shared's default for the device
    peak32 = matmul_peak_flops("float32", device=device, size=size)
    results["matmul_peak_fp32_gflops"] = round(peak32 / 1e9, 1)
    native_bf16 = (
        cpu_has_native_bf16() if device == "cpu" else device == "cuda" and torch.cuda.is_bf16_supported()
    )
    peak_bf16 = matmul_peak_flops("bfloat16", device=device, size=size) if native_bf16 else None
    results["matmul_peak_bf16_gflops"] = round(peak_bf16 / 1e9, 1) if peak_bf16 else None
    peak = peak32
    if dtype == torch.bfloat16:
        # bf16 autocast only where detect_precision found native bf16, so it was measured
        assert peak_bf16 is not None
        peak = peak_bf16
    elif dtype is not None:
        peak = matmul_peak_flops("float16", device=device, size=size)
    T = ids.shape[1]
    suffix = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    for name, model, tps in (("ours", ours, ours_tps), ("hf", hf, hf_tps)):
        n = sum(p.numel() for p in model.parameters())
        fpt = transformer_training_flops_per_token(n, cfg.num_layers, cfg.hidden_size, T)
        results[f"mfu_{suffix}_{name}"] = round(model_flops_utilization(tps, fpt, peak), 4)
    results["flops_per_token"] = transformer_training_flops_per_token(
        sum(p.numel() for p in ours.parameters()), cfg.num_layers, cfg.hidden_size, T
    )


def run_bench(
    out: Path, quick: bool = False, threads: int = 2, device: str = "auto", compile: bool = False
) -> dict:
    """Run every measurement, print the tables and write the JSON report to ``out``.

    Args:
        out: JSON report path.
        quick: smaller sizes (tests).
        threads: CPU threads for torch.
        device: ``auto`` (CUDA when visible), ``cpu`` or ``cuda``. On CUDA the training step runs
            in the precision :func:`lm_shared.runtime.detect_precision` picks for the card.
        compile: ``torch.compile`` both models before the throughput measurement (the profile
            split is then skipped: compiled kernels are not aten ops).

    Returns:
        The report (also written to ``out``).

    Raises:
        lm_shared.errors.UserError: ``--device cuda`` without a visible GPU.
    """
    from lm_shared.runtime import autocast_dtype, detect_precision, resolve_device

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    console = Console()
    tokenizer, docs = _bench_corpus(300 if quick else 2000)
    preset = "tiny" if quick else "cpu"
    cfg = build_config(preset, tokenizer.vocab_size, max_seq_len=512)
    device = resolve_device(device)
    if compile:
        from lm_shared.runtime import require_compile_backend

        require_compile_backend(device)
    # The CPU's throughput figure is fp32 (bf16 autocast is measured beside it); a GPU trains in
    # the precision the trainer would pick for it (T4 fp16, P40 fp32, Ampere and newer bf16).
    precision = detect_precision(device) if device == "cuda" else "32-true"
    dtype = autocast_dtype(precision)
    results: dict = {
        "preset": preset,
        "threads": threads,
        "vocab_size": tokenizer.vocab_size,
        "device": device,
        "precision": precision,
        "compile": compile,
    }
    results.update(_padding_figures(docs, tokenizer.token_to_id("<|pad|>")))
    results.update(_training_figures(cfg, quick, device, dtype, compile))
    results.update(_pipeline_figures(cfg, docs, tokenizer.token_to_id("<|pad|>"), quick, device, dtype))
    model = (
        NanoLogic(
            build_config(
                preset,
                tokenizer.vocab_size,
                max_seq_len=512,
                qk_norm=False,
                final_softcap=0.0,
                copy_head=False,
            )
        )
        .to(device)
        .eval()
    )  # the exportable model: a plain llama, as llama.cpp runs it
    prompt = docs[0][:24]
    n_new = 128 if not quick else 32
    results.update(_kv_cache_figures(model, prompt, n_new))
    results.update(_llamacpp_figures(model, tokenizer, prompt, n_new, device, threads))

    table = Table(title=f"nanologic bench ({preset} preset, {device}, {precision}, {threads} threads)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for k, v in results.items():
        if not k.startswith("profile_"):
            table.add_row(k, str(v))
    console.print(table)
    if "profile_ours" in results:
        _print_split(console, results)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def _bench_corpus(n_examples: int) -> tuple:
    """A BPE tokenizer trained on ``n_examples`` generated, cleaned examples, and their token ids."""
    from lm_shared.tokenization import train_bpe
    from nanologic.generator import generate
    from nanologic.pipeline import clean

    examples, _ = clean(generate(n_examples, seed=0))
    records = [
        {
            "natural_language_input": e["natural_language_input"],
            "atoms": {a["atom"]: a["definition"] for a in e["thought"]["identified_atoms"]},
            "connectors": [
                [c["connector"], c["natural_language_cue"]] for c in e["thought"]["identified_connectors"]
            ],
            "formula": e["output"]["formula"],
        }
        for e in examples
    ]
    texts = [prompt_text(r["natural_language_input"]) + target_text(r, False) for r in records]
    tokenizer = train_bpe(texts, 8000, SPECIAL_TOKENS)
    return tokenizer, tokenizer.encode_batch(texts)


def _padding_figures(docs: list[list[int]], pad_id: int) -> dict:
    """Non-pad fraction of batches of 32: padded to the longest, packed, length-bucketed."""
    from lm_shared.data import pack_documents

    batch_size = 32
    order = list(range(len(docs)))
    random.Random(0).shuffle(order)
    real = padded = 0
    for i in range(0, len(order), batch_size):
        lengths = [len(docs[j]) for j in order[i : i + batch_size]]
        real += sum(lengths)
        padded += max(lengths) * len(lengths)
    packed = pack_documents([docs[j] for j in order], 256, pad_id)
    by_len = sorted(order, key=lambda j: len(docs[j]))
    bucket_real = sum(len(d) for d in docs)
    bucket_padded = sum(
        max(len(docs[j]) for j in by_len[i : i + batch_size]) * len(by_len[i : i + batch_size])
        for i in range(0, len(by_len), batch_size)
    )
    return {
        "padding_efficiency": round(real / padded, 4),
        "packing_efficiency": round(packed.efficiency, 4),
        "bucketing_efficiency": round(bucket_real / bucket_padded, 4),
    }


def _hf_llama(cfg):  # noqa: ANN001, ANN202
    """transformers' ``LlamaForCausalLM`` of our model's size (tied embeddings, SDPA attention)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads,
            max_position_embeddings=cfg.max_seq_len,
            rms_norm_eps=cfg.rms_norm_eps,
            tie_word_embeddings=True,
            attn_implementation="sdpa",
        )
    )


def _pipeline_figures(cfg, docs: list[list[int]], pad_id: int, quick: bool, device: str, dtype) -> dict:  # noqa: ANN001
    """Real (non-pad) training tokens per second over the same documents, each model fed the way
    its training pipeline feeds it.

    Ours: the length-bucketing sampler and dynamic padding that ``nanologic train`` uses (right
    padding, so the causal SDPA path needs no mask). transformers' Llama: random batches padded to
    the longest document with an attention mask, what its ``Trainer`` with
    ``DataCollatorForLanguageModeling`` does by default. Same documents, same batch size, loss on
    every real token for both; one warm-up step each, then every batch once, interleaved.
    """
    from nanologic.training import Example, LengthBucketSampler, pad_collate

    batch_size = 8 if quick else 32
    subset = [d for d in docs if 2 <= len(d) <= cfg.max_seq_len][: batch_size * (3 if quick else 17)]
    examples = [Example(d, 0, "") for d in subset]
    ours_batches = [
        pad_collate([examples[i] for i in batch], pad_id, "all")
        for batch in LengthBucketSampler([len(d) for d in subset], batch_size, seed=0).global_batches(0)
    ]
    order = list(range(len(subset)))
    random.Random(0).shuffle(order)
    hf_batches = []
    for start in range(0, len(order), batch_size):
        batch = [subset[j] for j in order[start : start + batch_size]]
        longest = max(len(d) for d in batch)
        input_ids = torch.tensor([d + [pad_id] * (longest - len(d)) for d in batch])
        attention_mask = torch.tensor([[1] * len(d) + [0] * (longest - len(d)) for d in batch])
        hf_batches.append(
            {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "labels": input_ids.masked_fill(attention_mask == 0, -100),
            }
        )
    ours, hf = NanoLogic(cfg).to(device), _hf_llama(cfg).to(device)
    ours_opt = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-4)

    def step(model, opt, batch: dict) -> float:  # noqa: ANN001
        inputs = {k: v.to(device) for k, v in batch.items() if k != "n_real"}  # pad_collate's count
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(inputs.pop("input_ids"), **inputs)["loss"] if model is ours else model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - t0

    step(ours, ours_opt, ours_batches[0])  # warm-up; then every document is timed once per model
    step(hf, hf_opt, hf_batches[0])
    ours_s = hf_s = 0.0
    for ours_batch, hf_batch in zip(ours_batches, hf_batches, strict=True):
        ours_s += step(ours, ours_opt, ours_batch)
        hf_s += step(hf, hf_opt, hf_batch)
    n_real = sum(len(d) - 1 for d in subset)  # the same in both models' batches
    ours_tps, hf_tps = n_real / ours_s, n_real / hf_s
    return {
        "pipeline_real_tokens_per_s": round(ours_tps, 1),
        "hf_pipeline_real_tokens_per_s": round(hf_tps, 1),
        "pipeline_speed_ratio_vs_hf": round(ours_tps / hf_tps, 3),
    }


def _training_figures(cfg, quick: bool, device: str, dtype, compile: bool) -> dict:
    """Training throughput of ours vs transformers' Llama of the same size, and the profile split."""
    T = 96 if not quick else 48
    B = 16 if not quick else 4
    ids = torch.randint(10, cfg.vocab_size, (B, T), device=device)
    ours = NanoLogic(cfg).to(device)
    hf = _hf_llama(cfg).to(device)

    def ours_loss(model, x):
        labels = torch.cat([x[:, 1:], torch.full_like(x[:, :1], -100)], dim=1)
        return model(x, labels=labels)["loss"]

    def hf_loss(model, x):
        return model(input_ids=x, labels=x).loss

    def timed(model: torch.nn.Module):  # an OptimizedModule with --compile
        return torch.compile(model) if compile else model

    steps = {
        "ours": _train_step_fn(timed(ours), ids, ours_loss, dtype, device),
        "hf": _train_step_fn(timed(hf), ids, hf_loss, dtype, device),
    }
    if compile:
        # transformers' Llama as most people train it (eager), against ours compiled.
        steps["hf_eager"] = _train_step_fn(hf, ids, hf_loss, dtype, device)
    if device == "cpu":
        steps["ours_bf16"] = _train_step_fn(NanoLogic(cfg), ids, ours_loss, torch.bfloat16)
    # The bench's tokenizer, trained on its small corpus, has fewer tokens (5.7k from 2,000
    # sentences) than a default run's (DEFAULT_VOCAB_SIZE), and the head and the copy mixture
    # over V grow with it: this is the step a default run trains at this batch shape.
    # Compiled when ours is, so that it reads against train_tokens_per_s.
    run_cfg = dataclasses.replace(cfg, vocab_size=max(cfg.vocab_size, DEFAULT_VOCAB_SIZE))
    run_model = NanoLogic(run_cfg).to(device)
    steps["ours_default_vocab"] = _train_step_fn(timed(run_model), ids, ours_loss, dtype, device)
    times = _time_interleaved(steps, repeats=2 if quick else 15)
    t_ours, t_hf = times["ours"], times["hf"]
    results: dict = {}
    if compile:
        results["profile_note"] = "no profile split with --compile (compiled kernels are not aten ops)"
    else:
        _where_time_goes(
            results,
            ours,
            hf,
            ids,
            ours_loss,
            hf_loss,
            cfg,
            B * T / t_ours,
            B * T / t_hf,
            quick,
            device,
            dtype,
        )
    results["train_tokens_per_s"] = round(B * T / t_ours, 1)
    results["hf_llama_train_tokens_per_s"] = round(B * T / t_hf, 1)
    results["train_speed_ratio_vs_hf"] = round(t_hf / t_ours, 3)
    if "hf_eager" in times:
        results["hf_llama_eager_train_tokens_per_s"] = round(B * T / times["hf_eager"], 1)
        results["train_speed_ratio_vs_hf_eager"] = round(times["hf_eager"] / t_ours, 3)
    if "ours_bf16" in times:
        results["train_tokens_per_s_bf16_autocast"] = round(B * T / times["ours_bf16"], 1)
    results["default_vocab_size"] = run_cfg.vocab_size
    results["train_tokens_per_s_default_vocab"] = round(B * T / times["ours_default_vocab"], 1)
    results["n_parameters"] = ours.num_parameters()
    results["hf_n_parameters"] = sum(p.numel() for p in hf.parameters())
    return results


def _kv_cache_figures(model: NanoLogic, prompt: list[int], n_new: int) -> dict:
    """Greedy decoding of ``n_new`` tokens with the KV cache, and its speed-up over none."""
    t_cache = _time(lambda: model.generate([prompt], n_new), 1)
    t_nocache = _time(lambda: model.generate([prompt], n_new, use_cache=False), 1)
    return {
        "kv_cache_speedup": round(t_nocache / t_cache, 3),
        "torch_decode_tokens_per_s": round(n_new / t_cache, 1),
    }


def _llamacpp_figures(
    model: NanoLogic, tokenizer, prompt: list[int], n_new: int, device: str, threads: int
) -> dict:
    """Greedy decoding speed of ``model`` exported to GGUF, in llama.cpp (CPU bench only)."""
    from lm_shared.gguf import llamacpp_available, llamacpp_greedy, load_llamacpp
    from nanologic.export import export_model

    if device != "cpu":
        return {
            "llamacpp_decode_tokens_per_s": None,
            "llamacpp_note": "llama.cpp is measured on the CPU bench only",
        }
    if not llamacpp_available():
        Console(stderr=True).print(f"[yellow]{LLAMACPP_MISSING}[/yellow]")
        return {"llamacpp_decode_tokens_per_s": None, "llamacpp_note": LLAMACPP_MISSING}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_model(model, tokenizer, Path(tmp) / "bench.gguf")
        llm = load_llamacpp(path, n_ctx=len(prompt) + n_new + 8, n_threads=threads)
        t_cpp = _time(lambda: llamacpp_greedy(llm, prompt, n_new), 1)
    return {"llamacpp_decode_tokens_per_s": round(n_new / t_cpp, 1)}


def _print_split(console: Console, results: dict) -> None:
    from lm_shared.profiling import split_table

    suffix = {"32-true": "fp32", "bf16-mixed": "bf16", "16-mixed": "fp16"}[results["precision"]]
    columns = {"ours": "ours", "transformers Llama": "hf"}
    console.print(
        split_table(
            f"where one training step's time goes (ms per step, torch.profiler, {results['precision']})",
            {name: results[f"profile_{key}"] for name, key in columns.items()},
            mfu={name: results[f"mfu_{suffix}_{key}"] for name, key in columns.items()},
        )
    )
