import numpy as np
import pytest

from lstm_textgen import runtime
from lstm_textgen.errors import TextgenError
from lstm_textgen.generate import SamplingConfig, encode_prompt, generate_ids
from lstm_textgen.model import ModelConfig, build_model
from lstm_textgen.tokenization import CharTokenizer

VOCAB = 30


@pytest.fixture(scope="module")
def models():
    runtime.seed_all(0)
    return {
        "lstm": build_model(ModelConfig(vocab_size=VOCAB, lstm_units=32, embedding_dim=16)),
        "transformer": build_model(ModelConfig(architecture="transformer", vocab_size=VOCAB, max_len=12)),
    }


def _sharpen(model):
    """Scale the output layer so random models have confident, non-trivial argmaxes."""
    kernel, bias = model.head.get_weights()
    model.head.set_weights([kernel * 50, bias])


def _greedy_by_full_recompute(model, prompt, n, window):
    ids = list(prompt)
    for _ in range(n):
        context = np.asarray([ids[-window:]])
        ids.append(int(np.argmax(np.asarray(model(context))[0, -1])))
    return ids[len(prompt) :]


@pytest.mark.parametrize("architecture", ["lstm", "transformer"])
def test_greedy_with_cache_equals_recomputing_the_whole_context(models, architecture):
    model = models[architecture]
    _sharpen(model)
    prompt = [5, 9, 7, 11, 4]
    window = 10_000 if architecture == "lstm" else model.max_len  # the Transformer slides its window
    expected = _greedy_by_full_recompute(model, prompt, 15, window)  # 20 tokens > max_len=12
    got = generate_ids(model, [prompt], 15, SamplingConfig(strategy="greedy"), stop_token_ids=())
    assert got == [expected]


def test_prompts_of_different_lengths_are_continued_independently(models):
    model = models["lstm"]
    greedy = SamplingConfig(strategy="greedy")
    batched = generate_ids(model, [[5, 6], [7, 8, 9, 10]], 6, greedy, stop_token_ids=())
    alone = [generate_ids(model, [p], 6, greedy, stop_token_ids=())[0] for p in ([5, 6], [7, 8, 9, 10])]
    assert batched == alone


@pytest.mark.parametrize("strategy", ["temperature", "top_k", "top_p"])
def test_samplers_are_deterministic_for_a_seed(models, strategy):
    model = models["lstm"]
    a = generate_ids(model, [[5, 6, 7]] * 3, 20, SamplingConfig(strategy=strategy, seed=7), stop_token_ids=())
    b = generate_ids(model, [[5, 6, 7]] * 3, 20, SamplingConfig(strategy=strategy, seed=7), stop_token_ids=())
    c = generate_ids(model, [[5, 6, 7]] * 3, 20, SamplingConfig(strategy=strategy, seed=8), stop_token_ids=())
    assert a == b and a != c


def test_top_k_one_and_tiny_top_p_are_greedy(models):
    model = models["transformer"]
    greedy = generate_ids(model, [[4, 5]], 10, SamplingConfig(strategy="greedy"), stop_token_ids=())
    top1 = generate_ids(
        model, [[4, 5]], 10, SamplingConfig(strategy="top_k", top_k=1, seed=1), stop_token_ids=()
    )
    nucleus = generate_ids(
        model, [[4, 5]], 10, SamplingConfig(strategy="top_p", top_p=1e-6, top_k=0, seed=1), stop_token_ids=()
    )
    assert greedy == top1 == nucleus


def test_generation_stops_at_a_stop_token(models):
    model = models["lstm"]
    free = generate_ids(model, [[5]], 12, SamplingConfig(strategy="greedy"), stop_token_ids=())[0]
    stop = free[3]
    stopped = generate_ids(model, [[5]], 12, SamplingConfig(strategy="greedy"), stop_token_ids=(stop,))[0]
    assert stopped == free[: free.index(stop)]


def test_prompt_of_only_unknown_tokens_is_an_error():
    tok = CharTokenizer.fit("abc", vocab_size=100)
    assert encode_prompt(tok, "") == [2]  # empty prompt: start of text
    assert encode_prompt(tok, "azc") == [4, 1, 6]  # partly unknown: documented <UNK> fallback
    with pytest.raises(TextgenError, match="none of its 3 tokens"):
        encode_prompt(tok, "xyz")


@pytest.mark.parametrize(
    "kwargs", [{"temperature": 0}, {"strategy": "beam"}, {"top_p": 0}, {"strategy": "top_k", "top_k": 0}]
)
def test_sampling_config_validation(kwargs):
    with pytest.raises(TextgenError):
        SamplingConfig(**kwargs)
