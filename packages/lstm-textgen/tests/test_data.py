import numpy as np
import pytest

from lstm_textgen.data import DataConfig, make_dataset, prepare_splits, split_text, window_starts
from lstm_textgen.errors import TextgenError
from lstm_textgen.tokenization import END_ID, START_ID


def test_split_text_is_contiguous_and_cuts_at_line_breaks():
    text = "\n".join(f"line {i:03d}" for i in range(100))
    parts = split_text(text, (0.8, 0.1, 0.1))
    assert "\n".join(parts) == text
    assert all(p.startswith("line ") for p in parts)
    assert abs(len(parts[0]) / len(text) - 0.8) < 0.02


def test_prepare_splits_fits_on_train_and_wraps_each_split(tmp_path, corpus_file):
    config = DataConfig(data=str(corpus_file), split=(0.8, 0.1, 0.1))
    tokenizer, splits, source = prepare_splits(config, tmp_path / "tok")
    assert source == str(corpus_file)
    for split in splits.values():
        assert split.ids[0] == START_ID and split.ids[-1] == END_ID
        assert split.byte_lengths.sum() == len(split.text.encode("utf-8"))
    assert splits["train"].text.startswith("From fairest creatures")  # the BOM is gone
    total = sum(len(s.text) for s in splits.values())
    assert abs(len(splits["train"].text) / total - 0.8) < 0.01


def test_two_fractions_use_the_held_out_part_as_validation_and_test(tmp_path, corpus_file):
    _, splits, _ = prepare_splits(DataConfig(data=str(corpus_file), split=(0.9, 0.1)), tmp_path / "tok")
    assert splits["test"] is splits["validation"]


def test_windows_have_the_configured_length_and_overlap():
    starts = window_starts(1000, seq_len=100, stride=50)
    assert starts[:3].tolist() == [0, 50, 100] and starts[-1] + 101 <= 1000
    assert window_starts(100, seq_len=100, stride=50).size == 0


def _windows(ids, **kw):
    rows = []
    for x, y in make_dataset(ids, **kw):
        x, y = x.numpy(), y.numpy()
        assert (x[:, 1:] == y[:, :-1]).all()  # targets are inputs shifted by one
        rows += [np.concatenate([xi, yi[-1:]]) for xi, yi in zip(x, y)]
    return np.stack(rows)


def test_windows_never_cross_split_boundaries():
    """Each split is windowed on its own: with disjoint id ranges per split, every window of a
    split holds only consecutive ids of that split."""
    splits = {
        "train": np.arange(0, 800),
        "validation": np.arange(10_000, 10_100),
        "test": np.arange(20_000, 20_100),
    }
    for name, ids in splits.items():
        windows = _windows(ids, seq_len=16, stride=8, batch_size=4, shuffle=(name == "train"), seed=1)
        assert windows.min() >= ids.min() and windows.max() <= ids.max()
        assert (np.diff(windows, axis=1) == 1).all()
        assert len(windows) == window_starts(len(ids), 16, 8).size


def test_shuffled_pipeline_is_deterministic_for_a_seed():
    ids = np.arange(500)
    a = _windows(ids, seq_len=10, stride=5, batch_size=8, shuffle=True, seed=3)
    b = _windows(ids, seq_len=10, stride=5, batch_size=8, shuffle=True, seed=3)
    assert (a == b).all() and not (a[:, 0] == np.sort(a[:, 0])).all()


def test_too_short_split_is_a_clear_error():
    with pytest.raises(TextgenError, match="validation split has 50 tokens"):
        make_dataset(np.arange(50), seq_len=100, stride=50, batch_size=2, name="validation")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": (0.5, 0.2)}, "sum to 1"),
        ({"stride": 0}, "stride"),
        ({"tokenizer": "sentencepiece"}, "tokenizer must be"),
        ({"split": (1.0,)}, "2 or 3"),
    ],
)
def test_data_config_validation(kwargs, message):
    with pytest.raises(TextgenError, match=message):
        DataConfig(**kwargs)


def test_corpus_too_small_for_the_split_is_reported(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(TextgenError, match="validation split .* is empty"):
        prepare_splits(DataConfig(data=str(path)), tmp_path / "tok")
