"""Formalising through llama.cpp (llama-cpp-python) text completion, from an exported GGUF.

The model runs in llama.cpp, not PyTorch: the prompt is text (``<|bos|><|input|> frase
<|output|>``, after the NFC and whitespace normalisation of :func:`nanologic.data.normalize_text`,
since llama.cpp applies no normaliser), the answer is the text llama.cpp renders with its
defaults (the section markers are USER_DEFINED tokens, so they are printed), and the result is
parsed with the same :func:`nanologic.inference.answer_result` as the PyTorch path. Decoding is
greedy (``temperature=0``, ``repeat_penalty=1``) with an F32 KV cache, so it follows PyTorch's
greedy choices; the PyTorch path's repeated-atom repair is not run here (compare with
``Formalizer(..., repair_tries=0)``).

``grammar``: ``False`` (free decoding), ``True`` / ``"format"`` (the answer grammar stored in the
file, :func:`nanologic.grammar.answer_grammar`) or ``"grounded"`` (per sentence, definitions
read from the sentence: :func:`nanologic.grammar.grounded_grammar`). Free decoding is this
path's default, unlike PyTorch's: llama.cpp's grammar sampler takes ~25 s a sentence under the
grounded grammar with an 8,000-token vocabulary.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nanologic.data import EOS, prompt_text
from nanologic.errors import NanologicError

GRAMMAR_KEY = "nanologic.answer_grammar"
POLARITY_MARKS_KEY = "nanologic.polarity_marks"  # NanoLogicConfig.polarity_marks of the exported run
REQUIRED_MARKERS = ("<|input|>", "<|output|>", "<|atoms|>", "<|connectors|>", "<|formula|>", EOS)


def read_checked_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Metadata of a nanologic GGUF, refusing truncated files and files of older exporters."""
    from lm_shared.gguf import GGUFError, check_text_contract, read_gguf

    try:
        metadata = read_gguf(path, load_tensors=False).metadata
        check_text_contract(metadata, path)
    except GGUFError as exc:
        raise NanologicError(str(exc)) from None
    tokens = set(metadata.get("tokenizer.ggml.tokens", ()))
    missing = [m for m in REQUIRED_MARKERS if m not in tokens]
    if missing:
        raise NanologicError(f"{path}: not a nanologic model (its vocabulary lacks {missing})")
    return metadata


class LlamaCppFormalizer:
    """``formalize(sentences) -> list[dict]`` with the dicts of ``Formalizer.formalize``."""

    def __init__(
        self,
        llm: Any,
        *,
        context_length: int,
        grammar: bool | str = False,
        grammar_text: str | None = None,
        max_new_tokens: int = 160,
        polarity_marks: bool = False,
        normalize_definitions: bool = True,
    ) -> None:
        if grammar not in (False, True, "format", "grounded", "grounded-unbounded"):
            raise NanologicError(
                f"grammar must be False, True, 'format', 'grounded' or 'grounded-unbounded', got {grammar!r}"
            )
        self.llm = llm
        self.context_length = context_length
        self.grammar = "format" if grammar is True else grammar
        self.max_new_tokens = max_new_tokens
        self.polarity_marks = polarity_marks
        self.normalize_definitions = normalize_definitions
        self._format_grammar = None
        if self.grammar == "format":
            from nanologic.grammar import answer_grammar

            self._format_grammar = self._compile(grammar_text or answer_grammar())

    @classmethod
    def from_gguf(
        cls,
        path: str | os.PathLike[str],
        grammar: bool | str = False,
        *,
        n_threads: int | None = None,
        max_new_tokens: int = 160,
    ) -> LlamaCppFormalizer:
        """Open ``path`` in llama.cpp. Raises :class:`NanologicError` for a missing, truncated,
        non-nanologic or old-exporter file (``tokenizer.ggml.pre = "default"``: re-export it) and
        when llama-cpp-python is not installed."""
        path = Path(path)
        metadata = read_checked_metadata(path)
        try:
            import llama_cpp
        except ImportError:
            raise NanologicError(
                "the --gguf front-end needs llama-cpp-python (`uv pip install llama-cpp-python`)"
            ) from None
        context_length = int(metadata.get("llama.context_length", 256))
        try:
            llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=context_length,
                n_batch=context_length,
                n_threads=n_threads or max(1, min(4, os.cpu_count() or 1)),
                type_k=llama_cpp.GGML_TYPE_F32,  # F32 KV cache: greedy choices as in PyTorch
                type_v=llama_cpp.GGML_TYPE_F32,
                verbose=False,
            )
        except ValueError as exc:
            raise NanologicError(f"{path}: llama.cpp could not load the model ({exc})") from None
        return cls(
            llm,
            context_length=context_length,
            grammar=grammar,
            grammar_text=metadata.get(GRAMMAR_KEY),
            max_new_tokens=max_new_tokens,
            polarity_marks=bool(metadata.get(POLARITY_MARKS_KEY, False)),
        )

    @staticmethod
    def _compile(text: str) -> Any:
        import llama_cpp

        try:
            return llama_cpp.LlamaGrammar.from_string(text, verbose=False)
        except ValueError as exc:
            raise NanologicError(f"llama.cpp could not parse the answer grammar ({exc})") from None

    def _grammar_for(self, sentence: str) -> Any:
        if self.grammar in ("grounded", "grounded-unbounded"):
            from nanologic.grammar import grounded_grammar

            bounded = self.grammar == "grounded"
            return self._compile(
                grounded_grammar(sentence, polarity_marks=self.polarity_marks, rule_bounds=bounded)
            )
        return self._format_grammar

    def complete(self, sentence: str) -> str:
        """The raw answer text (after ``<|output|>``) for one normalised sentence."""
        prompt = prompt_text(sentence)
        n_prompt = len(self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
        room = min(self.max_new_tokens, self.context_length - n_prompt)
        if room <= 0:
            raise NanologicError(f"sentence too long for the model's context ({self.context_length} tokens)")
        out = self.llm.create_completion(
            prompt,
            max_tokens=room,
            temperature=0.0,
            top_k=1,
            top_p=1.0,
            min_p=0.0,
            repeat_penalty=1.0,
            grammar=self._grammar_for(sentence),
        )
        text = out["choices"][0]["text"]
        # create_completion stops at eos without printing it; the PyTorch path decodes it.
        return text + EOS if out["choices"][0]["finish_reason"] == "stop" else text

    def formalize(self, sentences: list[str], batch_size: int = 64) -> list[dict]:
        """atoms, connectors, formula, formula_ascii, valid_formula and raw for each sentence
        (definitions normalised as :class:`nanologic.inference.Formalizer` does, unless
        ``normalize_definitions`` is off).

        ``batch_size`` is accepted for interface parity; llama-cpp-python decodes one sequence
        at a time.
        """
        from nanologic.inference import answer_result
        from nanologic.normalize import normalize_results, prepare_sentences

        prepared = prepare_sentences(sentences)
        results = [answer_result(self.complete(s), self.polarity_marks) for s in prepared]
        return normalize_results(results, prepared, self.normalize_definitions)
