"""``nanologic <subcommand>``: the data pipeline, training, evaluation and use of the model."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lm_shared.config_cli import (
    Command,
    ConfigParser,
    Flag,
    add_dataclass_flags,
    config_fields,
    config_parser,
    dump_config,
    instantiate,
    program_parser,
    run_command,
    take_saved_settings,
)
from nanologic import stages
from nanologic.configs import (
    AUGMENTATION_KINDS,
    PRESET_NAMES,
    PRESET_TRAINING,
    AugmentConfig,
    CleanConfig,
    PreprocessConfig,
    StageFiles,
    TrainInputs,
    TrainOutput,
    VerifyConfig,
    options_from_flags,
)
from nanologic.errors import NanologicError
from nanologic.text_report import run_text_report, text_report_parser

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
        "compile": Flag(choices=("auto", "on", "off"), const="on"),  # --compile alone: on, as before
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
    if not 0.0 <= inputs.symbolic_share <= 1.0:
        raise NanologicError(f"--symbolic-share: expected a number in [0, 1], got {inputs.symbolic_share}")
    if not 0.0 <= inputs.comma_less_share <= 1.0:
        raise NanologicError(
            f"--comma-less-share: expected a number in [0, 1], got {inputs.comma_less_share}"
        )
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


def take_run_settings(parser: ConfigParser, cfg: Any, given: set[str], run_dir: Path) -> set[str]:
    """For ``--resume``: the settings of the run in ``run_dir`` (its ``config.yaml``) for every flag
    not typed again, so that ``nanologic train --out RUN --resume`` continues a run started with
    other options; a typed one is compared with the run's by the run-folder check.

    Returns:
        ``given`` plus the keys taken from the run.

    Raises:
        NanologicError: ``config.yaml`` is not a YAML mapping.
    """
    import yaml

    from nanologic.configs import TrainConfig

    path = run_dir / "config.yaml"
    if not path.is_file():
        return given  # not a run (yet), or one made before config.yaml: the run-folder check says so
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise NanologicError(f"{path}: not readable as YAML ({type(exc).__name__})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("train", {}), dict):
        raise NanologicError(f"{path}: expected the settings a run saves (a mapping with a 'train' mapping)")
    sections = {TrainInputs: saved, TrainConfig: saved.get("train", {})}
    return given | set(take_saved_settings(parser, cfg, given, sections))


def _run_train(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from lm_shared.runtime import make_run_dir
    from nanologic.runner import check_model_request, train_run

    output = instantiate(parser, cfg, TrainOutput)
    if output.resume is not None and output.out is not None:
        given = take_run_settings(parser, cfg, given, Path(output.out))
    inputs = train_inputs_from_flags(parser, cfg, given)
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
        symbolic_share=inputs.symbolic_share,
        comma_less_share=inputs.comma_less_share,
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
        keys = ("equivalence_accuracy", "grounded_accuracy", "n_test", "train_seconds", "total_seconds")
        summary = {k: report[k] for k in keys}
        summary["decoding"] = report["decoding"]
        if "dev_real" in report:
            summary["dev_real_grounded_accuracy"] = report["dev_real"]["grounded_accuracy"]
            summary["dev_real_free_grounded_accuracy"] = report["dev_real_free"]["grounded_accuracy"]
        print(json.dumps(summary))
    return 0


def train_main(argv: list[str] | None = None) -> int:
    """The workspace ``train`` entry point: same as ``nanologic train``."""
    return main(["train", *(sys.argv[1:] if argv is None else argv)])


DESCRIPTION = "Spanish sentences to propositional logic: the data pipeline, training, evaluation and use."


def _no_overwrite(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise NanologicError(f"{path} exists; pass --force to overwrite it")


# ---------------------------------------------------------------------------------------------
# data stages: one step each of nanologic.stages, the driver `train` runs them all with
# ---------------------------------------------------------------------------------------------


def _names(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.split(",") if k.strip())


STAGE_FILE_FLAGS = {"input": Flag(positional=True)}


def _stage_parser(
    name: str, description: str, config: type, flags: dict[str, Flag] | None = None
) -> Callable[[], ConfigParser]:
    def make() -> ConfigParser:
        parser = config_parser(f"nanologic {name}", description)
        out_flags = dict(STAGE_FILE_FLAGS)
        if name == "preprocess":
            out_flags["out"] = Flag(help="output directory")
        add_dataclass_flags(parser, StageFiles, flags=out_flags, title="files")
        add_dataclass_flags(parser, config, flags=flags, title=name)
        return parser

    return make


def _generate_parser(prog: str = "nanologic generate") -> ConfigParser:
    from nanologic.configs import GenerateConfig, GenerateFiles

    parser = config_parser(prog, "Generate raw Spanish examples (the original's JSON schema).")
    add_dataclass_flags(parser, GenerateConfig, title="generate")
    add_dataclass_flags(parser, GenerateFiles, title="files")
    return parser


def _cmd_generate(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from nanologic.configs import GenerateConfig, GenerateFiles
    from nanologic.stages import generate_step

    files = options_from_flags(parser, cfg, GenerateFiles)
    config = options_from_flags(parser, cfg, GenerateConfig)
    _no_overwrite(files.out, files.force)
    examples = generate_step(config, files.out)
    clauses = {a["definition"] for e in examples for a in e["thought"]["identified_atoms"]}
    print(f"generated {len(examples)} examples ({len(clauses)} distinct clauses) -> {files.out}")
    return 0


def _file_stage(
    config_cls: type, step: Callable[..., list[dict]], cleaned: bool = True
) -> Callable[[ConfigParser, Any, set[str]], int]:
    """The command of a file-to-file stage: read IN, run ``step`` of nanologic.stages, write --out."""

    def command(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
        files = options_from_flags(parser, cfg, StageFiles)
        config = options_from_flags(parser, cfg, config_cls)
        examples = stages.read_stage_input(files.input, cleaned)  # a bad input is named first
        _no_overwrite(files.out, files.force)
        out = step(examples, config, files.out, files.input)
        print(f"{len(examples)} -> {len(out)} examples -> {files.out}")
        return 0

    return command


def _cmd_preprocess(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    files = options_from_flags(parser, cfg, StageFiles)
    config = options_from_flags(parser, cfg, PreprocessConfig)
    examples = stages.read_stage_input(files.input)
    for split in stages.SPLITS:
        _no_overwrite(files.out / f"{split}.jsonl", files.force)
    report = stages.preprocess_step(examples, config, files.out, files.input)
    print(f"train/val/test = {report.notes['splits']} -> {files.out}")
    return 0


def _tokenizer_parser(prog: str = "nanologic train-tokenizer") -> ConfigParser:
    from nanologic.configs import TokenizerOptions

    parser = config_parser(prog, "Train the BPE tokenizer (the 10 special tokens at ids 0-9) on train.jsonl.")
    add_dataclass_flags(parser, TokenizerOptions)
    return parser


def _cmd_train_tokenizer(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from nanologic.configs import TokenizerOptions
    from nanologic.runner import MIN_VOCAB_SIZE, check_records, train_tokenizer

    options = options_from_flags(parser, cfg, TokenizerOptions)
    if options.vocab_size < MIN_VOCAB_SIZE:
        raise NanologicError(f"--vocab-size: expected at least {MIN_VOCAB_SIZE}, got {options.vocab_size}")
    check_records(options.data / "train.jsonl")
    _no_overwrite(options.out / "tokenizer.json", options.force)
    tok = train_tokenizer(options.data, options.out, options.vocab_size)
    print(f"tokenizer with {tok.vocab_size} tokens -> {options.out / 'tokenizer.json'}")
    return 0


# ---------------------------------------------------------------------------------------------
# evaluation and use
# ---------------------------------------------------------------------------------------------

RUN_FLAG = Flag(aliases=("--checkpoint",))  # --checkpoint: the name earlier releases documented
CONSTRAINED_FLAG = Flag(aliases=("--grammar",))
# The field's comment says what it does when true; the flag turns it off.
AS_WRITTEN_FLAG = Flag(
    help="keep the definitions as written (and score them so) instead of rewriting them in the "
    "indicative with elided subjects written out, as by default"
)


def _evaluate_parser(prog: str = "nanologic evaluate") -> ConfigParser:
    from nanologic.configs import EvaluateOptions

    parser = config_parser(prog, "Evaluate a run (or the rule baseline) on a split or a real-sentence set.")
    add_dataclass_flags(
        parser,
        EvaluateOptions,
        flags={
            "run": RUN_FLAG,
            "constrained": CONSTRAINED_FLAG,
            "out": Flag(),
            "normalize_definitions": AS_WRITTEN_FLAG,
        },
    )
    return parser


def _cmd_evaluate(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from nanologic.configs import EvaluateOptions
    from nanologic.runner import default_report_dir, evaluate_run, print_eval

    options = options_from_flags(parser, cfg, EvaluateOptions)
    if options.baseline is not None:
        if options.data is None:
            raise NanologicError("--baseline needs --data FILE.jsonl")
        return _evaluate_baseline(options.data, options.out, options.limit, options.normalize_definitions)
    if options.run is None:
        raise NanologicError("give --run DIR (a trained run; or --checkpoint DIR) or --baseline rules")
    data = options.data or (options.run / "data" / "test.jsonl")
    out = options.out or default_report_dir(
        options.run, data, options.constraint, options.limit, options.normalize_definitions
    )
    report = evaluate_run(
        options.run,
        data,
        limit=options.limit,
        repair_tries=options.repair_tries,
        out_dir=out,
        constraint=options.constraint,
        normalize_definitions=options.normalize_definitions,
        beam_size=options.beam_size,
    )
    print_eval(report)
    print(f"report -> {out}")
    return 0


def _evaluate_baseline(
    data: Path, out: Path | None, limit: int | None, normalize_definitions: bool = True
) -> int:
    from nanologic.baseline import RuleFormalizer
    from nanologic.configs import DEFAULT_CONSTRAINT
    from nanologic.runner import default_report_dir, evaluate_formalizer, print_eval

    out = out or default_report_dir(
        Path("runs") / "baseline-rules", data, DEFAULT_CONSTRAINT, limit, normalize_definitions
    )
    extra = {"formalizer": "rules", "normalize_definitions": normalize_definitions}
    report = evaluate_formalizer(RuleFormalizer(normalize_definitions), data, out, limit=limit, extra=extra)
    print_eval(report)
    print(f"report -> {out}")
    return 0


def _baseline_parser(prog: str = "nanologic baseline") -> ConfigParser:
    from nanologic.configs import BaselineOptions

    parser = config_parser(prog, "The rule-based formaliser over the generator's cues (issue 13's baseline).")
    add_dataclass_flags(
        parser,
        BaselineOptions,
        flags={"sentence": Flag(positional=True), "normalize_definitions": AS_WRITTEN_FLAG},
    )
    return parser


def _cmd_baseline(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from nanologic.baseline import RuleFormalizer
    from nanologic.configs import BaselineOptions

    options = options_from_flags(parser, cfg, BaselineOptions)
    if options.data is None and not options.sentence:
        raise NanologicError("give sentences to formalise, or --data FILE.jsonl to evaluate the baseline")
    rules = RuleFormalizer(options.normalize_definitions)
    for sentence, res in zip(options.sentence, rules.formalize(options.sentence)):
        print(sentence)
        for letter, definition in res["atoms"].items():
            print(f"  {letter}: {definition}")
        print(f"  fórmula: {res['formula']}")
    if options.data is not None:
        return _evaluate_baseline(options.data, options.out, options.limit, options.normalize_definitions)
    return 0


def _add_decoding_flags(parser: ConfigParser) -> None:
    from nanologic.configs import DecodingOptions

    flags = {"run": RUN_FLAG, "constrained": CONSTRAINED_FLAG}
    add_dataclass_flags(parser, DecodingOptions, flags=flags, title="model")


def _formalize_parser(prog: str = "nanologic formalize") -> ConfigParser:
    from nanologic.configs import FormalizeOptions

    parser = config_parser(prog, "Sentence(s) -> atoms, connectors, formula and truth table.")
    add_dataclass_flags(parser, FormalizeOptions, flags={"sentence": Flag(positional=True)})
    _add_decoding_flags(parser)
    return parser


def _cmd_formalize(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    from nanologic.configs import DecodingOptions, FormalizeOptions
    from nanologic.data import read_jsonl, write_jsonl
    from nanologic.inference import formalize_output_row
    from nanologic.logic import format_truth_table, parse

    options = options_from_flags(parser, cfg, FormalizeOptions)
    if options.input is None and not options.sentence:
        raise NanologicError("give a sentence, or --input FILE.jsonl --output FILE.jsonl")
    if options.input is not None and options.output is None:
        raise NanologicError("--input needs --output")
    formalizer = _formalizer(options_from_flags(parser, cfg, DecodingOptions))
    if options.input is not None:
        _no_overwrite(options.output, options.force)
        rows = read_jsonl(options.input, required=("input",), worded=("input",))
        if not rows:
            raise NanologicError(
                f'{options.input}: no sentences (expected JSONL lines like {{"input": "..."}})'
            )
        results = formalizer.formalize([r["input"] for r in rows])
        out_rows = [formalize_output_row(row, res) for row, res in zip(rows, results)]
        write_jsonl(options.output, out_rows)
        print(f"{len(out_rows)} sentences -> {options.output}")
        return 0
    console = Console()
    for sentence, res in zip(options.sentence, formalizer.formalize(options.sentence)):
        console.print(f"[bold]{sentence}[/]")
        for letter, definition in res["atoms"].items():
            console.print(f"  {letter}: {definition}")
        console.print("  conectores: " + " | ".join(f"{s}: {c}" for s, c in res["connectors"]))
        console.print(f"  fórmula: [bold cyan]{res['formula']}[/]   ({res['formula_ascii']})")
        if res["valid_formula"]:
            cells = format_truth_table(parse(res["formula"]))
            table = Table(*cells[0])
            for row in cells[1:]:
                table.add_row(*row)
            console.print(table)
        else:
            console.print("  [red]the model's formula does not parse[/]")
    return 0


def _formalizer(options: Any) -> Any:
    """The PyTorch Formalizer (--run), the llama.cpp one (--gguf), with the constraint, or the rule
    baseline (--baseline rules)."""
    if sum(x is not None for x in (options.run, options.gguf, options.baseline)) != 1:
        raise NanologicError(
            "give exactly one of --run DIR (PyTorch), --gguf FILE.gguf (llama.cpp) or --baseline rules"
        )
    if options.baseline is not None:
        from nanologic.baseline import RuleFormalizer

        model_flags = [
            flag
            for flag, given in (
                ("--decoding", options.decoding is not None),
                ("--constrained", options.constrained),
                ("--grounded", options.grounded),
                ("--beam-size", options.beam_size != 1),
            )
            if given
        ]
        if model_flags:
            raise NanologicError(
                f"{', '.join(model_flags)}: decoding a model's answer, not for --baseline rules"
            )
        return RuleFormalizer()
    if options.gguf is not None:
        from nanologic.llamacpp import LlamaCppFormalizer

        if options.beam_size > 1:
            raise NanologicError("--beam-size: beam search runs with --run (PyTorch), not with --gguf")

        return LlamaCppFormalizer.from_gguf(options.gguf, grammar=options.constraint or False)
    from nanologic.inference import Formalizer

    return Formalizer.from_run(options.run, constraint=options.constraint, beam_size=options.beam_size)


def _check_parser(prog: str = "nanologic check") -> ConfigParser:
    from nanologic.configs import CheckOptions

    parser = config_parser(prog, "Validity of an argument: its text (with a model), or its formulas.")
    add_dataclass_flags(parser, CheckOptions, flags={"text": Flag(positional=True)})
    _add_decoding_flags(parser)
    return parser


def _cmd_check(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from rich.console import Console

    from nanologic.argument import check_argument
    from nanologic.configs import CheckOptions, DecodingOptions
    from nanologic.inference import shared_atoms, split_argument
    from nanologic.logic import FormulaError, to_unicode

    options = options_from_flags(parser, cfg, CheckOptions)
    decoding = options_from_flags(parser, cfg, DecodingOptions)
    console = Console()
    definitions: dict[str, str] = {}
    if options.premise or options.conclusion:
        if not (options.premise and options.conclusion):
            raise NanologicError("--premise (one or more) and --conclusion go together")
        try:
            result = check_argument(options.premise, options.conclusion)
        except FormulaError as exc:
            raise NanologicError(f"unparsable formula: {exc}") from None
    else:
        if options.text is None:  # which formaliser reads it, _formalizer checks
            raise NanologicError(
                "give an argument text (with --run DIR, --gguf FILE or --baseline rules), "
                "or --premise/--conclusion formulas"
            )
        premises_text, conclusion_text = split_argument(options.text)
        formalizer = _formalizer(decoding)
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
        counterexample = result.counterexample or {}  # an invalid argument always has one
        row = ", ".join(f"{k} = {'V' if v else 'F'}" for k, v in counterexample.items())
        console.print(f"  contraejemplo: {row} (premisas verdaderas, conclusión falsa)")
    if options.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    return 0 if result.valid or not options.exit_code else 1


def _export_parser(prog: str = "nanologic export-gguf") -> ConfigParser:
    from nanologic.configs import ExportOptions

    parser = config_parser(prog, "Write a llama.cpp GGUF (llama architecture) and its answer grammar.")
    add_dataclass_flags(parser, ExportOptions, flags={"run": RUN_FLAG})
    return parser


def _cmd_export(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from nanologic.configs import ExportOptions
    from nanologic.export import export_gguf

    options = options_from_flags(parser, cfg, ExportOptions)
    _no_overwrite(options.out, options.force)
    path = export_gguf(
        options.run, options.out, dtype=options.dtype, allow_final_softcap=options.allow_final_softcap
    )
    print(f"wrote {path} and its answer grammar {path.with_suffix('.gbnf')}")
    return 0


def _bench_parser(prog: str = "nanologic bench") -> ConfigParser:
    from nanologic.configs import BenchOptions

    parser = config_parser(
        prog, "Throughput against transformers' Llama, padding/packing, KV cache, llama.cpp."
    )
    add_dataclass_flags(parser, BenchOptions)
    return parser


def _cmd_bench(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from nanologic.bench import run_bench
    from nanologic.configs import BenchOptions

    options = options_from_flags(parser, cfg, BenchOptions)
    run_bench(
        options.out,
        quick=options.quick,
        threads=options.threads,
        device=options.device,
        compile=options.compile,
    )
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


def _serve_parser(prog: str = "nanologic serve") -> ConfigParser:
    from nanologic.configs import ServeOptions

    parser = config_parser(prog, "Web app: formalise, truth tables, arguments, JSONL batches.")
    add_dataclass_flags(parser, ServeOptions, flags={"run": RUN_FLAG})
    return parser


def _cmd_serve(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from nanologic.app import serve
    from nanologic.configs import ServeOptions

    options = options_from_flags(parser, cfg, ServeOptions)
    if options.run is not None and options.gguf is not None:
        raise NanologicError("--run (--checkpoint) and --gguf are alternatives: give one")
    auth = _read_auth_file(options.auth_file) if options.auth_file is not None else None
    if options.host not in ("127.0.0.1", "localhost", "::1") and auth is None:
        print(
            f"warning: serving on {options.host} without --auth-file: anyone who reaches this port can "
            "use the app (see the README on exposing it safely)",
            file=sys.stderr,
        )
    _check_port_free(options.host, options.port)
    serve(
        checkpoint=options.run,
        gguf=options.gguf,
        port=options.port,
        host=options.host,
        auth=auth,
        runs_dir=options.runs_dir,
    )
    return 0


# name -> (its parser, what it runs, its line in `nanologic --help`); every command's flags come
# from config dataclasses (nanologic.configs) through lm_shared.config_cli.
COMMANDS: dict[str, Command] = {
    "generate": Command(
        _generate_parser, _cmd_generate, "generate raw Spanish examples (the original's schema)"
    ),
    "clean": Command(
        _stage_parser(
            "clean", "Parse, check atoms, deduplicate, subsample trivial formulas, normalise.", CleanConfig
        ),
        _file_stage(CleanConfig, stages.clean_step, cleaned=False),
        "parse, check atoms, dedup, subsample trivial formulas, normalise",
    ),
    "verify": Command(
        _stage_parser("verify", "Deterministic consistency check, plus an optional LLM check.", VerifyConfig),
        _file_stage(VerifyConfig, stages.verify_step),
        "deterministic consistency check, plus an optional LLM check",
    ),
    "augment": Command(
        _stage_parser(
            "augment",
            "AST rewrites proven by truth table, and compositions.",
            AugmentConfig,
            flags={
                "kinds": Flag(
                    parse=_names,
                    metavar="KINDS",
                    help="comma-separated augmentations to apply (default: all of "
                    + ",".join(AUGMENTATION_KINDS)
                    + ")",
                )
            },
        ),
        _file_stage(AugmentConfig, stages.augment_step),
        "AST rewrites proven by truth table, and compositions",
    ),
    "preprocess": Command(
        _stage_parser(
            "preprocess", "Balance, grouped pattern split 80/10/10, curriculum order.", PreprocessConfig
        ),
        _cmd_preprocess,
        "balance, grouped pattern split 80/10/10, curriculum",
    ),
    "train-tokenizer": Command(
        _tokenizer_parser, _cmd_train_tokenizer, "BPE with the 10 special tokens at ids 0-9"
    ),
    "train": Command(_train_parser, _run_train, "train (the same trainer as `uv run train`)"),
    "evaluate": Command(
        _evaluate_parser,
        _cmd_evaluate,
        "evaluate a run (or the rule baseline) on a split or a real-sentence set",
    ),
    "baseline": Command(
        _baseline_parser, _cmd_baseline, "the rule-based formaliser over the generator's cues"
    ),
    "formalize": Command(
        _formalize_parser,
        _cmd_formalize,
        "sentence(s) -> atoms, connectors, formula, truth table",
    ),
    "check": Command(_check_parser, _cmd_check, "validity of an argument (text with a model, or formulas)"),
    "export-gguf": Command(_export_parser, _cmd_export, "write a llama.cpp GGUF (llama architecture)"),
    "bench": Command(
        _bench_parser,
        _cmd_bench,
        "throughput, padding/packing efficiency, KV-cache and llama.cpp speed",
    ),
    "text-report": Command(
        text_report_parser,
        run_text_report,
        "llama.cpp's tokenization, rendering and decoding of an exported model vs PyTorch",
    ),
    "serve": Command(_serve_parser, _cmd_serve, "web app: formalise, truth tables, arguments, JSONL batches"),
}


def build_parser() -> argparse.ArgumentParser:
    """``nanologic``'s own parser: the list of commands (each command parses its own flags)."""
    return program_parser("nanologic", DESCRIPTION, COMMANDS)


def command_parser(name: str) -> ConfigParser:
    """The parser of ``nanologic <name>`` (its flags, defaults and help)."""
    return COMMANDS[name].parser()


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a user error is one ``error: ...`` line (exit 2), Ctrl-C one line (exit 130)."""
    return run_command("nanologic", DESCRIPTION, COMMANDS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
