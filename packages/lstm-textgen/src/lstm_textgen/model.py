"""The two language models and their loss, top to bottom.

LSTM (the original's architecture)::

    Embedding(vocab, 128, init N(0, 0.01)) -> LSTM 256 -> Dropout 0.3 -> LSTM 256 -> Dropout 0.3
    -> Dense(vocab) logits in float32

Transformer variant (the original's "optional advanced" one)::

    token + learned position embedding (width 4 x 32 = 128)
    -> 1 x TransformerDecoder(4 heads x 32, FFN 512, causal, pre-LayerNorm) -> LayerNorm
    -> Dense(vocab) logits in float32

Both output logits (never softmax: the loss and the samplers take logits) and keep the final
Dense in float32 so mixed precision never rounds the logits. The LSTM keeps every cuDNN condition
(tanh/sigmoid, no ``recurrent_dropout``, ``unroll=False``, biases) and the regularising Dropout
sits between the LSTM layers instead. Library defaults are not restated: the LSTM's glorot/
orthogonal initialisers and ``unit_forget_bias=True`` are Keras's own.

The LSTM exposes its (h, c) states so generation carries them from step to step as the
keras-hub sampler's cache: one token of work per generated token.
"""

from __future__ import annotations

import math

from lstm_textgen import runtime
from lstm_textgen.configs import ARCHITECTURES, ModelConfig  # noqa: F401  (re-exported)
from lstm_textgen.errors import TextgenError
from lstm_textgen.tokenization import PAD_ID

runtime.configure_keras()

import keras  # noqa: E402  (KERAS_BACKEND must be set first)
import keras_hub  # noqa: E402
from keras import ops  # noqa: E402


@keras.saving.register_keras_serializable(package="lstm_textgen")
class LSTMLanguageModel(keras.Model):
    """Stacked LSTM language model; ``call`` maps token ids [B, T] to logits [B, T, vocab]."""

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 128,
        units: int = 256,
        num_layers: int = 2,
        dropout: float = 0.3,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.units = units
        self.num_layers = num_layers
        self.dropout_rate = dropout
        self.embedding = keras.layers.Embedding(
            vocab_size,
            embedding_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="embedding",
        )
        self.lstm_layers = [
            keras.layers.LSTM(units, return_sequences=True, return_state=True, name=f"lstm_{i}")
            for i in range(num_layers)
        ]
        self.dropouts = [keras.layers.Dropout(dropout, name=f"dropout_{i}") for i in range(num_layers)]
        self.head = keras.layers.Dense(vocab_size, dtype="float32", name="logits")

    def build(self, input_shape) -> None:
        batch, steps = input_shape[0], input_shape[1]
        self.embedding.build((batch, steps))
        width = self.embedding_dim
        for lstm in self.lstm_layers:
            lstm.build((batch, steps, width))
            width = self.units
        self.head.build((batch, steps, self.units))
        self.built = True

    def call(self, token_ids, training=None):
        """Next-token logits for every position, from zero states.

        Args:
            token_ids: integer token ids, [B, T] (any T: the LSTM has no context limit).
            training: True applies the Dropout between the LSTM layers.

        Returns:
            float32 logits [B, T, vocab_size]; position t scores the token at t + 1.
        """
        logits, _ = self.call_with_state(token_ids, None, training=training)
        return logits

    def call_with_state(self, token_ids, states=None, training=None):
        """Logits and the final LSTM states, so a later call continues where this one stopped.

        Args:
            token_ids: integer token ids, [B, T].
            states: the previous call's states, [B, 2 * num_layers, units] in the compute dtype
                (h then c for each layer), or None to start from zeros.
            training: True applies the Dropout between the LSTM layers.

        Returns:
            ``(logits, states)``: float32 logits [B, T, vocab_size] and the states after the last
            position, [B, 2 * num_layers, units] in the compute dtype (float16/bfloat16 under
            mixed precision, else float32).
        """
        x = self.embedding(token_ids)
        new_states = []
        for i, (lstm, dropout) in enumerate(zip(self.lstm_layers, self.dropouts)):
            initial = None if states is None else [states[:, 2 * i], states[:, 2 * i + 1]]
            x, h, c = lstm(x, initial_state=initial, training=training)
            x = dropout(x, training=training)
            new_states += [h, c]
        return self.head(x), ops.stack(new_states, axis=1)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "vocab_size": self.vocab_size,
            "embedding_dim": self.embedding_dim,
            "units": self.units,
            "num_layers": self.num_layers,
            "dropout": self.dropout_rate,
        }


