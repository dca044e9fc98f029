"""Real-corpus check (slow): a short character-level run on Tiny Shakespeare learns something."""

from pathlib import Path

import pytest

from lstm_textgen.data import DataConfig
from lstm_textgen.model import ModelConfig
from lstm_textgen.train import TrainConfig, train

# The workspace checkout sits beside shared/ (which is never copied into the repository).
CORPUS = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


@pytest.mark.slow
@pytest.mark.skipif(not CORPUS.is_file(), reason="shared/data/tinyshakespeare is not present")
def test_short_lstm_run_beats_uniform_guessing(tmp_path):
    data = DataConfig(data=str(CORPUS), tokenizer="char", split=(0.9, 0.1))
    metrics = train(data, ModelConfig(), TrainConfig(epochs=1, steps_per_epoch=150), tmp_path)
    # 65 characters + 4 specials: uniform guessing is perplexity ~69; 150 steps reach well below 20.
    assert metrics["best_val_perplexity"] < 20
