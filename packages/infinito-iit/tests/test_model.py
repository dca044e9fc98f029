import copy
import json
import math
from dataclasses import replace

import pytest
import torch

from infinito_iit.model import (
    PHI_COMPONENTS,
    InfinitoConfig,
    InfinitoLM,
    SequenceTooLongError,
    attention_statistics,
    count_parameters,
    preset,
    segment_integration,
    temporal_integration,
    trajectory_complexity,
)

TINY = InfinitoConfig(
    vocab_size=61,
    max_seq_len=40,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    dropout=0.0,
    memory_slots=16,
    segment_len=6,
    complexity_window=5,
)


def tiny(**kw):
    torch.manual_seed(0)
    return InfinitoLM(replace(TINY, **kw))


def fill_memory(model, steps=3):
    model.train()
    for i in range(steps):
        model(torch.randint(0, 61, (8, 40), generator=torch.Generator().manual_seed(100 + i)))
    assert bool(model.memory.filled().any())


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("iit", [True, False])
def test_logits_at_t_ignore_inputs_after_t(mode, iit):
    model = tiny(noise_std=0.0) if iit else InfinitoLM(TINY.baseline())
    if iit:
        fill_memory(model)
    x = torch.randint(0, 61, (2, 40), generator=torch.Generator().manual_seed(1))
    for t in (0, 7, 20, 38):
        y = x.clone()
        y[:, t + 1 :] = torch.randint(0, 61, y[:, t + 1 :].shape, generator=torch.Generator().manual_seed(t))
        a, b = copy.deepcopy(model), copy.deepcopy(model)  # a train-mode forward writes memory
        a.train(mode == "train")
        b.train(mode == "train")
        la, lb = a(x).logits, b(y).logits
        torch.testing.assert_close(la[:, : t + 1], lb[:, : t + 1], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(la[:, t + 1 :], lb[:, t + 1 :])


@pytest.mark.parametrize(
    "fn", [temporal_integration, lambda h: segment_integration(h, 4), lambda h: trajectory_complexity(h, 5)]
)
def test_metric_components_are_causal_bounded_and_not_constant(fn):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 30, 16, generator=g, requires_grad=True)
    values = fn(h)
    assert values.shape == (3, 30) and values.min() >= 0 and values.max() <= 1
    h2 = h.detach().clone()
    h2[:, 15:] = torch.randn(3, 15, 16, generator=g)
    torch.testing.assert_close(fn(h2)[:, :15], values[:, :15].detach())
    assert values[:, 10:].std() > 1e-3  # varies across positions and sequences
    values.sum().backward()
    assert h.grad.abs().sum() > 0  # differentiable, unlike the original's saturated sigmoid


def test_complexity_distinguishes_line_from_spread():
    line = torch.arange(10.0)[None, :, None] * torch.ones(1, 10, 8)
    spread = torch.eye(10)[None] * 5  # orthogonal steps: a centred simplex, w - 1 equal directions
    assert trajectory_complexity(line, 5)[0, -1] < 0.01
    assert trajectory_complexity(spread, 5)[0, -1] > 0.9


def test_components_present_and_not_constant_across_inputs():
    model = tiny()
    model.eval()
    outs = [
        model(torch.randint(0, 61, (4, 40), generator=torch.Generator().manual_seed(s)), compute_metrics=True)
        for s in (1, 2)
    ]
    for name in (*PHI_COMPONENTS, "attention_diversity", "attention_coherence"):
        assert 0 <= float(outs[0].components[name]) <= 1
    assert any(float(outs[0].components[n]) != float(outs[1].components[n]) for n in PHI_COMPONENTS)


def test_phi_loss_uses_lambda_from_config_and_hinge_target():
    x = torch.randint(0, 61, (4, 40), generator=torch.Generator().manual_seed(3))
    for lam in (0.05, 0.7):
        model = tiny(lambda_phi=lam, phi_target=1.0, noise_std=0.0)
        out = model(x, labels=x)
        assert out.phi_loss > 0
        torch.testing.assert_close(out.loss, out.ce_loss + lam * out.phi_loss)
    model = tiny(phi_target=0.05)  # already above a low target: the hinge is exactly zero
    assert float(model(x, labels=x).phi_loss.detach()) == 0.0
    with pytest.raises(ValueError, match="phi_target"):
        replace(TINY, phi_target=1.2)


