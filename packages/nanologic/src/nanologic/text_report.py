"""``nanologic text-report``: what a llama.cpp user gets from an exported model, measured.

On a split (JSONL with ``natural_language_input``, ``atoms``, ``formula``), for a run directory
and its GGUF: llama.cpp's token ids vs ours (prompts and full sequences), with the current file
and with a copy written as the older exporter did (``pre = "default"``, every special CONTROL);
whether llama.cpp's default rendering of PyTorch's generated ids parses to PyTorch's result;
agreement of the llama.cpp text path with PyTorch greedy; and parse rate and equivalence of
free, grammar-constrained and sentence-grounded decoding (PyTorch, and llama.cpp's agreement).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def _tokenization_agreement(llm: Any, tokenizer: Any, texts: list[str]) -> float:
    same = sum(llm.tokenize(t.encode(), add_bos=False, special=True) == tokenizer.encode(t) for t in texts)
    return same / max(1, len(texts))


def text_report(run_dir: Path, gguf: Path, data: Path, limit: int, out: Path | None = None) -> dict:
    import llama_cpp

    from lm_shared.gguf import write_llama_gguf
    from nanologic.data import (
        BOS,
        EOS,
        PAD,
        formalization_result,
        normalize_text,
        prompt_text,
        read_jsonl,
        sequence_text,
    )
    from nanologic.export import gguf_config, hf_llama_state_dict
    from nanologic.inference import Formalizer, load_run
    from nanologic.llamacpp import LlamaCppFormalizer
    from nanologic.logic import equivalent, try_parse

    records = read_jsonl(data)[:limit]
    sentences = [r["natural_language_input"] for r in records]
    model, tokenizer = load_run(run_dir)
    report: dict[str, Any] = {"n": len(records), "data": str(data), "gguf": str(gguf)}

    # 1. token ids: current file vs a file written as the older exporter did
    old = gguf.with_name(gguf.stem + "-old-exporter.gguf")
    cfg = model.config
    write_llama_gguf(
        old,
        hf_llama_state_dict(model),
        gguf_config(cfg),
        tokenizer,
        rope_layout="interleaved" if cfg.rope_layout == "interleaved" else "half",
        bos_id=tokenizer.token_to_id(BOS),
        eos_id=tokenizer.token_to_id(EOS),
        pad_id=tokenizer.token_to_id(PAD),
        tokenizer_pre="default",  # and no rendered specials: every special CONTROL
    )
    prompts = [prompt_text(s) for s in sentences]
    full = [sequence_text(r, with_thought=False) for r in records]
    for name, path in (("before", old), ("after", gguf)):
        vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        report[f"token_ids_equal_prompts_{name}"] = _tokenization_agreement(vocab, tokenizer, prompts)
        report[f"token_ids_equal_full_{name}"] = _tokenization_agreement(vocab, tokenizer, full)

    # 2. PyTorch greedy (no repair) and its ids rendered by llama.cpp with defaults
    torch_free = Formalizer(model, tokenizer, repair_tries=0)
    start = time.perf_counter()
    ids = []
    for s in sentences:
        prompt = tokenizer.encode(prompt_text(normalize_text(s)))
        ids.append(model.generate([prompt], 160, pad_id=torch_free.pad_id, stop_ids=(torch_free.eos_id,))[0])
    torch_results = [formalization_result(tokenizer.decode(o)) for o in ids]
    report["torch_seconds"] = time.perf_counter() - start
    for name, path in (("before", old), ("after", gguf)):
        vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        same = 0
        for o, ref in zip(ids, torch_results):
            text = vocab.detokenize(o).decode("utf-8", errors="replace")
            res = formalization_result(text)
            same += {k: v for k, v in res.items() if k != "raw"} == {
                k: v for k, v in ref.items() if k != "raw"
            }
        report[f"detokenize_parses_as_torch_{name}"] = same / len(ids)

    # 3. decoding modes: PyTorch (free with/without repair, format, grounded) and llama.cpp text path
    def score(results: list[dict]) -> dict:
        parsed = sum(r["valid_formula"] for r in results)
        equiv = 0
        for r, g in zip(results, records):
            node, gold = try_parse(r["formula"]), try_parse(g["formula"])
            equiv += node is not None and gold is not None and equivalent(node, gold)
        return {"parse_rate": parsed / len(results), "equivalent_same_letters": equiv / len(results)}

    modes: dict[str, Any] = {}
    for label, kwargs in (
        ("torch_free", {"repair_tries": 0}),
        ("torch_repair2", {"repair_tries": 2}),
        ("torch_format", {"constraint": "format"}),
        ("torch_grounded", {"constraint": "grounded"}),
    ):
        start = time.perf_counter()
        results = Formalizer(model, tokenizer, **kwargs).formalize(sentences, batch_size=32)
        modes[label] = {**score(results), "seconds": time.perf_counter() - start, "results": results}
    for label, grammar, ref in (
        ("llamacpp_free", False, "torch_free"),
        ("llamacpp_format", "format", "torch_format"),
        ("llamacpp_grounded", "grounded", "torch_grounded"),
    ):
        start = time.perf_counter()
        results = LlamaCppFormalizer.from_gguf(gguf, grammar=grammar).formalize(sentences)
        agree = sum(a == b for a, b in zip(results, modes[ref]["results"])) / len(results)
        modes[label] = {
            **score(results),
            "seconds": time.perf_counter() - start,
            f"identical_to_{ref}": agree,
            "results": results,
        }
    report["modes"] = {k: {m: v for m, v in d.items() if m != "results"} for k, d in modes.items()}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="nanologic text-report", description=__doc__)
    parser.add_argument(
        "--run", "--checkpoint", dest="checkpoint", type=Path, required=True, help="trained run directory"
    )
    parser.add_argument("--gguf", type=Path, required=True, help="the run's exported GGUF")
    parser.add_argument("--data", type=Path, help="JSONL split (default: the run's test split)")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default: print)")
    args = parser.parse_args(argv)
    report = text_report(
        args.checkpoint, args.gguf, args.data or args.checkpoint / "data" / "test.jsonl", args.limit, args.out
    )
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
