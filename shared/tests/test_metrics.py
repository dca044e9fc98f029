from __future__ import annotations

import math

import pytest

from lm_shared.metrics import (
    NLLAccumulator,
    bits_per_byte,
    corpus_bleu,
    distinct_n,
    has_repeat,
    longest_repeated_run,
    perplexity,
    repetition_report,
    self_bleu,
    seq_rep_n,
    word_perplexity,
)


def test_perplexity_is_total_nll_over_total_tokens_not_mean_of_batch_means():
    # batch A: 10 tokens with mean loss 1.0; batch B: 1 token with loss 5.0
    acc = NLLAccumulator()
    acc.add(10.0, 10)
    acc.add(5.0, 1)
    assert acc.perplexity == pytest.approx(math.exp(15.0 / 11))
    mean_of_means = math.exp((1.0 + 5.0) / 2)
    assert acc.perplexity != pytest.approx(mean_of_means)


def test_unit_conversions():
    # a uniform model over 256 byte values costs exactly 8 bits per byte
    n = 1000
    assert bits_per_byte(n * math.log(256), n) == pytest.approx(8.0)
    assert perplexity(2 * math.log(3), 2) == pytest.approx(3.0)
    assert word_perplexity(math.log(10) * 4, 2) == pytest.approx(100.0)
    acc = NLLAccumulator()
    acc.add(40 * math.log(2), 10, n_bytes=40, n_words=8)
    d = acc.as_dict()
    assert d["bits_per_byte"] == pytest.approx(1.0)
    assert d["word_perplexity"] == pytest.approx(math.exp(40 * math.log(2) / 8))
    with pytest.raises(ValueError):
        perplexity(1.0, 0)


def test_diversity_and_repetition():
    assert distinct_n([["a", "b"], ["a", "c"]], 1) == pytest.approx(3 / 4)
    assert distinct_n([["a", "b", "a", "b"]], 2) == pytest.approx(2 / 3)
    assert seq_rep_n(list("abcabcabc"), 3) == pytest.approx(1 - 3 / 7)
    assert seq_rep_n(list("abcdefg"), 4) == 0.0
    assert longest_repeated_run(["x", "y", "y", "y", "z"]) == 3
    assert not has_repeat(["the"] * 7)
    assert has_repeat(["w"] + ["the"] * 8)


def test_bleu():
    refs = ["the cat sat on the mat", "a dog ran in the park"]
    assert corpus_bleu(refs, refs) == pytest.approx(100.0)
    assert corpus_bleu(["zzz qqq", "xxx yyy"], refs) < 5
    same = ["the same sentence here"] * 3
    varied = ["one two three four", "alpha beta gamma delta", "red green blue yellow"]
    assert self_bleu(same) > 99 and self_bleu(varied) < 5
    with pytest.raises(ValueError):
        corpus_bleu(["a"], [])


def test_repetition_report_keys():
    rep = repetition_report(["a b c d e", "a a a a a a a a a"])
    assert rep["repeat"] is True and rep["longest_run"] == 9
    for key in ("distinct_1", "distinct_2", "distinct_3", "seq_rep_4", "self_bleu"):
        assert key in rep
