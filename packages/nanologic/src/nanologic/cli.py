"""``nanologic <subcommand>``: the data pipeline, training, evaluation and use of the model."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lm_shared.cli_help import DefaultsHelpFormatter, add_bench_device_arguments
from lm_shared.config_cli import (
    ConfigParser,
    Flag,
    add_dataclass_flags,
    config_fields,
    config_parser,
    dump_config,
    instantiate,
    parse,
)
from nanologic.configs import (
    DEFAULT_MAX_PER_COMPLEXITY,
    PRESET_NAMES,
    PRESET_TRAINING,
    TrainInputs,
    TrainOutput,
)
from nanologic.errors import NanologicError

_HELP = DefaultsHelpFormatter
PRESET_CHOICES = PRESET_NAMES


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise argparse.ArgumentTypeError(f"not valid JSON: {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _devices(text: str) -> int | str:
    if text == "auto" or "," in text:
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count, 'auto' or a list like 0,1; got {text!r}"
        ) from None
    if value < 1 and value != -1:
        raise argparse.ArgumentTypeError(f"expected at least 1 device (or -1 for all), got {value}")
    return value


# Where a TrainConfig flag departs from its field: earlier names, choices, the preset's defaults.
def _train_config_flags() -> dict[str, Flag]:
    def by_preset(key: str) -> str:
        values: dict[str, list[str]] = {}
        for preset, defaults in PRESET_TRAINING.items():
            values.setdefault(f"{defaults[key]:g}", []).append(preset)
        return "; ".join(f"{v} for {', '.join(presets)}" for v, presets in values.items())

    return {
        "lr": Flag(help=f"peak learning rate (default: the preset's: {by_preset('lr')})"),
        "max_epochs": Flag(
            name="--epochs",
            aliases=("--max-epochs",),
            help=f"passes over the training set (default: the preset's: {by_preset('max_epochs')})",
        ),
        "optimizer": Flag(choices=("schedulefree", "adamw")),
        "betas": Flag(nargs=2, metavar=("B1", "B2")),
        "ema_decay": Flag(name="--ema", aliases=("--ema-decay",)),
        "accumulate_grad_batches": Flag(aliases=("--accumulate",)),
        "grad_clip": Flag(aliases=("--clip-norm",)),  # the other members' name
        "loss_on": Flag(choices=("output", "all")),
        "curriculum": Flag(help="shuffle freely instead of easy-to-hard complexity order"),
        "checkpoint_every_n_steps": Flag(name="--checkpoint-every", aliases=("--checkpoint-every-n-steps",)),
        "devices": Flag(parse=_devices, metavar="DEVICES"),
        "strategy": Flag(choices=("auto", "ddp", "fsdp")),
    }


TRAIN_INPUT_FLAGS = {
    "preset": Flag(choices=PRESET_NAMES),
    "model_config": Flag(parse=_json_object, metavar="JSON"),
}
TRAIN_OUTPUT_FLAGS = {"resume": Flag(const="last", metavar="PATH")}
# Not part of a run's saved settings: where it goes and what happens to a run already there.
TRAIN_OUTPUT_KEYS = ("out", "resume", "force")


def _train_parser(prog: str = "nanologic train") -> ConfigParser:
    from nanologic.configs import TrainConfig

    parser = config_parser(
        prog,
        "Train a nanologic model: generate the embedded dataset (or read --data), train the tokenizer, "
        "train, evaluate. With no options: the cpu preset, on the CPU.",
    )
    add_dataclass_flags(parser, TrainInputs, flags=TRAIN_INPUT_FLAGS, title="model, data and machine")
    add_dataclass_flags(parser, TrainConfig, "train", flags=_train_config_flags(), title="training")
    add_dataclass_flags(parser, TrainOutput, flags=TRAIN_OUTPUT_FLAGS, title="run folder")
    return parser


def _check_run_options(inputs: TrainInputs) -> None:
    for flag, value, minimum in (
        ("--threads", inputs.threads, 0),
        ("--n-generate", inputs.n_generate, 1),
        ("--max-per-complexity", inputs.max_per_complexity, 1),
        ("--eval-limit", inputs.eval_limit, 1),
    ):
        if value is not None and value < minimum:
            raise NanologicError(f"{flag}: expected an integer >= {minimum}, got {value}")
    if inputs.max_minutes is not None and not inputs.max_minutes > 0:
        raise NanologicError(f"--max-minutes: expected a number > 0, got {inputs.max_minutes}")


def train_inputs_from_flags(parser: ConfigParser, cfg: Any, given: set[str]) -> TrainInputs:
    """The TrainInputs the flags ask for; ``--quick`` halves the sentences per complexity level
    unless ``--max-per-complexity`` was given (and ``cfg``, saved as config.yaml, says so)."""
    inputs = instantiate(parser, cfg, TrainInputs)
    if inputs.quick and "max_per_complexity" not in given:
        inputs = dataclasses.replace(inputs, max_per_complexity=inputs.max_per_complexity // 2)
        cfg["max_per_complexity"] = inputs.max_per_complexity
    return inputs


def train_config_from_flags(parser: ConfigParser, cfg: Any, inputs: TrainInputs):
    """The TrainConfig the flags ask for, with the preset's epochs and learning rate where none was
    given; an out-of-range value names its flag."""
    from nanologic.configs import TrainConfig, TrainConfigError

    try:
        return instantiate(parser, cfg, TrainConfig).for_preset(inputs.preset)
    except TrainConfigError as exc:
        field = str(exc).split(":", 1)[0]
        flags = {f.name: f.option_strings[0] for f in config_fields(parser) if f.cls is TrainConfig}
        flag = flags.get(field)
        raise NanologicError(f"{flag} ({exc})" if flag else str(exc)) from None


def _run_train(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from lm_shared.runtime import make_run_dir
    from nanologic.runner import check_model_request, train_run

    inputs = train_inputs_from_flags(parser, cfg, given)
    output = instantiate(parser, cfg, TrainOutput)
    _check_run_options(inputs)
    tc = train_config_from_flags(parser, cfg, inputs)
    check_model_request(inputs.preset, inputs.vocab_size, inputs.model_config)
    cfg["train.max_epochs"], cfg["train.lr"] = tc.max_epochs, tc.lr  # config.yaml says what ran
    out = output.out or make_run_dir("runs", "nanologic")
    report = train_run(
        Path(out),
        preset=inputs.preset,
        train_config=tc,
        data_dir=inputs.data,
        n_generate=inputs.n_generate,
        max_per_complexity=inputs.max_per_complexity,
        vocab_size=inputs.vocab_size,
        resume=output.resume,
        force=output.force,
        eval_limit=inputs.eval_limit,
        model_overrides=inputs.model_config,
        max_minutes=inputs.max_minutes,
        threads=inputs.threads,
        command_config=dump_config(parser, cfg, exclude=TRAIN_OUTPUT_KEYS),
    )
    if report:  # processes other than the first return no report
        keys = ("equivalence_accuracy", "n_test", "train_seconds", "total_seconds")
        summary = {k: report[k] for k in keys}
        if "dev_real" in report:
            summary["dev_real_grounded_accuracy"] = report["dev_real"]["grounded_accuracy"]
        print(json.dumps(summary))
    return 0


def train_main(argv: list[str] | None = None) -> int:
    """The workspace ``train`` entry point: same as ``nanologic train``."""
    return main(["train", *(sys.argv[1:] if argv is None else argv)])


def _guard(fn) -> int:
    from lm_shared.runs import run_guarded

    return run_guarded(fn)


# ---------------------------------------------------------------------------------------------
# data stages
# ---------------------------------------------------------------------------------------------


def _no_overwrite(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise NanologicError(f"{path} exists; pass --force to overwrite it")


def _cmd_generate(args) -> int:
    from nanologic.data import write_raw
    from nanologic.generator import generate

    _no_overwrite(args.out, args.force)
    examples = generate(args.n, seed=args.seed)
    write_raw(args.out, examples)
    clauses = {a["definition"] for e in examples for a in e["thought"]["identified_atoms"]}
    print(f"generated {len(examples)} examples ({len(clauses)} distinct clauses) -> {args.out}")
    return 0


def _read_stage_input(path: Path, cleaned: bool = True) -> list[dict]:
    """A stage's input examples: refused when empty, or (after `clean`) when one is not a cleaned
    example, naming the file, the example and the field (a skipped stage shows up here)."""
    from nanologic.data import read_raw, schema_problem
    from nanologic.logic import try_parse

    examples = read_raw(path)
    if not examples:
        raise NanologicError(f"{path}: no examples")
    if cleaned:
        for i, ex in enumerate(examples):
            problem = schema_problem(ex)
            if problem is None and try_parse(ex["output"]["formula"]) is None:
                problem = "output.formula: not a parsable formula"
            if problem is not None:
                raise NanologicError(
                    f"{path}: example {i}: {problem} (expected `nanologic clean` output; was a stage skipped?)"
                )
    return examples


def _write_stage_output(args, out: list[dict], report) -> None:
    from nanologic.data import write_raw

    if not out:
        reasons = ", ".join(f"{r} ({n})" for r, n in report.rejected.most_common(3))
        raise NanologicError(f"{args.input}: no example survived {report.stage}: {reasons or 'none kept'}")
    write_raw(args.out, out)


def _stage(args, fn, cleaned: bool = True, **kwargs) -> int:
    from nanologic.runner import print_report

    _no_overwrite(args.out, args.force)
    examples = _read_stage_input(args.input, cleaned)
    out, report = fn(examples, **kwargs)
    print_report(report)
    _write_stage_output(args, out, report)
    print(f"{report.n_in} -> {report.n_out} examples -> {args.out}")
    return 0


def _cmd_clean(args) -> int:
    from nanologic.pipeline import clean

    return _stage(
        args,
        clean,
        cleaned=False,
        seed=args.seed,
        max_trivial_fraction=args.max_trivial_fraction,
        min_chars=args.min_chars,
    )


def _cmd_verify(args) -> int:
    from nanologic.pipeline import consistency_check
    from nanologic.runner import print_report

    _no_overwrite(args.out, args.force)
    examples = _read_stage_input(args.input)
    kept, report = consistency_check(examples)
    print_report(report)
    if args.llm:
        from nanologic.llm_verify import LLMVerifier, verify_with_llm

        verifier = LLMVerifier(
            base_url=args.base_url or os.environ.get("NANOLOGIC_API_BASE", ""),
            model=args.model or os.environ.get("NANOLOGIC_MODEL", ""),
            api_key=args.api_key or os.environ.get("NANOLOGIC_API_KEY", ""),
            cache_path=args.cache,
            max_retries=args.retries,
            requests_per_minute=args.rpm,
            price_in=args.price_in,
            price_out=args.price_out,
        )
        kept, llm_report = verify_with_llm(kept, verifier)
        print_report(llm_report)
    _write_stage_output(args, kept, report)
    print(f"{len(examples)} -> {len(kept)} examples -> {args.out}")
    return 0


def _cmd_augment(args) -> int:
    from nanologic.pipeline import augment

    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    try:
        return _stage(args, augment, kinds=kinds, per_example=args.per_example, seed=args.seed)
    except ValueError as exc:
        raise NanologicError(str(exc)) from None


def _cmd_preprocess(args) -> int:
    from nanologic.pipeline import preprocess
    from nanologic.runner import print_report, write_splits

    if args.max_per_complexity is not None and args.max_per_complexity < 1:
        raise NanologicError(f"--max-per-complexity: expected an integer >= 1, got {args.max_per_complexity}")
    for split in ("train", "val", "test"):
        _no_overwrite(args.out / f"{split}.jsonl", args.force)
    examples = _read_stage_input(args.input)
    splits, report = preprocess(examples, max_per_complexity=args.max_per_complexity, seed=args.seed)
    print_report(report)
    for name, rows in splits.items():
        if not rows:
            raise NanologicError(
                f"{args.input}: too few examples for a {name} split ({len(examples)} in); nothing written"
            )
    write_splits(args.out, splits, report)
    print(f"train/val/test = {report.notes['splits']} -> {args.out}")
    return 0


def _cmd_train_tokenizer(args) -> int:
    from nanologic.runner import MIN_VOCAB_SIZE, check_records, train_tokenizer

    if args.vocab_size < MIN_VOCAB_SIZE:
        raise NanologicError(f"--vocab-size: expected at least {MIN_VOCAB_SIZE}, got {args.vocab_size}")
    _no_overwrite(args.out / "tokenizer.json", args.force)
    check_records(args.data / "train.jsonl")
    tok = train_tokenizer(args.data, args.out, args.vocab_size)
    print(f"tokenizer with {tok.vocab_size} tokens -> {args.out / 'tokenizer.json'}")
    return 0


# ---------------------------------------------------------------------------------------------
# evaluation and use
# ---------------------------------------------------------------------------------------------


def _cmd_evaluate(args) -> int:
    from nanologic.runner import default_report_dir, evaluate_run, print_eval

    if args.baseline is not None:
        if args.data is None:
            raise NanologicError("--baseline needs --data FILE.jsonl")
        return _evaluate_baseline(args.data, args.out, args.limit)
    if args.checkpoint is None:
        raise NanologicError("give --run DIR (a trained run; or --checkpoint DIR) or --baseline rules")
    data = args.data or (args.checkpoint / "data" / "test.jsonl")
    constraint = "grounded" if args.grounded else ("format" if args.constrained else None)
    out = args.out or default_report_dir(args.checkpoint, data, constraint)
    report = evaluate_run(
        args.checkpoint,
        data,
        limit=args.limit,
        repair_tries=args.repair_tries,
        out_dir=out,
        constraint=constraint,
    )
    print_eval(report)
    print(f"report -> {out}")
    return 0


def _evaluate_baseline(data: Path, out: Path | None, limit: int | None) -> int:
    from nanologic.baseline import RuleFormalizer
    from nanologic.runner import evaluate_formalizer, print_eval

    out = out or Path("runs") / "baseline-rules" / f"eval-{data.stem}"
    report = evaluate_formalizer(RuleFormalizer(), data, out, limit=limit, extra={"formalizer": "rules"})
    print_eval(report)
    print(f"report -> {out}")
    return 0


def _cmd_baseline(args) -> int:
    from nanologic.baseline import RuleFormalizer

    if args.data is None and not args.sentence:
        raise NanologicError("give sentences to formalise, or --data FILE.jsonl to evaluate the baseline")
    for sentence, res in zip(args.sentence, RuleFormalizer().formalize(args.sentence)):
        print(sentence)
        for letter, definition in res["atoms"].items():
            print(f"  {letter}: {definition}")
        print(f"  fórmula: {res['formula']}")
    if args.data is not None:
        return _evaluate_baseline(args.data, args.out, args.limit)
    return 0


def _cmd_formalize(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from nanologic.data import read_jsonl, write_jsonl
    from nanologic.inference import formalize_output_row
    from nanologic.logic import format_truth_table, parse

    if args.input is None and not args.sentence:
        raise NanologicError("give a sentence, or --input FILE.jsonl --output FILE.jsonl")
    if args.input is not None and args.output is None:
        raise NanologicError("--input needs --output")
    formalizer = _formalizer(args)
    if args.input is not None:
        _no_overwrite(args.output, args.force)
        rows = read_jsonl(args.input, required=("input",))
        if not rows:
            raise NanologicError(f'{args.input}: no sentences (expected JSONL lines like {{"input": "..."}})')
        results = formalizer.formalize([r["input"] for r in rows])
        out_rows = [formalize_output_row(row, res) for row, res in zip(rows, results)]
        write_jsonl(args.output, out_rows)
        print(f"{len(out_rows)} sentences -> {args.output}")
        return 0
    console = Console()
    for sentence, res in zip(args.sentence, formalizer.formalize(args.sentence)):
        console.print(f"[bold]{sentence}[/]")
        for letter, definition in res["atoms"].items():
            console.print(f"  {letter}: {definition}")
        console.print("  conectores: " + " | ".join(f"{s}: {c}" for s, c in res["connectors"]))
        console.print(f"  fórmula: [bold cyan]{res['formula']}[/]   ({res['formula_ascii']})")
        if res["valid_formula"]:
            rows = format_truth_table(parse(res["formula"]))
            table = Table(*rows[0])
            for row in rows[1:]:
                table.add_row(*row)
            console.print(table)
        else:
            console.print("  [red]the model's formula does not parse[/]")
    return 0


def _formalizer(args):
    """The PyTorch Formalizer (--run) or the llama.cpp one (--gguf), with the constraint."""
    if (args.checkpoint is None) == (args.gguf is None):
        raise NanologicError("give exactly one of --run DIR (PyTorch) or --gguf FILE.gguf (llama.cpp)")
    constraint = "grounded" if args.grounded else ("format" if args.constrained else None)
    if args.gguf is not None:
        from nanologic.llamacpp import LlamaCppFormalizer

        return LlamaCppFormalizer.from_gguf(args.gguf, grammar=constraint or False)
    from nanologic.inference import Formalizer

    return Formalizer.from_run(args.checkpoint, constraint=constraint)


def _add_backend_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run", "--checkpoint", dest="checkpoint", type=Path, help="a trained run directory (PyTorch)"
    )
    p.add_argument("--gguf", type=Path, help="an exported GGUF, run in llama.cpp (llama-cpp-python)")
    p.add_argument(
        "--constrained",
        "--grammar",
        action="store_true",
        help="decode under the answer grammar (atoms in order, formula over declared letters, parses)",
    )
    p.add_argument(
        "--grounded",
        action="store_true",
        help="like --constrained, and atom definitions only use the sentence's words",
    )


def _cmd_check(args) -> int:
    from rich.console import Console

    from nanologic.argument import check_argument
    from nanologic.inference import shared_atoms, split_argument
    from nanologic.logic import FormulaError, to_unicode

    console = Console()
    definitions: dict[str, str] = {}
    if args.premises or args.conclusion:
        if not (args.premises and args.conclusion):
            raise NanologicError("--premise (one or more) and --conclusion go together")
        try:
            result = check_argument(args.premises, args.conclusion)
        except FormulaError as exc:
            raise NanologicError(f"unparsable formula: {exc}") from None
    else:
        if (args.checkpoint is None and args.gguf is None) or args.text is None:
            raise NanologicError(
                "give --run DIR (or --gguf FILE) and an argument text, or --premise/--conclusion formulas"
            )
        premises_text, conclusion_text = split_argument(args.text)
        formalizer = _formalizer(args)
        formulas, definitions = shared_atoms(formalizer.formalize([*premises_text, conclusion_text]))
        for sentence, f in zip([*premises_text, conclusion_text], formulas):
            console.print(f"  {sentence}  ->  {to_unicode(f)}")
        result = check_argument(formulas[:-1], formulas[-1])
    for letter, definition in definitions.items():
        console.print(f"  {letter}: {definition}")
    console.print("  premisas: " + " ; ".join(result.premises) + f"   ⊢ {result.conclusion}")
    if result.valid:
        console.print(f"[bold green]VÁLIDO[/] — {result.form or 'forma válida (sin nombre clásico)'}")
    else:
        console.print(f"[bold red]INVÁLIDO[/] — {result.fallacy or 'falacia formal (sin nombre clásico)'}")
        row = ", ".join(f"{k} = {'V' if v else 'F'}" for k, v in result.counterexample.items())
        console.print(f"  contraejemplo: {row} (premisas verdaderas, conclusión falsa)")
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    return 0 if result.valid or not args.exit_code else 1


def _cmd_export(args) -> int:
    from nanologic.export import export_gguf

    _no_overwrite(args.out, args.force)
    path = export_gguf(
        args.checkpoint, args.out, dtype=args.dtype, allow_final_softcap=args.allow_final_softcap
    )
    print(f"wrote {path} and its answer grammar {path.with_suffix('.gbnf')}")
    return 0


def _cmd_bench(args) -> int:
    from nanologic.bench import run_bench

    run_bench(args.out, quick=args.quick, threads=args.threads, device=args.device, compile=args.compile)
    return 0


def _read_auth_file(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        raise NanologicError(f"{path}: file not found")
    pairs = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, password = line.strip().partition(":")
        if not sep or not user or not password:
            raise NanologicError(f"{path}:{lineno}: expected 'user:password'")
        pairs.append((user, password))
    if not pairs:
        raise NanologicError(f"{path}: no 'user:password' line")
    return pairs


def _check_port_free(host: str, port: int) -> None:
    import socket

    if not 0 < port < 65536:
        raise NanologicError(f"--port {port}: expected a port number between 1 and 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise NanologicError(
                f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port"
            ) from None


def _cmd_serve(args) -> int:
    from nanologic.app import serve

    if args.checkpoint is not None and args.gguf is not None:
        raise NanologicError("--run (--checkpoint) and --gguf are alternatives: give one")
    auth = _read_auth_file(args.auth_file) if args.auth_file is not None else None
    if args.host not in ("127.0.0.1", "localhost", "::1") and auth is None:
        print(
            f"warning: serving on {args.host} without --auth-file: anyone who reaches this port can use "
            "the app (see the README on exposing it safely)",
            file=sys.stderr,
        )
    _check_port_free(args.host, args.port)
    serve(
        checkpoint=args.checkpoint,
        gguf=args.gguf,
        port=args.port,
        host=args.host,
        auth=auth,
        runs_dir=args.runs_dir,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``nanologic`` command line: a subcommand per pipeline stage, then training and use."""
    parser = argparse.ArgumentParser(prog="nanologic", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate_command(sub)
    _add_clean_command(sub)
    _add_verify_command(sub)
    _add_augment_command(sub)
    _add_preprocess_command(sub)
    _add_train_tokenizer_command(sub)
    _add_train_command(sub)
    _add_evaluate_command(sub)
    _add_baseline_command(sub)
    _add_formalize_command(sub)
    _add_check_command(sub)
    _add_export_gguf_command(sub)
    _add_bench_command(sub)
    _add_serve_command(sub)
    return parser


def _add_generate_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate", formatter_class=_HELP, help="generate raw Spanish examples (seed schema JSON)"
    )
    p.add_argument("--n", type=int, default=8000, help="raw examples to generate")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same output)")
    p.add_argument("--out", type=Path, default=Path("data/raw.json"), help="output JSON file")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(fn=_cmd_generate)


