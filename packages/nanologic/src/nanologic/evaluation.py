"""Scoring predicted formalisations against gold ones, and the evaluation report.

Equivalence aligns atoms by their definitions, not their letters: a correct formula that names
"llueve" q instead of p still counts. Predicted atoms whose definition matches no gold atom get
fresh names, so they can never match by accident.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from nanologic.logic import (
    CONNECTORS,
    atoms,
    connectors_used,
    equivalent,
    main_connector,
    rename,
    subformulas,
    to_unicode,
    tree_similarity,
    try_parse,
)

MAIN_LABELS = ("atom", *CONNECTORS)


def normalize_definition(text: str) -> str:
    text = unicodedata.normalize("NFC", text).lower()
    return re.sub(r"[^\w\s]", "", re.sub(r"\s+", " ", text)).strip()


def align_atoms(pred_atoms: dict[str, str], gold_atoms: dict[str, str]) -> dict[str, str]:
    """Map predicted letters to gold letters through equal (normalised) definitions."""
    gold_by_def = {normalize_definition(d): letter for letter, d in gold_atoms.items()}
    mapping = {}
    for i, (letter, definition) in enumerate(pred_atoms.items()):
        mapping[letter] = gold_by_def.get(normalize_definition(definition), f"unmatched{i}")
    return mapping


def atom_f1(pred_atoms: dict[str, str], gold_atoms: dict[str, str]) -> float:
    pred = {normalize_definition(d) for d in pred_atoms.values()}
    gold = {normalize_definition(d) for d in gold_atoms.values()}
    if not pred and not gold:
        return 1.0
    tp = len(pred & gold)
    if tp == 0:
        return 0.0
    precision, recall = tp / len(pred), tp / len(gold)
    return 2 * precision * recall / (precision + recall)


def score_example(pred: dict, gold: dict) -> dict:
    """Every per-example metric; ``pred``/``gold`` have ``atoms`` (letter -> definition) and ``formula``."""
    gold_formula = try_parse(gold["formula"])
    if gold_formula is None:
        raise ValueError(f"gold formula does not parse: {gold['formula']!r}")
    pred_formula = try_parse(pred.get("formula", ""))
    mapping = align_atoms(pred.get("atoms", {}), gold["atoms"])
    result = {
        "parsed": pred_formula is not None,
        "exact_match": pred.get("formula", "").strip() == gold["formula"].strip(),
        "atom_f1": atom_f1(pred.get("atoms", {}), gold["atoms"]),
        "gold_main": main_connector(gold_formula),
    }
    if pred_formula is None:
        result.update(
            normalized_match=False,
            equivalent=False,
            connector_match=False,
            main_connector_match=False,
            pred_main="unparsable",
            partial_credit=0.0,
            subformula_recall=0.0,
        )
    else:
        # Atoms used in the formula but never declared keep their letter prefixed, so they only
        # match a gold atom through a declared definition.
        undeclared = {a: f"undeclared_{a}" for a in atoms(pred_formula) if a not in mapping}
        aligned = rename(pred_formula, {**mapping, **undeclared})
        gold_subs = {to_unicode(n) for n in subformulas(gold_formula)}
        pred_subs = {to_unicode(n) for n in subformulas(aligned)}
        result.update(
            normalized_match=to_unicode(aligned) == to_unicode(gold_formula),
            equivalent=len(atoms(aligned)) <= 16 and equivalent(aligned, gold_formula),
            connector_match=connectors_used(aligned) == connectors_used(gold_formula),
            main_connector_match=main_connector(aligned) == main_connector(gold_formula),
            pred_main=main_connector(aligned),
            partial_credit=tree_similarity(aligned, gold_formula),
            subformula_recall=len(gold_subs & pred_subs) / len(gold_subs),
        )
    # The seed's four compositional levels.
    result["level1_atoms"] = result["atom_f1"] == 1.0
    result["level2_subformulas"] = result["subformula_recall"]
    result["level3_main_connector"] = result["main_connector_match"]
    result["level4_equivalent"] = result["equivalent"]
    return result


def _length_bucket(n_chars: int) -> str:
    for limit in (60, 100, 150, 200):
        if n_chars <= limit:
            return f"≤{limit} chars"
    return ">200 chars"


def aggregate(golds: Sequence[dict], scores: Sequence[dict]) -> dict:
    """The report: overall metrics, breakdowns, confusion matrix, accuracy vs number of atoms."""
    n = len(scores)
    if n == 0:
        raise ValueError("nothing to aggregate: empty test set")

    def mean(key: str, rows: Sequence[dict] = scores) -> float:
        return sum(float(r[key]) for r in rows) / len(rows)

    def breakdown(key_fn) -> dict:
        groups: dict[str, list[dict]] = defaultdict(list)
        for g, s in zip(golds, scores):
            for key in key_fn(g):
                groups[key].append(s)
        return {
            k: {"n": len(v), "equivalence_accuracy": round(mean("equivalent", v), 4)}
            for k, v in sorted(groups.items(), key=lambda kv: str(kv[0]))
        }

    confusion: dict[str, Counter] = defaultdict(Counter)
    for s in scores:
        confusion[s["gold_main"]][s["pred_main"]] += 1
    return {
        "n_test": n,
        "equivalence_accuracy": round(mean("equivalent"), 4),
        "exact_match": round(mean("exact_match"), 4),
        "normalized_match": round(mean("normalized_match"), 4),
        "parse_rate": round(mean("parsed"), 4),
        "atom_f1": round(mean("atom_f1"), 4),
        "connector_accuracy": round(mean("connector_match"), 4),
        "main_connector_accuracy": round(mean("main_connector_match"), 4),
        "partial_credit": round(mean("partial_credit"), 4),
        "compositional": {
            "level1_atoms": round(mean("level1_atoms"), 4),
            "level2_subformulas": round(mean("level2_subformulas"), 4),
            "level3_main_connector": round(mean("level3_main_connector"), 4),
            "level4_equivalent": round(mean("level4_equivalent"), 4),
        },
        "by_complexity": breakdown(lambda g: [g["complexity"]]),
        "by_connector": breakdown(lambda g: [c for c in CONNECTORS if c in g["formula"]]),
        "by_block": breakdown(lambda g: [g.get("block", "unknown")]),
        "by_n_atoms": breakdown(lambda g: [str(len(g["atoms"]))]),
        "by_length": breakdown(lambda g: [_length_bucket(len(g["natural_language_input"]))]),
        "main_connector_confusion": {
            gold: {
                pred: confusion[gold][pred] for pred in (*MAIN_LABELS, "unparsable") if confusion[gold][pred]
            }
            for gold in MAIN_LABELS
            if gold in confusion
        },
    }


def write_report(report: dict, examples: Sequence[dict], out_dir: Path) -> list[Path]:
    """report.json, report.md, predictions.jsonl and PNG charts under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "report.json", out_dir / "report.md", out_dir / "predictions.jsonl"]
    paths[0].write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(markdown_report(report), encoding="utf-8")
    paths[2].write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples), encoding="utf-8")
    paths += write_charts(report, out_dir)
    return paths


