"""Loading a run, decoding (sampling and contrastive search), and the mode-collapse report.

The report puts distinct-1/2/3, seq-rep-4, self-BLEU and the longest repeated run of the generated
continuations next to the same numbers for the human continuations of the same validation prompts,
so "repetitive" has a reference. Decoding fixes (penalties, no-repeat n-grams, contrastive search)
hide degeneration; they do not cure it, so compare models with the same decoding settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lm_shared.metrics import repetition_report
from lm_shared.sampling import build_processors, generate

from .data import TextTokenizer, load_corpus, load_tokenizer
from .errors import InfinitoError
from .model import InfinitoLM
from .train import load_checkpoint, model_from_checkpoint


@dataclass
class LoadedRun:
    run_dir: Path
    config: dict[str, Any]
    model: InfinitoLM
    tokenizer: TextTokenizer


def load_run(run_dir: Path, checkpoint: str = "best") -> LoadedRun:
    """Model (strict load, config checked against ``config.json``), tokenizer and config of a run.

    Args:
        run_dir: the run directory ``infinito train`` wrote.
        checkpoint: ``best`` (``model.safetensors``, the best validation weights), ``last``
            (``checkpoints/last.ckpt``) or a path to a ``.ckpt``/``.safetensors`` file (legacy
            ``.pt`` checkpoints of earlier versions load too).

    Returns:
        The run, its model in eval mode.

    Raises:
        InfinitoError: anything missing, damaged or belonging to another member's run.
    """
    from lm_shared.runs import read_json_file, require_run_of

    from .model import InfinitoConfig
    from .train import CHECKPOINT_DIR, PACKAGE, WEIGHTS_FILE, load_weights

    require_run_of(run_dir, PACKAGE, finished=checkpoint != "last")
    cfg_file = run_dir / "config.json"
    if not cfg_file.is_file():
        raise InfinitoError(f"{run_dir}: not a run directory (no config.json)")
    config = read_json_file(cfg_file, "run config")
    try:
        expected = InfinitoConfig.from_dict(config["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InfinitoError(f"{cfg_file}: invalid model config: {exc}") from None
    named = {
        "best": [run_dir / WEIGHTS_FILE, run_dir / CHECKPOINT_DIR / "best.ckpt", run_dir / "best.pt"],
        "last": [run_dir / CHECKPOINT_DIR / "last.ckpt", run_dir / "checkpoint.pt"],
    }
    candidates = named.get(checkpoint, [Path(checkpoint), run_dir / checkpoint])
    path = next((c for c in candidates if c.is_file()), candidates[0])
    if path.suffix == ".safetensors":
        model = load_weights(expected, path)
    else:
        model = model_from_checkpoint(load_checkpoint(path, expected), path)
    return LoadedRun(run_dir, config, model.eval(), load_tokenizer(run_dir))


@dataclass(frozen=True)
class DecodingConfig:
    """How ``infinito generate`` picks each next token (each field is one of its flags)."""

    max_new_tokens: int = 64  # tokens generated per sample
    temperature: float = 1.0  # divides the logits before sampling
    top_k: int = 0  # 0 = off; with penalty_alpha > 0 the contrastive candidate count
    top_p: float = 1.0  # nucleus sampling mass; 1 = off
    repetition_penalty: float = 1.0  # CTRL-style, ~1.2 is typical
    no_repeat_ngram_size: int = 0  # never repeat an n-gram of this size; 0 = off
    penalty_alpha: float = 0.0  # > 0 turns on contrastive search (Su et al. 2022; HF: 0.6 with top_k 4)
    do_sample: bool = True  # sample (False: argmax decoding)
    seed: int = 0  # sampling seed

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise InfinitoError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise InfinitoError(f"--temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InfinitoError(f"--top-p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.penalty_alpha <= 1:
            raise InfinitoError(f"--penalty-alpha must be in [0, 1], got {self.penalty_alpha}")
        if self.penalty_alpha > 0 and self.top_k < 2:
            raise InfinitoError(
                "contrastive search (--penalty-alpha > 0) needs --top-k >= 2 candidates (e.g. 4)"
            )


def _window(model: InfinitoLM, ids: torch.Tensor) -> torch.Tensor:
    return ids[:, -model.config.max_seq_len :]  # the learned positions bound the context


@dataclass
class _Cache:
    """Every token so far and, while they fit in ``max_seq_len``, their keys and values."""

    ids: torch.Tensor
    past: list | None


def cached_step(
    model: InfinitoLM, use_cache: bool = True
) -> Callable[[torch.Tensor, _Cache | None], tuple[torch.Tensor, _Cache]]:
    """A ``lm_shared.sampling.generate`` step function with a KV cache.

    While the sequence fits in the model's learned positions each call runs only the new tokens on
    the cached keys and values. Past ``max_seq_len`` the window slides, every position shifts, and
    the cache no longer applies: each step then recomputes the last ``max_seq_len`` tokens, exactly
    what decoding without a cache does, so both give the same tokens.

    Args:
        model: the model, in eval mode.
        use_cache: keep keys and values between calls (False: recompute the window every call).

    Returns:
        ``step(new_ids [B, T_new] int64, cache or None) -> (logits [B, T_new or window, V], cache)``;
        the logits' last position scores the next token.
    """

    def step(new_ids: torch.Tensor, cache: _Cache | None) -> tuple[torch.Tensor, _Cache]:
        ids = new_ids if cache is None else torch.cat([cache.ids, new_ids], dim=1)
        if use_cache and ids.shape[1] <= model.config.max_seq_len and (cache is None or cache.past):
            out = model(new_ids, past_key_values=cache.past if cache else None, use_cache=True)
            return out.logits, _Cache(ids, out.past_key_values)
        return model(_window(model, ids)).logits, _Cache(ids, None)

    return step


@torch.no_grad()
def contrastive_search(
    model: InfinitoLM,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    top_k: int,
    penalty_alpha: float,
    processors=None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Contrastive search (Su et al. 2022): among the top-k tokens pick the one maximising
    (1-α)·p(v) - α·max_j cos(h_v, h_j), where h_j are the context's final hidden states.

    With ``use_cache`` the prompt is encoded once and each step runs only the k candidates, one
    token each, on the cached keys and values; the chosen candidate's keys, values, logits and
    hidden state carry over. Once the sequence fills ``max_seq_len`` every step recomputes the
    window, as without a cache, so both give the same tokens.

    Args:
        model: the model, in eval mode.
        prompt_ids: prompts ``[B, T]`` (int64, on the model's device).
        max_new_tokens: tokens added to every row (no stop tokens).
        top_k: candidates per step (>= 2).
        penalty_alpha: α in [0, 1], the weight of the degeneration penalty.
        processors: ``processors(ids [B, T'] int64, scores [B, V] float32) -> scores``, applied
            before the softmax (repetition penalty, no-repeat n-grams); ``None`` = none.
        use_cache: reuse keys and values between steps (same tokens either way).

    Returns:
        The prompts and their continuations ``[B, T + max_new_tokens]`` (int64).
    """
    ids = prompt_ids
    b = ids.shape[0]
    max_len = model.config.max_seq_len
    out = model(_window(model, ids), use_cache=use_cache and ids.shape[1] < max_len)
    logits, context_h, past = out.logits[:, -1], out.last_hidden, out.past_key_values
    for step in range(max_new_tokens):
        if past is None and step > 0:
            out = model(_window(model, ids))
            logits, context_h = out.logits[:, -1], out.last_hidden
        scores = logits.float()
        if processors is not None:
            scores = processors(ids, scores)
        probs, cand = scores.softmax(-1).topk(top_k, dim=-1)  # [B, k]
        if past is not None and ids.shape[1] < max_len:
            expanded_past = [(k.repeat_interleave(top_k, 0), v.repeat_interleave(top_k, 0)) for k, v in past]
            cand_out = model(cand.reshape(-1, 1), past_key_values=expanded_past, use_cache=True)
            cand_h = cand_out.last_hidden[:, -1]
        else:
            past = None
            expanded = torch.cat([ids.repeat_interleave(top_k, 0), cand.reshape(-1, 1)], dim=1)
            cand_h = model(_window(model, expanded)).last_hidden[:, -1]
        cand_h = F.normalize(cand_h, dim=-1).view(b, top_k, -1)
        degeneration = (cand_h @ F.normalize(context_h, dim=-1).transpose(1, 2)).max(-1).values  # [B, k]
        choice = ((1 - penalty_alpha) * probs - penalty_alpha * degeneration).argmax(-1)
        ids = torch.cat([ids, cand.gather(1, choice[:, None])], dim=1)
        if past is not None:
            chosen = torch.arange(b, device=ids.device) * top_k + choice
            past = [(k[chosen], v[chosen]) for k, v in cand_out.past_key_values]
            logits = cand_out.logits[chosen, -1]
            context_h = torch.cat([context_h, cand_out.last_hidden[chosen]], dim=1)
    return ids


