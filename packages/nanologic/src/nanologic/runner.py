"""The default end-to-end run and the steps the CLI exposes one by one."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nanologic.data import (
    SPECIAL_TOKENS,
    NanologicError,
    read_jsonl,
    sequence_text,
    write_jsonl,
    write_raw,
)
from nanologic.pipeline import StageReport

console = Console(stderr=True)


# The embedded default dataset: what `nanologic train` generates when no --data is given.
DEFAULT_N_GENERATE = 40_000  # raw generated sentences
DEFAULT_MAX_PER_COMPLEXITY = 8_000  # source sentences kept per complexity level
# The real-sentence development set shipped with the package (issue 13); every run reports on it.
DEV_REAL = Path(__file__).resolve().parents[2] / "data" / "dev_real.jsonl"


def print_report(report: StageReport) -> None:
    table = Table(title=f"{report.stage}: {report.n_in} in, {report.n_out} out", show_header=True)
    table.add_column("rejection reason")
    table.add_column("count", justify="right")
    for reason, count in report.rejected.most_common():
        table.add_row(reason, str(count))
    console.print(table)
    for key, value in report.notes.items():
        console.print(f"  {key}: {json.dumps(value, ensure_ascii=False)}")


def build_dataset(
    data_dir: Path,
    n: int = 8000,
    seed: int = 0,
    kinds: tuple[str, ...] = ("composition",),
    max_per_complexity: int | None = None,
) -> dict:
    """generate -> clean -> verify (deterministic) -> augment -> preprocess, files at each stage."""
    from nanologic.generator import generate
    from nanologic.pipeline import augment, clean, consistency_check, preprocess

    data_dir.mkdir(parents=True, exist_ok=True)
    raw = generate(n, seed=seed)
    write_raw(data_dir / "raw.json", raw)
    cleaned, rep = clean(raw, seed=seed)
    print_report(rep)
    verified, rep = consistency_check(cleaned)
    print_report(rep)
    write_raw(data_dir / "verified.json", verified)
    augmented, rep = augment(verified, kinds=kinds, seed=seed)
    print_report(rep)
    write_raw(data_dir / "augmented.json", augmented)
    splits, rep = preprocess(augmented, max_per_complexity=max_per_complexity, seed=seed)
    print_report(rep)
    for name, rows in splits.items():
        write_jsonl(data_dir / f"{name}.jsonl", rows)
    (data_dir / "stats.json").write_text(json.dumps(rep.to_dict(), ensure_ascii=False, indent=2) + "\n")
    return rep.to_dict()


def train_tokenizer(data_dir: Path, out_dir: Path, vocab_size: int = 8000):
    """BPE over the training split's full sequences (thought included, so both phases are covered)."""
    from lm_shared.tokenization import train_bpe

    rows = read_jsonl(data_dir / "train.jsonl")
    if not rows:
        raise NanologicError(f"{data_dir / 'train.jsonl'}: empty")
    texts = [sequence_text(r, with_thought=True) for r in rows]
    tokenizer = train_bpe(texts, vocab_size, SPECIAL_TOKENS)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out_dir)
    return tokenizer


def evaluate_run(
    run_dir: Path,
    data_path: Path,
    limit: int | None = None,
    batch_size: int = 64,
    repair_tries: int = 2,
    out_dir: Path | None = None,
) -> dict:
    """Decode ``data_path`` and write the report to ``out_dir``: by default ``run_dir/eval`` for
    the run's own test split and ``run_dir/eval-<file stem>`` for any other file, so evaluating
    another split never overwrites the run's test report."""
    from nanologic.inference import Formalizer

    formalizer = Formalizer.from_run(run_dir, repair_tries=repair_tries)
    return evaluate_formalizer(
        formalizer,
        data_path,
        out_dir or default_report_dir(run_dir, data_path),
        limit=limit,
        batch_size=batch_size,
        extra={"repair_tries": repair_tries},
    )


