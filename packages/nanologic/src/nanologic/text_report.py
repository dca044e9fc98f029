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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lm_shared.config_cli import ConfigParser
    from lm_shared.tokenization import BPETokenizer
    from nanologic.model import NanoLogic


def _tokenization_agreement(llm: Any, tokenizer: Any, texts: list[str]) -> float:
    same = sum(llm.tokenize(t.encode(), add_bos=False, special=True) == tokenizer.encode(t) for t in texts)
    return same / max(1, len(texts))


def text_report(run_dir: Path, gguf: Path, data: Path, limit: int, out: Path | None = None) -> dict:
    """Measure what a llama.cpp user gets from ``gguf`` against PyTorch on the first records of a split.

    Args:
        run_dir: the trained run directory.
        gguf: the run's exported GGUF; a copy written as the older exporter did is put beside it.
        data: JSONL split with ``natural_language_input``, ``atoms`` and ``formula``.
        limit: the number of records read from ``data``.
        out: where to write the report as JSON (None: not written).

    Returns:
        The report: ``n``, ``data``, ``gguf``; ``token_ids_equal_{prompts,full}_{before,after}``;
        ``torch_seconds``; ``detokenize_parses_as_torch_{before,after}``; and ``modes``, each
        decoding mode's parse rate, equivalence, seconds (and llama.cpp's agreement with PyTorch).
    """
    import llama_cpp  # noqa: F401 - fail before any work when llama-cpp-python is missing

    from nanologic.data import read_jsonl
    from nanologic.inference import load_run

    records = read_jsonl(data)[:limit]
    sentences = [r["natural_language_input"] for r in records]
    model, tokenizer = load_run(run_dir)
    report: dict[str, Any] = {"n": len(records), "data": str(data), "gguf": str(gguf)}
    old = _write_old_exporter_gguf(model, tokenizer, gguf)
    versions = (("before", old), ("after", gguf))
    report.update(_token_id_agreement(tokenizer, versions, records, sentences))
    report.update(_detokenized_torch_outputs(model, tokenizer, versions, sentences))
    report["modes"] = _decoding_modes(model, tokenizer, gguf, records, sentences)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return report


def _write_old_exporter_gguf(model: NanoLogic, tokenizer: BPETokenizer, gguf: Path) -> Path:
    """A copy of the model as the older exporter wrote it (``pre = "default"``, every special CONTROL)."""
    from lm_shared.gguf import write_llama_gguf
    from nanologic.data import BOS, EOS, PAD
    from nanologic.export import gguf_config, hf_llama_state_dict

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
    return old


def _token_id_agreement(
    tokenizer: BPETokenizer, versions: tuple[tuple[str, Path], ...], records: list[dict], sentences: list[str]
) -> dict[str, float]:
    """1. token ids: llama.cpp's vs ours, prompts and full sequences, for each GGUF version."""
    import llama_cpp

    from nanologic.data import prompt_text, sequence_text

    prompts = [prompt_text(s) for s in sentences]
    full = [sequence_text(r, with_thought=False) for r in records]
    figures = {}
    for name, path in versions:
        vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        figures[f"token_ids_equal_prompts_{name}"] = _tokenization_agreement(vocab, tokenizer, prompts)
        figures[f"token_ids_equal_full_{name}"] = _tokenization_agreement(vocab, tokenizer, full)
    return figures


def _detokenized_torch_outputs(
    model: NanoLogic, tokenizer: BPETokenizer, versions: tuple[tuple[str, Path], ...], sentences: list[str]
) -> dict[str, float]:
    """2. PyTorch greedy (no repair), and whether its ids rendered by llama.cpp parse the same."""
    import llama_cpp

    from nanologic.data import formalization_result, normalize_text, prompt_text
    from nanologic.inference import Formalizer

    figures: dict[str, float] = {}
    torch_free = Formalizer(model, tokenizer, repair_tries=0, constraint=None)
    start = time.perf_counter()
    ids = []
    for s in sentences:
        prompt = tokenizer.encode(prompt_text(normalize_text(s)))
        ids.append(model.generate([prompt], 160, pad_id=torch_free.pad_id, stop_ids=(torch_free.eos_id,))[0])
    torch_results = [formalization_result(tokenizer.decode(o)) for o in ids]
    figures["torch_seconds"] = time.perf_counter() - start
    for name, path in versions:
        vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        same = 0
        for o, ref in zip(ids, torch_results):
            text = vocab.detokenize(o).decode("utf-8", errors="replace")
            res = formalization_result(text)
            same += {k: v for k, v in res.items() if k != "raw"} == {
                k: v for k, v in ref.items() if k != "raw"
            }
        figures[f"detokenize_parses_as_torch_{name}"] = same / len(ids)
    return figures


