"""lstm-textgen: a TensorFlow/Keras 3 LSTM (and small Transformer) text generator.

Keras reads ``KERAS_BACKEND`` once, at its first import, so it is set here before any submodule
imports keras. TensorFlow's C++ INFO/WARNING chatter is silenced unless the user asked for it.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