def _add_clean_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "clean",
        formatter_class=_HELP,
        help="parse, check atoms, dedup, subsample trivial formulas, normalise",
    )
    p.add_argument("input", type=Path, help="input file (seed-schema JSON or JSONL) from the previous stage")
    p.add_argument("--out", type=Path, required=True, help="output JSON file")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same output)")
    p.add_argument(
        "--max-trivial-fraction", type=float, default=0.05, help="largest share of trivial formulas kept"
    )
    p.add_argument("--min-chars", type=int, default=5, help="shortest sentence kept, in characters")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(fn=_cmd_clean)


def _add_verify_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", formatter_class=_HELP, help="deterministic consistency check, plus an optional LLM check"
    )
    p.add_argument("input", type=Path, help="input file (seed-schema JSON or JSONL) from the previous stage")
    p.add_argument("--out", type=Path, required=True, help="output JSON file")
    p.add_argument("--llm", action="store_true", help="also ask an OpenAI-compatible chat API")
    p.add_argument("--base-url", help="API base URL (or NANOLOGIC_API_BASE)")
    p.add_argument("--model", help="model name (or NANOLOGIC_MODEL)")
    p.add_argument("--api-key", help="API key (or NANOLOGIC_API_KEY)")
    p.add_argument(
        "--cache",
        type=Path,
        default=Path("data/verify_cache.jsonl"),
        help="JSONL cache of LLM answers (reruns cost nothing)",
    )
    p.add_argument("--retries", type=int, default=4, help="retries of a failed API request")
    p.add_argument("--rpm", type=float, default=60.0, help="requests per minute")
    p.add_argument("--price-in", type=float, default=0.0, help="USD per 1M prompt tokens")
    p.add_argument("--price-out", type=float, default=0.0, help="USD per 1M completion tokens")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(fn=_cmd_verify)


