"""Tasks, tokenizer, model shapes, initial loss, overfitting, determinism."""

import math

import pytest
import torch
import torch.nn.functional as F

from lm_shared.runtime import seed_everything
from seeddelta.errors import SeedDeltaError
from seeddelta.evaluate import encode_sample
from seeddelta.model import ModelConfig, TinyLlama
from seeddelta.tasks import TASKS, is_balanced, make_split, validation_set


def test_tasks_format_and_labels() -> None:
    samples = make_split(1, 300)
    assert [s.task for s in samples[:3]] == list(TASKS)
    for s in samples:
        assert s.text.startswith(f"### TASK\n{s.task}\n### INPUT\n") and s.text.endswith(
            f"### OUTPUT\n{s.answer}\n"
        )
        if s.task == "copy":
            assert (
                s.answer == s.input
                and 8 <= len(s.input) <= 32
                and set(s.input) <= set("abcdefghijklmnopqrstuvwxyz0123456789 ")
            )
        elif s.task == "sum":
            a, b = map(int, s.input.split("+"))
            assert 0 <= a <= 999 and 0 <= b <= 999 and int(s.answer) == a + b
        else:
            assert 6 <= len(s.input) <= 21 and s.answer == ("OK" if is_balanced(s.input) else "BAD")
    labels = [s.answer for s in samples if s.task == "brackets"]
    assert 0.3 < labels.count("OK") / len(labels) < 0.7


def test_splits_deterministic_and_disjoint() -> None:
    assert make_split(3, 50) == make_split(3, 50)
    val = {s.prompt for s in validation_set(1, 200)}
    assert len(val) == 200
    from seeddelta.train import training_stream

    stream = training_stream(1, val)
    assert not any(next(stream).prompt in val for _ in range(2000))


def test_task_mix_weights_the_training_stream() -> None:
    from seeddelta.tasks import task_cycle
    from seeddelta.train import TrainConfig, training_stream

    cycle = task_cycle({"copy": 2, "sum": 2, "brackets": 1})
    assert cycle == ("copy", "copy", "sum", "sum", "brackets")
    stream = training_stream(1, set(), cycle)
    tasks = [next(stream).task for _ in range(500)]
    assert tasks.count("copy") == tasks.count("sum") == 2 * tasks.count("brackets")
    for bad in ({"copy": 0, "sum": 0, "brackets": 0}, {"copy": -1}, {"reverse": 1}):
        with pytest.raises(ValueError):
            task_cycle(bad)
    with pytest.raises(SeedDeltaError, match="task_weights"):
        TrainConfig(task_weights=(0, 0, 0))


def test_two_phase_mix() -> None:
    from seeddelta.train import TrainConfig

    cfg = TrainConfig(steps=100, phase1_fraction=0.4, phase1_weights=(0, 1, 0), task_weights=(2, 1, 2))
    assert cfg.phase1_steps == 40
    assert cfg.task_cycle(0) == cfg.task_cycle(39) == ("sum",)
    assert cfg.task_cycle(40) == cfg.task_cycle() == ("copy", "copy", "sum", "brackets", "brackets")
    one_phase = TrainConfig(steps=100, phase1_fraction=0.0)
    assert one_phase.task_cycle(0) == one_phase.task_cycle()
    with pytest.raises(SeedDeltaError, match="phase1_fraction"):
        TrainConfig(phase1_fraction=1.0)
    with pytest.raises(SeedDeltaError, match="phase1_weights"):
        TrainConfig(phase1_weights=(0, 0, 0))


def test_lr_schedule_restarts_per_phase() -> None:
    from seeddelta.train import TrainConfig, lr_at

    cfg = TrainConfig(steps=1000, phase1_fraction=0.4, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(399, cfg) == pytest.approx(1e-4, rel=1e-3)  # phase 1 ends decayed
    assert lr_at(400, cfg) == pytest.approx(1e-4)  # phase 2 warms up again
    assert lr_at(409, cfg) == pytest.approx(1e-3)
    assert lr_at(999, cfg) == pytest.approx(1e-4, rel=1e-3)
    one_phase = TrainConfig(steps=1000, phase1_fraction=0.0, warmup_steps=10, lr=1e-3)
    assert lr_at(400, one_phase) > lr_at(600, one_phase) > lr_at(999, one_phase)
    assert lr_at(999, one_phase) == pytest.approx(1e-4, rel=1e-3)


def test_tokenizer_digits_single_and_bytes_round_trip(tiny_tok) -> None:
    ids = tiny_tok.encode("12345+678")
    assert len(ids) == 9
    for text in ("ünïcödé ✓ \x00\x7f", "### OUTPUT\n"):
        assert tiny_tok.decode(tiny_tok.encode(text)) == text


def test_model_shapes_and_initial_loss(tiny_tok) -> None:
    seed_everything(0)
    cfg = ModelConfig(
        vocab_size=tiny_tok.vocab_size, hidden_size=48, intermediate_size=96, num_layers=2, num_heads=2
    )
    model = TinyLlama(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 10))
    logits, cache = model(ids)
    assert logits.shape == (2, 10, cfg.vocab_size) and logits.dtype == torch.float32
    assert len(cache) == 2 and cache[0][0].shape == (2, 2, 10, 24)
    targets = torch.randint(0, cfg.vocab_size, (2, 10))  # independent of the inputs (tied embeddings)
    loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), targets.reshape(-1))
    assert abs(loss.item() - math.log(cfg.vocab_size)) < 0.3
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_kv_cache_matches_full_forward(tiny_model) -> None:
    ids = torch.randint(0, tiny_model.cfg.vocab_size, (1, 9))
    full, _ = tiny_model(ids)
    part, cache = tiny_model(ids[:, :6])
    step, _ = tiny_model(ids[:, 6:], past=cache)
    torch.testing.assert_close(torch.cat((part, step), 1), full, atol=1e-5, rtol=1e-5)


def test_greedy_batch_with_left_padding_equals_single(tiny_model, tiny_tok) -> None:
    from seeddelta.evaluate import greedy_generate

    samples = validation_set(1, 4)
    prompts = [encode_sample(tiny_tok, s).prompt for s in samples]
    batched = greedy_generate(tiny_model, prompts, 6, stop_id=-1)
    singles = [greedy_generate(tiny_model, [p], 6, stop_id=-1)[0] for p in prompts]
    assert batched == singles


def test_overfit_one_batch(tiny_tok) -> None:
    seed_everything(0)
    cfg = ModelConfig(
        vocab_size=tiny_tok.vocab_size, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2
    )
    model = TinyLlama(cfg)
    ids = torch.tensor([encode_sample(tiny_tok, s).prompt for s in make_split(1, 1)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        logits, _ = model(ids)
        loss = F.cross_entropy(logits[0, :-1], ids[0, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="even"):
        ModelConfig(hidden_size=30, num_heads=2)