def decode(
    model: InfinitoLM,
    prompt_ids: torch.Tensor,
    cfg: DecodingConfig,
    stop_ids: tuple[int, ...] = (),
    *,
    use_cache: bool = True,
) -> torch.Tensor:
    """Continue ``prompt_ids`` by sampling, argmax decoding or contrastive search (``cfg`` decides).

    Args:
        model: the model; put in eval mode.
        prompt_ids: prompts ``[B, T]`` (int64, any device; moved to the model's).
        cfg: the decoding settings; ``penalty_alpha > 0`` selects contrastive search, which
            ignores ``temperature``, ``top_p``, ``do_sample``, ``seed`` and ``stop_ids``.
        stop_ids: tokens that end a row once generated (the row then repeats it; decoding ends
            when every row has stopped).
        use_cache: reuse keys and values between tokens; False recomputes the whole window every
            token (the reference the cache is tested against and that ``infinito bench`` times it
            against). Both give the same tokens.

    Returns:
        Prompts and continuations ``[B, T + n]`` (int64, on the model's device), n <=
        ``cfg.max_new_tokens``.
    """
    model.eval()
    prompt_ids = prompt_ids.to(next(model.parameters()).device)
    if cfg.penalty_alpha > 0:
        penalties = build_processors(
            repetition_penalty=cfg.repetition_penalty, no_repeat_ngram_size=cfg.no_repeat_ngram_size
        )
        return contrastive_search(
            model, prompt_ids, cfg.max_new_tokens, cfg.top_k, cfg.penalty_alpha, penalties, use_cache
        )
    processors = build_processors(
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        repetition_penalty=cfg.repetition_penalty,
        no_repeat_ngram_size=cfg.no_repeat_ngram_size,
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        return generate(
            cached_step(model, use_cache),
            prompt_ids,
            cfg.max_new_tokens,
            processors=processors,
            do_sample=cfg.do_sample,
            stop_token_ids=stop_ids,
            generator=generator,
            use_cache=True,
        )


def validation_prompts(
    ids: list[int], n: int, prompt_len: int, continuation_len: int
) -> list[tuple[list[int], list[int]]]:
    """``n`` (prompt, human continuation) pairs at evenly spaced places of the validation tokens.

    Args:
        ids: the validation text's token ids.
        n: the number of pairs.
        prompt_len: tokens per prompt.
        continuation_len: tokens per human continuation.

    Returns:
        ``n`` pairs of token-id lists, ``prompt_len`` and ``continuation_len`` long.

    Raises:
        InfinitoError: the validation text is shorter than one prompt plus its continuation.
    """
    span = prompt_len + continuation_len
    if len(ids) < span:
        raise InfinitoError(
            f"validation text has {len(ids)} tokens, fewer than prompt + continuation = {span}"
        )
    starts = torch.linspace(0, len(ids) - span, n).long().tolist()
    return [(ids[s : s + prompt_len], ids[s + prompt_len : s + span]) for s in starts]


def generate_report(
    run: LoadedRun,
    prompts: list[str] | None,
    cfg: DecodingConfig,
    *,
    num_samples: int = 8,
    prompt_len: int = 16,
    human_data: str | None = None,
) -> dict[str, Any]:
    """Generate continuations and compute the mode-collapse report next to human text.

    Args:
        run: the loaded run.
        prompts: prompt texts, cycled to ``num_samples`` rows; ``None`` or empty: prompts taken
            from the validation text.
        cfg: the decoding settings; row i samples with seed ``cfg.seed + i``.
        num_samples: continuations generated (one row at a time: prompts differ in length).
        prompt_len: tokens per validation prompt.
        human_data: the corpus whose validation split gives the human continuations (default:
            the run's training data).

    Returns:
        The JSON report: ``decoding``, ``prompts``, ``samples`` (texts), and the
        :func:`lm_shared.metrics.repetition_report` of the ``generated`` texts and of the
        ``human`` continuations of the validation prompts.

    Raises:
        InfinitoError: an empty prompt, or a validation text too short for the prompts.
    """
    train_cfg = run.config.get("train", {})
    corpus = load_corpus(
        human_data or train_cfg.get("data"), valid_fraction=train_cfg.get("valid_fraction", 0.1)
    )
    pairs = validation_prompts(
        run.tokenizer.encode(corpus.valid), num_samples, prompt_len, cfg.max_new_tokens
    )
    human = [run.tokenizer.decode(cont) for _, cont in pairs]
    if prompts:
        encoded = [run.tokenizer.encode(p) for p in prompts]
        if any(not e for e in encoded):
            raise InfinitoError("--prompt must not be empty")
        encoded = [encoded[i % len(encoded)] for i in range(num_samples)]
    else:
        encoded = [p for p, _ in pairs]
    texts = []
    for i, prompt in enumerate(encoded):  # one row at a time: prompts differ in length
        out = decode(
            run.model, torch.tensor([prompt]), DecodingConfig(**{**asdict(cfg), "seed": cfg.seed + i})
        )
        texts.append(run.tokenizer.decode(out[0, len(prompt) :].tolist()))
    report = {
        "decoding": asdict(cfg),
        "prompts": [run.tokenizer.decode(p) for p in encoded],
        "samples": texts,
        "generated": repetition_report(texts),
        "human": repetition_report(human) if not prompts or human else None,
    }
    return report
