from pathlib import Path

from lstm_textgen.cli import main
from lstm_textgen.eda import corpus_stats


def test_corpus_stats_counts():
    stats = corpus_stats("The cat sat. The cat ran!\n\nA dog sat.", top=3)
    assert stats["tokens"] == 12 and stats["types"] == 8  # 9 words + 3 punctuation marks
    assert stats["words"] == 9 and stats["sentences"] == 3
    assert stats["sentence_lengths"] == [3, 3, 3]
    assert stats["top_ngrams"][1][:2] == [("the", 2), ("cat", 2)]
    assert stats["top_ngrams"][2][0] == ("the cat", 2)
    assert abs(stats["type_token_ratio"] - 8 / 12) < 1e-9


def test_eda_command_writes_markdown_and_plots(tmp_path: Path, corpus_file: Path, capsys):
    assert main(["eda", "--data", str(corpus_file), "--out", str(tmp_path / "eda")]) == 0
    report = (tmp_path / "eda" / "eda.md").read_text(encoding="utf-8")
    assert "type/token ratio" in report and "## Top trigrams" in report
    for name in ("sentence_lengths.png", "top_ngrams.png", "zipf.png"):
        assert (tmp_path / "eda" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
