import math

import keras
import numpy as np
import pytest

from lstm_textgen import runtime
from lstm_textgen.model import (
    LSTMLanguageModel,
    ModelConfig,
    SparseCategoricalCrossentropyWithLabelSmoothing,
    TransformerLanguageModel,
    build_model,
    count_params,
)
from lstm_textgen.train import TrainConfig, compile_model

VOCAB = 67


@pytest.fixture(autouse=True)
def _seed():
    runtime.seed_all(0)


@pytest.mark.parametrize("architecture", ["lstm", "transformer"])
@pytest.mark.parametrize("batch", [1, 32])
def test_logits_shape_and_dtype(architecture, batch):
    model = build_model(ModelConfig(architecture=architecture, vocab_size=VOCAB))
    logits = model(np.random.randint(0, VOCAB, (batch, 100)))
    assert tuple(logits.shape) == (batch, 100, VOCAB)
    assert logits.dtype == "float32"


def test_default_sizes_are_the_seeds():
    lstm = build_model(ModelConfig(vocab_size=10_004))
    assert isinstance(lstm, LSTMLanguageModel)
    assert [layer.units for layer in lstm.lstm_layers] == [256, 256]
    assert lstm.embedding.output_dim == 128 and lstm.dropouts[0].rate == 0.3
    assert lstm.lstm_layers[0].recurrent_dropout == 0  # keeps the cuDNN kernel eligible
    # embedding 10004*128 + LSTM(128->256) + LSTM(256->256) + Dense(256->10004)
    expected = 10_004 * 128 + 4 * 256 * (128 + 256 + 1) + 4 * 256 * (256 + 256 + 1) + 256 * 10_004 + 10_004
    assert count_params(lstm) == expected
    transformer = build_model(ModelConfig(architecture="transformer", vocab_size=100))
    assert isinstance(transformer, TransformerLanguageModel)
    block = transformer.blocks[0]
    assert block.num_heads == 4 and block.intermediate_dim == 512 and transformer.width == 128


@pytest.mark.parametrize("architecture", ["lstm", "transformer"])
def test_initial_loss_is_close_to_log_vocab(architecture):
    model = build_model(ModelConfig(architecture=architecture, vocab_size=VOCAB))
    tokens = np.random.randint(4, VOCAB, (8, 101))
    logits = model(tokens[:, :-1])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(tokens[:, 1:], logits)
    assert abs(float(loss) - math.log(VOCAB)) < 0.05


def test_label_smoothing_matches_one_hot_categorical_crossentropy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 7, 11)).astype("float32") * 3
    targets = rng.integers(1, 11, size=(4, 7))
    ours = SparseCategoricalCrossentropyWithLabelSmoothing(0.1)(targets, logits)
    reference = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(
        keras.ops.one_hot(targets, 11), logits
    )
    np.testing.assert_allclose(float(ours), float(reference), rtol=1e-5)


def test_label_smoothing_ignores_pad_targets():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 6, 9)).astype("float32")
    targets = rng.integers(1, 9, size=(2, 6))
    padded = targets.copy()
    padded[:, 4:] = 0
    loss = SparseCategoricalCrossentropyWithLabelSmoothing(0.1)
    only_real = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(
        keras.ops.one_hot(targets[:, :4], 9), logits[:, :4]
    )
    np.testing.assert_allclose(float(loss(padded, logits)), float(only_real), rtol=1e-5)


@pytest.mark.parametrize("architecture", ["lstm", "transformer"])
def test_overfits_one_batch(architecture):
    config = ModelConfig(
        architecture=architecture, vocab_size=20, embedding_dim=32, lstm_units=64, dropout=0.0, max_len=16
    )
    model = compile_model(
        build_model(config), TrainConfig(learning_rate=1e-2, label_smoothing=0.0, jit_compile="off")
    )
    batch = np.random.default_rng(0).integers(4, 20, size=(4, 17))
    inputs, targets = batch[:, :-1], batch[:, 1:]
    before = model.evaluate(inputs, targets, verbose=0, return_dict=True)
    # 8 epochs x 30 steps on the same batch: few epochs keep Keras's per-epoch overhead low.
    repeated = np.tile(batch, (30, 1))
    model.fit(repeated[:, :-1], repeated[:, 1:], epochs=8, batch_size=4, shuffle=False, verbose=0)
    after = model.evaluate(inputs, targets, verbose=0, return_dict=True)
    assert before["perplexity"] > 15
    assert after["perplexity"] < 1.2


@pytest.mark.parametrize("architecture", ["lstm", "transformer"])
def test_save_load_round_trip(tmp_path, architecture):
    model = build_model(ModelConfig(architecture=architecture, vocab_size=VOCAB, lstm_units=32, max_len=20))
    tokens = np.random.randint(0, VOCAB, (2, 20))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(np.asarray(loaded(tokens)), np.asarray(model(tokens)))


def test_lstm_state_continues_the_sequence():
    model = build_model(ModelConfig(vocab_size=VOCAB, lstm_units=32))
    tokens = np.random.randint(0, VOCAB, (3, 12))
    full = np.asarray(model(tokens))
    _, states = model.call_with_state(tokens[:, :7])
    rest, _ = model.call_with_state(tokens[:, 7:], states)
    np.testing.assert_allclose(np.asarray(rest), full[:, 7:], atol=1e-5)