def evaluate_formalizer(
    formalizer,
    data_path: Path,
    out_dir: Path,
    limit: int | None = None,
    batch_size: int = 64,
    extra: dict | None = None,
) -> dict:
    """Run any object with ``formalize(sentences, batch_size=...) -> list[dict]`` (the model, its
    GGUF twin, the rule baseline) over ``data_path`` (a split or a real-sentence set, see
    :func:`nanologic.evaluation.read_gold`) and write report.json/.md, predictions and charts."""
    from nanologic.evaluation import aggregate, read_gold, score_example, write_report

    golds = read_gold(data_path)[:limit]
    if not golds:
        raise NanologicError(f"{data_path}: no examples to evaluate")
    t0 = time.perf_counter()
    preds = formalizer.formalize([g["natural_language_input"] for g in golds], batch_size=batch_size)
    scores = [score_example(p, g) for p, g in zip(preds, golds)]
    report = aggregate(golds, scores)
    report["split"] = Path(data_path).stem
    report.update(extra or {})
    report["decode_seconds"] = round(time.perf_counter() - t0, 2)
    rows = [
        {
            "input": g["natural_language_input"],
            "gold": g["formula"],
            "gold_atoms": g["atoms"],
            "pred": p["formula"],
            "pred_atoms": p["atoms"],
            "complexity": g["complexity"],
            "equivalent": s["equivalent"],
            "grounded": s["grounded"],
            "error_category": s["error_category"],
        }
        for g, p, s in zip(golds, preds, scores)
    ]
    write_report(report, rows, out_dir)
    return report


def default_report_dir(run_dir: Path, data_path: Path) -> Path:
    own_test = Path(data_path).resolve() == (Path(run_dir) / "data" / "test.jsonl").resolve()
    return Path(run_dir) / ("eval" if own_test else f"eval-{Path(data_path).stem}")


def print_eval(report: dict) -> None:
    table = Table(title=f"evaluation on {report.get('split', 'test')} (n={report['n_test']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (
        "equivalence_accuracy",
        "exact_match",
        "normalized_match",
        "atom_f1",
        "connector_accuracy",
        "main_connector_accuracy",
        "partial_credit",
        "grounded_accuracy",
        "equivalence_any_mapping",
    ):
        table.add_row(key, f"{report[key]:.4f}")
    for category, count in report.get("error_categories", {}).items():
        table.add_row(f"error: {category}", str(count))
    for c, v in report["by_complexity"].items():
        table.add_row(f"equivalence ({c}, n={v['n']})", f"{v['equivalence_accuracy']:.4f}")
    console.print(table)


