"""Real-corpus checks (slow: deselected by default; run with `-m slow`)."""

from pathlib import Path

import pytest

from infinito_iit.data import load_corpus, prepare_data
from infinito_iit.model import preset
from infinito_iit.train import TrainConfig, train

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def corpus_path(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} not present (the shared corpora live outside the repository)")
    return path


@pytest.mark.slow
def test_quijote_bom_and_bytes():
    corpus = load_corpus(corpus_path("quijote", "quijote.txt"))
    assert not corpus.train.startswith("\ufeff")
    data = prepare_data(corpus, 128, vocab_size=2048)
    # Spanish text has accented letters: bytes exceed characters, and bpb uses bytes.
    assert data.valid.n_bytes > len(corpus.valid)


@pytest.mark.slow
def test_shakespeare_cpu_model_learns(tmp_path):
    path = corpus_path("tinyshakespeare", "input.txt")
    result = train(
        preset("cpu"),
        TrainConfig(data=str(path), vocab_size=2048, max_steps=150, eval_every=75),
        tmp_path / "run",
        log=lambda s: None,
        progress=False,
    )
    # A uniform guess over 2048 tokens costs 11 bits per token (~4.3 bits per byte here).
    assert result.final["bits_per_byte"] < 3.2
