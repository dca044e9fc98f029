from __future__ import annotations

import pytest
import torch

from lm_shared.sampling import build_processors, generate

IDS = torch.tensor([[0]])


def test_the_stack_is_transformers_processors_in_generate_order():
    processors = build_processors(
        temperature=0.7, top_k=5, top_p=0.9, repetition_penalty=1.2, no_repeat_ngram_size=3
    )
    assert [type(p).__module__ for p in processors] == ["transformers.generation.logits_process"] * 5
    assert [type(p).__name__ for p in processors] == [
        "RepetitionPenaltyLogitsProcessor",
        "NoRepeatNGramLogitsProcessor",
        "TemperatureLogitsWarper",
        "TopKLogitsWarper",
        "TopPLogitsWarper",
    ]
    assert list(build_processors()) == []  # neutral values leave every processor out


def test_temperature_topk_topp():
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert torch.allclose(build_processors(temperature=2.0)(IDS, logits), logits / 2)
    out = build_processors(top_k=2)(IDS, logits)
    assert torch.isinf(out[0, :2]).all() and torch.isfinite(out[0, 2:]).all()
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = torch.isfinite(build_processors(top_p=0.7)(IDS, probs))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7, 0.5 + 0.3 crosses it
    assert torch.isfinite(build_processors(top_p=0.4)(IDS, probs)).sum() == 1
    with pytest.raises(ValueError):
        build_processors(top_p=-0.1)
    with pytest.raises(ValueError):
        build_processors(temperature=0.0)


def test_repetition_penalty_lowers_seen_tokens_both_signs():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    out = build_processors(repetition_penalty=2.0)(torch.tensor([[0, 1]]), logits)
    assert out.tolist() == [[1.0, -4.0, 1.0]]


def test_no_repeat_ngram_bans_completion():
    ids = torch.tensor([[5, 6, 7, 5, 6]])
    out = build_processors(no_repeat_ngram_size=3)(ids, torch.zeros(1, 10))
    assert torch.isinf(out[0, 7]) and torch.isfinite(out[0, :7]).all()


class CountingModel:
    """Next token = (last token + 1) % V; records what it was fed to check the cache protocol."""

    def __init__(self, vocab: int = 10) -> None:
        self.vocab = vocab
        self.calls: list[tuple[int, bool]] = []

    def __call__(self, input_ids, cache):
        self.calls.append((input_ids.size(1), cache is not None))
        nxt = (input_ids[:, -1] + 1) % self.vocab
        logits = torch.nn.functional.one_hot(nxt, self.vocab).float()[:, None, :] * 1e9
        return logits.expand(-1, input_ids.size(1), -1), (cache or 0) + input_ids.size(1)


def test_greedy_with_and_without_cache_and_stop_tokens():
    model = CountingModel()
    out = generate(model, torch.tensor([[1, 2]]), 5)
    assert out.tolist() == [[1, 2, 3, 4, 5, 6, 7]]
    assert model.calls == [(2, False)] + [(1, True)] * 4
    model = CountingModel()
    out = generate(model, torch.tensor([[1, 2]]), 3, use_cache=False)
    assert out.tolist() == [[1, 2, 3, 4, 5]] and model.calls == [(2, False), (3, False), (4, False)]
    out = generate(CountingModel(), torch.tensor([[1], [6]]), 6, stop_token_ids=[8])
    # row 1 stops at 8 and keeps emitting 8; row 0 reaches 7 before the budget ends
    assert out.tolist() == [[1, 2, 3, 4, 5, 6, 7], [6, 7, 8, 8, 8, 8, 8]]


def test_sampling_is_deterministic_with_a_generator():
    def model(ids, cache):
        return torch.zeros(ids.size(0), ids.size(1), 50), None

    procs = build_processors(temperature=0.8, top_k=20, top_p=0.9)
    a = generate(
        model,
        torch.tensor([[0]]),
        20,
        processors=procs,
        do_sample=True,
        generator=torch.Generator().manual_seed(3),
    )
    b = generate(
        model,
        torch.tensor([[0]]),
        20,
        processors=procs,
        do_sample=True,
        generator=torch.Generator().manual_seed(3),
    )
    assert torch.equal(a, b) and len(set(a[0].tolist())) > 3
    assert len(build_processors()) == 0
