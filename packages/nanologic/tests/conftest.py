import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Small tensors: one thread avoids OpenMP spin-waiting, which dominates on a shared 2-core box.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A small trained run (tiny preset, a few steps): a real checkpoint for the app's tests."""
    from nanologic.cli import train_main

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    args = "--preset tiny --n-generate 300 --max-steps 6 --eval-limit 4 --threads 1 --batch-size 16"
    assert train_main([*args.split(), "--vocab-size", "600", "--out", str(out)]) == 0
    return out
