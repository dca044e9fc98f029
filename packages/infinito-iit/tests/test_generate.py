from dataclasses import replace

import pytest
import torch

from infinito_iit.errors import InfinitoError
from infinito_iit.generate import DecodingConfig, contrastive_search, decode, validation_prompts
from infinito_iit.model import InfinitoConfig, InfinitoLM

CFG = InfinitoConfig(vocab_size=50, max_seq_len=16, hidden_size=32, num_layers=1, num_heads=2, memory_slots=8)


def model():
    torch.manual_seed(0)
    return InfinitoLM(CFG).eval()


def test_greedy_decode_matches_manual_argmax_and_crops_context():
    m = model()
    prompt = torch.randint(0, 50, (2, 5))
    out = decode(m, prompt, DecodingConfig(max_new_tokens=20, do_sample=False))  # 25 > max_seq_len 16
    ids = prompt
    for _ in range(20):
        nxt = m(ids[:, -16:]).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
    assert torch.equal(out, ids)


def test_contrastive_search_with_zero_alpha_is_greedy_and_alpha_changes_choices():
    m = model()
    prompt = torch.randint(0, 50, (1, 4))
    greedy = decode(m, prompt, DecodingConfig(max_new_tokens=8, do_sample=False))
    assert torch.equal(contrastive_search(m, prompt, 8, top_k=4, penalty_alpha=0.0), greedy)
    strong = contrastive_search(m, prompt, 8, top_k=4, penalty_alpha=0.99)
    assert strong.shape == greedy.shape and not torch.equal(strong, greedy)


def test_sampling_is_seeded():
    m = model()
    prompt = torch.randint(0, 50, (1, 4))
    cfg = DecodingConfig(
        max_new_tokens=10, top_k=10, top_p=0.9, repetition_penalty=1.2, no_repeat_ngram_size=2
    )
    assert torch.equal(decode(m, prompt, cfg), decode(m, prompt, cfg))
    assert not torch.equal(decode(m, prompt, cfg), decode(m, prompt, replace(cfg, seed=1)))


def test_decoding_config_validation():
    with pytest.raises(InfinitoError, match="top-k"):
        DecodingConfig(penalty_alpha=0.6, top_k=1)
    with pytest.raises(InfinitoError, match="temperature"):
        DecodingConfig(temperature=0)


def test_validation_prompts_pairs():
    pairs = validation_prompts(list(range(100)), 4, 5, 10)
    assert len(pairs) == 4 and pairs[0] == (list(range(5)), list(range(5, 15)))
    assert pairs[-1][1][-1] == 99