def _add_augment_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "augment", formatter_class=_HELP, help="AST rewrites proven by truth table, and compositions"
    )
    p.add_argument("input", type=Path, help="input file (seed-schema JSON or JSONL) from the previous stage")
    p.add_argument("--out", type=Path, required=True, help="output JSON file")
    p.add_argument(
        "--kinds",
        default="implication,de_morgan,double_negation,commutativity,composition",
        help="comma-separated rewrites to apply",
    )
    p.add_argument("--per-example", type=int, default=1, help="rewrites per example and kind")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same output)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(fn=_cmd_augment)


def _add_preprocess_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "preprocess", formatter_class=_HELP, help="balance, grouped pattern split 80/10/10, curriculum"
    )
    p.add_argument("input", type=Path, help="input file (seed-schema JSON or JSONL) from the previous stage")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same output)")
    p.add_argument(
        "--max-per-complexity",
        type=int,
        default=DEFAULT_MAX_PER_COMPLEXITY,
        help="at most this many source sentences per complexity level (as `train` uses)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(fn=_cmd_preprocess)


def _add_train_tokenizer_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-tokenizer", formatter_class=_HELP, help="BPE with the 10 special tokens at ids 0-9"
    )
    p.add_argument("--data", type=Path, required=True, help="directory with train.jsonl")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--vocab-size", type=int, default=8000, help="BPE vocabulary size (upper bound)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(fn=_cmd_train_tokenizer)