def train_run(
    out: Path,
    *,
    preset: str,
    train_config,
    data_dir: Path | None = None,
    n_generate: int = DEFAULT_N_GENERATE,
    max_per_complexity: int | None = DEFAULT_MAX_PER_COMPLEXITY,
    vocab_size: int = 8000,
    resume: str | None = None,
    eval_limit: int | None = None,
    model_overrides: dict | None = None,
    max_minutes: float | None = None,
    threads: int = 2,
) -> dict:
    """The whole default run; every artefact lands under ``out``."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from lm_shared.runtime import detect_device, detect_precision, save_config, seed_everything
    from lm_shared.stability import HealthConfig
    from lm_shared.stability_lightning import GradientHealthCallback
    from lm_shared.tokenization import BPETokenizer
    from nanologic.inference import save_run_model
    from nanologic.model import NanoLogic, build_config
    from nanologic.training import NanoLogicDataModule, NanoLogicModule, ProgressLog, train_config_dict

    tc = train_config
    seed_everything(tc.seed)
    torch.set_num_threads(max(1, threads))
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    if data_dir is None:
        data_dir = out / "data"
        if not (data_dir / "train.jsonl").exists():
            console.print(
                f"[bold]Generating the embedded dataset[/] ({n_generate} raw examples) in {data_dir}"
            )
            build_dataset(data_dir, n_generate, tc.seed, max_per_complexity=max_per_complexity)
    for split in ("train", "val", "test"):
        if not (data_dir / f"{split}.jsonl").exists():
            raise NanologicError(f"{data_dir / f'{split}.jsonl'}: missing (run `nanologic preprocess`)")
    tok_dir = out / "tokenizer"
    if (tok_dir / "tokenizer.json").exists():
        tokenizer = BPETokenizer.load(tok_dir / "tokenizer.json")
    else:
        tokenizer = train_tokenizer(data_dir, tok_dir, vocab_size)
    model_cfg = build_config(preset, tokenizer.vocab_size, **(model_overrides or {}))
    save_config(model_cfg.to_dict(), out / "model_config.json")
    save_config(train_config_dict(tc), out / "train_config.json")
    device = detect_device()
    # bf16 autocast on CPUs with native bf16 too: ~1.4x the fp32 step here, same accuracy.
    precision = detect_precision(device, cpu_bf16=True) if tc.precision == "auto" else tc.precision

    module = NanoLogicModule(model_cfg.to_dict(), train_config_dict(tc))
    if tc.grad_ckpt:
        module.model.gradient_checkpointing = True
    if tc.compile:
        module.model = torch.compile(module.model)
    n_params = sum(p.numel() for p in module.model.parameters())
    summary = Table(title=f"nanologic run {out}")
    summary.add_column("setting")
    summary.add_column("value")
    for k, v in {
        "preset": preset,
        "parameters": f"{n_params:,}",
        "vocab": tokenizer.vocab_size,
        "width x layers": f"{model_cfg.hidden_size} x {model_cfg.num_layers} (heads {model_cfg.num_heads}/{model_cfg.num_kv_heads})",
        "device / precision": f"{device} / {precision}",
        "optimizer": f"{tc.optimizer} lr={tc.lr} wd={tc.weight_decay}",
        "epochs / batch": f"{tc.max_epochs} / {tc.batch_size} x{tc.accumulate_grad_batches}",
        "data": str(data_dir),
        "threads": torch.get_num_threads(),
    }.items():
        summary.add_row(k, str(v))
    console.print(summary)

    ckpt_dir = out / "checkpoints"
    phases = [("phase1", True, tc.cot_epochs)] if tc.cot_epochs > 0 else []
    phases.append(("phase2", False, tc.max_epochs))
    for phase, with_thought, epochs in phases:
        max_len = model_cfg.max_seq_len
        dm = NanoLogicDataModule(tokenizer, data_dir, out / "cache", tc, max_len, with_thought=with_thought)
        checkpoint = ModelCheckpoint(
            dirpath=ckpt_dir / phase,
            filename="{epoch}-{step}-{val_loss:.4f}",
            monitor="val_loss",
            mode="min",
            save_top_k=3,
            save_last=True,
        )
        callbacks = [
            checkpoint,
            ProgressLog(),
            GradientHealthCallback(
                HealthConfig(clip_norm=tc.grad_clip), checkpoint_path=ckpt_dir / "unhealthy.ckpt"
            ),
        ]
        trainer = L.Trainer(
            max_epochs=epochs,
            max_steps=tc.max_steps,
            max_time={"minutes": max_minutes} if max_minutes else None,
            accelerator="auto",
            devices=1,
            precision=precision,
            accumulate_grad_batches=tc.accumulate_grad_batches,
            val_check_interval=tc.val_check_interval,
            logger=TensorBoardLogger(out / "tensorboard", name=phase),
            callbacks=callbacks,
            detect_anomaly=tc.debug,
            enable_model_summary=False,
            log_every_n_steps=10,
            num_sanity_val_steps=0,
            deterministic=False,
        )
        ckpt_path = None
        if resume and phase == phases[-1][0]:
            ckpt_path = str(ckpt_dir / phase / "last.ckpt") if resume == "last" else resume
            if not Path(ckpt_path).exists():
                raise NanologicError(f"cannot resume: {ckpt_path} does not exist")
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    train_seconds = time.perf_counter() - t_start
    model: NanoLogic = module.eval_model()
    if hasattr(model, "_orig_mod"):
        model = model._orig_mod
    plain = NanoLogic(model_cfg)
    plain.load_state_dict(model.state_dict())
    save_run_model(plain, out)
    console.print(f"[bold]Evaluating[/] on {data_dir / 'test.jsonl'}")
    report = evaluate_run(out, data_dir / "test.jsonl", limit=eval_limit, out_dir=out / "eval")
    report["train_seconds"] = round(train_seconds, 1)
    report["n_parameters"] = n_params
    report["preset"] = preset
    report["precision"] = precision
    report["device"] = device
    from nanologic.pipeline import clause_overlap

    report["clause_overlap"] = clause_overlap(
        read_jsonl(data_dir / "train.jsonl"), read_jsonl(data_dir / "test.jsonl")
    )
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    if DEV_REAL.is_file():
        console.print(f"[bold]Evaluating[/] on the real-sentence development set {DEV_REAL}")
        dev = evaluate_run(out, DEV_REAL, out_dir=out / "eval-dev_real")
        report["dev_real"] = {
            k: dev[k]
            for k in ("n_test", "grounded_accuracy", "equivalence_accuracy", "equivalence_any_mapping")
        }
        report["dev_real"]["error_categories"] = dev.get("error_categories", {})
        print_eval(dev)
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    (out / "eval" / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    print_eval(report)
    overlap = report["clause_overlap"]
    console.print(
        f"test clauses seen in train: {overlap['clauses_in_train']} of {overlap['clauses']}"
        f"; total {report['total_seconds']:.0f} s (training {report['train_seconds']:.0f} s)"
    )
    console.print(f"[bold green]Run directory:[/] {out}  (use it as --checkpoint {out})")
    return report