def _score(results: list[dict], records: list[dict]) -> dict:
    """Parse rate, and equivalence to the gold formula with the same letters."""
    from nanologic.logic import equivalent, try_parse

    parsed = sum(r["valid_formula"] for r in results)
    equiv = 0
    for r, g in zip(results, records):
        node, gold = try_parse(r["formula"]), try_parse(g["formula"])
        equiv += node is not None and gold is not None and equivalent(node, gold)
    return {"parse_rate": parsed / len(results), "equivalent_same_letters": equiv / len(results)}


def _decoding_modes(
    model: NanoLogic, tokenizer: BPETokenizer, gguf: Path, records: list[dict], sentences: list[str]
) -> dict[str, dict[str, Any]]:
    """3. decoding modes: PyTorch (free and grounded with/without repair, format) and the llama.cpp text path."""
    from nanologic.inference import Formalizer
    from nanologic.llamacpp import LlamaCppFormalizer

    modes: dict[str, Any] = {}
    torch_modes: tuple[tuple[str, dict[str, Any]], ...] = (
        ("torch_free", {"repair_tries": 0, "constraint": None}),
        ("torch_repair2", {"repair_tries": 2, "constraint": None}),
        # llama.cpp runs no repair and reads the GBNF alone, so the grammars are compared so
        ("torch_format", {"repair_tries": 0, "constraint": "format", "lone_space_rule": False}),
        ("torch_grounded", {"repair_tries": 0, "constraint": "grounded", "lone_space_rule": False}),
        ("torch_grounded_repair2", {"repair_tries": 2, "constraint": "grounded"}),
    )
    for label, kwargs in torch_modes:
        start = time.perf_counter()
        results = Formalizer(model, tokenizer, **kwargs).formalize(sentences, batch_size=32)
        modes[label] = {
            **_score(results, records),
            "seconds": time.perf_counter() - start,
            "results": results,
        }
    for label, grammar, ref in (
        ("llamacpp_free", False, "torch_free"),
        ("llamacpp_format", "format", "torch_format"),
        ("llamacpp_grounded", "grounded", "torch_grounded"),
    ):
        start = time.perf_counter()
        results = LlamaCppFormalizer.from_gguf(gguf, grammar=grammar).formalize(sentences)
        agree = sum(a == b for a, b in zip(results, modes[ref]["results"])) / len(results)
        modes[label] = {
            **_score(results, records),
            "seconds": time.perf_counter() - start,
            f"identical_to_{ref}": agree,
            "results": results,
        }
    return {k: {m: v for m, v in d.items() if m != "results"} for k, d in modes.items()}


def text_report_parser(prog: str = "nanologic text-report") -> ConfigParser:
    """The parser of ``nanologic text-report`` (flags: :class:`nanologic.configs.TextReportOptions`)."""
    from lm_shared.config_cli import Flag, add_dataclass_flags, config_parser
    from nanologic.configs import TextReportOptions

    parser = config_parser(prog, "What a llama.cpp user gets from an exported model, measured on a split.")
    add_dataclass_flags(parser, TextReportOptions, flags={"run": Flag(aliases=("--checkpoint",))})
    return parser


def run_text_report(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    """``nanologic text-report``: measure, then print the report as JSON (and write ``--out``)."""
    from nanologic.configs import TextReportOptions, options_from_flags

    options = options_from_flags(parser, cfg, TextReportOptions)
    data = options.data or options.run / "data" / "test.jsonl"
    report = text_report(options.run, options.gguf, data, options.limit, options.out)
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m nanologic.text_report ARGS`` = ``nanologic text-report ARGS``."""
    import sys

    from lm_shared.config_cli import parse
    from lm_shared.runs import run_guarded

    parser = text_report_parser()
    cfg, given = parse(parser, sys.argv[1:] if argv is None else argv)
    return run_guarded(lambda: run_text_report(parser, cfg, given))


if __name__ == "__main__":
    raise SystemExit(main())