def _add_train_command(sub: argparse._SubParsersAction) -> None:
    # its flags are _train_parser's (main hands `train` to it); listed here for `nanologic --help`
    sub.add_parser("train", add_help=False, help="train (the same trainer as `uv run train`)")


def _add_evaluate_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        formatter_class=_HELP,
        help="evaluate a run (or the rule baseline) on a split or a real-sentence set",
    )
    p.add_argument("--run", "--checkpoint", dest="checkpoint", type=Path, help="trained run directory")
    p.add_argument(
        "--data",
        type=Path,
        help="JSONL split, or a real-sentence set such as data/dev_real.jsonl (default: the run's test split)",
    )
    p.add_argument("--baseline", choices=("rules",), help="evaluate the rule-based baseline instead of a run")
    p.add_argument(
        "--out",
        type=Path,
        help="report directory (default: DIR/eval for the run's test split, DIR/eval-<stem> otherwise)",
    )
    p.add_argument("--limit", type=int, help="evaluate only the first N examples")
    p.add_argument(
        "--repair-tries",
        type=int,
        default=2,
        help="re-decodes of an output that defines two atoms by the same clause (0 = plain greedy)",
    )
    p.add_argument(
        "--constrained",
        "--grammar",
        action="store_true",
        help="decode under the answer grammar (report in DIR/eval[-<stem>]-format)",
    )
    p.add_argument(
        "--grounded",
        action="store_true",
        help="like --constrained, and atom definitions only use the sentence's words (report in …-grounded)",
    )
    p.set_defaults(fn=_cmd_evaluate)


