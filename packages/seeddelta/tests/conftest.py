"""Shared fixtures: a tiny random LLaMA with a task tokenizer, exported to GGUF once per session."""

from pathlib import Path

import pytest
import torch

from lm_shared.runtime import seed_everything
from seeddelta.gguf_io import write_model_gguf
from seeddelta.model import ModelConfig, TinyLlama
from seeddelta.train import train_tokenizer


@pytest.fixture(scope="session")
def tiny_tok():
    return train_tokenizer(seed=1, n=300, vocab_size=300)


@pytest.fixture(scope="session")
def tiny_model(tiny_tok):
    seed_everything(0)
    # widths are multiples of 32 so Q8_0/Q4_0 apply; init larger than training's so outputs are not flat
    cfg = ModelConfig(
        vocab_size=tiny_tok.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=2,
        max_position=256,
        init_std=0.2,
    )
    model = TinyLlama(cfg)
    model.eval()
    torch.set_num_threads(1)
    return model


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, tiny_model, tiny_tok) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny.f32.gguf"
    return write_model_gguf(tiny_model, tiny_tok, path, dtype="f32")
