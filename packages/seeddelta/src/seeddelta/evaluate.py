"""The fixed evaluation protocol for harness B.

The fork scored positions 256-511 of windows that concatenated several samples, positions the
model never trained on, so its tiny-model perplexities were worse than a uniform guess. Here each
sample is scored on its own, from position 0 as in training:

* ``exact_match[task]``: greedy decoding of the answer, compared character for character;
* ``answer_nll``: mean NLL (nats/token) of the gold answer tokens under teacher forcing;
* ``kl_to_reference``: mean KL(reference || model) over the answer positions;
* the greedy pack: fixed prompts decoded for 64 tokens, flagged ``REPEAT`` (a word repeated 8+
  times in a row) or ``STRICT`` (the required answer missing); it passes with no flags;
* ``ppl``: perplexity of the whole validation text, packed with per-document masks and restarted
  positions (every token after each document's BOS is scored).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lm_shared.data import document_causal_mask, pack_documents
from lm_shared.metrics import NLLAccumulator, has_repeat, longest_repeated_run
from lm_shared.tokenization import BPETokenizer
from seeddelta.model import TinyLlama
from seeddelta.tasks import TASKS, Sample

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")  # the fork's ids 0..3: pad, bos, eos, unk
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2


@dataclass
class EncodedSample:
    prompt: list[int]  # BOS + prompt tokens
    answer: list[int]  # answer tokens + EOS


def encode_sample(tok: BPETokenizer, s: Sample) -> EncodedSample:
    return EncodedSample([BOS_ID, *tok.encode(s.prompt)], [*tok.encode(s.completion), EOS_ID])


@torch.no_grad()
def greedy_generate(
    model: TinyLlama, prompts: Sequence[Sequence[int]], max_new_tokens: int, stop_id: int = EOS_ID
) -> list[list[int]]:
    """Batched greedy decoding with a KV cache; prompts are left-padded, positions start at 0.

    Args:
        model: the model to decode with (on any device; the batch follows its parameters).
        prompts: B prompts of token ids (BOS included), lengths may differ.
        max_new_tokens: the most tokens generated per prompt.
        stop_id: a row stops after emitting this id (default EOS).

    Returns:
        B lists of generated ids (Python ints); a stopped row ends with ``stop_id``. Decoding
        ends early when every row has stopped.
    """
    device = next(model.parameters()).device
    B = len(prompts)
    T = max(len(p) for p in prompts)
    ids = torch.full((B, T), PAD_ID, dtype=torch.long)
    valid = torch.zeros((B, T), dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, T - len(p) :] = torch.tensor(p)
        valid[i, T - len(p) :] = True
    ids, valid = ids.to(device), valid.to(device)
    pos = (valid.long().cumsum(1) - 1).clamp(min=0)
    causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
    mask = causal[None] & valid[:, None, :]
    mask = mask | torch.eye(T, dtype=torch.bool, device=device)[None]  # pad rows attend to themselves
    logits, cache = model(ids, pos, mask)
    out: list[list[int]] = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    next_pos = pos[:, -1] + 1
    for _ in range(max_new_tokens):
        nxt = logits[:, -1].argmax(-1)
        for i in range(B):
            if not done[i]:
                out[i].append(int(nxt[i]))
        done |= nxt == stop_id
        if bool(done.all()):
            break
        valid = torch.cat((valid, torch.ones(B, 1, dtype=torch.bool, device=device)), dim=1)
        logits, cache = model(nxt[:, None], next_pos[:, None], valid[:, None, :], cache)
        next_pos = next_pos + 1
    return out


def decode_answer(tok: BPETokenizer, ids: Sequence[int]) -> str:
    ids = [i for i in ids if i != EOS_ID]
    return tok.decode(ids, skip_special_tokens=True).split("\n", 1)[0]


def exact_match(
    model: TinyLlama, tok: BPETokenizer, samples: Sequence[Sample], batch_size: int = 64
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Per-task exact match of greedy answers, plus per-sample records."""
    records: list[dict[str, Any]] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        enc = [encode_sample(tok, s) for s in chunk]
        max_new = max(len(e.answer) for e in enc) + 4
        outs = greedy_generate(model, [e.prompt for e in enc], max_new)
        for s, o in zip(chunk, outs):
            pred = decode_answer(tok, o)
            records.append(
                {"task": s.task, "input": s.input, "answer": s.answer, "pred": pred, "ok": pred == s.answer}
            )
    em = {}
    for task in TASKS:
        rs = [r["ok"] for r in records if r["task"] == task]
        if rs:
            em[task] = float(np.mean(rs))
    return em, records