def test_phi_loss_gradient_step_raises_phi():
    model = tiny(phi_target=1.0, noise_std=0.0, memory=False)
    x = torch.randint(0, 61, (4, 40), generator=torch.Generator().manual_seed(4))
    before = float(model(x).phi.detach())
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        model(x).phi_loss.backward()
        opt.step()
    assert float(model(x).phi.detach()) > before


def test_phi_weights_are_a_learnable_softmax_and_switchable():
    model = tiny(phi_target=1.0)
    weights = model.phi_weights()
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0))
    torch.testing.assert_close(weights, torch.tensor([0.3, 0.3, 0.2, 0.2]))
    x = torch.randint(0, 61, (4, 40))
    model(x, labels=x).loss.backward()
    assert model.phi_weights.logits.grad is not None and model.phi_weights.logits.grad.abs().sum() > 0
    partial = tiny(phi_components=("temporal", "complexity"))
    w = partial.phi_weights.as_dict()
    assert w["integration"] == 0 and w["attention"] == 0 and abs(w["temporal"] + w["complexity"] - 1) < 1e-6
    fixed = tiny(learnable_phi_weights=False)
    assert not any("phi_weights" in n for n, _ in fixed.named_parameters())


def test_memory_writes_in_training_only_and_reads_back():
    model = tiny()
    x = torch.randint(0, 61, (4, 40))
    model.eval()
    empty = model.memory.read(model(x, output_hidden_states=True).hidden_states[-1])
    assert float(empty.detach().abs().max()) == 0.0  # empty memory reads exactly zero (null slot)
    state = {k: v.clone() for k, v in model.memory.state_dict().items()}
    model(x)
    for k, v in model.memory.state_dict().items():
        assert torch.equal(v, state[k]), f"eval forward changed memory buffer {k}"
    model.train()
    model(x)
    assert int(model.memory.n_writes) == 4 and int(model.memory.filled().sum()) == 4
    model.eval()
    read = model.memory.read(model(x, output_hidden_states=True).hidden_states[-1])
    assert float(read.detach().abs().max()) > 0
    # The memory is part of the state dict, so a checkpoint restores what was written.
    clone = InfinitoLM(model.config)
    clone.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(clone.memory.slots, model.memory.slots)


def _reference_memory_read(mem, h):
    """The pre-2026-12-04 read (query and output projections on every position), as the oracle."""
    q = mem.query(mem.norm(h))
    slots = mem.norm(mem.slots.to(h.dtype))
    scores = (q @ mem.key(slots).T) / math.sqrt(h.shape[-1])
    scores = scores.masked_fill(~mem.filled(), float("-inf"))
    null = torch.zeros(*h.shape[:2], 1, dtype=h.dtype)
    weights = torch.cat([null, scores], dim=-1).softmax(-1)[..., 1:]
    return mem.out(weights @ mem.value(slots))


def test_memory_read_equals_the_previous_implementation_values_and_gradients():
    torch.manual_seed(0)
    mem = tiny(memory_slots=16).double().memory.eval()
    torch.nn.init.normal_(mem.out.bias)  # a non-zero bias must still be added once
    mem.write(torch.randn(8, 5, 32, dtype=torch.float64), torch.randn(8, 5, dtype=torch.float64))
    assert 0 < int(mem.filled().sum()) < 16  # empty slots are masked in both
    h = torch.randn(3, 7, 32, dtype=torch.float64, requires_grad=True)
    new, old = mem.read(h), _reference_memory_read(mem, h)
    torch.testing.assert_close(new, old, rtol=1e-10, atol=1e-10)
    weights = torch.randn_like(new)
    inputs = (h, *mem.parameters())
    for a, b in zip(
        torch.autograd.grad((new * weights).sum(), inputs), torch.autograd.grad((old * weights).sum(), inputs)
    ):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_memory_evicts_lowest_priority_when_full():
    model = tiny(memory_slots=4, memory_writes=4, memory_decay=1.0)
    mem = model.memory
    h = torch.randn(4, 10, 32)
    mem.write(h, torch.tensor([[1.0] * 10, [2.0] * 10, [3.0] * 10, [4.0] * 10]))
    mem.write(h, torch.tensor([[9.0] * 10, [0.5] * 10, [float("-inf")] * 10, [float("-inf")] * 10]))
    assert sorted(mem.priority.tolist()) == [2.0, 3.0, 4.0, 9.0]


