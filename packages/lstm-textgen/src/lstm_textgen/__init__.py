"""lstm-textgen: a TensorFlow/Keras 3 LSTM (and small Transformer) text generator.

Keras reads ``KERAS_BACKEND`` once, at its first import, so it is set here before any submodule
imports keras. TensorFlow's C++ INFO/WARNING chatter is silenced unless the user asked for it, and its CUDA
start-up lines are filtered (:func:`lstm_textgen.runtime.quiet_tensorflow_stderr`).
"""

import os

# What the user set, if anything: 0 or 1 asks for TensorFlow's start-up logs unfiltered.
USER_TF_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
