import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machine is shared; tiny models only lose time to thread synchronisation.
    torch.set_num_threads(1)
    yield
