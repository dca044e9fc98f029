"""``seeddelta eval --text``: exact match through llama.cpp text prompts, as ``llama-cli`` runs them.

The original SeedΔ workflow scored models with ``llama-cli`` text prompts. Here each held-out
sample's prompt text (``### TASK\\n…### OUTPUT\\n``) goes through llama-cpp-python's text
completion: llama.cpp tokenizes it (the file's ``gpt-2`` pre-tokenizer, bos added by the file's
``add_bos_token``), decodes greedily (``temperature=0``, ``repeat_penalty=1``) and renders the
answer with its defaults (control tokens hidden); the first line is the prediction. With the
text contract of :mod:`lm_shared.gguf` this equals the id-level eval's greedy answers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seeddelta.errors import SeedDeltaError
from seeddelta.tasks import TASKS, Sample


def open_text_model(path: str | os.PathLike[str], n_threads: int = 2) -> Any:
    """llama.cpp model for text prompts; refuses truncated files and files of older exporters."""
    from lm_shared.gguf import GGUFError, check_text_contract, read_gguf

    try:
        metadata = read_gguf(path, load_tensors=False).metadata
        check_text_contract(metadata, path)
    except GGUFError as exc:
        raise SeedDeltaError(str(exc)) from None
    try:
        import llama_cpp
    except ImportError:
        raise SeedDeltaError(
            "eval --text needs llama-cpp-python (`uv pip install llama-cpp-python`)"
        ) from None
    n_ctx = int(metadata.get("llama.context_length", 256))
    try:
        return llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_threads=n_threads,
            type_k=llama_cpp.GGML_TYPE_F32,
            type_v=llama_cpp.GGML_TYPE_F32,
            verbose=False,
        )
    except ValueError as exc:
        raise SeedDeltaError(f"{path}: llama.cpp could not load the model ({exc})") from None


def text_exact_match(
    path: str | os.PathLike[str], samples: Sequence[Sample], n_threads: int = 2
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Per-task exact match of llama.cpp's greedy text answers, plus per-sample records.

    Each answer may take as many tokens as the gold answer, its eos and 4 more (the id-level
    eval's budget for a batch of one). llama-cpp-python drops bytes that are not valid UTF-8
    where ``tokenizers`` writes U+FFFD; a correct answer has none.
    """
    llm = open_text_model(Path(path), n_threads)
    records = []
    for s in samples:
        budget = len(llm.tokenize(s.completion.encode(), add_bos=False, special=False)) + 1 + 4
        out = llm.create_completion(
            s.prompt,
            max_tokens=budget,
            temperature=0.0,
            top_k=1,
            top_p=1.0,
            min_p=0.0,
            repeat_penalty=1.0,
        )
        pred = out["choices"][0]["text"].split("\n", 1)[0]
        records.append(
            {"task": s.task, "input": s.input, "answer": s.answer, "pred": pred, "ok": pred == s.answer}
        )
    em = {
        t: float(np.mean([r["ok"] for r in records if r["task"] == t]))
        for t in TASKS
        if any(r["task"] == t for r in records)
    }
    return em, records