def _add_baseline_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baseline",
        formatter_class=_HELP,
        help="the rule-based formaliser over the generator's cues (issue 13 baseline)",
    )
    p.add_argument("sentence", nargs="*", help="sentences to formalise")
    p.add_argument("--data", type=Path, help="evaluate on this JSONL (a split or data/dev_real.jsonl)")
    p.add_argument("--out", type=Path, help="report directory (default: runs/baseline-rules/eval-<stem>)")
    p.add_argument("--limit", type=int)
    p.set_defaults(fn=_cmd_baseline)


def _add_formalize_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "formalize", formatter_class=_HELP, help="sentence(s) -> atoms, connectors, formula, truth table"
    )
    p.add_argument("sentence", nargs="*", help="Spanish sentence(s) to formalise")
    _add_backend_flags(p)
    p.add_argument("--input", type=Path, help="JSONL with a string field 'input' per line")
    p.add_argument("--output", type=Path, help="output JSONL (with --input)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(fn=_cmd_formalize)


def _add_check_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check", formatter_class=_HELP, help="validity of an argument (text with a model, or formulas)"
    )
    p.add_argument(
        "text", nargs="?", help="argument text: premise sentences, the last sentence is the conclusion"
    )
    _add_backend_flags(p)
    p.add_argument("--premise", dest="premises", action="append", default=[], help="a premise formula")
    p.add_argument("--conclusion", help="the conclusion formula")
    p.add_argument("--json", action="store_true", help="also print the result as JSON")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when the argument is invalid")
    p.set_defaults(fn=_cmd_check)


