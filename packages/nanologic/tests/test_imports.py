import importlib
import pkgutil

import nanologic


def test_every_module_imports():
    names = [m.name for m in pkgutil.iter_modules(nanologic.__path__, "nanologic.")]
    assert len(names) >= 12
    for name in names:
        importlib.import_module(name)
