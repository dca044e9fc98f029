from pathlib import Path

import pytest

from lstm_textgen.errors import TextgenError
from lstm_textgen.text import CleaningOptions, clean_text, read_corpus


def test_clean_text_normalises_unicode_whitespace_and_control_characters():
    raw = "Cafe\u0301\r\nline\ttwo  \x00with\u200b zero-width\n\n\n\nend  "
    assert clean_text(raw) == "Café\nline two with zero-width\n\nend"


def test_clean_text_options_lowercase_and_drop_punctuation():
    text = clean_text("Hello, World! It's me.", CleaningOptions(lowercase=True, keep_punctuation=False))
    assert text == "hello world it s me"


def test_read_corpus_tolerates_bom_and_reads_folders_in_order(tmp_path: Path):
    (tmp_path / "b.txt").write_bytes(b"\xef\xbb\xbfsecond")
    (tmp_path / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / ".hidden").write_text("never read", encoding="utf-8")
    text, source = read_corpus(tmp_path)
    assert text == "first\n\nsecond"
    assert source == str(tmp_path)


def test_read_corpus_default_is_embedded():
    text, source = read_corpus(None)
    assert "Shall I compare thee" in text and "embedded" in source


def test_non_utf8_input_names_file_and_line(tmp_path: Path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("ok line\nse\xf1or\n".encode("latin-1"))
    with pytest.raises(TextgenError, match=r"latin1\.txt: not valid UTF-8 at byte 10 \(line 2\)"):
        read_corpus(bad)


@pytest.mark.parametrize("content", [b"", b"  \n\n \t"])
def test_empty_input_is_an_error(tmp_path: Path, content: bytes):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(TextgenError, match="empty"):
        read_corpus(path)


def test_missing_path_is_an_error(tmp_path: Path):
    with pytest.raises(TextgenError, match="no such file or folder"):
        read_corpus(tmp_path / "nope.txt")


def test_clean_prompt_matches_training_cleaning_but_keeps_spacing():
    from lstm_textgen.text import clean_prompt

    options = CleaningOptions(lowercase=True, keep_punctuation=False)
    assert clean_prompt("Cafe\u0301,  Hi ", options) == "café   hi "
    assert clean_prompt("Shall I ") == "Shall I "
