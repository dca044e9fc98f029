"""Logits processors and a generation loop with a KV-cache protocol.

Processors follow the Hugging Face ``transformers`` convention (same class names, same call
signature ``processor(input_ids[B, T], logits[B, V]) -> logits``) so a model written against
either works with both. The generation loop is model-agnostic: it only needs a step function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

StepFn = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


class TemperatureLogitsWarper:
    """Divide logits by ``temperature`` (> 0); 1.0 leaves them unchanged."""

    def __init__(self, temperature: float) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.temperature


class TopKLogitsWarper:
    """Keep the ``top_k`` largest logits per row, set the rest to -inf."""

    def __init__(self, top_k: int) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k = int(top_k)

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        k = min(self.top_k, logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, float("-inf"))


class TopPLogitsWarper:
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches ``top_p``."""

    def __init__(self, top_p: float, min_tokens_to_keep: int = 1) -> None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.top_p = float(top_p)
        self.min_tokens_to_keep = int(min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Remove a token when the mass *before* it already reaches top_p, so the token that crosses
        # the threshold stays in the nucleus.
        remove = (cumulative - sorted_logits.softmax(dim=-1)) >= self.top_p
        remove[..., : self.min_tokens_to_keep] = False
        mask = remove.scatter(-1, sorted_idx, remove)
        return logits.masked_fill(mask, float("-inf"))


class RepetitionPenaltyLogitsProcessor:
    """CTRL-style penalty (Keskar et al., 2019) on every token already in ``input_ids``.

    Positive logits are divided by ``penalty`` and negative ones multiplied, so the penalty always
    lowers the token's probability.
    """

    def __init__(self, penalty: float) -> None:
        if not penalty > 0:
            raise ValueError(f"repetition penalty must be > 0, got {penalty}")
        self.penalty = float(penalty)

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        seen = torch.gather(logits, 1, input_ids)
        seen = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        return logits.scatter(1, input_ids, seen)


class NoRepeatNGramLogitsProcessor:
    """Forbid any token that would complete an n-gram already present in the sequence."""

    def __init__(self, ngram_size: int) -> None:
        if ngram_size < 1:
            raise ValueError(f"ngram_size must be >= 1, got {ngram_size}")
        self.n = int(ngram_size)

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        length = input_ids.size(1)
        if length + 1 < self.n:
            return logits
        logits = logits.clone()
        rows = input_ids.tolist()
        for b, row in enumerate(rows):
            prefix = tuple(row[length - self.n + 1 :]) if self.n > 1 else ()
            banned = {
                row[i + self.n - 1]
                for i in range(length - self.n + 1)
                if tuple(row[i : i + self.n - 1]) == prefix
            }
            if banned:
                logits[b, list(banned)] = float("-inf")
        return logits


class LogitsProcessorList(list):
    """Apply processors in order."""

    def __call__(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        for processor in self:
            logits = processor(input_ids, logits)
        return logits


def build_processors(
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
) -> LogitsProcessorList:
    """The usual decoding stack; neutral values (1.0, 0) leave a processor out."""
    processors = LogitsProcessorList()
    if repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    if no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGramLogitsProcessor(no_repeat_ngram_size))
    if temperature != 1.0:
        processors.append(TemperatureLogitsWarper(temperature))
    if top_k > 0:
        processors.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p))
    return processors


@torch.no_grad()
def generate(
    step_fn: StepFn,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    processors: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    do_sample: bool = False,
    stop_token_ids: Sequence[int] = (),
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Autoregressive decoding.

    ``step_fn(input_ids, cache) -> (logits[B, t, V], new_cache)``. With ``use_cache`` the first
    call receives the whole prompt and ``cache=None`` and every later call only the newest token
    ``[B, 1]`` with the cache it returned; without it every call receives the full sequence and
    ``cache=None``. Rows that emitted a stop token keep emitting that token (the batch stays
    rectangular); the loop ends when every row stopped or after ``max_new_tokens``.
    Greedy decoding when ``do_sample`` is False (processors still apply, e.g. no-repeat-ngram).
    """
    if prompt_ids.dim() != 2 or prompt_ids.size(1) == 0:
        raise ValueError(f"prompt_ids must be [batch, length>0], got shape {tuple(prompt_ids.shape)}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    sequence = prompt_ids
    stops = torch.tensor(list(stop_token_ids), dtype=torch.long, device=prompt_ids.device)
    finished = torch.zeros(prompt_ids.size(0), dtype=torch.bool, device=prompt_ids.device)
    finished_token = torch.zeros_like(finished, dtype=torch.long)
    cache: Any = None
    step_input = prompt_ids
    for _ in range(max_new_tokens):
        logits, new_cache = step_fn(step_input if use_cache else sequence, cache if use_cache else None)
        next_logits = logits[:, -1, :].float()
        if processors is not None:
            next_logits = processors(sequence, next_logits)
        if do_sample:
            probs = next_logits.softmax(dim=-1)
            next_token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            next_token = next_logits.argmax(dim=-1)
        next_token = torch.where(finished, finished_token, next_token)
        if stops.numel():
            just_stopped = torch.isin(next_token, stops) & ~finished
            finished_token = torch.where(just_stopped, next_token, finished_token)
            finished = finished | just_stopped
        sequence = torch.cat([sequence, next_token[:, None]], dim=1)
        cache = new_cache
        step_input = next_token[:, None]
        if stops.numel() and bool(finished.all()):
            break
    return sequence