def test_noise_only_in_training():
    model = tiny(noise_std=0.5, memory=False)
    x = torch.randint(0, 61, (2, 40))
    model.train()
    assert not torch.allclose(model(x).logits, model(x).logits)
    model.eval()
    torch.testing.assert_close(model(x).logits, model(x).logits)


def test_baseline_has_no_iit_parts_and_matches_shapes():
    base = InfinitoLM(TINY.baseline())
    assert base.memory is None and base.phi_weights is None
    x = torch.randint(0, 61, (2, 40))
    out = base(x, labels=x)
    assert out.phi is None and out.phi_loss is None and out.components == {}
    torch.testing.assert_close(out.loss, out.ce_loss)
    assert out.logits.shape == (2, 40, 61)


def test_initial_loss_near_log_vocab():
    model = tiny()
    x, y = torch.randint(0, 61, (2, 8, 40))
    ce = float(model(x, labels=y).ce_loss.detach())
    assert abs(ce - torch.log(torch.tensor(61.0)).item()) < 0.3


def test_overfits_one_batch():
    model = tiny()
    x = torch.randint(0, 61, (4, 41), generator=torch.Generator().manual_seed(5))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(80):
        opt.zero_grad()
        out = model(x[:, :-1], labels=x[:, 1:])
        out.loss.backward()
        opt.step()
    assert float(out.ce_loss.detach()) < 1.0


def test_tied_by_default_and_param_counts_both_ways():
    model = tiny()
    assert model.lm_head.weight is model.tok_emb.weight
    counts = count_parameters(preset("seed", vocab_size=50257))
    assert counts["untied"] - counts["tied"] == 50257 * 512
    assert counts["tied_non_embedding"] == counts["untied_non_embedding"]
    untied = tiny(tie_embeddings=False)
    assert untied.num_parameters() - model.num_parameters() == 61 * 32


def test_too_long_input_is_rejected():
    with pytest.raises(SequenceTooLongError, match="max_seq_len is 40"):
        tiny()(torch.zeros(1, 41, dtype=torch.long))


def test_config_roundtrip_and_validation():
    cfg = preset("small", vocab_size=1000, phi_components=("temporal",))
    assert InfinitoConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="hidden_size"):
        InfinitoConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="unknown model config"):
        InfinitoConfig.from_dict({"width": 3})
    with pytest.raises(ValueError, match="iit_metrics"):
        InfinitoConfig(iit_metrics=False)
    base = cfg.baseline()
    assert not base.uses_iit and base.hidden_size == cfg.hidden_size


def _reference_attention(q, k, v):
    """The pre-issue-15 implementation (softmax, then -sum p log p with a clamp), as the oracle."""
    t = q.shape[2]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    probs = scores.float().masked_fill(~causal, float("-inf")).softmax(dim=-1)
    return probs @ v, attention_statistics(probs)


