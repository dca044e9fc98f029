"""The copy head: a pointer to earlier tokens mixed with the vocabulary (pointer-generator)."""

import pytest
import torch

from nanologic.export import unsupported_features
from nanologic.model import NanoLogic, build_config

VOCAB, BOS, EOS, SEP = 64, 1, 2, 3


def _copy_batch(generator: torch.Generator, n: int, k: int = 6) -> torch.Tensor:
    """Rows ``BOS x1..xk SEP x1..xk EOS`` with random x: only copying predicts the second half."""
    body = torch.randint(10, VOCAB, (n, k), generator=generator)
    column = lambda token: torch.full((n, 1), token)  # noqa: E731
    return torch.cat([column(BOS), body, column(SEP), body, column(EOS)], dim=1)


def _train_copy_task(copy_head: bool, steps: int = 250) -> tuple[float, NanoLogic]:
    torch.manual_seed(0)
    model = NanoLogic(build_config("tiny", VOCAB, copy_head=copy_head, copy_until_token_id=SEP))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        rows = _copy_batch(generator, 32)
        labels = rows[:, 1:].clone()
        labels[:, :7] = -100  # the loss is on the copy (after SEP), like nanologic's output
        loss = model(rows[:, :-1], labels=labels)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    rows = _copy_batch(torch.Generator().manual_seed(1), 64).tolist()
    outputs = model.generate([r[:8] for r in rows], 7, stop_ids=(EOS,))
    return sum(out == r[8:] for out, r in zip(outputs, rows)) / len(rows), model


@pytest.fixture(scope="module")
def trained_copier() -> tuple[float, NanoLogic]:
    return _train_copy_task(copy_head=True)


def test_copy_head_copies_unseen_sequences_where_the_plain_model_cannot(trained_copier):
    copy_accuracy, _ = trained_copier
    plain_accuracy, _ = _train_copy_task(copy_head=False)
    # Measured: 1.00 with the copy head, 0.00 without, after 250 steps of the tiny preset.
    assert copy_accuracy >= 0.9
    assert copy_accuracy > plain_accuracy + 0.5


def test_copy_head_loss_is_the_log_likelihood_of_the_mixture():
    torch.manual_seed(0)
    model = NanoLogic(build_config("tiny", VOCAB, copy_head=True)).eval()
    ids = torch.randint(10, VOCAB, (3, 12))
    labels = ids.roll(-1, 1)
    labels[:, -1] = -100
    labels[:, :3] = -100
    loss = model(ids, labels=labels)["ce_loss"]
    log_probs = model(ids)["logits"]
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, 12))
    keep = labels != -100
    expected = -log_probs[keep].gather(1, labels[keep][:, None]).mean()
    torch.testing.assert_close(loss, expected)


def test_copy_head_points_only_backwards_within_a_document():
    model = NanoLogic(build_config("tiny", VOCAB, copy_head=True, copy_until_token_id=-1)).eval()
    h = torch.randn(1, 5, model.config.hidden_size)
    ids = torch.arange(10, 15)[None]
    weights, proposed, _ = model._pointer(h, ids, None, None)
    assert torch.equal(weights[0].triu() != 0, torch.zeros(5, 5, dtype=torch.bool))  # j < t only
    assert weights[0, 0].sum() == 0
    torch.testing.assert_close(weights[0, 1:].sum(-1), torch.ones(4))
    assert proposed[0, :4].tolist() == [11, 12, 13, 14]  # the key at j proposes x[j + 1]
    documents = torch.tensor([0, 0, 1, 1, 1])
    mask = (documents[:, None] == documents[None, :]) & torch.ones(5, 5, dtype=torch.bool).tril()
    weights, _, _ = model._pointer(h, ids, mask[None, None], None)
    assert weights[0, 3, :2].sum() == 0 and weights[0, 2].sum() == 0


def test_copy_head_generation_is_the_same_with_and_without_cache_and_batching(trained_copier):
    _, model = trained_copier
    rows = _copy_batch(torch.Generator().manual_seed(2), 4).tolist()
    prompts = [rows[0][:8], rows[1][:8], [BOS, 40, 41, SEP], [BOS, 12, SEP]]
    cached = model.generate(prompts, 7, stop_ids=(EOS,))
    uncached = model.generate(prompts, 7, stop_ids=(EOS,), use_cache=False)
    one_by_one = [model.generate([p], 7, stop_ids=(EOS,))[0] for p in prompts]
    assert cached == uncached == one_by_one
    assert cached[0] == rows[0][8:] and cached[1] == rows[1][8:]


def test_copy_head_copies_only_from_the_prompt_of_its_own_document():
    model = NanoLogic(build_config("tiny", VOCAB, copy_head=True, copy_until_token_id=SEP)).eval()
    # Two packed documents: BOS 20 21 SEP 30 | BOS 40 SEP 50 (document mask as in packing).
    ids = torch.tensor([[BOS, 20, 21, SEP, 30, BOS, 40, SEP, 50]])
    documents = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1])
    mask = (documents[:, None] == documents[None, :]) & torch.ones(9, 9, dtype=torch.bool).tril()
    h = torch.randn(1, 9, model.config.hidden_size)
    weights, proposed, _ = model._pointer(h, ids, mask[None, None], None)
    sources = {int(proposed[0, j]) for t in range(9) for j in range(9) if weights[0, t, j] > 0}
    assert sources == {20, 21, 40}  # the prompts' tokens, never SEP or what follows it
    assert weights[0, 4, 3] == 0  # the query after SEP cannot point at 30, its own output


def test_copy_head_is_refused_by_the_llama_cpp_export():
    assert any("copy head" in p for p in unsupported_features(build_config("cpu", 100, copy_head=True)))
    assert not any("copy head" in p for p in unsupported_features(build_config("cpu-export", 100)))


def test_copy_head_refuses_label_smoothing():
    model = NanoLogic(build_config("tiny", VOCAB, copy_head=True))
    ids = torch.randint(10, VOCAB, (2, 6))
    with pytest.raises(ValueError, match="label smoothing"):
        model(ids, labels=ids, label_smoothing=0.1)


def test_copy_head_token_ids_are_the_tokenizers_special_tokens():
    # The model file does not import the data module; its defaults must name the same ids.
    from nanologic.data import BOS, OUTPUT, SPECIAL_TOKENS
    from nanologic.model import NanoLogicConfig

    config = NanoLogicConfig()
    assert config.bos_token_id == SPECIAL_TOKENS.index(BOS)
    assert config.copy_until_token_id == SPECIAL_TOKENS.index(OUTPUT)
