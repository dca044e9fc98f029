"""Exploratory analysis of a corpus: counts, sentence lengths, n-grams, lexical diversity.

Statistics are computed on the cleaned text (what the model will see) with the word tokenizer's
splitting rule; n-grams are over lowercased words (punctuation left out) so "The" and "the" count
together. Output: ``eda.md`` plus three PNG plots, written into the output folder.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from lstm_textgen.errors import TextgenError
from lstm_textgen.text import CleaningOptions, clean_text, read_corpus
from lstm_textgen.tokenization import WORD_PATTERN

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))


def corpus_stats(text: str, top: int = 20) -> dict[str, Any]:
    """Token/type counts, type-token ratio, sentence-length distribution and top n-grams."""
    tokens = [t for t in WORD_PATTERN.findall(text) if t != "\n"]
    if not tokens:
        raise TextgenError("the corpus has no words to analyse")
    words = [t.lower() for t in tokens if t[0].isalnum()]
    types = Counter(tokens)
    sentences = [s for s in _SENTENCE_END.split(text) if s.strip()]
    lengths = [sum(1 for t in WORD_PATTERN.findall(s) if t[0].isalnum()) for s in sentences]
    lengths = [n for n in lengths if n > 0]
    return {
        "characters": len(text),
        "utf8_bytes": len(text.encode("utf-8")),
        "distinct_characters": len(set(text)),
        "lines": text.count("\n") + 1,
        "tokens": len(tokens),
        "types": len(types),
        "type_token_ratio": len(types) / len(tokens),
        "words": len(words),
        "word_types": len(set(words)),
        "hapax_legomena": sum(1 for c in Counter(words).values() if c == 1),
        "sentences": len(lengths),
        "sentence_length": {
            "mean": statistics.fmean(lengths) if lengths else 0.0,
            "median": statistics.median(lengths) if lengths else 0,
            "p90": sorted(lengths)[int(0.9 * (len(lengths) - 1))] if lengths else 0,
            "max": max(lengths, default=0),
        },
        "sentence_lengths": lengths,
        "top_ngrams": {n: _ngrams(words, n).most_common(top) for n in (1, 2, 3)},
        "rank_frequency": sorted(Counter(words).values(), reverse=True),
    }


def _plots(stats: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(
        stats["sentence_lengths"], bins=min(50, max(5, len(set(stats["sentence_lengths"])))), color="#4c72b0"
    )
    ax.set_xlabel("words per sentence")
    ax.set_ylabel("sentences")
    ax.set_title("Sentence length distribution")
    fig.tight_layout()
    paths.append(out_dir / "sentence_lengths.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for ax, n in zip(axes, (1, 2, 3)):
        grams = stats["top_ngrams"][n][::-1]
        ax.barh([g for g, _ in grams], [c for _, c in grams], color="#55a868")
        ax.set_title(f"top {len(grams)} {['uni', 'bi', 'tri'][n - 1]}grams")
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    paths.append(out_dir / "top_ngrams.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    freqs = stats["rank_frequency"]
    ax.loglog(range(1, len(freqs) + 1), freqs, marker=".", linestyle="none", color="#c44e52")
    ax.set_xlabel("rank")
    ax.set_ylabel("frequency")
    ax.set_title("Word rank-frequency (Zipf)")
    fig.tight_layout()
    paths.append(out_dir / "zipf.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def write_report(stats: dict[str, Any], source: str, out_dir: Path) -> Path:
    """Write ``eda.md`` and the plots; returns the Markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _plots(stats, out_dir)
    s = stats["sentence_length"]
    lines = [
        "# Corpus analysis",
        "",
        f"Source: `{source}` (after cleaning: NFC, non-printables removed, whitespace normalised).",
        "",
        "| statistic | value |",
        "|---|---:|",
        f"| characters | {stats['characters']:,} |",
        f"| UTF-8 bytes | {stats['utf8_bytes']:,} |",
        f"| distinct characters | {stats['distinct_characters']:,} |",
        f"| lines | {stats['lines']:,} |",
        f"| tokens (words and punctuation) | {stats['tokens']:,} |",
        f"| types | {stats['types']:,} |",
        f"| type/token ratio | {stats['type_token_ratio']:.4f} |",
        f"| words / word types (lowercased) | {stats['words']:,} / {stats['word_types']:,} |",
        f"| hapax legomena (words seen once) | {stats['hapax_legomena']:,} |",
        f"| sentences | {stats['sentences']:,} |",
        f"| sentence length mean / median / p90 / max (words) | {s['mean']:.1f} / {s['median']} / {s['p90']} / {s['max']} |",
        "",
    ]
    for n, name in ((1, "Unigrams"), (2, "Bigrams"), (3, "Trigrams")):
        lines += [f"## Top {name.lower()}", "", "| rank | n-gram | count |", "|---:|---|---:|"]
        lines += [f"| {i} | {g} | {c:,} |" for i, (g, c) in enumerate(stats["top_ngrams"][n], start=1)]
        lines.append("")
    lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    path = out_dir / "eda.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def eda_command(args: Any) -> int:
    raw, source = read_corpus(args.data)
    text = clean_text(raw, CleaningOptions(lowercase=args.lowercase, keep_punctuation=args.keep_punctuation))
    stats = corpus_stats(text, top=args.top)
    path = write_report(stats, source, Path(args.out))
    print(
        f"{stats['tokens']:,} tokens, {stats['types']:,} types (TTR {stats['type_token_ratio']:.3f}), "
        f"{stats['sentences']:,} sentences; wrote {path} and plots in {path.parent}"
    )
    return 0
