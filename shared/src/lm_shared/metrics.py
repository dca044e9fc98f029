"""Language-model evaluation metrics: perplexity, bits per byte, diversity and repetition, BLEU.

Perplexity is always exp(total NLL / total tokens). Averaging per-batch perplexities or per-batch
mean losses over batches of different sizes gives a different (wrong) number, so accumulate sums.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

LN2 = math.log(2.0)


def perplexity(total_nll: float, total_tokens: int) -> float:
    """exp(total NLL in nats / number of predicted tokens)."""
    if total_tokens <= 0:
        raise ValueError(f"total_tokens must be positive, got {total_tokens}")
    return math.exp(total_nll / total_tokens)


def bits_per_byte(total_nll_nats: float, total_bytes: int) -> float:
    """Total NLL converted to bits, divided by the UTF-8 byte count of the evaluated text.

    Tokenizer-independent: models with different vocabularies compare on the same footing.
    """
    if total_bytes <= 0:
        raise ValueError(f"total_bytes must be positive, got {total_bytes}")
    return total_nll_nats / LN2 / total_bytes


def word_perplexity(total_nll: float, n_words: int) -> float:
    """exp(total NLL / number of words): the same text's likelihood spread over words."""
    if n_words <= 0:
        raise ValueError(f"n_words must be positive, got {n_words}")
    return math.exp(total_nll / n_words)


@dataclass
class NLLAccumulator:
    """Sums NLL (nats), tokens, bytes and words over an evaluation, then converts once."""

    total_nll: float = 0.0
    n_tokens: int = 0
    n_bytes: int = 0
    n_words: int = 0

    def add(self, nll_sum: float, n_tokens: int, n_bytes: int = 0, n_words: int = 0) -> None:
        if n_tokens < 0 or n_bytes < 0 or n_words < 0:
            raise ValueError("counts must be non-negative")
        self.total_nll += float(nll_sum)
        self.n_tokens += int(n_tokens)
        self.n_bytes += int(n_bytes)
        self.n_words += int(n_words)

    @property
    def nats_per_token(self) -> float:
        if self.n_tokens <= 0:
            raise ValueError("no tokens accumulated")
        return self.total_nll / self.n_tokens

    @property
    def perplexity(self) -> float:
        return perplexity(self.total_nll, self.n_tokens)

    @property
    def bits_per_byte(self) -> float:
        return bits_per_byte(self.total_nll, self.n_bytes)

    @property
    def word_perplexity(self) -> float:
        return word_perplexity(self.total_nll, self.n_words)

    def as_dict(self) -> dict[str, float]:
        out: dict[str, float] = {
            "nll_sum": self.total_nll,
            "n_tokens": self.n_tokens,
            "nats_per_token": self.nats_per_token,
            "perplexity": self.perplexity,
        }
        if self.n_bytes:
            out["n_bytes"] = self.n_bytes
            out["bits_per_byte"] = self.bits_per_byte
        if self.n_words:
            out["n_words"] = self.n_words
            out["word_perplexity"] = self.word_perplexity
        return out


def _ngrams(tokens: Sequence[Hashable], n: int) -> list[tuple[Hashable, ...]]:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(sequences: Sequence[Sequence[Hashable]], n: int) -> float:
    """Distinct-n (Li et al., 2016): unique n-grams / all n-grams over a set of sequences."""
    total = 0
    unique: set[tuple[Hashable, ...]] = set()
    for seq in sequences:
        grams = _ngrams(seq, n)
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else 0.0


def seq_rep_n(tokens: Sequence[Hashable], n: int = 4) -> float:
    """seq-rep-n (Welleck et al., 2019): 1 - unique n-grams / n-grams within one continuation."""
    grams = _ngrams(tokens, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def longest_repeated_run(tokens: Sequence[Hashable]) -> int:
    """Length of the longest run of one item repeated back to back (``a a a`` -> 3)."""
    best = run = 0
    previous: object = object()
    for tok in tokens:
        run = run + 1 if tok == previous else 1
        previous = tok
        best = max(best, run)
    return best


def has_repeat(tokens: Sequence[Hashable], threshold: int = 8) -> bool:
    """The REPEAT flag: some item is repeated ``threshold`` or more times in a row."""
    return longest_repeated_run(tokens) >= threshold


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacreBLEU, 13a tokenisation, 0..100) with one reference per hypothesis."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("corpus_bleu needs at least one hypothesis")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def self_bleu(texts: Sequence[str]) -> float:
    """Self-BLEU (Zhu et al., 2018): mean BLEU of each text against all the others (0..100).

    High self-BLEU means the samples resemble each other (low diversity).
    """
    import sacrebleu

    if len(texts) < 2:
        raise ValueError("self_bleu needs at least two texts")
    scores = []
    for i, hyp in enumerate(texts):
        refs = [t for j, t in enumerate(texts) if j != i]
        scores.append(sacrebleu.sentence_bleu(hyp, refs).score)
    return float(sum(scores) / len(scores))


def repetition_report(texts: Sequence[str]) -> dict[str, Any]:
    """Diversity and repetition of generated texts on whitespace tokens.

    Keys: distinct_1/2/3 (over all texts), seq_rep_4 (mean over texts), longest_run (max),
    repeat (any text with an 8-fold run), self_bleu (when there are at least two texts).
    """
    token_lists = [t.split() for t in texts]
    report: dict[str, Any] = {
        "n_texts": len(texts),
        "distinct_1": distinct_n(token_lists, 1),
        "distinct_2": distinct_n(token_lists, 2),
        "distinct_3": distinct_n(token_lists, 3),
        "seq_rep_4": sum(seq_rep_n(t, 4) for t in token_lists) / max(len(token_lists), 1),
        "longest_run": max((longest_repeated_run(t) for t in token_lists), default=0),
        "repeat": any(has_repeat(t) for t in token_lists),
    }
    if len(texts) >= 2:
        report["self_bleu"] = self_bleu(texts)
    return report