@keras.saving.register_keras_serializable(package="lstm_textgen")
class TransformerLanguageModel(keras.Model):
    """Decoder-only Transformer; ``call`` maps token ids [B, T <= max_len] to logits [B, T, vocab]."""

    def __init__(
        self,
        vocab_size: int,
        max_len: int = 100,
        num_heads: int = 4,
        head_dim: int = 32,
        ffn_dim: int = 512,
        num_layers: int = 1,
        dropout: float = 0.1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.ffn_dim = ffn_dim
        self.num_layers = num_layers
        self.dropout_rate = dropout
        self.width = num_heads * head_dim
        self.embedding = keras_hub.layers.TokenAndPositionEmbedding(
            vocabulary_size=vocab_size,
            sequence_length=max_len,
            embedding_dim=self.width,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="embedding",
        )
        # Pre-LayerNorm blocks train stably at Adam 1e-3 without warm-up; causal mask by default.
        self.blocks = [
            keras_hub.layers.TransformerDecoder(
                intermediate_dim=ffn_dim,
                num_heads=num_heads,
                dropout=dropout,
                normalize_first=True,
                name=f"decoder_{i}",
            )
            for i in range(num_layers)
        ]
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")
        # After the final LayerNorm the features have unit variance, so a glorot head would start
        # with logits of std ~1 and a loss well above ln(vocab); N(0, 0.02) (GPT-2's) starts near it.
        self.head = keras.layers.Dense(
            vocab_size,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype="float32",
            name="logits",
        )

    def build(self, input_shape) -> None:
        batch, steps = input_shape[0], input_shape[1]
        self.embedding.build((batch, steps))
        for block in self.blocks:
            block.build((batch, steps, self.width))
        self.final_norm.build((batch, steps, self.width))
        self.head.build((batch, steps, self.width))
        self.built = True

    def call(self, token_ids, training=None):
        """Causal next-token logits for every position.

        Args:
            token_ids: integer token ids, [B, T] with T <= max_len (the position table's size).
            training: True applies the decoder blocks' dropout.

        Returns:
            float32 logits [B, T, vocab_size]; position t sees tokens 0..t only.
        """
        x = self.embedding(token_ids)
        for block in self.blocks:
            x = block(x, training=training)
        return self.head(self.final_norm(x))

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "vocab_size": self.vocab_size,
            "max_len": self.max_len,
            "num_heads": self.num_heads,
            "head_dim": self.head_dim,
            "ffn_dim": self.ffn_dim,
            "num_layers": self.num_layers,
            "dropout": self.dropout_rate,
        }


def build_model(config: ModelConfig) -> keras.Model:
    """Build (and give weights to) the configured model under the current dtype policy.

    Args:
        config: the architecture (``lstm`` or ``transformer``) and its sizes; ``vocab_size``
            must already be the tokenizer's.

    Returns:
        An ``LSTMLanguageModel`` or ``TransformerLanguageModel``, built for [None, max_len] inputs.

    Raises:
        TextgenError: ``config.vocab_size`` is still 0.
    """
    if config.vocab_size == 0:
        raise TextgenError("ModelConfig.vocab_size is 0: set it from the tokenizer before building")
    if config.architecture == "lstm":
        model: keras.Model = LSTMLanguageModel(
            config.vocab_size,
            embedding_dim=config.embedding_dim,
            units=config.lstm_units,
            num_layers=config.lstm_layers,
            dropout=config.dropout,
            name="lstm_lm",
        )
    else:
        model = TransformerLanguageModel(
            config.vocab_size,
            max_len=config.max_len,
            num_heads=config.num_heads,
            head_dim=config.head_dim,
            ffn_dim=config.ffn_dim,
            num_layers=config.transformer_layers,
            dropout=config.transformer_dropout,
            name="transformer_lm",
        )
    model.build((None, config.max_len))
    return model


