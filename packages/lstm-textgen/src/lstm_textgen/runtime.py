"""TensorFlow/Keras runtime set-up: GPU memory growth, precision policy, seeding, threads.

``lm_shared.runtime.detect_precision`` answers for PyTorch; this package asks TensorFlow itself
which GPUs it sees, with the same rule: mixed fp16 on GPUs with fast fp16 (compute capability 7.0
and up), fp32 on CPUs and on Pascal cards such as the P40 whose fp16 throughput is a fraction of
fp32.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Literal

from lstm_textgen.errors import TextgenError

Precision = Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"]
PRECISIONS: tuple[str, ...] = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def configure_keras() -> None:
    """Make sure Keras runs on TensorFlow, whatever imported it first."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    if keras.config.backend() != "tensorflow":
        raise TextgenError(
            f"lstm-textgen needs the TensorFlow backend, but Keras is using {keras.config.backend()!r}; "
            "unset KERAS_BACKEND or set it to 'tensorflow'"
        )


def gpu_devices() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def configure_accelerator(precision: str = "auto") -> dict[str, str]:
    """Turn on GPU memory growth and set the global Keras dtype policy.

    Returns ``{"device": "gpu"|"cpu", "precision": <policy name>}`` for the run's log and config.
    Must run before any model is built (the policy applies to layers created afterwards).
    """
    configure_keras()
    import keras
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise TextgenError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    gpus = gpu_devices()
    for gpu in gpus:
        # RuntimeError: the GPU was already initialised by an earlier call in this process.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    if precision == "auto":
        precision = "float32"
        if gpus:
            capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
            if tuple(capability) >= (7, 0):
                precision = "mixed_float16"
    keras.mixed_precision.set_global_policy(precision)
    return {"device": "gpu" if gpus else "cpu", "precision": precision}


def seed_all(seed: int) -> None:
    """One seed for Python, NumPy, TensorFlow and Keras (through lm_shared's seeding function)."""
    from lm_shared.runtime import seed_everything

    configure_keras()
    import keras

    with warnings.catch_warnings():  # a CPU-only torch, when installed, warns about CUDA here
        warnings.simplefilter("ignore", UserWarning)
        seed_everything(seed)
    keras.utils.set_random_seed(seed)
