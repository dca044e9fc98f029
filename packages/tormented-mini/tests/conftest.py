import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors gain nothing from threads, and OpenMP spin-waiting collapses on shared cores.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_config():
    from tormented_mini.modeling_tormented import UltraConfig

    def make(**overrides):
        base = dict(
            model_family="mini",
            vocab_size=97,
            hidden_size=32,
            num_layers=6,
            num_loops=2,
            num_heads=2,
            retention_heads=2,
            norm_type="derf",
            use_factorized_embedding=True,
            embedding_size=16,
            num_experts=3,
            top_k_experts=2,
            ode_steps=1,
            mamba_expand=1,
            mamba_state_size=4,
            titan_memory_chunk=8,
            max_position_embeddings=64,
        )
        base.update(overrides)
        return UltraConfig(**base)

    return make