@keras.saving.register_keras_serializable(package="lstm_textgen")
class SparseCategoricalCrossentropyWithLabelSmoothing(keras.losses.Loss):
    """Cross-entropy on integer targets with label smoothing, ignoring one class (``<PAD>``).

    Keras 3's ``SparseCategoricalCrossentropy`` has no ``label_smoothing`` and the one-hot
    ``CategoricalCrossentropy(label_smoothing=...)`` needs a [B, T, vocab] target tensor (128 MB
    per batch at 10k words). With smoothed targets ``(1 - e) * onehot + e / V`` the loss is
    ``(1 - e) * NLL(y) + e * mean_v(-log p_v)``, computed here from ``log_softmax`` directly.
    Targets equal to ``ignore_class`` get zero loss and are left out of the mean.
    """

    def __init__(
        self,
        label_smoothing: float = 0.1,
        ignore_class: int | None = PAD_ID,
        from_logits: bool = True,
        name: str = "smoothed_sparse_crossentropy",
        reduction: str = "sum_over_batch_size",
        dtype=None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not 0.0 <= label_smoothing < 1.0:
            raise TextgenError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self.ignore_class = ignore_class
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        """Per-token smoothed cross-entropy, before Keras's reduction.

        Args:
            y_true: integer target ids, [B, T].
            y_pred: logits (or probabilities when ``from_logits=False``), [B, T, vocab], any float
                dtype (computed in float32).

        Returns:
            float32 loss in nats, [B, T]; 0 at ``ignore_class`` targets, which carry a Keras mask
            so the mean reduction leaves them out.
        """
        y_true = ops.cast(y_true, "int32")
        y_pred = ops.cast(y_pred, "float32")
        if self.from_logits:
            log_probs = ops.log_softmax(y_pred, axis=-1)
        else:
            log_probs = ops.log(ops.clip(y_pred, keras.config.epsilon(), 1.0))
        safe_targets = ops.maximum(y_true, 0)
        nll = -ops.squeeze(ops.take_along_axis(log_probs, safe_targets[..., None], axis=-1), axis=-1)
        uniform = -ops.mean(log_probs, axis=-1)
        loss = (1.0 - self.label_smoothing) * nll + self.label_smoothing * uniform
        if self.ignore_class is not None:
            valid = ops.not_equal(y_true, self.ignore_class)
            loss = ops.where(valid, loss, 0.0)
            # The same mechanism Keras's own `ignore_class` uses: the reduction averages over the
            # unmasked entries only.
            from keras.src.backend import set_keras_mask

            set_keras_mask(loss, valid)
        return loss

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "reduction": self.reduction,
            "label_smoothing": self.label_smoothing,
            "ignore_class": self.ignore_class,
            "from_logits": self.from_logits,
        }


def perplexity_metric() -> keras.metrics.Metric:
    """keras-hub's token perplexity (exp of the unsmoothed cross-entropy), ``<PAD>`` masked.

    Returns:
        A ``keras_hub.metrics.Perplexity`` named ``perplexity`` that takes logits.
    """
    return keras_hub.metrics.Perplexity(from_logits=True, mask_token_id=PAD_ID, name="perplexity")


def count_params(model: keras.Model) -> int:
    """Number of trainable parameters (scalars) of a built model."""
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))
