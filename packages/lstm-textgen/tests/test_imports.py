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
