"""TensorFlow/Keras runtime set-up: GPU memory growth, precision policy, seeding, threads.

``lm_shared.runtime.detect_precision`` answers for PyTorch; this package asks TensorFlow itself
which GPUs it sees, with the same rule: mixed fp16 on GPUs with fast fp16 (compute capability 7.0
and up), fp32 on CPUs and on Pascal cards such as the P40 whose fp16 throughput is a fraction of
fp32.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from lstm_textgen.errors import TextgenError

DEFAULT_RUNS_ROOT = Path("runs") / "lstm-textgen"
"""Where ``train`` puts a run without ``--out`` (a UTC-time folder under it)."""

Precision = Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"]
PRECISIONS: tuple[str, ...] = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


# TensorFlow's C++ start-up lines on a machine without a usable GPU (absl writes them straight to
# file descriptor 2, before TF_CPP_MIN_LOG_LEVEL is read): CUDA probing, oneDNN and CPU-flag notes.
_TF_NOISE = re.compile(
    r"(cuda|cudnn|cufft|cublas|cuInit|absl::InitializeLog|computation placer|TF_ENABLE_ONEDNN_OPTS|"
    r"oneDNN custom operations|appropriate compiler flags|binary is optimized to use available CPU)",
    re.IGNORECASE,
)


@contextlib.contextmanager
def quiet_tensorflow_stderr() -> Iterator[None]:
    """Filter TensorFlow's C++ start-up chatter out of stderr while the body runs.

    Everything written to file descriptor 2 meanwhile (Python warnings included) is captured and
    written back afterwards, less the lines matching :data:`_TF_NOISE`. A user who asked for
    TensorFlow's logs (``TF_CPP_MIN_LOG_LEVEL`` 0 or 1 before lstm-textgen was imported) gets
    them unfiltered.
    """
    from lstm_textgen import USER_TF_LOG_LEVEL

    if USER_TF_LOG_LEVEL in ("0", "1"):
        yield
        return
    with contextlib.ExitStack() as stack:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no real stderr (an embedding host): nothing to filter
            yield
            return
        captured = stack.enter_context(tempfile.TemporaryFile())
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line
                for line in captured.read().decode("utf-8", "replace").splitlines()
                if line.strip() and not _TF_NOISE.search(line)
            ]
            if kept:
                print("\n".join(kept), file=sys.stderr, flush=True)


def configure_keras() -> None:
    """Make sure Keras runs on TensorFlow, whatever imported it first."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if "keras" not in sys.modules:
        with quiet_tensorflow_stderr():
            import keras  # noqa: F401 - the first import, with TensorFlow's start-up lines filtered
    import keras

    if keras.config.backend() != "tensorflow":
        raise TextgenError(
            f"lstm-textgen needs the TensorFlow backend, but Keras is using {keras.config.backend()!r}; "
            "unset KERAS_BACKEND or set it to 'tensorflow'"
        )


def gpu_devices() -> list:
    import tensorflow as tf

    with quiet_tensorflow_stderr():  # the first call initialises CUDA (and says so when it fails)
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