def test_attention_statistics_equal_the_previous_implementation_values_and_gradients():
    from infinito_iit.model import _attention_with_statistics

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 24, 8, requires_grad=True) for _ in range(3))
    y_new, s_new = _attention_with_statistics(q, k, v, 0.0, False)
    y_old, s_old = _reference_attention(q, k, v)
    assert torch.allclose(y_new, y_old, atol=1e-6)
    for name in ("diversity", "coherence"):
        assert torch.allclose(s_new[name], s_old[name], atol=1e-5), name
    grads_new = torch.autograd.grad((s_new["diversity"] + s_new["coherence"]).sum() + y_new.sum(), (q, k, v))
    grads_old = torch.autograd.grad((s_old["diversity"] + s_old["coherence"]).sum() + y_old.sum(), (q, k, v))
    for a, b in zip(grads_new, grads_old):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_kv_cache_forward_equals_full_forward():
    torch.manual_seed(0)
    model = InfinitoLM(
        InfinitoConfig(vocab_size=50, max_seq_len=16, hidden_size=32, num_layers=2, num_heads=2)
    ).eval()
    ids = torch.randint(0, 50, (2, 12))
    full = model(ids).logits
    out = model(ids[:, :5], use_cache=True)
    parts = [out.logits]
    for t in range(5, 12, 3):  # chunks of several tokens and a last short one
        out = model(ids[:, t : t + 3], past_key_values=out.past_key_values, use_cache=True)
        parts.append(out.logits)
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5)


def _reference_temporal(h):
    """The pre-issue-16 temporal integration (cosine_similarity per pair), as the oracle."""
    out = torch.full(h.shape[:2], 0.5, dtype=h.dtype)
    out[:, 1:] = 0.5 * (1.0 + torch.nn.functional.cosine_similarity(h[:, 1:], h[:, :-1], dim=-1, eps=1e-6))
    return out


def _reference_complexity(h, window):
    """The pre-issue-16 participation ratio (one centred copy of every window), as the oracle."""
    out = torch.full(h.shape[:2], 0.5, dtype=h.dtype)
    windows = h.unfold(1, window, 1).transpose(-1, -2)
    centred = windows - windows.mean(dim=2, keepdim=True)
    gram = centred @ centred.transpose(-1, -2)
    trace = gram.diagonal(dim1=-2, dim2=-1).sum(-1)
    ratio = trace.square() / (gram.square().sum((-2, -1)) + 1e-12)
    out[:, window - 1 :] = ((ratio - 1.0) / (window - 2)).clamp(0, 1)
    return out


@pytest.mark.parametrize("offset", [0.0, 20.0])  # 20: states far from the origin, as residual streams drift
def test_temporal_and_complexity_equal_the_previous_implementation_values_and_gradients(offset):
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(3, 37, 16, generator=g, dtype=torch.float64) + offset).requires_grad_(True)
    weights = torch.randn(3, 37, generator=g, dtype=torch.float64)
    for new, old in (
        (temporal_integration, _reference_temporal),
        (lambda x: trajectory_complexity(x, 8), lambda x: _reference_complexity(x, 8)),
    ):
        a, b = new(h), old(h)
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        (grad_a,) = torch.autograd.grad((a * weights).sum(), h)
        (grad_b,) = torch.autograd.grad((b * weights).sum(), h)
        torch.testing.assert_close(grad_a, grad_b, rtol=1e-8, atol=1e-10)
    short = h[:, :5].detach()
    assert torch.equal(trajectory_complexity(short, 8), torch.full((3, 5), 0.5, dtype=torch.float64))


def test_softmax_with_entropy_backward_matches_finite_differences():
    from infinito_iit.model import _SoftmaxWithEntropy

    g = torch.Generator().manual_seed(0)
    future = torch.ones(6, 6, dtype=torch.bool).triu(1)
    scores = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda s: _SoftmaxWithEntropy.apply(s.masked_fill(future, float("-inf"))), (scores,)
    )
    probs, entropy = _SoftmaxWithEntropy.apply(scores.masked_fill(future, float("-inf")))
    torch.testing.assert_close(entropy, -(probs * probs.clamp_min(1e-12).log()).sum(-1))
    (only_probs,) = torch.autograd.grad(probs[..., 0].sum(), scores)  # entropy unused: its gradient is None
    assert torch.isfinite(only_probs).all()


def test_configs_saved_with_the_former_field_names_still_load():
    old = {
        k: v
        for k, v in preset("cpu").to_dict().items()
        if k not in ("hidden_size", "num_layers", "num_heads")
    }
    old.update(d_model=128, n_layers=2, n_heads=4, d_ff=0)
    del old["intermediate_size"]
    assert InfinitoConfig.from_dict(old) == preset("cpu")
