"""Text generation with keras-hub's samplers (greedy, temperature, top-k, top-p).

keras-hub samplers call ``next(prompt, cache, index) -> (logits, hidden_states, cache)`` once per
position, in order, writing the sampled token at ``index``. For the LSTM the cache is its
(h, c) states [B, 2 * layers, units]: ``next`` feeds only the token at ``index - 1`` and carries
the states, so each new token costs one LSTM step and there is no context limit. The Transformer
variant has no cache: ``next`` re-reads a window of its last ``max_len`` tokens (its position
table's size), which is exact within the context and a sliding window beyond it.

Why not ``keras_hub.models.CausalLM.generate`` (keras-hub 0.32): that method is a driver around
``generate_step``, which every keras-hub model writes for itself (``GPT2CausalLM.generate_step``
builds its cache, defines ``next`` and calls the sampler: what :func:`prepare_generation` does
here), plus a preprocessor that turns strings into the padded buffer. Using it would mean making
our two models keras-hub ``Backbone``/``CausalLM`` subclasses and our word/character tokenizer a
keras-hub ``Tokenizer``, to reach the same sampler call with the same ``next``. What does the work
is the library's: the samplers (the decoding loop, temperature, top-k, top-p, stop tokens, the
prompt mask); the plumbing left here is the buffer set-up and each model's ``next``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lstm_textgen import runtime
from lstm_textgen.configs import STRATEGIES, SamplingConfig  # noqa: F401  (re-exported)
from lstm_textgen.errors import TextgenError
from lstm_textgen.tokenization import END_ID, START_ID, UNK_ID, TextTokenizer

runtime.configure_keras()

import keras  # noqa: E402
import keras_hub  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

from lstm_textgen.model import LSTMLanguageModel, TransformerLanguageModel  # noqa: E402


def make_sampler(config: SamplingConfig, vocab_size: int) -> keras_hub.samplers.Sampler:
    """The keras-hub sampler for a strategy (a fresh one, so its seed restarts).

    ``top_k`` is capped at the vocabulary size (a character vocabulary can be smaller than 40).

    Args:
        config: the strategy (greedy, temperature, top_k or top_p), its temperature, k, p and seed.
        vocab_size: the model's vocabulary size, the cap on ``top_k``.

    Returns:
        A ``GreedySampler``, ``RandomSampler``, ``TopKSampler`` or ``TopPSampler``.
    """
    top_k = min(config.top_k, vocab_size)
    if config.strategy == "greedy":
        return keras_hub.samplers.GreedySampler()
    if config.strategy == "temperature":
        return keras_hub.samplers.RandomSampler(seed=config.seed, temperature=config.temperature)
    if config.strategy == "top_k":
        return keras_hub.samplers.TopKSampler(k=top_k, seed=config.seed, temperature=config.temperature)
    return keras_hub.samplers.TopPSampler(
        p=config.top_p, k=top_k or None, seed=config.seed, temperature=config.temperature
    )


def _lstm_next(model: LSTMLanguageModel):
    def next_fn(prompt, cache, index):
        batch = ops.shape(prompt)[0]
        token = ops.slice(prompt, [0, index - 1], [batch, 1])
        logits, cache = model.call_with_state(token, cache, training=False)
        return logits[:, 0, :], None, cache

    return next_fn


def _transformer_next(model: TransformerLanguageModel, total_length: int):
    window = min(model.max_len, total_length)

    def next_fn(prompt, cache, index):
        batch = ops.shape(prompt)[0]
        start = ops.maximum(index - window, 0)
        tokens = ops.slice(prompt, [0, start], [batch, window])
        logits = model(tokens, training=False)
        position = index - 1 - start  # causal: tokens after it do not change its logits
        return ops.take(logits, position, axis=1), None, cache

    return next_fn


def prepare_generation(
    model: keras.Model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    sampling: SamplingConfig,
    stop_token_ids: Sequence[int] = (END_ID,),
) -> tuple[Callable[[], np.ndarray], list[list[int]]]:
    """Set up a compiled sampling loop.

    Calling ``run`` again reuses the traced graph (the sampler's random state carries on), which
    is what ``bench`` times.

    Args:
        model: an ``LSTMLanguageModel`` or a ``TransformerLanguageModel``.
        prompts: B prompts of token ids, lengths may differ; an empty one becomes ``[<START>]``.
        max_new_tokens: tokens to add after the longest prompt (>= 1).
        sampling: the strategy and its settings (see ``make_sampler``).
        stop_token_ids: ids that end a row's generation (empty: never stop early).

    Returns:
        ``(run, prompts)``: ``run()`` returns the int32 token buffer
        [B, longest prompt + max_new_tokens] as a numpy array, each prompt at the start of its
        row; ``prompts`` are the prompts as written into the buffer (lists, empty ones replaced).

    Raises:
        TextgenError: ``max_new_tokens < 1``, no prompts, or a model of another class.
    """
    if max_new_tokens < 1:
        raise TextgenError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    rows = [list(p) if len(p) else [START_ID] for p in prompts]
    if not rows:
        raise TextgenError("no prompts given")
    lengths = np.asarray([len(p) for p in rows])
    start = int(lengths.min())
    total = int(lengths.max()) + max_new_tokens
    token_ids = np.zeros((len(rows), total), dtype=np.int32)
    mask = np.zeros((len(rows), total), dtype=bool)
    for row, prompt in enumerate(rows):
        token_ids[row, : len(prompt)] = prompt
        mask[row, : len(prompt)] = True
    sampler = make_sampler(sampling, model.vocab_size)
    stops = tuple(stop_token_ids) or None

    if isinstance(model, LSTMLanguageModel):
        next_fn = _lstm_next(model)
        # Read the prompt up to (not including) its last common token; `next` feeds that one.
        if start > 1:
            _, cache = model.call_with_state(token_ids[:, : start - 1], None, training=False)
        else:
            cache = ops.zeros((len(rows), 2 * model.num_layers, model.units), dtype=model.compute_dtype)
    elif isinstance(model, TransformerLanguageModel):
        next_fn = _transformer_next(model, total)
        cache = ops.zeros((len(rows), 1))  # unused placeholder: the sampler's loop needs a value
    else:
        raise TextgenError(f"cannot generate with a {type(model).__name__}")

    @tf.function
    def loop(token_ids, cache, mask):
        return sampler(next_fn, token_ids, cache=cache, index=start, mask=mask, stop_token_ids=stops)

    token_tensor, mask_tensor = tf.constant(token_ids), tf.constant(mask)
    return (lambda: np.asarray(loop(token_tensor, cache, mask_tensor))), rows


def generate_ids(
    model: keras.Model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    sampling: SamplingConfig,
    stop_token_ids: Sequence[int] = (END_ID,),
) -> list[list[int]]:
    """Continue each prompt by up to ``max_new_tokens``.

    Prompts may differ in length (the sampler keeps each prompt's own tokens where they are);
    an empty prompt starts from ``<START>``. Generation stops at the first stop token, which is
    not returned.

    Args:
        model: an ``LSTMLanguageModel`` or a ``TransformerLanguageModel``.
        prompts: B prompts of token ids.
        max_new_tokens: the most tokens added to each prompt (>= 1).
        sampling: the strategy and its settings (see ``make_sampler``).
        stop_token_ids: ids that end a continuation (default ``<END>``).

    Returns:
        B lists of new token ids (Python ints), each at most ``max_new_tokens`` long.

    Raises:
        TextgenError: as ``prepare_generation``.
    """
    run, prompts = prepare_generation(model, prompts, max_new_tokens, sampling, stop_token_ids)
    out = run()
    results = []
    for row, prompt in enumerate(prompts):
        new = out[row, len(prompt) : len(prompt) + max_new_tokens].tolist()
        for i, tok in enumerate(new):
            if tok in stop_token_ids:
                new = new[:i]
                break
        results.append(new)
    return results


def encode_prompt(tokenizer: TextTokenizer, prompt: str) -> list[int]:
    """Encode a prompt; an empty prompt becomes ``[<START>]``.

    A prompt with some out-of-vocabulary tokens is kept (they read as ``<UNK>``, as in training);
    a prompt made only of unknown tokens gives the model nothing to continue and is an error.

    Args:
        tokenizer: the run's fitted tokenizer.
        prompt: the prompt text (already cleaned as the training text was).

    Returns:
        The prompt's token ids, at least one.

    Raises:
        TextgenError: every token of the prompt is ``<UNK>``.
    """
    if not prompt:
        return [START_ID]
    ids = tokenizer.encode(prompt)
    if not ids:
        return [START_ID]
    if all(i == UNK_ID for i in ids):
        raise TextgenError(
            f"prompt {prompt!r}: none of its {len(ids)} tokens is in the model's {tokenizer.kind} "
            f"vocabulary ({tokenizer.vocab_size} tokens); use words or characters from the training text"
        )
    return ids


def unknown_fraction(ids: Sequence[int]) -> float:
    """Share of ``ids`` that are ``<UNK>``, in [0, 1] (0 for no ids)."""
    return sum(1 for i in ids if i == UNK_ID) / max(len(ids), 1)