def _teacher_forced(
    model: TinyLlama, enc: Sequence[EncodedSample]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probs [B, T, V] at the positions predicting each token, targets and the answer mask."""
    device = next(model.parameters()).device
    seqs = [e.prompt + e.answer for e in enc]
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), PAD_ID, dtype=torch.long)
    ans = torch.zeros((len(seqs), T), dtype=torch.bool)
    for i, (s, e) in enumerate(zip(seqs, enc)):
        ids[i, : len(s)] = torch.tensor(s)
        ans[i, len(e.prompt) : len(s)] = True
    ids = ids.to(device)
    logits, _ = model(ids)  # right padding: causal attention never sees it
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp, ids[:, 1:], ans[:, 1:].to(device)


@torch.no_grad()
def answer_scores(
    model: TinyLlama,
    tok: BPETokenizer,
    samples: Sequence[Sample],
    reference: TinyLlama | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Answer NLL per task and overall, and KL(reference || model) on the answer positions."""
    nll: dict[str, list[float]] = {t: [] for t in TASKS}
    kls: list[float] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        enc = [encode_sample(tok, s) for s in chunk]
        logp, tgt, ans = _teacher_forced(model, enc)
        tok_nll = -logp.gather(-1, tgt[..., None])[..., 0]
        for i, s in enumerate(chunk):
            nll[s.task].extend(tok_nll[i][ans[i]].tolist())
        if reference is not None:
            ref_logp, _, _ = _teacher_forced(reference, enc)
            kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
            kls.extend(kl[ans].tolist())
    all_nll = [v for vs in nll.values() for v in vs]
    out: dict[str, Any] = {
        "answer_nll": float(np.mean(all_nll)),
        "answer_nll_per_task": {t: float(np.mean(v)) for t, v in nll.items() if v},
    }
    out["kl_to_reference"] = float(np.mean(kls)) if reference is not None else None
    return out


GREEDY_PACK = (
    Sample("copy", "hello world 42", "hello world 42"),
    Sample("copy", "seed delta zero", "seed delta zero"),
    Sample("sum", "12+30", "42"),
    Sample("sum", "505+495", "1000"),
    Sample("brackets", "(()())", "OK"),
    Sample("brackets", "())(()", "BAD"),
)


def greedy_pack(model: TinyLlama, tok: BPETokenizer, n_tokens: int = 64) -> dict[str, Any]:
    """The tiny model's 6-prompt greedy pack (REPEAT and STRICT flags; PASS = no flags)."""
    enc = [encode_sample(tok, s) for s in GREEDY_PACK]
    outs = greedy_generate(model, [e.prompt for e in enc], n_tokens)
    results = []
    for s, o in zip(GREEDY_PACK, outs):
        text = tok.decode([i for i in o if i != EOS_ID], skip_special_tokens=True)
        words = text.split()
        flags = []
        if has_repeat(words, threshold=8):
            flags.append("REPEAT")
        if s.answer not in text.split("\n"):
            flags.append("STRICT")
        results.append(
            {"prompt": s.input, "output": text, "longest_run": longest_repeated_run(words), "flags": flags}
        )
    n_pass = sum(not r["flags"] for r in results)
    return {
        "greedy_pack_pass": n_pass == len(results),
        "greedy_pack": f"{n_pass}/{len(results)}",
        "greedy_pack_results": results,
    }


@torch.no_grad()
def packed_perplexity(
    model: TinyLlama, tok: BPETokenizer, samples: Sequence[Sample], seq_len: int = 256, batch_rows: int = 16
) -> dict[str, float]:
    """Perplexity of the validation texts packed into rows with document masks."""
    device = next(model.parameters()).device
    docs = [[BOS_ID, *tok.encode(s.text), EOS_ID] for s in samples]
    packed = pack_documents(docs, seq_len, PAD_ID)
    acc = NLLAccumulator()
    for start in range(0, packed.input_ids.shape[0], batch_rows):
        ids = packed.input_ids[start : start + batch_rows].to(device)
        doc = packed.doc_ids[start : start + batch_rows].to(device)
        pos = packed.position_ids[start : start + batch_rows].to(device)
        logits, _ = model(ids, pos, document_causal_mask(doc))
        logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
        tgt = ids[:, 1:]
        scored = (doc[:, 1:] >= 0) & (doc[:, 1:] == doc[:, :-1])
        nll = -logp.gather(-1, tgt[..., None])[..., 0]
        acc.add(float(nll[scored].sum()), int(scored.sum()))
    acc.add(0.0, 0, n_bytes=sum(len(s.text.encode()) for s in samples))
    return {"ppl": acc.perplexity, "nats_per_token": acc.nats_per_token, "bits_per_byte": acc.bits_per_byte}


def evaluate_model(
    model: TinyLlama,
    tok: BPETokenizer,
    samples: Sequence[Sample],
    reference: TinyLlama | None = None,
    *,
    with_records: bool = False,
) -> dict[str, Any]:
    """The whole protocol; keys: exact_match, answer_nll, kl_to_reference, greedy_pack_pass, ppl."""
    model.eval()
    em, records = exact_match(model, tok, samples)
    out: dict[str, Any] = {"exact_match": em, "exact_match_mean": float(np.mean(list(em.values())))}
    out.update(answer_scores(model, tok, samples, reference))
    out.update(greedy_pack(model, tok))
    out.update(packed_perplexity(model, tok, samples))
    out["n_samples"] = len(samples)
    if with_records:
        out["records"] = records
    return out