def _add_export_gguf_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-gguf", formatter_class=_HELP, help="write a llama.cpp GGUF (llama architecture)"
    )
    p.add_argument(
        "--run", "--checkpoint", dest="checkpoint", type=Path, required=True, help="trained run directory"
    )
    p.add_argument("--out", type=Path, required=True, help="output .gguf file")
    p.add_argument("--dtype", choices=("f32", "f16"), default="f32", help="weight type in the GGUF")
    p.add_argument(
        "--allow-final-softcap", action="store_true", help="drop the final soft-cap (greedy unchanged)"
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(fn=_cmd_export)


def _add_bench_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        formatter_class=_HELP,
        help="throughput, padding/packing efficiency, KV-cache and llama.cpp speed",
    )
    p.add_argument("--out", type=Path, default=Path("bench.json"), help="output JSON report")
    p.add_argument("--quick", action="store_true", help="smaller sizes (for tests)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    add_bench_device_arguments(p, compile_help="torch.compile both models before timing them")
    p.set_defaults(fn=_cmd_bench)


def _add_serve_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="web app: formalise, truth tables, arguments, JSONL batches")
    p.add_argument(
        "--run",
        "--checkpoint",
        dest="checkpoint",
        type=Path,
        help="trained run directory (default: the newest under --runs-dir)",
    )
    p.add_argument("--gguf", type=Path, help="a GGUF exported with export-gguf (llama.cpp backend)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: this machine only; see the README)"
    )
    p.add_argument("--auth-file", type=Path, help="file of 'user:password' lines: the page asks to log in")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where to look for the newest run")
    p.set_defaults(fn=_cmd_serve)


# Commands whose flags come from config dataclasses (lm_shared.config_cli): name -> (parser, run).
CONFIG_COMMANDS: dict[
    str, tuple[Callable[[str], ConfigParser], Callable[[ConfigParser, Any, set[str]], int]]
] = {
    "train": (_train_parser, _run_train),
}


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a user error is one ``error: ...`` line (exit 2), Ctrl-C one line (exit 130)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in CONFIG_COMMANDS:
        make_parser, command = CONFIG_COMMANDS[argv[0]]
        parser = make_parser(f"nanologic {argv[0]}")
        cfg, given = parse(parser, argv[1:])
        return _guard(lambda: command(parser, cfg, given))
    args = build_parser().parse_args(argv)
    return _guard(lambda: args.fn(args))


if __name__ == "__main__":
    raise SystemExit(main())
