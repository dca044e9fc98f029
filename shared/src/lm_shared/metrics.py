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
    """Perplexity of a whole evaluation, ``exp(total_nll / total_tokens)``.

    Args:
        total_nll: summed negative log-likelihood of the predicted tokens, in nats.
        total_tokens: number of predicted tokens.

    Returns:
        The perplexity (>= 1 for a proper distribution).

    Raises:
        ValueError: ``total_tokens`` is not positive.
    """
    if total_tokens <= 0:
        raise ValueError(f"total_tokens must be positive, got {total_tokens}")
    return math.exp(total_nll / total_tokens)


def bits_per_byte(total_nll_nats: float, total_bytes: int) -> float:
    """Bits per UTF-8 byte of the evaluated text: ``total_nll_nats / ln 2 / total_bytes``.

    Tokenizer-independent: models with different vocabularies compare on the same footing (the
    measure of The Pile, Gao et al., 2020).

    Args:
        total_nll_nats: summed negative log-likelihood of the text's tokens, in nats.
        total_bytes: UTF-8 byte count of the text those tokens encode.

    Returns:
        Bits per byte.

    Raises:
        ValueError: ``total_bytes`` is not positive.
    """
    if total_bytes <= 0:
        raise ValueError(f"total_bytes must be positive, got {total_bytes}")
    return total_nll_nats / LN2 / total_bytes


def word_perplexity(total_nll: float, n_words: int) -> float:
    """Word-level perplexity, ``exp(total_nll / n_words)``: the text's likelihood spread over words.

    Args:
        total_nll: summed negative log-likelihood of the text's tokens, in nats.
        n_words: number of words in the text (however the caller counts them, e.g. whitespace).

    Returns:
        The word perplexity.

    Raises:
        ValueError: ``n_words`` is not positive.
    """
    if n_words <= 0:
        raise ValueError(f"n_words must be positive, got {n_words}")
    return math.exp(total_nll / n_words)


@dataclass
class NLLAccumulator:
    """Sums NLL (nats), tokens, bytes and words over an evaluation, then converts once.

    Attributes:
        total_nll: summed negative log-likelihood, in nats.
        n_tokens: predicted tokens.
        n_bytes: UTF-8 bytes of the evaluated text (0 when not counted).
        n_words: words of the evaluated text (0 when not counted).
    """

    total_nll: float = 0.0
    n_tokens: int = 0
    n_bytes: int = 0
    n_words: int = 0

    def add(self, nll_sum: float, n_tokens: int, n_bytes: int = 0, n_words: int = 0) -> None:
        """Add one batch's sums.

        Args:
            nll_sum: the batch's summed NLL in nats (a 0-d tensor is accepted), not its mean.
            n_tokens: tokens predicted in the batch.
            n_bytes: UTF-8 bytes the batch's text covers.
            n_words: words the batch's text covers.

        Raises:
            ValueError: a negative count.
        """
        if n_tokens < 0 or n_bytes < 0 or n_words < 0:
            raise ValueError("counts must be non-negative")
        self.total_nll += float(nll_sum)
        self.n_tokens += int(n_tokens)
        self.n_bytes += int(n_bytes)
        self.n_words += int(n_words)

    @property
    def nats_per_token(self) -> float:
        """Mean NLL per token, in nats (the cross-entropy loss).

        Raises:
            ValueError: no tokens were added.
        """
        if self.n_tokens <= 0:
            raise ValueError("no tokens accumulated")
        return self.total_nll / self.n_tokens

    @property
    def perplexity(self) -> float:
        """:func:`perplexity` of the sums (ValueError when no tokens were added)."""
        return perplexity(self.total_nll, self.n_tokens)

    @property
    def bits_per_byte(self) -> float:
        """:func:`bits_per_byte` of the sums (ValueError when no bytes were counted)."""
        return bits_per_byte(self.total_nll, self.n_bytes)

    @property
    def word_perplexity(self) -> float:
        """:func:`word_perplexity` of the sums (ValueError when no words were counted)."""
        return word_perplexity(self.total_nll, self.n_words)

    def as_dict(self) -> dict[str, float]:
        """Everything for a metrics file.

        Returns:
            ``nll_sum``, ``n_tokens``, ``nats_per_token`` and ``perplexity``; plus ``n_bytes`` and
            ``bits_per_byte`` when bytes were counted, ``n_words`` and ``word_perplexity`` when
            words were.

        Raises:
            ValueError: no tokens were added.
        """
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
    """Distinct-n (Li et al., 2016): unique n-grams / all n-grams, pooled over a set of sequences.

    Args:
        sequences: token sequences (any hashable items, e.g. words or ids).
        n: n-gram length.

    Returns:
        A fraction in [0, 1]; 0.0 when no sequence is ``n`` items long.

    Raises:
        ValueError: ``n < 1``.
    """
    total = 0
    unique: set[tuple[Hashable, ...]] = set()
    for seq in sequences:
        grams = _ngrams(seq, n)
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else 0.0


def seq_rep_n(tokens: Sequence[Hashable], n: int = 4) -> float:
    """seq-rep-n (Welleck et al., 2019): ``1 - unique n-grams / n-grams`` within one continuation.

    Args:
        tokens: one generated continuation.
        n: n-gram length.

    Returns:
        The fraction of repeated n-grams, in [0, 1); 0.0 when ``tokens`` is shorter than ``n``.

    Raises:
        ValueError: ``n < 1``.
    """
    grams = _ngrams(tokens, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def longest_repeated_run(tokens: Sequence[Hashable]) -> int:
    """Length of the longest run of one item repeated back to back (``a a a`` -> 3); 0 when empty."""
    best = run = 0
    previous: object = object()
    for tok in tokens:
        run = run + 1 if tok == previous else 1
        previous = tok
        best = max(best, run)
    return best


def has_repeat(tokens: Sequence[Hashable], threshold: int = 8) -> bool:
    """The REPEAT flag: some item is repeated ``threshold`` or more times in a row.

    Args:
        tokens: one generated sequence.
        threshold: the shortest run that counts.

    Returns:
        ``longest_repeated_run(tokens) >= threshold``.
    """
    return longest_repeated_run(tokens) >= threshold


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacreBLEU, Post 2018; 13a tokenisation) with one reference per hypothesis.

    Args:
        hypotheses: generated texts.
        references: one reference text per hypothesis, in the same order.

    Returns:
        BLEU on sacreBLEU's 0..100 scale.

    Raises:
        ValueError: the two lists differ in length, or are empty.
    """
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("corpus_bleu needs at least one hypothesis")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def self_bleu(texts: Sequence[str]) -> float:
    """Self-BLEU (Zhu et al., 2018, Texygen): mean sentence BLEU of each text against all others.

    High self-BLEU means the samples resemble each other (low diversity). Quadratic in the
    number of texts.

    Args:
        texts: generated samples.

    Returns:
        The mean on sacreBLEU's 0..100 scale.

    Raises:
        ValueError: fewer than two texts.
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
    """Diversity and repetition of generated texts, on whitespace-separated words.

    Args:
        texts: generated samples.

    Returns:
        ``n_texts``; ``distinct_1``/``distinct_2``/``distinct_3`` (pooled over all texts);
        ``seq_rep_4`` (mean over texts); ``longest_run`` (max over texts); ``repeat`` (some text
        has an 8-fold run); ``self_bleu`` when there are at least two texts.
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
