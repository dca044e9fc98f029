"""The decoding stack from ``transformers``' logits processors, and a generation loop for any model.

``build_processors`` assembles ``transformers``' own processors (repetition penalty, no-repeat
n-grams, temperature, top-k, top-p), in the order ``GenerationMixin`` applies them; each is called
``processor(input_ids[B, T] int64, scores[B, V] float) -> scores``. The loop stays ours: the
members' models are plain ``nn.Module``s with their own KV caches, not ``PreTrainedModel``s, so
``GenerationMixin.generate`` does not apply; :func:`generate` only needs a step function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

StepFn = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


def build_processors(
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
) -> Any:
    """The usual decoding stack of ``transformers`` processors; neutral values (1.0, 0) leave one out.

    Args:
        temperature: divides the logits (> 0).
        top_k: keep the ``top_k`` largest logits per row (0 = off).
        top_p: nucleus sampling, keep the smallest set reaching this probability (1.0 = off).
        repetition_penalty: CTRL penalty (Keskar et al., 2019) on tokens already in the sequence.
        no_repeat_ngram_size: forbid repeating any n-gram of this size (0 = off).

    Returns:
        A ``transformers.LogitsProcessorList``, callable as ``(input_ids[B, T], scores[B, V])``.

    Raises:
        ValueError: for an out-of-range value (raised by ``transformers``).
    """
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

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
    """Autoregressive decoding of a batch of equal-length prompts, under ``torch.no_grad``.

    Rows that emitted a stop token keep emitting that token (the batch stays rectangular); the
    loop ends when every row stopped or after ``max_new_tokens``.

    Args:
        step_fn: ``(input_ids, cache) -> (logits[B, t, V], new_cache)``. With ``use_cache`` the
            first call receives the whole prompt and ``cache=None`` and every later call only the
            newest token ``[B, 1]`` with the cache it returned; without it every call receives
            the full sequence and ``cache=None``. Only the last position's logits are used.
        prompt_ids: int64 token ids ``[B, T]``, ``T >= 1``.
        max_new_tokens: the most tokens to append.
        processors: ``(sequence[B, t], logits[B, V] float32) -> logits``, applied before the
            choice, e.g. :func:`build_processors`.
        do_sample: sample from the softmax of the processed logits; False is greedy (argmax,
            the processors still apply, e.g. no-repeat-ngram).
        stop_token_ids: tokens that end a row.
        generator: the random generator for sampling (reproducible draws).
        use_cache: call ``step_fn`` incrementally with its cache (see ``step_fn``).

    Returns:
        int64 ids ``[B, T + n]``: the prompts followed by ``n <= max_new_tokens`` new tokens.

    Raises:
        ValueError: ``prompt_ids`` is not ``[B, T]`` with ``T > 0``, or ``max_new_tokens < 0``.
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