def markdown_report(report: dict) -> str:
    lines = [
        "# nanologic evaluation",
        "",
        f"Test examples: **{report['n_test']}** (patterns held out from training).",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in (
        "equivalence_accuracy",
        "exact_match",
        "normalized_match",
        "parse_rate",
        "atom_f1",
        "connector_accuracy",
        "main_connector_accuracy",
        "partial_credit",
    ):
        lines.append(f"| {key} | {report[key]:.4f} |")
    lines += ["", "## Compositional levels", "", "| level | score |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in report["compositional"].items()]
    for section in ("by_complexity", "by_connector", "by_block", "by_n_atoms", "by_length"):
        lines += [
            "",
            f"## Equivalence {section.replace('_', ' ')}",
            "",
            "| group | n | equivalence |",
            "|---|---|---|",
        ]
        lines += [f"| {k} | {v['n']} | {v['equivalence_accuracy']:.4f} |" for k, v in report[section].items()]
    lines += ["", "## Main-connector confusion (rows: gold, columns: predicted)", ""]
    cols = [*MAIN_LABELS, "unparsable"]
    lines += ["| gold \\ pred | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for gold, row in report["main_connector_confusion"].items():
        lines.append(f"| {gold} | " + " | ".join(str(row.get(c, 0)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_charts(report: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, section, title in zip(
        axes,
        ("by_complexity", "by_n_atoms", "by_connector"),
        ("by complexity", "by number of atoms", "by connector present"),
    ):
        keys = list(report[section])
        ax.bar(keys, [report[section][k]["equivalence_accuracy"] for k in keys], color="#4477aa")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"Equivalence {title}")
        for i, k in enumerate(keys):
            ax.text(i, 0.02, f"n={report[section][k]['n']}", ha="center", fontsize=8, color="white")
    fig.tight_layout()
    paths.append(out_dir / "accuracy.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    labels = [*MAIN_LABELS, "unparsable"]
    matrix = [[report["main_connector_confusion"].get(g, {}).get(p, 0) for p in labels] for g in MAIN_LABELS]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(MAIN_LABELS)), MAIN_LABELS)
    ax.set_xlabel("predicted main connector")
    ax.set_ylabel("gold main connector")
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "confusion.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
