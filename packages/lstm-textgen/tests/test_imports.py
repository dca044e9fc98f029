import importlib
import pkgutil
import re
from pathlib import Path

import lstm_textgen


def test_every_module_imports():
    names = [m.name for m in pkgutil.walk_packages(lstm_textgen.__path__, "lstm_textgen.")]
    assert {"lstm_textgen.model", "lstm_textgen.train", "lstm_textgen.bench"} <= set(names)
    for name in names:
        importlib.import_module(name)


def test_no_module_imports_torch():
    """A TensorFlow package: torch is never a dependency (lm_shared seeds it only if installed)."""
    sources = Path(lstm_textgen.__file__).parent.glob("*.py")
    offenders = [p.name for p in sources if re.search(r"^\s*(import|from)\s+torch\b", p.read_text(), re.M)]
    assert offenders == []


def test_tensorflow_start_up_lines_are_filtered_from_stderr(capfd, monkeypatch):
    # A CPU run printed absl's CUDA probing lines ("Could not find cuda drivers", "failed call to
    # cuInit") on every command (issue 19's user trials); they are written to file descriptor 2
    # directly, so the filter works on the descriptor, and keeps every other line.
    import os

    import lstm_textgen
    from lstm_textgen.runtime import quiet_tensorflow_stderr

    monkeypatch.setattr(lstm_textgen, "USER_TF_LOG_LEVEL", None)
    with quiet_tensorflow_stderr():
        os.write(
            2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        )
        os.write(2, b"I0000 00:00:1.0 1 cudart_stub.cc:31] Could not find cuda drivers on your machine\n")
        os.write(2, b"E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n")
        os.write(2, b"a real problem\n")
    err = capfd.readouterr().err
    assert err == "a real problem\n"

    monkeypatch.setattr(lstm_textgen, "USER_TF_LOG_LEVEL", "0")  # asked for: shown unfiltered
    with quiet_tensorflow_stderr():
        os.write(2, b"I0000 cudart_stub.cc:31] Could not find cuda drivers\n")
    assert "cuda drivers" in capfd.readouterr().err
